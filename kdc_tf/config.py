"""Configuration dataclasses shared by the data pipeline, the model, the losses and grouping.

Defaults are the paper's setup and the choices of ../shared/DESIGN.md. The experiments' absl
flags fill these in; library code takes them as arguments and never reads flags.
"""

from __future__ import annotations

import dataclasses

from kdc_tf.datasets import DatasetSpec, get_dataset_spec
from kdc_tf.geometry import MASK_STRIDE, OUTPUT_STRIDES, grid_size

CENTROID_MODES = ("dynamic", "static")
# Offsets' unit, in input pixels, independent of the disk radius R: the offset heads predict
# offsets / OFFSET_SCALE and the offset L1 losses divide by it, so that changing R (the paper's
# 8/16/32 ablation) changes the disks alone, not the heads' output scale or the losses' weights.
# 32 = the paper's R, so models trained at R = 32 are unchanged.
OFFSET_SCALE = 32.0


def check_centroid_mode(centroid_mode: str) -> None:
  """Raises for a MaskCentroid mode other than dynamic (DM_c) or static (SM_c)."""
  if centroid_mode not in CENTROID_MODES:
    raise ValueError(f"centroid_mode must be one of {CENTROID_MODES}, got {centroid_mode!r}")


class GridGeometry:
  """Validation and grids of a config with `dataset`, `input_size`, `output_stride`, `disk_radius`.

  Shared by the encoder's and the model's configuration, which must agree on these fields.
  """

  dataset: str
  input_size: int
  output_stride: int
  disk_radius: float

  def _check_geometry(self) -> None:
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}")
    if self.disk_radius <= 0:
      raise ValueError(f"disk_radius must be positive, got {self.disk_radius}")
    grid_size(self.input_size, self.output_stride)
    grid_size(self.input_size, MASK_STRIDE)
    get_dataset_spec(self.dataset)

  @property
  def spec(self) -> DatasetSpec:
    return get_dataset_spec(self.dataset)

  @property
  def pose_grid_size(self) -> int:
    return grid_size(self.input_size, self.output_stride)

  @property
  def mask_grid_size(self) -> int:
    return grid_size(self.input_size, MASK_STRIDE)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(GridGeometry):
  """Geometry of the training targets (DESIGN.md 'Conventions settled here')."""

  dataset: str = "coco"
  input_size: int = 401
  output_stride: int = 8
  disk_radius: float = 32.0
  centroid_mode: str = "dynamic"
  # People kept per image after augmentation (segment ids of the membership loss).
  max_people: int = 64

  def __post_init__(self):
    self._check_geometry()
    check_centroid_mode(self.centroid_mode)

  @property
  def mask_stride(self) -> int:
    return MASK_STRIDE


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Random scale, rotation, flip and crop/pad to the square input (the paper's augmentation)."""

  min_scale: float = 0.7
  max_scale: float = 1.3
  max_rotation_degrees: float = 30.0
  flip_probability: float = 0.5


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss weights (DESIGN.md: PersonLab-lineage defaults) and the membership sigma scale."""

  heatmap: float = 4.0
  segmentation: float = 2.0
  keycentroid: float = 1.0
  midrange: float = 0.25
  mask_offset: float = 0.125
  membership: float = 1.0
  # sigma_j = sigma_igo * sqrt(area_j) in the dynamic membership loss (eq. 7).
  sigma_igo: float = 0.5


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
  """Decoder settings (DESIGN.md 'Decoding')."""

  max_people: int = 30
  # Local maxima per keypoint type considered as seeds.
  peaks_per_type: int = 30
  peak_threshold: float = 0.01
  nms_radius: float = 10.0
  # Keypoints above this score define a person's mask centroid (DM_c).
  centroid_keypoint_threshold: float = 0.05
  seg_threshold: float = 0.5
  membership_threshold: float = 0.5
  # IGO smoothing of each instance's probability map, in mask-grid cells; sigma_j scale is the
  # training membership scale (LossConfig.sigma_igo) so that train and test agree.
  igo_sigma: float = 0.5
  sigma_igo: float = 0.5
  centroid_mode: str = "dynamic"
  # Rejoin people split by a missing keypoint through their mask embeddings (kdc_tf.grouping.merging).
  merge_fragments: bool = True
  # Foreground that no keypoint person claims, clustered by its MaskCentroid embeddings, becomes
  # people with masks and no keypoints (kdc_tf.grouping.mask_only): people without labelled
  # keypoints still get masks.
  mask_only_people: bool = True
