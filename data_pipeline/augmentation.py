"""Geometric augmentation and the deterministic resize: decoded example -> augmented example.

Contracts: ARCHITECTURE.md sections 1 (input) and 2 (output). Everything here is core TF ops so that it
runs inside tf.data and inside an exported SavedModel graph (no tensorflow-addons, no py_function).

Pixel convention: pixel index i sits at coordinate i (as in ImageProjectiveTransform and in the
corner-aligned output grids). One 3x3 affine matrix `A` per example maps original pixels to input
pixels; images, masks and keypoints all go through the same `A`, so they stay registered exactly:
  * image: bilinear, zero fill, float32 [S, S, 3];
  * instance masks and crowd mask: nearest, sampled directly on the stride-4 mask grid (grid point
    (r, c) samples the source point A^-1 (4c, 4r)), never at full resolution; packed masks
    (`mask_planes`, `tfrecord_io.decode_example(packed_masks=True)`) are sampled, then unpacked;
  * keypoints: (x, y) mapped by `A` exactly; a flip (det A < 0) permutes the types with
    DatasetSpec.flip_permutation; a keypoint outside [0, S - 1] becomes (0, 0, 0).

The deterministic resize (oracle, evaluation) is `resize_and_pad_example`, built on
`kdc_tf.geometry`, which owns the inference scale and the warps shared with serving.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import tensorflow as tf

from data_pipeline import tfrecord_io
from kdc_tf import geometry
from kdc_tf.config import AugmentConfig
from kdc_tf.datasets import DatasetSpec
from kdc_tf.geometry import inference_scale, warp_image, warp_masks

# Keys of the decoded example that pass through augmentation unchanged.
_PASSTHROUGH_KEYS = ("image_id", "person_ids", "has_masks")


def transform_keypoints(keypoints: tf.Tensor, matrix: tf.Tensor, input_size: int,
                        flip_permutation: Optional[Sequence[int]] = None) -> tf.Tensor:
  """Keypoints [P, K, 3] (x, y, v) in original pixels -> the same in input pixels.

  Unlabelled keypoints and those landing outside [0, S - 1]^2 become (0, 0, 0). When the linear part
  of `matrix` has a negative determinant (a flip), types are permuted with `flip_permutation`;
  passing None there while flipping is an error.
  """
  matrix = tf.cast(matrix, tf.float32)
  keypoints = tf.cast(keypoints, tf.float32)
  xy = keypoints[..., :2]
  visibility = keypoints[..., 2]
  # Elementwise: an einsum of this size cost more than the arithmetic (oneDNN's set-up).
  moved = xy[..., :1] * matrix[:2, 0] + xy[..., 1:] * matrix[:2, 1] + matrix[:2, 2]
  limit = tf.constant(input_size - 1, tf.float32)
  inside = tf.reduce_all((moved >= 0.0) & (moved <= limit), axis=-1)
  keep = (visibility > 0) & inside
  result = tf.concat([moved, visibility[..., tf.newaxis]], axis=-1)
  result = tf.where(keep[..., tf.newaxis], result, tf.zeros_like(result))

  flipped = tf.linalg.det(matrix[:2, :2]) < 0
  if flip_permutation is None:
    tf.debugging.assert_equal(flipped, False,
                              message="a flipping matrix needs DatasetSpec.flip_permutation")
    return result
  permuted = tf.gather(result, tf.constant(flip_permutation, tf.int32), axis=1)
  return tf.where(flipped, permuted, result)


def warp_example(example: dict, matrix: tf.Tensor, input_size: int,
                 flip_permutation: Optional[Sequence[int]] = None) -> dict:
  """Decoded example (ARCHITECTURE.md 1) -> augmented example (section 2) under the affine `matrix`."""
  augmented = {key: example[key] for key in _PASSTHROUGH_KEYS if key in example}
  augmented["image"] = warp_image(example["image"], matrix, input_size)
  augmented["keypoints"] = transform_keypoints(
      example["keypoints"], matrix, input_size, flip_permutation)
  if "mask_planes" in example:  # Sampled packed, then unpacked on the grid: the same masks.
    augmented["instance_masks"], augmented["crowd_mask"] = tfrecord_io.unpack_mask_planes(
        warp_masks(example["mask_planes"], matrix, input_size),
        tf.shape(example["keypoints"])[0])
  else:
    augmented["instance_masks"] = warp_masks(example["instance_masks"], matrix, input_size)
    augmented["crowd_mask"] = warp_masks(example["crowd_mask"][tf.newaxis], matrix,
                                         input_size)[0]
  return augmented


def resize_and_pad_example(example: dict, input_size: int) -> dict:
  """Decoded example -> augmented example (ARCHITECTURE.md 2) by the deterministic inference resize.

  The image goes through exactly `geometry.resize_and_pad_image`, the transform serving uses.
  """
  shape = tf.shape(example["image"])
  matrix = geometry.inference_matrix(shape[0], shape[1], input_size)
  return warp_example(example, matrix, input_size)


def _random_shift(extent_lo: tf.Tensor, extent_hi: tf.Tensor, interest_lo: tf.Tensor,
                  interest_hi: tf.Tensor, limit: float, uniform: tf.Tensor) -> tf.Tensor:
  """Per axis, a uniformly drawn translation placing the area of interest in the window [0, limit].

  Allowed translations keep the area of interest inside the window (or the window inside it when it
  is larger) and, among those, as much image as possible in view (the image inside the window, or
  the window inside the image). The two intervals meet whenever the area lies within the image.
  """
  image_a, image_b = -extent_lo, limit - extent_hi
  interest_a, interest_b = -interest_lo, limit - interest_hi
  low = tf.maximum(tf.minimum(image_a, image_b), tf.minimum(interest_a, interest_b))
  high = tf.minimum(tf.maximum(image_a, image_b), tf.maximum(interest_a, interest_b))
  # Keypoints labelled outside the image can make them miss: then the people win.
  empty = low > high
  low = tf.where(empty, tf.minimum(interest_a, interest_b), low)
  high = tf.where(empty, tf.maximum(interest_a, interest_b), high)
  return low + uniform * (high - low)


def random_affine(height, width, keypoints: tf.Tensor, input_size: int, config: AugmentConfig,
                  seed: tf.Tensor) -> tf.Tensor:
  """A random 3x3 affine from original to input pixels, from a stateless seed (shape [2]).

  Linear part: scale (uniform in [min_scale, max_scale] times `inference_scale`) @ rotation (uniform
  in +-max_rotation_degrees) @ horizontal flip (probability flip_probability). Translation: the area
  of interest, the bounding box of the labelled keypoints (the whole image when none), lands in the
  S x S window at a uniformly random position, keeping as much image as possible (see _random_shift).
  With scale 1, rotation 0 and no flip on an S x S image this is exactly the identity.
  """
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
  relative_scale = tf.random.stateless_uniform(
      [], seeds[0], minval=config.min_scale, maxval=config.max_scale)
  max_angle = config.max_rotation_degrees * math.pi / 180.0
  angle = tf.random.stateless_uniform([], seeds[1], minval=-max_angle, maxval=max_angle)
  flip = tf.random.stateless_uniform([], seeds[2]) < config.flip_probability
  uniform_shift = tf.random.stateless_uniform([2], seeds[3])

  scale = relative_scale * inference_scale(height, width, input_size)
  cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
  flip_sign = tf.where(flip, -1.0, 1.0)
  linear = tf.stack([tf.stack([cos * flip_sign, -sin]), tf.stack([sin * flip_sign, cos])])

  w1 = tf.cast(width, tf.float32) - 1.0
  h1 = tf.cast(height, tf.float32) - 1.0
  corners = tf.stack([[0.0, 0.0], tf.stack([w1, 0.0]), tf.stack([0.0, h1]), tf.stack([w1, h1])])
  moved_corners = corners @ tf.transpose(linear)
  extent_lo = tf.reduce_min(moved_corners, axis=0)
  extent_hi = tf.reduce_max(moved_corners, axis=0)

  keypoints = tf.reshape(tf.cast(keypoints, tf.float32), [-1, 3])
  labelled = keypoints[:, 2] > 0
  moved_points = tf.boolean_mask(keypoints[:, :2], labelled) @ tf.transpose(linear)
  has_points = tf.reduce_any(labelled)
  interest_lo = tf.where(has_points, tf.reduce_min(moved_points, axis=0), extent_lo)
  interest_hi = tf.where(has_points, tf.reduce_max(moved_points, axis=0), extent_hi)

  shift = _random_shift(extent_lo, extent_hi, interest_lo, interest_hi,
                        float(input_size - 1), uniform_shift)
  top = tf.concat([linear, shift[:, tf.newaxis]], axis=1)
  return tf.concat([top, tf.constant([[0.0, 0.0, 1.0]])], axis=0)


def augment(example: dict, config: AugmentConfig, input_size: int, spec: DatasetSpec,
            seed: tf.Tensor) -> dict:
  """Decoded example -> randomly augmented example (ARCHITECTURE.md 2), deterministic in `seed`."""
  shape = tf.shape(example["image"])
  matrix = random_affine(shape[0], shape[1], example["keypoints"], input_size, config, seed)
  return warp_example(example, matrix, input_size, spec.flip_permutation)
