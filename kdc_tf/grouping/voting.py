"""Hough voting of keypoint disks into per-type score maps, then PGO (DESIGN.md 'Decoding' 1).

Every pose-grid point p votes its heatmap probability h_k(p) at p + KeyCentroid_k(p), spread over
the 4 bilinear corners of that point on the same grid. Normalisation: the votes are divided by
pi * (R / stride)^2, the number of grid points a disk of radius R holds on average, so that a
perfect disk (probability 1 everywhere inside, offsets exact) puts a total mass of about 1 at its
keypoint. The PGO-smoothed score maps only find candidates: read at a perfect keypoint they give
0.15 - 0.65 depending on where it lies in its cell (docs/grouping.md). A keypoint's score is the
vote mass within a cell of it (`window_mass`) relative to a perfect disk's at that position
(`disk_mass`), clipped to 1: about 1 for a perfect keypoint wherever it lies (deviation from
DESIGN.md 'Decoding' 3, docs/occlusion.md). Votes landing more than half a cell outside the grid
are dropped, not piled on the border.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kdc_tf.geometry import grid_points
from kdc_tf.grouping import distances, gaussian, sampling


def vote_normaliser(disk_radius: float, stride: int) -> float:
  """pi * (R / stride)^2: the grid points of one disk, i.e. the mass of a perfect disk's votes."""
  return math.pi * (disk_radius / stride) ** 2


def window_mass(votes: tf.Tensor) -> tf.Tensor:
  """`[G, G, K]`: the vote mass in the 3 x 3 cells around every grid point.

  Read bilinearly at a keypoint, it is the whole mass of votes splatted within a cell of it: each
  of the 4 grid points around the keypoint has all 4 of them in its window. So a perfect disk
  reads its full mass (about 1) wherever its keypoint lies in the cell, where the score map itself
  reads 0.25 - 1 (module docstring).
  """
  return gaussian.smooth(votes, np.ones([3, 1], np.float32))


def disk_grid_points(points: tf.Tensor, disk_radius: float, stride: int) -> tf.Tensor:
  """float32 `[..., T, 2]`: the grid points (input pixels) of the square of cells around each point
  `[..., 2]` that holds its disk of radius R (on an unbounded grid)."""
  reach = math.ceil(disk_radius / stride) + 1
  steps = tf.range(-reach, reach + 1, dtype=tf.float32)
  dy, dx = tf.meshgrid(steps, steps, indexing="ij")
  offsets = tf.stack([tf.reshape(dx, [-1]), tf.reshape(dy, [-1])], axis=-1) * float(stride)
  return tf.floor(points / float(stride))[..., None, :] * float(stride) + offsets


def disk_mass(points: tf.Tensor, disk_radius: float, stride: int) -> tf.Tensor:
  """float32 `[...]`: the vote mass of a perfect disk around each point `[..., 2]` (input pixels),
  i.e. its grid points within R (on an unbounded grid) / `vote_normaliser`: 0.9 - 1.05 for R = 32,
  stride 8, depending on where the point lies in its cell."""
  near = disk_grid_points(points, disk_radius, stride) - points[..., None, :]
  inside = tf.cast(distances.squared_norm(near) <= disk_radius * disk_radius,
                   tf.float32)
  return tf.reduce_sum(inside, axis=-1) / vote_normaliser(disk_radius, stride)


def hough_score_maps(heatmap: tf.Tensor, keycentroid: tf.Tensor, stride: int,
                     disk_radius: float) -> tf.Tensor:
  """Votes of every grid point for its keypoint: float32 `[G, G, K]` score maps.

  Args:
    heatmap: `[G, G, K]` disk probabilities.
    keycentroid: `[G, G, 2K]` offsets `q_k - p` in input pixels.
    stride: pose-grid stride.
    disk_radius: R in input pixels.
  """
  height, width, num_types = heatmap.shape
  offsets = tf.reshape(keycentroid, [height, width, num_types, 2])
  targets = grid_points(height, width, stride)[:, :, None, :] + offsets  # [G, G, K, 2]
  cells = targets / float(stride)
  inside = tf.reduce_all(
      (cells >= -0.5) & (cells <= tf.constant([width - 0.5, height - 0.5])), axis=-1)
  mass = heatmap * tf.cast(inside, tf.float32) / vote_normaliser(disk_radius, stride)
  types = tf.broadcast_to(tf.range(num_types), [height, width, num_types])
  return sampling.splat(mass, targets, types, float(stride), (height, width, num_types))
