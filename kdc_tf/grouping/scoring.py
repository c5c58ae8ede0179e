"""Final keypoint and person scores where the MaskCentroid embeddings are exact.

A keypoint's score is its vote mass relative to a perfect disk's (`voting`). Where two people's
disks of a type overlap, the encoder gives each grid point to the nearer keypoint, so a perfect
occluded keypoint gets only part of a perfect disk's votes and scored 0.6 - 0.9. Here its score
is its vote mass relative to the perfect disk's grid points that lie nearer to it than to every
other voted keypoint of its type (`peaks.voted_keypoints`: on perfect maps, the labelled
keypoints): about 1 for a perfect keypoint however much of its disk another person owns. A person
whose keypoint mean is off its identity (not whole: a fragment or a mixture) has its score
multiplied by `INCOMPLETE_FACTOR`, so fragments rank below whole people.

These are the keypoint ranking only, applied after merging, claiming and the mask membership:
`mask_scores` keep the scores those steps used (the mean vote-mass score), which rank the masks
(owned-disk scores ranking the masks cost segm AP 0.003 - 0.005 on the occlusion oracle,
docs/occlusion.md). Gated to exact embeddings, like `claiming`: the voted keypoints and the whole
test need them. `order_ties_by_area` (on all maps) ranks tied masks by area. Deviation from
DESIGN.md 'Decoding' 4; measurements in docs/occlusion.md.
"""

from __future__ import annotations

import math

import tensorflow as tf

from kdc_tf.grouping import distances, reductions, voting

# Person score factor for a person that is not whole (its keypoint mean off its identity).
INCOMPLETE_FACTOR = 0.5
# A voted keypoint within this distance (input pixels) of the keypoint is the keypoint itself.
SAME_POINT = 1.0
# The other keypoints of its type nearest to a keypoint that may own part of its disk.
COMPETITORS = 4
# Mask scores within about this of each other are tied (`order_ties_by_area`): perfect people's
# are 1 up to float round-off, which differs between XLA and eager code (1 or 1 - 1.2e-7).
MASK_SCORE_STEP = 2.0 ** -12


def owned_disk_mass(points: tf.Tensor, others: tf.Tensor, others_valid: tf.Tensor,
                    disk_radius: float, stride: int, grid_size: int) -> tf.Tensor:
  """float32 `[N, K]`: `voting.disk_mass` counting only the disk's grid points that lie on the
  grid and nearer to the keypoint than to every other keypoint of its type (the encoder's
  ownership of grid points): a keypoint at the image's edge has no votes from beyond it.

  Args:
    points: `[N, K, 2]` keypoints (input pixels).
    others: `[M, K, 2]` keypoints that may own part of the disks (the voted keypoints); those
      within `SAME_POINT` of a keypoint are the keypoint itself.
    others_valid: bool `[M, K]`.
    disk_radius: R in input pixels; stride: pose-grid stride; grid_size: G of the `[G, G]` grid.
  """
  grid = voting.disk_grid_points(points, disk_radius, stride)  # [N, K, T, 2]
  own = distances.squared_distance(grid, points[:, :, None])  # [N, K, T]
  # The `COMPETITORS` nearest other keypoints of the type; one beyond 2R takes no disk point.
  others_kn = tf.transpose(others, [1, 0, 2])  # [K, M, 2]
  apart = distances.squared_distance(points[:, :, None], others_kn[None])  # [N, K, M]
  competing = tf.transpose(others_valid)[None] & (apart > SAME_POINT * SAME_POINT)
  # `reductions.top_k`: XLA's CPU TopK cost 0.12 ms here (docs/grouping.md, 'Speed, session 12').
  nearest_apart, nearest = reductions.top_k(
      tf.where(competing, -apart, -math.inf), k=min(COMPETITORS, others.shape[0]))
  rivals = tf.gather(tf.broadcast_to(others_kn[None], apart.shape + [2]), nearest,
                     batch_dims=2)  # [N, K, C, 2]
  to_rivals = distances.squared_distance(grid[:, :, :, None], rivals[:, :, None])  # [N, K, T, C]
  taken = tf.reduce_any((to_rivals < own[..., None])
                        & tf.math.is_finite(nearest_apart)[:, :, None], axis=-1)
  on_grid = tf.reduce_all((grid >= 0.0) & (grid <= float((grid_size - 1) * stride)), axis=-1)
  inside = (own <= disk_radius * disk_radius) & on_grid & ~taken
  return tf.reduce_sum(tf.cast(inside, tf.float32), axis=-1) / voting.vote_normaliser(
      disk_radius, stride)


def owned_keypoint_scores(points: tf.Tensor, scores: tf.Tensor, others: tf.Tensor,
                          others_valid: tf.Tensor, disk_radius: float, stride: int,
                          grid_size: int) -> tf.Tensor:
  """float32 `[N, K]`: keypoint scores (vote mass / `voting.disk_mass`, clipped to 1) re-based on
  `owned_disk_mass`, clipped to 1; 0 stays 0. Clipping commutes: the owned mass is at most the
  disk's, so a score already at 1 stays 1."""
  full = voting.disk_mass(points, disk_radius, stride)
  owned = owned_disk_mass(points, others, others_valid, disk_radius, stride, grid_size)
  rebased = scores * full / tf.maximum(owned, 1e-3)
  return tf.where(scores > 0.0, tf.minimum(rebased, 1.0), 0.0)


def person_scores(point_scores: tf.Tensor, whole: tf.Tensor, judged: tf.Tensor) -> tf.Tensor:
  """float32 `[N]`: the mean keypoint score over all K types, times `INCOMPLETE_FACTOR` for the
  people `judged` (their identity known, embeddings exact) that are not `whole`."""
  factor = tf.where(judged & ~whole, INCOMPLETE_FACTOR, 1.0)
  return tf.reduce_mean(point_scores, axis=1) * factor


def order_ties_by_area(mask_scores: tf.Tensor, areas: tf.Tensor) -> tf.Tensor:
  """float32 `[N]`: mask scores rounded to `MASK_SCORE_STEP`, then lowered by less than a step in
  proportion to `1 / (1 + sqrt(area))` (`areas` `[N]`: mask-grid points), in [0, 1].

  Tied masks (perfect people's) are ranked by the expected quality of their reproduction: the mask
  grid misses a band along a mask's boundary, a fraction of its area that falls as
  `1 / sqrt(area)`, so the larger mask first; before, float round-off ordered them (COCO sample
  oracle at 801, docs/occlusion.md).
  """
  rounded = tf.round(mask_scores / MASK_SCORE_STEP) * MASK_SCORE_STEP
  return tf.maximum(rounded - MASK_SCORE_STEP / (1.0 + tf.sqrt(areas)), 0.0)
