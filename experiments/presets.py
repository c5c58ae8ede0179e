"""Base experiment configurations shared by binaries (a library, not a binary).

`quickstart_config`: the quick start's tiny-trunk run on the embedded synthetic data
(`experiments.quickstart`, and the default base of `experiments.ablate`).
"""

from __future__ import annotations

from kdc_tf.config import ExperimentConfig, TrainConfig
from kdc_tf.geometry import Geometry
from kdc_tf.modeling.config import ModelConfig

# Small enough to train in minutes on two CPU cores, large enough for the synthetic people.
QUICKSTART_INPUT_SIZE = 193
QUICKSTART_DISK_RADIUS = 16.0


def quickstart_config(train_pattern: str, steps: int, learning_rate: float,
                      seed: int) -> ExperimentConfig:
  """A tiny-trunk experiment on the synthetic data."""
  return ExperimentConfig(
      geometry=Geometry(dataset="coco", input_size=QUICKSTART_INPUT_SIZE, output_stride=8,
                        disk_radius=QUICKSTART_DISK_RADIUS),
      model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=train_pattern, batch_size=8, learning_rate=learning_rate,
                        epochs=1, steps_per_epoch=steps, checkpoint_every=max(steps // 4, 1),
                        summary_every=25, image_summary_every=max(steps // 4, 1), log_every=25,
                        strategy="one_device", seed=seed))
