r"""Throughput of the training input pipeline and of the target encoder alone, in images/second.

  python -m experiments.bench_pipeline [--input_size=401 --batch_size=4 --num_batches=50]

Full pipeline: read + decode + augment + encode targets + batch + prefetch (build_dataset with
training=True). Encoder alone: the same examples decoded and augmented once into a cache, then only
encode_targets + batch, with the same tf.data parallelism. The last line printed is exactly
`pipeline_images_per_sec=<float>`. Timings on a shared machine are noisy: repeat before comparing.
"""

from __future__ import annotations

import os
import time
from typing import List

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from data_pipeline import augmentation
from data_pipeline import synthetic
from data_pipeline import tfrecord_io
from data_pipeline.input_pipeline import build_dataset
from data_pipeline.targets import encode_targets
from experiments import common_flags
from kdc_tf.config import AugmentConfig, EncoderConfig
from kdc_tf.geometry import Geometry

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  common_flags.define_dataset_flag()
  common_flags.define_geometry_flags(output_stride=True)
  flags.DEFINE_integer("batch_size", 4, "Images per batch.", lower_bound=1)
  flags.DEFINE_integer("num_batches", 50, "Timed batches per measurement.", lower_bound=1)
  flags.DEFINE_integer("warmup", 5, "Untimed batches first (tracing, buffers).", lower_bound=0)
  flags.DEFINE_string("file_pattern", None,
                      "TFRecords to read; default: the embedded synthetic training set.")
  flags.DEFINE_integer("seed", 0, "Input pipeline seed.")


def _images_per_second(dataset: tf.data.Dataset, batch_size: int, warmup: int,
                       num_batches: int) -> float:
  iterator = iter(dataset)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * batch_size / (time.perf_counter() - start)


def _encoder_only_dataset(file_pattern: str, geometry: Geometry,
                          augment_config: AugmentConfig, batch_size: int,
                          num_examples: int) -> tf.data.Dataset:
  """Decoded and augmented examples cached in memory, then only encode_targets + batch."""
  spec = geometry.spec
  files = tfrecord_io.list_tfrecord_files(file_pattern)

  def decode_and_augment(index, serialized):
    example = tfrecord_io.decode_example(serialized, spec.num_keypoints)
    seed = tf.stack([tf.constant(FLAGS.seed, tf.int64), index])
    return augmentation.augment(example, augment_config, geometry.input_size, spec, seed)

  cached = (tf.data.TFRecordDataset(files).repeat().enumerate().take(num_examples)
            .map(decode_and_augment, num_parallel_calls=tf.data.AUTOTUNE).cache())
  for _ in cached:  # fill the cache before timing
    pass
  return (cached.repeat()
          .map(lambda a: (a["image"], encode_targets(a, geometry)),
               num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def main(argv: List[str]) -> None:
  del argv
  geometry = Geometry(dataset=FLAGS.dataset, input_size=FLAGS.input_size,
                      output_stride=int(FLAGS.output_stride))
  augment_config = AugmentConfig()
  file_pattern = FLAGS.file_pattern or synthetic.ensure_embedded_dataset()["train"]
  logging.info("benchmarking on %s", file_pattern)

  pipeline = build_dataset(file_pattern, geometry, EncoderConfig(), augment_config,
                           FLAGS.batch_size, training=True, seed=FLAGS.seed)
  pipeline_rate = _images_per_second(pipeline, FLAGS.batch_size, FLAGS.warmup, FLAGS.num_batches)

  encoder_only = _encoder_only_dataset(file_pattern, geometry, augment_config,
                                       FLAGS.batch_size, num_examples=64)
  encoder_rate = _images_per_second(encoder_only, FLAGS.batch_size, FLAGS.warmup,
                                    FLAGS.num_batches)

  print(f"input {FLAGS.input_size}x{FLAGS.input_size}, batch {FLAGS.batch_size}, "
        f"{FLAGS.num_batches} timed batches, {os.cpu_count()} CPUs (shared: timings are noisy)")
  print(f"target encoder alone: {encoder_rate:.1f} images/s")
  print(f"full pipeline (read+decode+augment+encode+batch+prefetch): {pipeline_rate:.1f} images/s")
  print(f"pipeline_images_per_sec={pipeline_rate:.2f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
