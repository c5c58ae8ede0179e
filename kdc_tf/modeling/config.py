"""`ModelConfig`: what `build_kdc_model` needs to rebuild the network from a model_dir alone."""

from __future__ import annotations

import dataclasses
from typing import Optional

from kdc_tf.geometry import OFFSET_SCALE

# Bottleneck blocks per stage and the first stage's bottleneck width (keras.applications ResNet v1;
# 'tiny' is a narrow one-block-per-stage variant for tests and smoke runs, 'small' a narrow
# two-blocks-per-stage one for the CPU quick start).
TRUNK_DEPTHS = {
    "tiny": ((1, 1, 1, 1), 8),
    "small": ((2, 2, 2, 2), 16),
    "50": ((3, 4, 6, 3), 64),
    "101": ((3, 4, 23, 3), 64),
    "152": ((3, 8, 36, 3), 64),
}

TRUNK_STRIDES = (8, 16)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Trunk and heads of the KDC network (ARCHITECTURE.md section 4).

  Its keypoint layout, input size and output stride are the experiment's `Geometry`, passed to
  `build_kdc_model` beside this config.
  """

  depth: str = "101"
  # Offsets are predicted in units of `offset_scale` input pixels and returned in input pixels;
  # `kdc_tf.geometry.OFFSET_SCALE`, independent of the disk radius (model_dirs written before this
  # field existed used the disk radius: `ExperimentConfig.from_dict` restores that).
  offset_scale: float = OFFSET_SCALE
  # Local keras.applications ImageNet weights (.h5, 'notop' or full); None = random init.
  weights: Optional[str] = None
  # The trunk's batch norm in inference mode (moving statistics, frozen scale/offset). None
  # means True with ImageNet `weights` (PersonLab/DeepLab at the paper's batch of 4: a batch's
  # statistics are too noisy to replace ImageNet's) and False from random initialisation (there
  # are no statistics to keep); the trainer saves it resolved, so a resumed run keeps it.
  freeze_batch_norm: Optional[bool] = None
  # Head widths: the shared 1x1 reduction of the stride-8 features, PoseNet's 3x3 conv, the
  # decoder's 1x1 projection of the stride-4 features and its 3x3 fusion conv.
  neck_width: int = 256
  pose_head_width: int = 256
  low_level_width: int = 48
  decoder_width: int = 128
  # PoseNet's and the decoder's 3x3 convs depthwise-separable (as DeepLabv3+'s decoder): on a
  # stride-4 pose grid those two convs are over half of the quick start's FLOPs.
  separable_heads: bool = False
  # The trunk's output stride (8 or 16); None = the pose grid's (`Geometry.output_stride`), or 8
  # for a stride-4 pose grid. A coarser trunk than the pose grid is upsampled by SegNet's decoder,
  # on whose stride-4 features PoseNet then runs.
  trunk_stride: Optional[int] = None

  def __post_init__(self):
    object.__setattr__(self, "depth", str(self.depth))
    if self.depth not in TRUNK_DEPTHS:
      raise ValueError(f"depth must be one of {sorted(TRUNK_DEPTHS)}, got {self.depth!r}")
    if self.offset_scale <= 0:
      raise ValueError(f"offset_scale must be positive, got {self.offset_scale}")
    if self.trunk_stride is not None and self.trunk_stride not in TRUNK_STRIDES:
      raise ValueError(f"trunk_stride must be None or one of {TRUNK_STRIDES}, "
                       f"got {self.trunk_stride}")
    for name in ("neck_width", "pose_head_width", "low_level_width", "decoder_width"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

  def with_batch_norm_resolved(self) -> "ModelConfig":
    """`freeze_batch_norm` None -> frozen with ImageNet weights, trained from random init."""
    if self.freeze_batch_norm is not None:
      return self
    return dataclasses.replace(self, freeze_batch_norm=self.weights is not None)
