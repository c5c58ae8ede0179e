"""The tf.data input pipeline: TFRecords -> decode -> augment -> encode targets -> batches.

Yields `(image, targets)`: image float32 [B, S, S, 3] (RGB in [0, 255]) and the target dict of
ARCHITECTURE.md section 3, batched. Training shuffles (files and records), repeats, and augments each
example with stateless random ops seeded by (seed, element index), so a given seed with
`deterministic=True` reproduces the same batches; evaluation (training=False) keeps the file order
and applies the deterministic `resize_and_pad_example`.
"""

from __future__ import annotations

import random
from typing import Dict, Optional, Tuple

import tensorflow as tf
from absl import logging

from data_pipeline import augmentation
from data_pipeline import tfrecord_io
from data_pipeline.targets import encode_targets
from kdc_tf.config import AugmentConfig, EncoderConfig
from kdc_tf.geometry import Geometry

_MAX_PARALLEL_READS = 4


def _make_example_fn(geometry: Geometry, encoder_config: EncoderConfig,
                     augment_config: Optional[AugmentConfig], base_seed: int):
  """The per-record map function: (index, serialized) -> (image, targets)."""
  spec = geometry.spec
  size = geometry.input_size

  def example_fn(index: tf.Tensor, serialized: tf.Tensor
                 ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    example = tfrecord_io.decode_example(serialized, spec.num_keypoints, packed_masks=True)
    if augment_config is None:
      augmented = augmentation.resize_and_pad_example(example, size)
    else:
      seed = tf.stack([tf.constant(base_seed, tf.int64), index])
      augmented = augmentation.augment(example, augment_config, size, spec, seed)
    return augmented["image"], encode_targets(augmented, geometry, encoder_config)

  return example_fn


def build_dataset(file_pattern: str, geometry: Geometry, encoder_config: EncoderConfig,
                  augment_config: AugmentConfig, batch_size: int, training: bool,
                  seed: Optional[int] = None, deterministic: bool = False,
                  shuffle_buffer: int = 256,
                  skip_corrupt_records: bool = False) -> tf.data.Dataset:
  """A batched dataset of (image [B, S, S, 3], targets) from TFRecords (tfrecord_io format).

  Args:
    file_pattern: glob (or comma-separated globs) of TFRecord files.
    geometry: input size, grids and disk radius; its dataset fixes the keypoint count.
    encoder_config: the target choices beyond the geometry.
    augment_config: random augmentation for training (unused when training is false).
    batch_size: examples per batch; training drops the last partial batch (static batch size).
    training: shuffle, repeat forever and augment; else one pass in file order,
      resize_and_pad_example.
    seed: base seed of the shuffles and of the per-example augmentation; None draws one.
    deterministic: reproducible order and content for a given seed (tf.data deterministic mode);
      False lets parallel stages emit out of order, which is faster.
    shuffle_buffer: records in the shuffle buffer (training).
    skip_corrupt_records: read every shard first (`tfrecord_io.check_shards`), log what the
      corrupt ones lose, and train on the readable records; by default a corrupt record is a
      DataLossError (which `tfrecord_io.check_shards` can attribute to its shard).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if training and deterministic and seed is None:
    raise ValueError("deterministic training input needs a seed")
  if seed is None:
    seed = random.SystemRandom().randrange(2 ** 31)
    logging.info("input pipeline seed: %d", seed)
  files = tfrecord_io.list_tfrecord_files(file_pattern)
  order_matters = deterministic or not training

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  reader = tf.data.TFRecordDataset
  if skip_corrupt_records:
    checks = tfrecord_io.check_shards(files)
    corrupt = tfrecord_io.corrupt_shards_message(checks)
    if corrupt:
      logging.warning("--skip_corrupt_records: %d of %d shards are corrupt; training on the "
                      "%d readable records:\n%s", corrupt.count("\n") + 1, len(files),
                      sum(c.records for c in checks), corrupt)
    reader = lambda path: tf.data.TFRecordDataset(path).ignore_errors()  # noqa: E731
  dataset = dataset.interleave(
      reader, cycle_length=min(len(files), _MAX_PARALLEL_READS),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=order_matters)
  if training:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.repeat()
  dataset = dataset.enumerate()
  example_fn = _make_example_fn(geometry, encoder_config, augment_config if training else None,
                                seed)
  dataset = dataset.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=order_matters)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)

  options = tf.data.Options()
  options.deterministic = order_matters
  return dataset.with_options(options)
