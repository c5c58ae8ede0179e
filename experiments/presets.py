"""Base experiment configurations shared by binaries (a library, not a binary).

`quickstart_config`: the quick start's small-trunk run on the embedded synthetic data
(`experiments.quickstart`, and the default base of `experiments.ablate`); `whole_image_finish`:
its last steps, on whole images at the test scale. How each of its choices
was measured against the alternatives: docs/learning.md, 'The quick-start recipe'.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from kdc_tf.config import AugmentConfig, ExperimentConfig, LossConfig, TrainConfig
from kdc_tf.geometry import Geometry
from kdc_tf.modeling.config import ModelConfig

# Resolution beats grid fineness and steps at a fixed cost: 257 x 257 with a stride-16 trunk and
# PoseNet on SegNet's stride-4 decoder cost what 193 x 193 with a stride-8 trunk did and learned
# much more (docs/learning.md, 'Resolution for the same compute'); 289 x 289 for 3600 steps beats
# 257 for 4400 (docs/learning.md, 'Arms, a leaner step and 289 x 289'). Training on 193 x 193
# crops of the images at the 289 scale (relative scale 288 / 192 = 1.5) keeps that resolution for
# 0.6x the step: 5400 crop steps beat 3600 whole-image ones in the same time (docs/learning.md,
# 'Training on crops'); the model is tested on whole images. The last
# QUICKSTART_FINISH_STEPS train on whole images at 289 (`whole_image_finish`): crops cut most
# people, and the MaskCentroid offsets learn whole people there (docs/learning.md, 'Where the masks
# are lost'). The model is tested at 321, a little above the 289 it trained at: both APs rise
# (docs/learning.md, 'Masks ranked by their assignment margin; the test scale').
QUICKSTART_INPUT_SIZE = 193
QUICKSTART_IMAGE_SIZE = 289
QUICKSTART_TEST_INPUT_SIZE = 321
QUICKSTART_OUTPUT_STRIDE = 4
QUICKSTART_DISK_RADIUS = 16.0
# Batch 4 for twice the steps of batch 8 on the same images: a CPU step costs about the same per
# image, and the extra updates learn more (docs/learning.md, 'bfloat16 and batch 4'). 5200 crop
# steps and 600 whole-image ones (a whole-image step costs about 1.8x a crop step in the loop) take
# about 6 - 7 minutes on 2 cores with native bfloat16 (docs/learning.md, 'A fused optimizer and a
# cheaper input pipeline').
QUICKSTART_BATCH_SIZE = 4
QUICKSTART_STEPS = 5800
QUICKSTART_FINISH_STEPS = 600
QUICKSTART_LEARNING_RATE = 3e-3
# The 'small' trunk with light heads: the default heads' widths bound the step time without
# helping the AP. Separable 3x3 head convs: a step 0.79x as long for the same AP.
QUICKSTART_MODEL = ModelConfig(depth="small", trunk_stride=16, neck_width=128, pose_head_width=64,
                               low_level_width=32, decoder_width=64, separable_heads=True)
# The weights' moving average (about the last 200 steps) replaces the last weights of a constant
# learning rate.
QUICKSTART_EMA_MOMENTUM = 0.995
# Crops at the test scale and flips only: the embedded data's people already vary in size and pose,
# and scale/rotation augmentation slows learning within the quick start's budget.
_CROP_SCALE = (QUICKSTART_IMAGE_SIZE - 1) / (QUICKSTART_INPUT_SIZE - 1)
QUICKSTART_AUGMENT = AugmentConfig(min_scale=_CROP_SCALE, max_scale=_CROP_SCALE,
                                   max_rotation_degrees=0.0)
# Offset losses weighted _OFFSET_FACTOR x DESIGN.md's: KeyCentroid limits this model's AP most.
# The membership loss at a quarter of its weight: at full weight it takes the shared decoder
# features from the offsets (weights 1 / 0.5 / 0.25 / 0 measured in docs/learning.md).
_OFFSET_FACTOR = 4.0
QUICKSTART_LOSS = LossConfig(keycentroid=_OFFSET_FACTOR * LossConfig.keycentroid,
                             midrange=_OFFSET_FACTOR * LossConfig.midrange,
                             mask_offset=_OFFSET_FACTOR * LossConfig.mask_offset,
                             membership=0.25 * LossConfig.membership)


def quickstart_config(train_pattern: str, steps: int = QUICKSTART_STEPS,
                      learning_rate: float = QUICKSTART_LEARNING_RATE,
                      seed: int = 0, precision: str = "float32") -> ExperimentConfig:
  """A small-trunk experiment on the synthetic data; `precision` a `TrainConfig.precision`."""
  return ExperimentConfig(
      geometry=Geometry(dataset="coco", input_size=QUICKSTART_INPUT_SIZE,
                        output_stride=QUICKSTART_OUTPUT_STRIDE,
                        disk_radius=QUICKSTART_DISK_RADIUS,
                        test_input_size=QUICKSTART_TEST_INPUT_SIZE),
      model=QUICKSTART_MODEL,
      augment=QUICKSTART_AUGMENT,
      loss=QUICKSTART_LOSS,
      train=TrainConfig(train_pattern=train_pattern, batch_size=QUICKSTART_BATCH_SIZE,
                        learning_rate=learning_rate,
                        epochs=1, steps_per_epoch=steps, checkpoint_every=max(steps // 4, 1),
                        summary_every=25, image_summary_every=max(steps // 4, 1), log_every=25,
                        strategy="one_device", seed=seed, precision=precision,
                        ema_momentum=QUICKSTART_EMA_MOMENTUM))


def whole_image_finish(config: ExperimentConfig, steps: int,
                       input_size: Optional[int] = None) -> ExperimentConfig:
  """`config`, a run on crops, going on for `steps` more steps on whole images (scale 1, flips)
  at `input_size` (default: its test scale; another size keeps the test scale): the `Trainer`
  resumes its checkpoints there (`_check_model_dir`)."""
  geometry = config.geometry
  if geometry.test_input_size is None:
    raise ValueError("whole_image_finish needs a run on crops (geometry.test_input_size set)")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  if input_size is None or input_size == geometry.test_input_size:
    geometry = geometry.with_input_size(geometry.test_input_size)
  else:
    geometry = dataclasses.replace(geometry, input_size=input_size)
  train = config.train
  return dataclasses.replace(
      config, geometry=geometry,
      augment=dataclasses.replace(config.augment, min_scale=1.0, max_scale=1.0),
      train=dataclasses.replace(train, epochs=1, steps_per_epoch=train.total_steps + steps))
