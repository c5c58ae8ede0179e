"""Ground truth as decoded examples (ARCHITECTURE.md 1) and as targets at the test geometry.

The oracle and the substitution analysis (`experiments.oracle_runner`, `experiments.diagnose`)
read an annotation file with `decoded_examples`, so that they see exactly what the TFRecord writer
and the decoder give the trainer, and encode each image with `encode_at_test_scale`: the
deterministic inference transform (as `kdc_tf.inference.Predictor` sees an image) and the real
target encoder, i.e. perfect head outputs at the test geometry.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, Optional

import tensorflow as tf
from absl import logging

from data_pipeline import annotations as annotation_readers
from data_pipeline import tfrecord_io
from data_pipeline.augmentation import resize_and_pad_example
from data_pipeline.targets import encode_targets
from data_pipeline.tfrecord_writer import serialize_record
from kdc_tf.config import EncoderConfig
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.geometry import Geometry, inference_scale


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


@dataclasses.dataclass(frozen=True)
class EncodedGroundTruth:
  """One decoded example at the test geometry, with the encoder's targets of it."""

  # The deterministic inference transform of the example (ARCHITECTURE.md 2).
  augmented: Dict[str, tf.Tensor]
  # The target encoder's output on `augmented` (ARCHITECTURE.md 3).
  targets: Dict[str, tf.Tensor]
  # (H, W) of the original image, where results are reported.
  image_size: tf.Tensor
  # Input pixels per original pixel (`kdc_tf.geometry.inference_scale`).
  input_scale: tf.Tensor


def encode_at_test_scale(example: dict, geometry: Geometry,
                         encoder_config: EncoderConfig = EncoderConfig()) -> EncodedGroundTruth:
  """A decoded example resized and padded to `geometry.input_size` and encoded into targets."""
  image_size = tf.shape(example["image"])[:2]
  augmented = resize_and_pad_example(example, geometry.input_size)
  return EncodedGroundTruth(
      augmented=augmented, targets=encode_targets(augmented, geometry, encoder_config),
      image_size=image_size,
      input_scale=inference_scale(image_size[0], image_size[1], geometry.input_size))
