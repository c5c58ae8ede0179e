"""Writes a COCO-format keypoint dataset (COCO, CrowdPose, OCHuman) as sharded TFRecords.

`serialize_record` is the one serialisation of an annotated image (the oracle and the tests use it
too); `write_tfrecords` reads the annotations, checks every image decodes and writes the shards in
the format of `tfrecord_io`, counting what it skipped by reason (`annotations` has the policy).
"""

from __future__ import annotations

import dataclasses
import time
from typing import List

from absl import logging
import numpy as np

from data_pipeline import annotations
from data_pipeline import tfrecord_io
from kdc_tf.datasets import get_dataset_spec


@dataclasses.dataclass
class WriteSummary:
  """What `write_tfrecords` wrote and skipped."""

  files: List[str]
  num_images: int
  num_people: int
  skips: annotations.SkipCounter
  seconds: float

  def __str__(self) -> str:
    return (f"wrote {self.num_images} images, {self.num_people} people into {len(self.files)} "
            f"shard(s) ({self.files[0]} ...) in {self.seconds:.1f} s\n"
            f"skipped or fixed, by reason:\n{self.skips.summary()}")


def serialize_record(record: annotations.ImageRecord, image_bytes: bytes,
                     num_keypoints: int) -> bytes:
  """The TFRecord example of one image record, masks rasterised with pycocotools."""
  keypoints = np.zeros((len(record.people), num_keypoints, 3), np.float32)
  for i, person in enumerate(record.people):
    keypoints[i] = person.keypoints
  return tfrecord_io.serialize_example(
      image_bytes=image_bytes,
      image_id=record.image_id,
      person_ids=[p.id for p in record.people],
      keypoints=keypoints,
      crowd_mask=record.crowd_mask(),
      instance_masks=record.instance_masks() if record.has_masks else None,
      has_masks=record.has_masks,
      crowd_index=record.crowd_index)


def write_tfrecords(annotations_path: str, images_dir: str, output_prefix: str, num_shards: int,
                    dataset: str, *, keep_images_without_people: bool = True,
                    log_every: int = 1000) -> WriteSummary:
  """Reads the annotations, checks every image decodes, writes `num_shards` TFRecord shards."""
  start = time.monotonic()
  data = annotations.read_annotations(annotations_path, images_dir, dataset,
                                      keep_images_without_people=keep_images_without_people)
  num_keypoints = get_dataset_spec(dataset).num_keypoints
  num_images = num_people = 0
  with tfrecord_io.ShardedWriter(output_prefix, num_shards) as writer:
    for i, record in enumerate(data.images, 1):
      try:
        image_bytes = annotations.load_image_bytes(record)
      except annotations.ImageError as e:
        data.skips.add(e.reason, str(e))
        continue
      writer.write(serialize_record(record, image_bytes, num_keypoints))
      num_images += 1
      num_people += len(record.people)
      if i % log_every == 0:
        elapsed = time.monotonic() - start
        logging.info("%d / %d images (%.1f images/s), %d people written", i, len(data.images),
                     i / elapsed, num_people)
  summary = WriteSummary(files=writer.paths, num_images=num_images, num_people=num_people,
                         skips=data.skips, seconds=time.monotonic() - start)
  logging.info("%s", summary)
  return summary
