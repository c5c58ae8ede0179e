"""TFRecord format of one image with its people: writing, sharding and pure-TF decoding.

`decode_example` returns the decoded-example dict of ARCHITECTURE.md section 1. The stored form:

  image/encoded      bytes    the image file as it was (JPEG, PNG, ...), never re-encoded
  image/id           int64
  image/height, image/width  int64
  image/has_masks    int64    0 for datasets without segmentation (CrowdPose)
  image/num_keypoints int64   K, checked against the decoder's argument
  image/crowd_index  float    0 or 1 value (CrowdPose crowdIndex)
  image/mask_planes  bytes    one grayscale PNG holding every mask as a bit plane (below)
  person/id          int64    [P]
  person/keypoints   float    [P * K * 3], (x, y, v) as float32, exact

Mask planes: plane 0 is the crowd mask, plane j + 1 is person j. Plane i is bit i % 8 of the
(i // 8)-th block of H rows of the PNG, so the PNG is `ceil((P + 1) / 8) * H` by W. One lossless
PNG decode gives every mask bit-exact, and overlapping masks stay independent.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import tensorflow as tf

_BITS = 8

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/has_masks": tf.io.FixedLenFeature([], tf.int64),
    "image/num_keypoints": tf.io.FixedLenFeature([], tf.int64),
    "image/mask_planes": tf.io.FixedLenFeature([], tf.string),
    "person/id": tf.io.RaggedFeature(tf.int64),
    "person/keypoints": tf.io.RaggedFeature(tf.float32),
}


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int64_feature(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_feature(values: Sequence[float]) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def encode_mask_planes(crowd_mask: np.ndarray, instance_masks: np.ndarray) -> bytes:
  """PNG of the crowd mask [H, W] and the instance masks [P, H, W] (0/1) as bit planes."""
  height, width = crowd_mask.shape
  num_blocks = math.ceil((len(instance_masks) + 1) / _BITS)
  planes = np.zeros((num_blocks * _BITS, height, width), np.uint8)
  planes[0] = crowd_mask != 0
  planes[1:len(instance_masks) + 1] = instance_masks != 0
  shifts = np.arange(_BITS, dtype=np.uint8).reshape(1, _BITS, 1, 1)
  # Bits do not overlap, so OR-reducing the shifted planes packs them (np.packbits along a middle
  # axis is several times slower).
  packed = np.bitwise_or.reduce(planes.reshape(num_blocks, _BITS, height, width) << shifts, axis=1)
  ok, png = cv2.imencode(".png", packed.reshape(num_blocks * height, width))
  if not ok:
    raise ValueError(f"PNG encoding of {num_blocks * height}x{width} mask planes failed")
  return png.tobytes()


def serialize_example(*, image_bytes: bytes, image_id: int, person_ids: Sequence[int],
                      keypoints: np.ndarray, crowd_mask: np.ndarray,
                      instance_masks: Optional[np.ndarray], has_masks: bool,
                      crowd_index: Optional[float] = None) -> bytes:
  """A serialized tf.train.Example; H x W come from `crowd_mask`.

  Args:
    image_bytes: the encoded image file (any format tf.io.decode_image reads).
    image_id: dataset image id.
    person_ids: [P] annotation ids.
    keypoints: [P, K, 3] (x, y, v), stored as float32.
    crowd_mask: uint8 [H, W] 0/1 ignore regions.
    instance_masks: uint8 [P, H, W] 0/1, or None when `has_masks` is false (stored as zeros).
    has_masks: whether the dataset has segmentation.
    crowd_index: CrowdPose crowdIndex, stored when given.
  """
  height, width = crowd_mask.shape
  num_people = len(person_ids)
  keypoints = np.asarray(keypoints, np.float32)
  if keypoints.ndim != 3 or keypoints.shape[0] != num_people or keypoints.shape[2] != 3:
    raise ValueError(f"keypoints must be [P={num_people}, K, 3], got {keypoints.shape}")
  if instance_masks is None:
    if has_masks:
      raise ValueError("has_masks is true but no instance masks were given")
    instance_masks = np.zeros((num_people, height, width), np.uint8)
  if instance_masks.shape != (num_people, height, width):
    raise ValueError(f"instance_masks must be [{num_people}, {height}, {width}], "
                     f"got {instance_masks.shape}")
  for name, mask in (("crowd_mask", crowd_mask), ("instance_masks", instance_masks)):
    if mask.size and mask.max() > 1:
      raise ValueError(f"{name} must be 0/1, got max {mask.max()}")
  feature = {
      "image/encoded": _bytes_feature([image_bytes]),
      "image/id": _int64_feature([image_id]),
      "image/height": _int64_feature([height]),
      "image/width": _int64_feature([width]),
      "image/has_masks": _int64_feature([has_masks]),
      "image/num_keypoints": _int64_feature([keypoints.shape[1]]),
      "image/crowd_index": _float_feature([] if crowd_index is None else [crowd_index]),
      "image/mask_planes": _bytes_feature([encode_mask_planes(crowd_mask, instance_masks)]),
      "person/id": _int64_feature(person_ids),
      "person/keypoints": _float_feature(keypoints.reshape(-1).tolist()),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString()


def decode_example(serialized: tf.Tensor, num_keypoints: int, packed_masks: bool = False) -> dict:
  """Decodes one serialized example into ARCHITECTURE.md section 1's dict (pure TF ops).

  With `packed_masks` the masks stay packed: `mask_planes` uint8 [G, H, W] in place of
  `instance_masks` and `crowd_mask` (`unpack_mask_planes`), for the augmentation to sample.
  """
  features = tf.io.parse_single_example(serialized, _FEATURES)
  height = tf.cast(features["image/height"], tf.int32)
  width = tf.cast(features["image/width"], tf.int32)
  checks = [
      tf.debugging.assert_equal(
          features["image/num_keypoints"], tf.constant(num_keypoints, tf.int64),
          message=f"TFRecord keypoint count differs from num_keypoints={num_keypoints} "
                  "(wrong --dataset for these files?)"),
  ]
  image = tf.io.decode_image(features["image/encoded"], channels=3, expand_animations=False)
  image = tf.ensure_shape(image, [None, None, 3])
  checks.append(tf.debugging.assert_equal(
      tf.shape(image)[:2], tf.stack([height, width]),
      message="decoded image size differs from the stored height and width"))
  with tf.control_dependencies(checks):
    person_ids = tf.identity(features["person/id"])
    keypoints = tf.reshape(features["person/keypoints"], [-1, num_keypoints, 3])

  packed = tf.io.decode_png(features["image/mask_planes"], channels=1, dtype=tf.uint8)
  packed = tf.reshape(packed, [-1, height, width])
  example = {
      "image": image,
      "image_id": features["image/id"],
      "person_ids": person_ids,
      "keypoints": keypoints,
      "has_masks": tf.cast(features["image/has_masks"], tf.bool),
  }
  if packed_masks:
    example["mask_planes"] = packed
  else:
    example["instance_masks"], example["crowd_mask"] = unpack_mask_planes(
        packed, tf.shape(person_ids)[0])
  return example


def unpack_mask_planes(packed: tf.Tensor, num_people: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Packed mask planes uint8 [G, H, W] (module docstring) -> (instance masks uint8 [P, H, W],
  crowd mask uint8 [H, W]), 0/1.

  Bit extraction commutes with nearest-neighbour sampling, so the input pipeline samples the
  packed planes on the mask grid and unpacks there (`augmentation.warp_example`): eight masks per
  sample and no unpacking at full resolution.
  """
  shifts = tf.constant(np.arange(_BITS, dtype=np.uint8).reshape(1, _BITS, 1, 1))
  planes = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, tf.newaxis], shifts),
                                  tf.constant(1, tf.uint8))
  planes = tf.reshape(planes, tf.concat([[-1], tf.shape(packed)[1:]], axis=0))
  return planes[1:num_people + 1], planes[0]


def decode_crowd_index(serialized: tf.Tensor) -> tf.Tensor:
  """float32 [] CrowdPose crowdIndex of one serialized example; NaN when not stored."""
  value = tf.io.parse_single_example(
      serialized, {"image/crowd_index": tf.io.RaggedFeature(tf.float32)})["image/crowd_index"]
  return tf.concat([value, [np.nan]], axis=0)[0]


def shard_paths(output_prefix: str, num_shards: int) -> List[str]:
  """`prefix-00000-of-0000N.tfrecord` names of `num_shards` shards."""
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  return [f"{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


class AtomicRecordWriter:
  """One TFRecord file written under a temporary name and renamed when the block ends cleanly."""

  def __init__(self, path: str):
    self.path = path
    self._writer: Optional[tf.io.TFRecordWriter] = None

  def __enter__(self) -> "AtomicRecordWriter":
    directory = os.path.dirname(self.path)
    if directory:
      tf.io.gfile.makedirs(directory)
    self._writer = tf.io.TFRecordWriter(self.path + ".tmp")
    return self

  def write(self, serialized: bytes) -> None:
    self._writer.write(serialized)

  def __exit__(self, exc_type, exc, tb) -> None:
    self._writer.close()
    if exc_type is None:
      tf.io.gfile.rename(self.path + ".tmp", self.path, overwrite=True)
    else:
      tf.io.gfile.remove(self.path + ".tmp")


def list_tfrecord_files(pattern: Union[str, Sequence[str]]) -> List[str]:
  """Sorted files matching a glob pattern (or several, or comma-separated); raises if none."""
  patterns = pattern.split(",") if isinstance(pattern, str) else list(pattern)
  files = sorted({f for p in patterns if p.strip() for f in tf.io.gfile.glob(p.strip())})
  if not files:
    raise FileNotFoundError(
        f"No TFRecord file matches {pattern!r}. Write them with `python -m "
        "data_pipeline.create_tfrecords --annotations=... --images=... --output=PREFIX`, then "
        "pass 'PREFIX-*.tfrecord'.")
  return files


@dataclasses.dataclass
class ShardCheck:
  """One TFRecord file read end to end: its readable records and, if corrupt, where it broke."""

  path: str
  records: int
  error: Optional[str] = None
  dropped_bytes: int = 0

  def describe(self) -> str:
    if self.error is None:
      return f"{self.path}: {self.records} records"
    return (f"{self.path}: corrupt after {self.records} readable records ({self.error}); "
            f"the remaining {self.dropped_bytes} bytes of the shard are unreadable")


def check_shards(files: Sequence[str]) -> List[ShardCheck]:
  """Reads every file to the end (or its first corrupt record), counting readable records.

  TF's own error for a corrupt record does not name the file; this does, and says how much a
  `skip_corrupt_records` reader drops (a reader cannot resynchronise after a bad record: the rest
  of the shard is lost).
  """
  checks = []
  for path in files:
    records, error, dropped = 0, None, 0
    try:
      for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20):
        records += 1
    except tf.errors.DataLossError as e:
      error = e.message.split("[Op:")[0].split("}}")[-1].strip()
      offset = re.search(r"record at (\d+)", e.message)
      size = tf.io.gfile.stat(path).length
      dropped = size - int(offset.group(1)) if offset else size
    checks.append(ShardCheck(path, records, error, dropped))
  return checks


def corrupt_shards_message(checks: Sequence[ShardCheck]) -> str:
  """The corrupt shards of `check_shards`, one per line ('' when every shard is whole)."""
  return "\n".join(check.describe() for check in checks if check.error is not None)
