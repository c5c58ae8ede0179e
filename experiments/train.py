"""Trains the KDC network: `python -m experiments.train --model_dir=runs/kdc [flags]`.

Defaults are the paper's: ResNet-101, 401 x 401 input, batch 4, Adam at 1e-5, 400 epochs, scale /
flip / rotation augmentation; without --train_pattern it trains on the embedded synthetic dataset
(generated on first use). Rerunning with the same --model_dir resumes from its latest checkpoint
(model, optimizer and step). Multi-worker training reads the cluster from TF_CONFIG.
"""

from __future__ import annotations

import sys
from typing import List

import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic, tfrecord_io
from data_pipeline.input_pipeline import build_dataset
from kdc_tf.config import CENTROID_MODES, AugmentConfig, EncoderConfig, LossConfig
from kdc_tf.modeling.config import TRUNK_DEPTHS, ModelConfig
from kdc_tf.training import (ExperimentConfig, NonFiniteLossError, TrainConfig, Trainer,
                             create_strategy)
from kdc_tf.training.experiment import STRATEGIES

FLAGS = flags.FLAGS
_LOSS_FLAGS = {"heatmap": "heatmap_weight", "segmentation": "seg_weight",
               "keycentroid": "keycentroid_weight", "midrange": "midrange_weight",
               "mask_offset": "mask_offset_weight", "membership": "membership_weight"}


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  model, train, loss, augment = ModelConfig(), TrainConfig(), LossConfig(), AugmentConfig()
  encoder = EncoderConfig()
  fv = {"flag_values": flag_values}
  flags.DEFINE_string("train_pattern", "", "TFRecord glob(s) of the training set; empty: the "
                      "embedded synthetic set.", **fv)
  flags.DEFINE_string("model_dir", "runs/kdc", "Checkpoints, TensorBoard logs and the config.",
                      **fv)
  flags.DEFINE_enum("dataset", encoder.dataset, ["coco", "crowdpose", "ochuman"],
                    "Keypoint layout of the training set.", **fv)
  flags.DEFINE_enum("depth", model.depth, sorted(TRUNK_DEPTHS), "ResNet trunk depth.", **fv)
  flags.DEFINE_string("weights", None, "Local keras.applications ResNet ImageNet weights (.h5); "
                      "none: random initialisation. Never downloaded.", **fv)
  flags.DEFINE_bool("freeze_batch_norm", model.freeze_batch_norm,
                    "Batch norm in inference mode (fine-tuning pretrained weights).", **fv)
  flags.DEFINE_enum("output_stride", str(model.output_stride), ["8", "16"],
                    "Trunk output stride.", **fv)
  flags.DEFINE_integer("input_size", model.input_size, "Square input size ((S - 1) % 8 == 0).",
                       **fv)
  flags.DEFINE_float("disk_radius", model.disk_radius, "Keypoint disk radius R in input pixels.",
                     **fv)
  flags.DEFINE_enum("centroid", encoder.centroid_mode, list(CENTROID_MODES),
                    "MaskCentroid: dynamic (DM_c, keypoint mean) or static (SM_c, mask mean).",
                    **fv)
  flags.DEFINE_integer("max_people", encoder.max_people, "People kept per training image.", **fv)
  flags.DEFINE_integer("batch_size", train.batch_size, "Global batch size.", lower_bound=1, **fv)
  flags.DEFINE_float("learning_rate", train.learning_rate, "Adam learning rate.", **fv)
  flags.DEFINE_integer("epochs", train.epochs, "Training epochs.", lower_bound=1, **fv)
  flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0: training records // batch "
                       "size (counted once).", lower_bound=0, **fv)
  flags.DEFINE_integer("checkpoint_every", train.checkpoint_every, "Steps between checkpoints.",
                       lower_bound=1, **fv)
  flags.DEFINE_integer("max_checkpoints", train.max_checkpoints, "Checkpoints kept.",
                       lower_bound=1, **fv)
  flags.DEFINE_integer("summary_every", train.summary_every, "Steps between loss summaries.",
                       lower_bound=1, **fv)
  flags.DEFINE_integer("image_summary_every", train.image_summary_every,
                       "Steps between image summaries.", lower_bound=1, **fv)
  flags.DEFINE_integer("log_every", train.log_every, "Steps between progress lines.",
                       lower_bound=1, **fv)
  flags.DEFINE_enum("strategy", train.strategy, list(STRATEGIES), "mirrored: local GPUs (else "
                    "CPUs); multi_worker: TF_CONFIG; one_device.", **fv)
  flags.DEFINE_bool("mixed_precision", train.mixed_precision,
                    "mixed_float16 compute with dynamic loss scaling.", **fv)
  flags.DEFINE_bool("skip_corrupt_records", False, "Train on the readable records of corrupt "
                    "TFRecord shards (each shard is checked first; what is dropped is logged); "
                    "by default a corrupt shard stops training with its name.", **fv)
  flags.DEFINE_integer("seed", None, "Seed of initialisation and input pipeline (reproducible "
                       "input order when set).", **fv)
  for field, name in _LOSS_FLAGS.items():
    flags.DEFINE_float(name, getattr(loss, field), f"Weight of the {field} loss.", **fv)
  flags.DEFINE_float("sigma_igo", loss.sigma_igo, "Membership sigma_j = sigma_igo * "
                     "sqrt(area_j).", **fv)
  flags.DEFINE_float("min_scale", augment.min_scale, "Augmentation: smallest random scale.", **fv)
  flags.DEFINE_float("max_scale", augment.max_scale, "Augmentation: largest random scale.", **fv)
  flags.DEFINE_float("max_rotation_degrees", augment.max_rotation_degrees,
                     "Augmentation: largest random rotation.", **fv)
  flags.DEFINE_float("flip_probability", augment.flip_probability,
                     "Augmentation: horizontal flip probability.", **fv)


def _train_pattern() -> str:
  if FLAGS.train_pattern:
    return FLAGS.train_pattern
  pattern = synthetic.ensure_embedded_dataset()["train"]
  logging.info("No --train_pattern: training on the embedded synthetic dataset %s", pattern)
  return pattern


def _steps_per_epoch(pattern: str) -> int:
  if FLAGS.steps_per_epoch:
    return FLAGS.steps_per_epoch
  files = tfrecord_io.list_tfrecord_files(pattern)
  checks = tfrecord_io.check_shards(files)
  corrupt = tfrecord_io.corrupt_shards_message(checks)
  if corrupt and not FLAGS.skip_corrupt_records:
    logging.error("Corrupt TFRecord shards (rerun with --skip_corrupt_records to train on their "
                  "readable records):\n%s", corrupt)
    sys.exit(1)
  records = sum(check.records for check in checks)
  steps = max(1, records // FLAGS.batch_size)
  logging.info("%d training records: %d steps per epoch (set --steps_per_epoch to skip counting)",
               records, steps)
  return steps


def experiment_config_from_flags(train_pattern: str, steps_per_epoch: int) -> ExperimentConfig:
  geometry = dict(dataset=FLAGS.dataset, input_size=FLAGS.input_size,
                  output_stride=int(FLAGS.output_stride), disk_radius=FLAGS.disk_radius)
  return ExperimentConfig(
      model=ModelConfig(depth=FLAGS.depth, weights=FLAGS.weights,
                        freeze_batch_norm=FLAGS.freeze_batch_norm, **geometry),
      encoder=EncoderConfig(centroid_mode=FLAGS.centroid, max_people=FLAGS.max_people,
                            **geometry),
      augment=AugmentConfig(min_scale=FLAGS.min_scale, max_scale=FLAGS.max_scale,
                            max_rotation_degrees=FLAGS.max_rotation_degrees,
                            flip_probability=FLAGS.flip_probability),
      loss=LossConfig(sigma_igo=FLAGS.sigma_igo,
                      **{field: getattr(FLAGS, name) for field, name in _LOSS_FLAGS.items()}),
      train=TrainConfig(
          train_pattern=train_pattern, batch_size=FLAGS.batch_size,
          learning_rate=FLAGS.learning_rate, epochs=FLAGS.epochs, steps_per_epoch=steps_per_epoch,
          checkpoint_every=FLAGS.checkpoint_every, max_checkpoints=FLAGS.max_checkpoints,
          summary_every=FLAGS.summary_every, image_summary_every=FLAGS.image_summary_every,
          log_every=FLAGS.log_every, strategy=FLAGS.strategy,
          mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed))


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
  strategy = create_strategy(FLAGS.strategy)
  pattern = _train_pattern()
  config = experiment_config_from_flags(pattern, _steps_per_epoch(pattern))
  trainer = Trainer(config, FLAGS.model_dir, strategy)
  dataset = build_dataset(pattern, config.encoder, config.augment, config.train.batch_size,
                          training=True, seed=config.train.seed,
                          deterministic=config.train.seed is not None,
                          skip_corrupt_records=FLAGS.skip_corrupt_records)
  try:
    losses = trainer.run(dataset)
  except NonFiniteLossError as error:
    logging.error("%s", error)
    sys.exit(1)
  except tf.errors.DataLossError as error:
    corrupt = tfrecord_io.corrupt_shards_message(
        tfrecord_io.check_shards(tfrecord_io.list_tfrecord_files(pattern)))
    logging.error("A corrupt TFRecord record stopped training (%s). Corrupt shards:\n%s\n"
                  "Rerun with --skip_corrupt_records to train on their readable records.",
                  error.message.split("[Op:")[0].strip(), corrupt or "(none found on rereading)")
    sys.exit(1)
  logging.info("Finished at step %d: %s", int(losses.pop("step")),
               " ".join(f"{k} {v:.4f}" for k, v in losses.items()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
