"""TFRecord round trips: keypoints exact, masks bit-exact, images as stored, clear errors."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import annotations
from data_pipeline import augmentation
from data_pipeline import tfrecord_writer
from data_pipeline import tfrecord_io
from kdc_tf.datasets import get_dataset_spec

_DECODED_KEYS = {"image", "image_id", "person_ids", "keypoints", "instance_masks", "crowd_mask",
                 "has_masks"}


def _decode_all(pattern: str, dataset: str) -> dict:
  """image_id -> decoded example (numpy), through tf.data as the input pipeline uses it."""
  k = get_dataset_spec(dataset).num_keypoints
  files = tfrecord_io.list_tfrecord_files(pattern)
  ds = tf.data.TFRecordDataset(files).map(lambda s: tfrecord_io.decode_example(s, k))
  return {int(ex["image_id"]): {key: v.numpy() for key, v in ex.items()} for ex in ds}


@pytest.fixture(scope="module")
def coco_round_trip(coco_sample_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("coco_tfrecords")
  json_path = str(coco_sample_dir / "test_coco.json")
  summary = tfrecord_writer.write_tfrecords(json_path, str(coco_sample_dir), str(out / "coco"),
                                             num_shards=3, dataset="coco")
  reader = annotations.read_coco(json_path, str(coco_sample_dir))
  return summary, reader, _decode_all(str(out / "coco-*.tfrecord"), "coco")


def test_writer_names_shards_and_counts(coco_round_trip):
  summary, _, decoded = coco_round_trip
  assert [p.rsplit("/", 1)[1] for p in summary.files] == [
      f"coco-0000{i}-of-00003.tfrecord" for i in range(3)]
  assert (summary.num_images, summary.num_people) == (4, 14)
  assert summary.skips.total() == 0
  assert len(decoded) == 4


def test_coco_round_trip_is_exact(coco_round_trip, coco_sample_dir):
  _, reader, decoded = coco_round_trip
  for record in reader.images:
    example = decoded[record.image_id]
    assert set(example) == _DECODED_KEYS
    p = len(record.people)
    assert example["person_ids"].dtype == np.int64
    np.testing.assert_array_equal(example["person_ids"], [person.id for person in record.people])
    assert example["keypoints"].dtype == np.float32 and example["keypoints"].shape == (p, 17, 3)
    np.testing.assert_array_equal(example["keypoints"],
                                  np.stack([person.keypoints for person in record.people]))
    masks = record.instance_masks()
    assert masks.sum() > 0
    assert example["instance_masks"].dtype == np.uint8
    np.testing.assert_array_equal(example["instance_masks"], masks)
    np.testing.assert_array_equal(example["crowd_mask"], record.crowd_mask())
    assert example["has_masks"]
    expected_image = tf.io.decode_image(open(record.image_path, "rb").read(), channels=3).numpy()
    np.testing.assert_array_equal(example["image"], expected_image)


def test_crowdpose_round_trip(crowdpose_sample_dir, tmp_path):
  json_path = str(crowdpose_sample_dir / "test_crowdpose.json")
  tfrecord_writer.write_tfrecords(json_path, str(crowdpose_sample_dir), str(tmp_path / "cp"), 1,
                                   "crowdpose")
  reader = annotations.read_crowdpose(json_path, str(crowdpose_sample_dir))
  files = tfrecord_io.list_tfrecord_files(str(tmp_path / "cp-*"))
  decoded = _decode_all(files[0], "crowdpose")
  for record in reader.images:
    example = decoded[record.image_id]
    assert not example["has_masks"]
    assert example["keypoints"].shape == (len(record.people), 14, 3)
    np.testing.assert_array_equal(example["keypoints"],
                                  np.stack([person.keypoints for person in record.people]))
    assert example["instance_masks"].shape == (len(record.people), record.height, record.width)
    assert example["instance_masks"].max() == 0
    np.testing.assert_array_equal(example["crowd_mask"], record.crowd_mask())
  crowd_indices = sorted(float(tfrecord_io.decode_crowd_index(s))
                         for s in tf.data.TFRecordDataset(files))
  np.testing.assert_allclose(crowd_indices, [0.33, 0.39], rtol=1e-6)


@pytest.mark.parametrize("num_people", [0, 7, 8, 17])
def test_mask_planes_are_bit_exact_across_blocks(num_people):
  rng = np.random.default_rng(num_people)
  h, w = 23, 31
  masks = (rng.random((num_people, h, w)) < 0.4).astype(np.uint8)
  crowd = (rng.random((h, w)) < 0.2).astype(np.uint8)
  keypoints = rng.uniform(0, 20, (num_people, 17, 3)).astype(np.float32)
  gray = rng.integers(0, 256, (h, w), dtype=np.uint8)  # Grayscale PNG: decoded to 3 channels.
  image_bytes = cv2.imencode(".png", gray)[1].tobytes()
  serialized = tfrecord_io.serialize_example(
      image_bytes=image_bytes, image_id=7, person_ids=list(range(100, 100 + num_people)),
      keypoints=keypoints, crowd_mask=crowd, instance_masks=masks, has_masks=True)
  example = tfrecord_io.decode_example(tf.constant(serialized), 17)
  np.testing.assert_array_equal(example["instance_masks"].numpy(), masks)
  np.testing.assert_array_equal(example["crowd_mask"].numpy(), crowd)
  np.testing.assert_array_equal(example["keypoints"].numpy(), keypoints)
  np.testing.assert_array_equal(example["image"].numpy(), np.repeat(gray[..., None], 3, axis=-1))
  assert np.isnan(tfrecord_io.decode_crowd_index(tf.constant(serialized)).numpy())


@pytest.mark.parametrize("num_people", [0, 7, 8, 17])
def test_packed_masks_warp_to_the_unpacked_masks(num_people):
  """Sampling the packed planes, then unpacking, gives the masks of sampling each mask (nearest):
  scaled, rotated, flipped and shifted, with people in two or three blocks of planes."""
  rng = np.random.default_rng(num_people)
  h, w = 57, 43
  masks = (rng.random((num_people, h, w)) < 0.4).astype(np.uint8)
  crowd = (rng.random((h, w)) < 0.2).astype(np.uint8)
  serialized = tf.constant(tfrecord_io.serialize_example(
      image_bytes=cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes(), image_id=3,
      person_ids=list(range(num_people)), keypoints=np.zeros((num_people, 17, 3), np.float32),
      crowd_mask=crowd, instance_masks=masks, has_masks=True))
  unpacked = tfrecord_io.decode_example(serialized, 17)
  packed = tfrecord_io.decode_example(serialized, 17, packed_masks=True)
  assert "instance_masks" not in packed and packed["mask_planes"].dtype == tf.uint8
  flip = get_dataset_spec("coco").flip_permutation
  for scale, angle, sign, shift in ((1.0, 0.0, 1.0, 0.0), (1.7, 0.4, -1.0, 5.5),
                                    (0.6, -1.1, 1.0, -3.2)):
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    matrix = tf.constant([[sign * cos, -sin, shift + (40.0 if sign < 0 else 0.0)],
                          [sign * sin, cos, shift], [0.0, 0.0, 1.0]], tf.float32)
    expected = augmentation.warp_example(unpacked, matrix, 65, flip)
    warped = augmentation.warp_example(packed, matrix, 65, flip)
    assert expected["instance_masks"].shape == (num_people, 17, 17)
    np.testing.assert_array_equal(warped["instance_masks"].numpy(),
                                  expected["instance_masks"].numpy())
    np.testing.assert_array_equal(warped["crowd_mask"].numpy(), expected["crowd_mask"].numpy())
  assert expected["crowd_mask"].numpy().sum() > 0


def test_decoder_rejects_wrong_keypoint_count():
  serialized = tfrecord_io.serialize_example(
      image_bytes=cv2.imencode(".png", np.zeros((5, 6, 3), np.uint8))[1].tobytes(), image_id=1,
      person_ids=[1], keypoints=np.zeros((1, 17, 3)), crowd_mask=np.zeros((5, 6), np.uint8),
      instance_masks=np.zeros((1, 5, 6), np.uint8), has_masks=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_keypoints=14"):
    tfrecord_io.decode_example(tf.constant(serialized), 14)


def test_serialize_rejects_non_binary_masks():
  with pytest.raises(ValueError, match="0/1"):
    tfrecord_io.serialize_example(
        image_bytes=b"", image_id=1, person_ids=[1], keypoints=np.zeros((1, 17, 3)),
        crowd_mask=np.zeros((5, 6), np.uint8), instance_masks=np.full((1, 5, 6), 255, np.uint8),
        has_masks=True)


def test_list_tfrecord_files_explains_an_empty_match(tmp_path):
  with pytest.raises(FileNotFoundError, match="No TFRecord file matches"):
    tfrecord_io.list_tfrecord_files(str(tmp_path / "nothing-*.tfrecord"))
