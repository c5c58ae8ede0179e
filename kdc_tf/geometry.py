"""The one home of KDC's geometry: grids, strides, the inference resize and the membership sigma.

Every module that places a grid point, resizes an image to the square input or spreads a person's
membership imports it from here, so that training (encoder, losses) and serving (model heads,
decoder, `Predictor`) cannot drift apart (ARCHITECTURE.md, notation).

Conventions: pixel index i sits at coordinate i. Grids are corner-aligned: point `(r, c)` of a
stride-s grid sits at input pixel `(x, y) = (s * c, s * r)`, so an input of size S has
`(S - 1) / s + 1` points per side. The mask grid has stride `MASK_STRIDE`; the pose grid has the
output stride (one of `OUTPUT_STRIDES`, each a multiple of `MASK_STRIDE`): the trunk's, or at 4
the mask grid itself (`kdc_tf.modeling`).

The deterministic resize of evaluation and serving fits the long side corner to corner:
`inference_scale = (S - 1) / (max(H, W) - 1)`, original pixel x lands on input pixel x * scale, and
the short side is padded with zeros at the bottom/right.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from kdc_tf.datasets import DatasetSpec, get_dataset_spec

MASK_STRIDE = 4
OUTPUT_STRIDES = (4, 8, 16)
# Offsets' unit, in input pixels, independent of the disk radius R: the offset heads predict
# offsets / OFFSET_SCALE and the offset L1 losses divide by it, so that changing R (the paper's
# 8/16/32 ablation) changes the disks alone, not the heads' output scale or the losses' weights.
# 32 = the paper's R, so models trained at R = 32 are unchanged.
OFFSET_SCALE = 32.0


def grid_size(input_size: int, stride: int) -> int:
  """Points per side of the corner-aligned grid: point i sits at input pixel stride * i."""
  if (input_size - 1) % stride:
    raise ValueError(
        f"input size {input_size} does not fit a corner-aligned stride-{stride} grid: "
        f"(size - 1) must be a multiple of {stride}, e.g. "
        f"{stride * ((input_size - 1) // stride) + 1}")
  return (input_size - 1) // stride + 1


def mask_grid_size(input_size: int) -> int:
  """Points per side of the mask grid of an `input_size` input."""
  return grid_size(input_size, MASK_STRIDE)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Keypoint layout, square input size, pose-grid stride and keypoint disk radius of a model.

  One value, held by the experiment configuration and passed to the model builder, the target
  encoder, the grouper and the predictor, so that they cannot disagree (DESIGN.md 'Conventions').
  """

  dataset: str = "coco"
  input_size: int = 401
  output_stride: int = 8
  disk_radius: float = 32.0
  # The square input at test time when it is not `input_size`: a model trained on crops (inputs
  # smaller than the scaled images, `AugmentConfig.min_scale` > 1) sees whole images at this size.
  # None: `input_size`. Used where a model is restored without a test scale (`restore_model`).
  test_input_size: Optional[int] = None

  def __post_init__(self):
    get_dataset_spec(self.dataset)
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}")
    if self.disk_radius <= 0:
      raise ValueError(f"disk_radius must be positive, got {self.disk_radius}")
    for size in (self.input_size, self.test_input_size):
      if size is not None:
        grid_size(size, self.output_stride)
        mask_grid_size(size)

  @property
  def spec(self) -> DatasetSpec:
    return get_dataset_spec(self.dataset)

  @property
  def pose_grid_size(self) -> int:
    return grid_size(self.input_size, self.output_stride)

  @property
  def mask_grid_size(self) -> int:
    return mask_grid_size(self.input_size)

  @property
  def mask_stride(self) -> int:
    return MASK_STRIDE

  def with_input_size(self, input_size: int) -> "Geometry":
    """The same geometry at another (test) scale: the network is fully convolutional."""
    return dataclasses.replace(self, input_size=input_size, test_input_size=None)


def grid_points(height: int, width: int, stride: int) -> tf.Tensor:
  """float32 `[H, W, 2]`: the input-pixel `(x, y)` of every grid point, `(stride*c, stride*r)`."""
  ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                       indexing="ij")
  return tf.stack([xs, ys], axis=-1) * float(stride)


def square_grid_points(size: int, stride: int) -> tf.Tensor:
  """float32 `[size, size, 2]`: `grid_points` of a square grid."""
  return grid_points(size, size, stride)


def membership_variance(sigma: float, mask_points: tf.Tensor,
                        mask_stride: int = MASK_STRIDE) -> tf.Tensor:
  """sigma_j^2 = (sigma * sqrt(area_j))^2, area_j = mask-grid points * mask_stride^2 input pixels^2.

  The spread of a person's MaskCentroid membership (DESIGN.md eq. 6-7), shared by the training
  loss and the decoder so that train and test agree. `mask_points` counts j's mask-grid points.
  """
  return tf.square(sigma) * mask_points * float(mask_stride * mask_stride)


def inference_scale(height, width, input_size: int) -> tf.Tensor:
  """Input pixels per original pixel when the long side is fitted to the input (corner-aligned).

  scale = (S - 1) / (max(H, W) - 1): pixel 0 -> 0 and pixel max(H, W) - 1 -> S - 1. A 1-pixel image
  (max side 1) uses a denominator of 1.
  """
  long_side = tf.maximum(tf.cast(height, tf.float32), tf.cast(width, tf.float32))
  return tf.constant(input_size - 1, tf.float32) / tf.maximum(long_side - 1.0, 1.0)


def scale_matrix(scale: tf.Tensor) -> tf.Tensor:
  """The 3x3 affine of a uniform scale about the origin."""
  zero, one = tf.zeros([], tf.float32), tf.ones([], tf.float32)
  return tf.stack([tf.stack([scale, zero, zero]),
                   tf.stack([zero, scale, zero]),
                   tf.stack([zero, zero, one])])


def inference_matrix(height, width, input_size: int) -> tf.Tensor:
  """The 3x3 affine of `resize_and_pad_image`: a uniform scale by `inference_scale`."""
  return scale_matrix(inference_scale(height, width, input_size))


def projective_transform(images: tf.Tensor, matrix: tf.Tensor, output_size: int,
                         interpolation: str) -> tf.Tensor:
  """Samples images [B, H, W, C] at matrix^-1 (x, y) of each output pixel; zero fill outside.

  `matrix` maps source pixels to output pixels (so the op gets its inverse, output -> source).
  """
  inverse = tf.linalg.inv(tf.cast(matrix, tf.float32))
  inverse = inverse / inverse[2, 2]
  transforms = tf.reshape(inverse, [9])[:8][tf.newaxis]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.constant([output_size, output_size]),
      fill_value=tf.constant(0.0), interpolation=interpolation, fill_mode="CONSTANT")


def warp_image(image: tf.Tensor, matrix: tf.Tensor, input_size: int) -> tf.Tensor:
  """Image [H, W, 3] (uint8 or float) -> float32 [S, S, 3], bilinear, zero outside the source."""
  image = tf.cast(image, tf.float32)[tf.newaxis]
  return projective_transform(image, matrix, input_size, "BILINEAR")[0]


def warp_masks(masks: tf.Tensor, matrix: tf.Tensor, input_size: int) -> tf.Tensor:
  """Masks [N, H, W] uint8 -> [N, M, M] uint8 sampled (nearest) on the mask grid.

  Mask-grid point (r, c) samples the source point matrix^-1 (MASK_STRIDE c, MASK_STRIDE r).
  """
  to_grid = scale_matrix(tf.constant(1.0 / MASK_STRIDE, tf.float32))
  warped = projective_transform(masks[..., tf.newaxis], to_grid @ tf.cast(matrix, tf.float32),
                                mask_grid_size(input_size), "NEAREST")
  return warped[..., 0]


def resize_and_pad_image(image: tf.Tensor, input_size: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Image [H, W, 3] -> (float32 [S, S, 3], scale): long side fitted to S, zero pad bottom/right.

  Works with dynamic H, W (e.g. a tf.function with input_signature [None, None, 3]). Original pixel
  x maps to input pixel x * scale.
  """
  shape = tf.shape(image)
  matrix = inference_matrix(shape[0], shape[1], input_size)
  return warp_image(image, matrix, input_size), matrix[0, 0]
