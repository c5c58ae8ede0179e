"""Ground truth as decoded examples (ARCHITECTURE.md 1), through the training path.

The oracle and the substitution analysis (`experiments.oracle`, `experiments.diagnose`) read an
annotation file this way, so that they see exactly what the TFRecord writer and the decoder give
the trainer.
"""

from __future__ import annotations

from typing import Iterator, Optional

import tensorflow as tf
from absl import logging

from data_pipeline import annotations as annotation_readers
from data_pipeline import tfrecord_io
from data_pipeline.tfrecord_writer import serialize_record
from kdc_tf.datasets import get_dataset_spec


def decoded_examples(annotations_path: str, images_dir: str, dataset: str,
                     max_images: Optional[int] = None,
                     fail_on_bad_image: bool = False) -> Iterator[dict]:
  """Decoded examples (ARCHITECTURE.md 1) through the training path: reader, TFRecord, decode.

  A missing or corrupt image is skipped and counted like the TFRecord writer does
  (`fail_on_bad_image`: an error naming it instead).
  """
  num_keypoints = get_dataset_spec(dataset).num_keypoints
  data = annotation_readers.read_annotations(annotations_path, images_dir, dataset)
  missing = data.skips[annotation_readers.SkipReason.MISSING_IMAGE]
  if fail_on_bad_image and missing:
    examples = data.skips.examples[annotation_readers.SkipReason.MISSING_IMAGE]
    raise ValueError(f"{missing} images of {annotations_path} are missing from {images_dir} "
                     f"(e.g. {'; '.join(examples)})")
  records = sorted(data.images, key=lambda r: r.image_id)[:max_images]
  skipped = annotation_readers.SkipCounter()
  for record in records:
    try:
      image_bytes = annotation_readers.load_image_bytes(record)
    except annotation_readers.ImageError as e:
      if fail_on_bad_image:
        raise ValueError(f"image {record.image_id}: {e}") from None
      logging.warning("Skipping image %d (not evaluated): %s", record.image_id, e)
      skipped.add(e.reason, str(e))
      continue
    serialized = serialize_record(record, image_bytes, num_keypoints)
    yield tfrecord_io.decode_example(tf.constant(serialized), num_keypoints)
  if skipped.total():
    skipped.log(f"images skipped and left out of the evaluation ({images_dir})")
