"""Checkpoints of (model, optimizer, step) in a model_dir, and rebuilding a model from one.

Outside `training/` because evaluation, export and serving restore models without the trainer.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

import keras
import tensorflow as tf

from kdc_tf.config import ExperimentConfig, load_config
from kdc_tf.modeling import build_kdc_model


def make_checkpoint(model: keras.Model, optimizer: Optional[keras.optimizers.Optimizer] = None,
                    step: Optional[tf.Variable] = None) -> tf.train.Checkpoint:
  """The checkpoint layout of training: model, optimizer and step (the last two optional)."""
  objects = {"model": model}
  if optimizer is not None:
    objects["optimizer"] = optimizer
  if step is not None:
    objects["step"] = step
  return tf.train.Checkpoint(**objects)


def resolve_checkpoint(model_dir_or_checkpoint: str) -> Tuple[str, str]:
  """(model_dir, checkpoint prefix) for a model_dir (its latest checkpoint) or a prefix."""
  path = model_dir_or_checkpoint
  if tf.io.gfile.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise FileNotFoundError(f"no checkpoint in {path}")
    return path, prefix
  if not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"{path} is neither a model_dir nor a checkpoint prefix "
                            "(e.g. model_dir/ckpt-1000)")
  return os.path.dirname(path), path


def restore_model(model_dir_or_checkpoint: str,
                  input_size: Optional[int] = None) -> Tuple[keras.Model, ExperimentConfig]:
  """Rebuilds the trained KDC model from a model_dir (latest checkpoint) or a checkpoint prefix.

  The architecture comes from the model_dir's experiment_config.json; ImageNet weights are not
  reloaded (the checkpoint holds every weight). `input_size` rebuilds the fully convolutional
  model for another test scale ((size - 1) divisible by the output stride and by 4); without it,
  the model's `geometry.test_input_size` when set (a model trained on crops), else its training
  size. The returned config carries the size built. The model follows the current global Keras
  dtype policy.
  """
  model_dir, prefix = resolve_checkpoint(model_dir_or_checkpoint)
  config = load_config(model_dir)
  if input_size is None:
    input_size = config.geometry.test_input_size
  if input_size is not None:
    config = config.with_input_size(input_size)
  model = build_kdc_model(dataclasses.replace(config.model, weights=None), config.geometry)
  make_checkpoint(model).restore(prefix).expect_partial().assert_existing_objects_matched()
  return model, config
