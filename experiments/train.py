"""Trains the KDC network: `python -m experiments.train --model_dir=runs/kdc [flags]`.

Defaults are the paper's (`kdc_tf.config.ExperimentConfig()`): ResNet-101, 401 x 401 input, batch
4, Adam at 1e-5, 400 epochs, scale / flip / rotation augmentation. Any field changes with
--config=FILE.json or --override=section.field=value (e.g. --override=model.depth=50
--override=train.batch_size=8); the geometry has its own flags (--dataset, --input_size,
--output_stride, --disk_radius). Without --train_pattern it trains on the embedded synthetic
dataset (generated on first use); without train.steps_per_epoch it counts the training records
once. Rerunning with the same --model_dir resumes from its latest checkpoint (model, optimizer and
step). Multi-worker training reads the cluster from TF_CONFIG.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import List

import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic, tfrecord_io
from data_pipeline.input_pipeline import build_dataset
from experiments import common_flags
from kdc_tf.config import ExperimentConfig, TrainConfig
from kdc_tf.training import NonFiniteLossError, Trainer, create_strategy

FLAGS = flags.FLAGS
# What training starts from before --config and --override: the paper's setup, with the steps per
# epoch counted from the training set.
BASE_CONFIG = ExperimentConfig(train=TrainConfig(steps_per_epoch=0))


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("train_pattern", "", "TFRecord glob(s) of the training set (sets "
                      "train.train_pattern); empty: the embedded synthetic set.",
                      flag_values=flag_values)
  flags.DEFINE_string("model_dir", "runs/kdc", "Checkpoints, TensorBoard logs and the config.",
                      flag_values=flag_values)
  common_flags.define_dataset_flag(flag_values=flag_values)
  common_flags.define_geometry_flags(output_stride=True, disk_radius=True,
                                     flag_values=flag_values)
  common_flags.define_config_flags(flag_values=flag_values)
  flags.DEFINE_bool("skip_corrupt_records", False, "Train on the readable records of corrupt "
                    "TFRecord shards (each shard is checked first; what is dropped is logged); "
                    "by default a corrupt shard stops training with its name.",
                    flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ExperimentConfig:
  """`BASE_CONFIG` with --config, the geometry flags, --override and --train_pattern applied."""
  config = common_flags.experiment_config_from_flags(BASE_CONFIG, flag_values)
  if flag_values["train_pattern"].value:
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, train_pattern=flag_values["train_pattern"].value))
  return config


def _with_train_pattern(config: ExperimentConfig) -> ExperimentConfig:
  if config.train.train_pattern:
    return config
  pattern = synthetic.ensure_embedded_dataset()["train"]
  logging.info("No --train_pattern: training on the embedded synthetic dataset %s", pattern)
  return dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                               train_pattern=pattern))


def _with_steps_per_epoch(config: ExperimentConfig) -> ExperimentConfig:
  if config.train.steps_per_epoch:
    return config
  files = tfrecord_io.list_tfrecord_files(config.train.train_pattern)
  checks = tfrecord_io.check_shards(files)
  corrupt = tfrecord_io.corrupt_shards_message(checks)
  if corrupt and not FLAGS.skip_corrupt_records:
    logging.error("Corrupt TFRecord shards (rerun with --skip_corrupt_records to train on their "
                  "readable records):\n%s", corrupt)
    sys.exit(1)
  records = sum(check.records for check in checks)
  steps = max(1, records // config.train.batch_size)
  logging.info("%d training records: %d steps per epoch (set train.steps_per_epoch to skip "
               "counting)", records, steps)
  return dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                               steps_per_epoch=steps))


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    config = config_from_flags()
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  # Next: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
  strategy = create_strategy(config.train.strategy)
  config = _with_steps_per_epoch(_with_train_pattern(config))
  trainer = Trainer(config, FLAGS.model_dir, strategy)
  dataset = build_dataset(config.train.train_pattern, config.geometry, config.encoder,
                          config.augment, config.train.batch_size, training=True,
                          seed=trainer.input_seed(), deterministic=config.train.seed is not None,
                          skip_corrupt_records=FLAGS.skip_corrupt_records)
  try:
    losses = trainer.run(dataset)
  except NonFiniteLossError as error:
    logging.error("%s", error)
    sys.exit(1)
  except tf.errors.DataLossError as error:
    corrupt = tfrecord_io.corrupt_shards_message(tfrecord_io.check_shards(
        tfrecord_io.list_tfrecord_files(config.train.train_pattern)))
    logging.error("A corrupt TFRecord record stopped training (%s). Corrupt shards:\n%s\n"
                  "Rerun with --skip_corrupt_records to train on their readable records.",
                  error.message.split("[Op:")[0].strip(), corrupt or "(none found on rereading)")
    sys.exit(1)
  logging.info("Finished at step %d: %s", int(losses.pop("step")),
               " ".join(f"{k} {v:.4f}" for k, v in losses.items()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
