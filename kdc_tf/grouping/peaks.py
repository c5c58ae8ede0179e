"""Keypoint candidates: local maxima of the score maps (DESIGN.md 'Decoding' 2), and the keypoints
the KeyCentroid votes land on (`voted_keypoints`).

Deviation from DESIGN.md: where two people's keypoints of a type lie within about two cells of
each other, the PGO-smoothed score maps hold one peak for both, and a keypoint whose skeleton
neighbours are all hidden is then reached by no walk. `voted_keypoints` finds every keypoint
whose own grid cell votes for it; `claiming` gives them to people by identity (docs/occlusion.md).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from kdc_tf.geometry import grid_points


class Candidates(NamedTuple):
  """`C = K * per_type` candidates, type-major; invalid slots have score 0."""

  cells: tf.Tensor  # int32 [C] flat pose-grid cell r * W + c
  types: tf.Tensor  # int32 [C]
  scores: tf.Tensor  # float32 [C]
  valid: tf.Tensor  # bool [C]


def window_max(maps: tf.Tensor, window: int) -> tf.Tensor:
  """The maximum of each `window` x `window` neighbourhood of `[H, W, C]` maps (odd `window`),
  as `tf.nn.max_pool2d` with "SAME" padding computes it, separably: the maximum of `window`
  shifted copies along each axis, which XLA fuses with the maps' producer (docs/grouping.md,
  'Speed, session 11')."""
  radius = window // 2
  for axis in (0, 1):
    padding = [[0, 0]] * 3
    padding[axis] = [radius, radius]
    padded = tf.pad(maps, padding, constant_values=float("-inf"))
    begin = [0, 0, 0]
    pooled = None
    for offset in range(window):
      begin[axis] = offset
      shifted = tf.slice(padded, begin, maps.shape)
      pooled = shifted if pooled is None else tf.maximum(pooled, shifted)
    maps = pooled
  return maps


def find_candidates(score_maps: tf.Tensor, threshold: float, per_type: int,
                    window: int = 3, separable: bool = False) -> Candidates:
  """Local maxima (`window` x `window` max-pool equality) above `threshold`, the best `per_type`
  of each type.

  Args:
    score_maps: float32 `[H, W, K]`.
    threshold: a peak must score strictly above it.
    per_type: candidates kept per type (capped at H * W).
    window: odd side of the neighbourhood a peak is the maximum of, in cells.
    separable: take the window maximum as `window_max` rather than `tf.nn.max_pool2d` (same
      values): faster for the mask-only density's 7 x 7 window (0.09 ms at 401); slower for the
      PGO-smoothed score maps' 3 x 3, whose smoothing XLA then recomputes in each shifted copy
      (+0.26 ms).
  """
  height, width, num_types = score_maps.shape
  per_type = min(per_type, height * width)
  if separable:
    pooled = window_max(score_maps, window)
  else:
    pooled = tf.nn.max_pool2d(score_maps[None], window, 1, "SAME")[0]
  is_peak = (score_maps >= pooled) & (score_maps > threshold)
  peak_scores = tf.where(is_peak, score_maps, 0.0)
  by_type = tf.transpose(tf.reshape(peak_scores, [height * width, num_types]))  # [K, H*W]
  scores, cells = tf.math.top_k(by_type, k=per_type, sorted=False)
  types = tf.broadcast_to(tf.range(num_types)[:, None], [num_types, per_type])
  scores = tf.reshape(scores, [-1])
  return Candidates(cells=tf.reshape(cells, [-1]), types=tf.reshape(types, [-1]), scores=scores,
                    valid=scores > threshold)


class VotedKeypoints(NamedTuple):
  """Per type, the points that grid points vote for from their own cell; invalid slots score 0."""

  points: tf.Tensor  # float32 [K, M, 2] input pixels
  mass: tf.Tensor  # float32 [K, M] the vote mass of the grid point's 3 x 3 window


def voted_keypoints(heatmap: tf.Tensor, keycentroid: tf.Tensor, window_mass: tf.Tensor,
                    stride: int, per_type: int, threshold: float = 0.5) -> VotedKeypoints:
  """Per type, the KeyCentroid votes `p + KeyCentroid_k(p)` of the grid points p (heatmap above
  `threshold`) whose vote lands within half a stride of p along both axes: on perfect maps each
  labelled keypoint once (from the grid point nearest to it, which the encoder gives to its person;
  twice when it lies exactly half-way between grid points), however close another person's
  keypoint of that type is. The `per_type` with the most vote mass.

  Args:
    heatmap: `[G, G, K]`; keycentroid: `[G, G, 2K]` offsets in input pixels.
    window_mass: `[G, G, K]` `voting.window_mass` of the votes: the ranking.
    stride: pose-grid stride.
    per_type: points kept per type (capped at G * G).
    threshold: heatmap probability of a disk point.
  """
  height, width, num_types = heatmap.shape
  per_type = min(per_type, height * width)
  offsets = tf.reshape(keycentroid, [height * width, num_types, 2])
  own_cell = (tf.reduce_all(tf.abs(offsets) <= 0.5 * stride, axis=-1)
              & (tf.reshape(heatmap, [height * width, num_types]) > threshold))
  ranked = tf.where(own_cell, tf.reshape(window_mass, [height * width, num_types]), -1.0)
  mass, cells = tf.math.top_k(tf.transpose(ranked), k=per_type)  # [K, M]
  types = tf.broadcast_to(tf.range(num_types)[:, None], cells.shape)
  points = (tf.gather(tf.reshape(grid_points(height, width, stride), [-1, 2]), cells)
            + tf.gather_nd(offsets, tf.stack([cells, types], axis=-1)))
  return VotedKeypoints(points=points, mass=tf.maximum(mass, 0.0))
