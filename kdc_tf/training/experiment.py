"""`ExperimentConfig`: everything a training run needs, saved as JSON in its model_dir.

Evaluation and export rebuild the model from this file alone (`kdc_tf.training.restore_model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from kdc_tf.config import AugmentConfig, EncoderConfig, GroupingConfig, LossConfig
from kdc_tf.io_utils import atomic_write_text
from kdc_tf.modeling.config import ModelConfig

CONFIG_FILENAME = "experiment_config.json"
STRATEGIES = ("mirrored", "multi_worker", "one_device")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and bookkeeping of the loop (paper: Adam, lr 1e-5, batch 4, 400 epochs)."""

  train_pattern: str = ""
  # Global batch size, split evenly over the replicas.
  batch_size: int = 4
  learning_rate: float = 1e-5
  epochs: int = 400
  steps_per_epoch: int = 1
  checkpoint_every: int = 1000
  max_checkpoints: int = 5
  summary_every: int = 100
  image_summary_every: int = 1000
  log_every: int = 10
  strategy: str = "mirrored"
  mixed_precision: bool = False
  seed: Optional[int] = None

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    for name in ("batch_size", "epochs", "steps_per_epoch", "checkpoint_every", "max_checkpoints",
                 "summary_every", "image_summary_every", "log_every"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Model, targets, augmentation, losses and training; model and encoder geometry must agree."""

  model: ModelConfig = ModelConfig()
  encoder: EncoderConfig = EncoderConfig()
  augment: AugmentConfig = AugmentConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    for name in ("dataset", "input_size", "output_stride", "disk_radius"):
      model_value, encoder_value = getattr(self.model, name), getattr(self.encoder, name)
      if model_value != encoder_value:
        raise ValueError(f"model and encoder disagree on {name}: {model_value!r} vs "
                         f"{encoder_value!r}")

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def decoding_config(self, base: Optional[GroupingConfig] = None) -> GroupingConfig:
    """`base` (default `GroupingConfig()`) with the settings that must match this training.

    The decoder's MaskCentroid mode and its membership scale sigma_igo are those the model was
    trained with (DESIGN.md: train and test agree). A model trained on a dataset without masks
    (CrowdPose) has an untrained SegNet, so the decoder steps that read its embeddings (fragment
    merging, mask-only people) are switched off. Everything else is the caller's choice.
    """
    decoding = dataclasses.replace(base or GroupingConfig(), sigma_igo=self.loss.sigma_igo,
                                   centroid_mode=self.encoder.centroid_mode)
    if not self.encoder.spec.has_masks:
      decoding = dataclasses.replace(decoding, merge_fragments=False, mask_only_people=False)
    return decoding

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "ExperimentConfig":
    sections = {"model": ModelConfig, "encoder": EncoderConfig, "augment": AugmentConfig,
                "loss": LossConfig, "train": TrainConfig}
    unknown = set(values) - set(sections)
    if unknown:
      raise ValueError(f"unknown experiment config sections {sorted(unknown)}")
    model = values.get("model", {})
    if "offset_scale" not in model:
      # Written before the offset scale was decoupled from R: its heads scale by the disk radius.
      radius = model.get("disk_radius", ModelConfig.disk_radius)
      logging.info("experiment config without model.offset_scale: offsets in disk radii (%g px), "
                   "as the model was trained.", radius)
      values = {**values, "model": {**model, "offset_scale": radius}}
    return cls(**{name: section(**values.get(name, {})) for name, section in sections.items()})


def save_config(config: ExperimentConfig, model_dir: str) -> str:
  """Writes `model_dir/experiment_config.json` (atomically on local disks); returns its path."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, CONFIG_FILENAME)
  text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
  if "://" in model_dir:  # Remote file systems: tf.io.gfile, whose rename is not atomic anyway.
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
  else:
    atomic_write_text(path, text)
  return path


def load_config(model_dir: str) -> ExperimentConfig:
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"no {CONFIG_FILENAME} in {model_dir}: not a kdc-tf model_dir")
  with tf.io.gfile.GFile(path) as f:
    try:
      values = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e}); truncated?") from None
  return ExperimentConfig.from_dict(values)
