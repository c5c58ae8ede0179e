"""Bilinear reads and splats on the corner-aligned grids of ARCHITECTURE.md, coordinates clipped.

A grid of stride `s` has point `(r, c)` at input pixel `(s * c, s * r)`. Every function here takes
points in input pixels and clips them to the grid first: an offset pointing outside the image reads
(or writes) the border instead of crashing the CPU gather.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf


def bilinear_corners(points: tf.Tensor, stride: float, height: int,
                     width: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """The 4 grid corners around each point and their bilinear weights.

  Args:
    points: float32 `[..., 2]` `(x, y)` in input pixels.
    stride: input pixels per grid cell.
    height, width: grid size (both >= 2).

  Returns:
    `(cells, weights)`: int32 `[..., 4]` flat cell indices `r * width + c` (top-left, top-right,
    bottom-left, bottom-right) and float32 `[..., 4]` weights summing to 1.
  """
  gx = tf.clip_by_value(points[..., 0] / stride, 0.0, width - 1.0)
  gy = tf.clip_by_value(points[..., 1] / stride, 0.0, height - 1.0)
  # The last cell starts at size - 2, so that the right/bottom corner always exists.
  x0 = tf.minimum(tf.floor(gx), width - 2.0)
  y0 = tf.minimum(tf.floor(gy), height - 2.0)
  fx = gx - x0
  fy = gy - y0
  top_left = tf.cast(y0, tf.int32) * width + tf.cast(x0, tf.int32)
  cells = tf.stack([top_left, top_left + 1, top_left + width, top_left + width + 1], axis=-1)
  weights = tf.stack([(1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx], axis=-1)
  return cells, weights


def sample_groups(values: tf.Tensor, points: tf.Tensor, groups: tf.Tensor, depth: int,
                  stride: float) -> tf.Tensor:
  """Bilinearly reads one channel group per point: a single batched gather of 4 corners.

  Args:
    values: float32 `[H, W, G * depth]`, `G` groups of `depth` channels (KeyCentroid: `G = K`,
      `depth = 2`; mid-range: `G = E`, `depth = 2`; score maps: `G = K`, `depth = 1`).
    points: float32 `[..., 2]` `(x, y)` in input pixels (clipped to the grid).
    groups: int32 `[...]` the group read at each point.
    depth: channels per group.
    stride: input pixels per grid cell.

  Returns:
    float32 `[..., depth]`.
  """
  height, width, channels = values.shape
  num_groups = channels // depth
  table = tf.reshape(values, [height * width * num_groups, depth])
  cells, weights = bilinear_corners(points, stride, height, width)
  corners = tf.gather(table, cells * num_groups + groups[..., None])  # [..., 4, depth]
  return tf.reduce_sum(corners * weights[..., None], axis=-2)


def sample_owned_targets(offsets: tf.Tensor, owners: tf.Tensor, points: tf.Tensor,
                         groups: tf.Tensor, owner_groups: tf.Tensor, stride: float,
                         tolerance: tf.Tensor | float) -> tf.Tensor:
  """Where the offsets of the grid corners around each point lead, counting only the corners
  that belong to the keypoint at the point: float32 `[..., 2]` input pixels.

  A corner c (grid point p_c) belongs to it when its own KeyCentroid vote `p_c + owners(p_c)` (of
  type `owner_groups`) lands within about `tolerance` of the point (Gaussian weight); each corner
  contributes its absolute target `p_c + offsets(p_c)` (channel group `groups`) with its bilinear
  weight times that. Where two people's disks of the point's type overlap, a plain bilinear read
  mixes the other person's offsets in; with no corner agreeing it is the plain bilinear read.

  Args:
    offsets: float32 `[H, W, 2G]`; owners: float32 `[H, W, 2K]` KeyCentroid offsets.
    points: float32 `[..., 2]`; groups, owner_groups: int32 `[...]`.
    stride: input pixels per grid cell.
    tolerance: input pixels (> 0).
  """
  height, width, channels = offsets.shape
  cells, weights = bilinear_corners(points, stride, height, width)
  corner_points = tf.cast(tf.stack([cells % width, cells // width], axis=-1), tf.float32) * stride
  num_groups, num_owner_groups = channels // 2, owners.shape[-1] // 2
  targets = corner_points + tf.gather(tf.reshape(offsets, [height * width * num_groups, 2]),
                                      cells * num_groups + groups[..., None])
  votes = corner_points + tf.gather(tf.reshape(owners, [height * width * num_owner_groups, 2]),
                                    cells * num_owner_groups + owner_groups[..., None])
  distance = tf.reduce_sum(tf.square(votes - points[..., None, :]), axis=-1)
  agree = weights * tf.exp(-0.5 * distance / tf.square(tolerance))
  total = tf.reduce_sum(agree, axis=-1, keepdims=True)
  use = tf.where(total > 1e-3, agree / tf.maximum(total, 1e-12), weights)
  return tf.reduce_sum(targets * use[..., None], axis=-2)


def sample_nearest(values: tf.Tensor, points: tf.Tensor, stride: float) -> tf.Tensor:
  """Reads every channel of `values` `[H, W, C]` at the grid point nearest to each point
  (`[..., 2]` input pixels, clipped to the grid): float32 `[..., C]`.

  Unlike a bilinear read, it never mixes values across a boundary (of a mask, or between the
  MaskCentroid offsets of two people).
  """
  height, width, _ = values.shape
  column = tf.cast(tf.clip_by_value(tf.round(points[..., 0] / stride), 0.0, width - 1.0), tf.int32)
  row = tf.cast(tf.clip_by_value(tf.round(points[..., 1] / stride), 0.0, height - 1.0), tf.int32)
  return tf.gather_nd(values, tf.stack([row, column], axis=-1))


def splat(values: tf.Tensor, points: tf.Tensor, groups: tf.Tensor, stride: float,
          grid_shape: Tuple[int, int, int]) -> tf.Tensor:
  """Adds each value at its point into a `[H, W, G]` map, spread over the 4 bilinear corners.

  Args:
    values: float32 `[...]` the mass of each vote.
    points: float32 `[..., 2]` `(x, y)` in input pixels.
    groups: int32 `[...]` the channel each vote goes to.
    stride: input pixels per grid cell.
    grid_shape: static `(H, W, G)`.

  Returns:
    float32 `[H, W, G]`. Votes whose point lies outside the grid are dropped, not clipped onto
    its border, where they would pile up into spurious peaks.
  """
  height, width, num_groups = grid_shape
  cells, weights = bilinear_corners(points, stride, height, width)
  grid = points / stride
  inside = ((grid[..., 0] >= 0.0) & (grid[..., 0] <= width - 1.0)
            & (grid[..., 1] >= 0.0) & (grid[..., 1] <= height - 1.0))
  slots = tf.reshape(cells * num_groups + groups[..., None], [-1])
  mass = tf.reshape(tf.where(inside, values, 0.0)[..., None] * weights, [-1])
  # DenseBincount with a static size: fast both in XLA and in TF's CPU kernels (unsorted_segment_sum
  # is ~10x slower there). Not tf.math.bincount: its output size depends on max(slots) even with
  # minlength = maxlength, so XLA needed the slots (hence the head outputs) as compile-time
  # constants and recompiled for every new image (1.2 - 4.7 s each at 401).
  summed = tf.raw_ops.DenseBincount(input=slots, size=height * width * num_groups, weights=mass,
                                    binary_output=False)
  return tf.reshape(summed, grid_shape)
