"""Poses from candidates: the kinematic-tree walk and greedy suppression (DESIGN.md 'Decoding' 3).

Every candidate is walked in parallel, as if it seeded a person: the seed is refined by its
KeyCentroid, then each directed edge (k -> l) of the tree, in breadth-first order from the seed's
type, places l at `current + midrange_{k->l}(current)`, refined twice by `p + KeyCentroid_l(p)`.
The sequential greedy part of PersonLab's decoder (candidates in descending score; one within the
NMS radius of the same keypoint type of an already selected person is skipped) then reduces to
non-maximum suppression over a custom `[C, C]` overlap matrix, one C++ op
(`tf.image.non_max_suppression_overlaps`).

Deviation from DESIGN.md (docs/occlusion.md has the measurements): the walk places only the
keypoints the heads support (`walk`). A keypoint is not found, and nothing is walked from it, when
the mid-range step to it is shorter than `MIN_STEP` (the encoder's target where the destination is
unlabelled, e.g. hidden behind someone: a trained head is unconstrained there), when the
KeyCentroid refinements move it further than `max_shift` from where the step put it (it jumped to
another person's disk), or when the last refinement still moves it more than `RESIDUAL_FRACTION`
of that (two people's disks of that type mix there, so the mid-range offsets read there may be the
other person's). Unfound keypoints score 0, suppress no candidate and count in no repeat test; the
pieces this leaves are rejoined by `merging`. The two refinement limits grow with the image's
`refinement_noise` (how far one more refinement moves the refined seeds: 0 on perfect maps), so
that a trained network's imprecise offsets do not cut every person into pieces.

Deviation from DESIGN.md: the mid-range step and the KeyCentroid refinements read the offsets only
from the grid corners around the point whose own KeyCentroid vote (for the source keypoint's type,
resp. the refined type) lands on it (`sampling.sample_owned_targets`): where two people's disks of
a type overlap, the plain bilinear read mixes the other person's offsets into the step.

Deviation from DESIGN.md: a selected person whose whole pose repeats an earlier one (at least
`DUPLICATE_FRACTION` of its keypoints within the NMS radius of that person's keypoints of the same
type) is dropped. With the seed rule alone, a spurious local maximum of a score map (a half-trained
head puts several around a keypoint, more than the NMS radius apart) seeds a walk that the
KeyCentroid refinement pulls back onto the person already selected: the same person again, but for
the seed keypoint. Those repeats also share the person's mask embeddings, so they split its mask
between them. The repeats are dropped after the seed-rule selection, from a pool of
`REPEAT_POOL` (decoder) times the output slots (`drop_repeats`, a second greedy pass over a
`[P, P]` matrix), which is cheaper than a test over all candidates' poses. Measurements:
docs/grouping.md.
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from kdc_tf.datasets import DatasetSpec
from kdc_tf.grouping import distances, sampling

# KeyCentroid refinements of every keypoint reached along an edge (DESIGN.md).
REFINE_STEPS = 2
# A mid-range step shorter than this (input pixels) leads nowhere: the encoder's target where the
# destination is unlabelled is 0 (see the module docstring).
MIN_STEP = 0.5
# The last KeyCentroid refinement of a placed keypoint moves it at most this fraction of the
# largest shift: a larger move means that the disks of two people's keypoints of that type mix
# at the point, and the mid-range offsets read there may be the other person's.
RESIDUAL_FRACTION = 0.25
# The shift and residual limits grow by these multiples of the KeyCentroid field's own
# inconsistency (`refinement_noise`: 0 on perfect maps, 1 - 2 px on the quick-start model's): a
# trained field moves every walked keypoint by a few pixels, and one failed test among the K - 1
# steps cuts a person, so the limits sit in the tail of that noise (docs/grouping.md). 48 (was 16):
# +0.008 keypoints and segm AP on three quick-start models; 64 gives the same (docs/learning.md).
SHIFT_NOISE = 48.0
# Owned reads (`sampling.sample_owned_targets`): a grid corner counts where its KeyCentroid vote
# lands within about this many input pixels of the keypoint read at (mid-range step: the source
# keypoint; refinement: the point being refined), plus `TOLERANCE_NOISE` times the field's
# inconsistency, so that on a trained network's maps the reads are nearly plain bilinear ones.
STEP_TOLERANCE = 2.0
REFINE_TOLERANCE = 1.0
TOLERANCE_NOISE = 8.0
RESIDUAL_NOISE = 8.0
# A person with at least this fraction of its keypoints within the NMS radius of an earlier
# person's is that person again (see the module docstring).
DUPLICATE_FRACTION = 0.5


def breadth_first_edges(spec: DatasetSpec) -> np.ndarray:
  """int32 `[K, K - 1, 3]`: per seed type, the tree's `(source, target, directed edge)`, BFS order.

  The directed edge index is the mid-range channel pair (`2e`, `2e + 1`) of
  `spec.directed_edges`. Each source is placed before its edge is walked.
  """
  edge_index = {edge: e for e, edge in enumerate(spec.directed_edges)}
  neighbours = collections.defaultdict(list)
  for a, b in spec.edges:
    neighbours[a].append(b)
    neighbours[b].append(a)
  orders = []
  for root in range(spec.num_keypoints):
    order, seen, queue = [], {root}, collections.deque([root])
    while queue:
      source = queue.popleft()
      for target in neighbours[source]:
        if target not in seen:
          seen.add(target)
          queue.append(target)
          order.append((source, target, edge_index[(source, target)]))
    if len(order) != spec.num_keypoints - 1:
      raise ValueError(f"{spec.name}: the kinematic tree does not reach every keypoint")
    orders.append(order)
  return np.asarray(orders, np.int32)


class Walk(NamedTuple):
  """Poses grown from every seed: positions and whether the heads support each keypoint."""

  poses: tf.Tensor  # float32 [C, K, 2] input pixels
  found: tf.Tensor  # bool [C, K]


def walk(seeds: tf.Tensor, seed_types: tf.Tensor, keycentroid: tf.Tensor, midrange: tf.Tensor,
         edge_orders: np.ndarray, stride: int, canvas_size: int,
         max_shift: Optional[float] = None, noise: tf.Tensor | float = 0.0) -> Walk:
  """Poses grown from every seed at once, with the keypoints the walk could place.

  Args:
    seeds: float32 `[C, 2]` refined seed positions (input pixels).
    seed_types: int32 `[C]`.
    keycentroid: `[G, G, 2K]`; midrange: `[G, G, 2E]` (input pixels).
    edge_orders: `breadth_first_edges(spec)`.
    stride: pose-grid stride.
    canvas_size: input size S; positions are clipped to `[0, S - 1]`.
    max_shift: a keypoint whose KeyCentroid refinements move it more than this (input pixels)
      from where the mid-range offset put it is not found, nor is anything walked from it (see the
      module docstring); None: every keypoint is found.
  """
  num_candidates = seeds.shape[0]
  num_types = edge_orders.shape[0]
  limit = float(canvas_size - 1)
  rows = tf.range(num_candidates)
  seed_index = tf.stack([rows, seed_types], axis=-1)
  poses = tf.tensor_scatter_nd_update(tf.zeros([num_candidates, num_types, 2]), seed_index, seeds)
  found = tf.tensor_scatter_nd_update(tf.zeros([num_candidates, num_types], tf.bool), seed_index,
                                      tf.ones([num_candidates], tf.bool))
  orders = tf.gather(tf.constant(edge_orders), seed_types)  # [C, K - 1, 3]
  for step in range(num_types - 1):
    source, target, edge = orders[:, step, 0], orders[:, step, 1], orders[:, step, 2]
    current = tf.gather(poses, source, batch_dims=1)
    step_offset = sampling.sample_owned_targets(
        midrange, keycentroid, current, edge, source, stride,
        STEP_TOLERANCE + TOLERANCE_NOISE * noise) - current
    reached = tf.clip_by_value(current + step_offset, 0.0, limit)
    point = reached
    for _ in range(REFINE_STEPS):
      point = tf.clip_by_value(point, 0.0, limit)
      last_move = sampling.sample_owned_targets(
          keycentroid, keycentroid, point, target, target, stride,
          REFINE_TOLERANCE + TOLERANCE_NOISE * noise) - point
      point += last_move
    point = tf.clip_by_value(point, 0.0, limit)
    supported = tf.gather(found, source, batch_dims=1)
    if max_shift is not None:
      shift = distances.squared_distance(point, reached)
      length = distances.squared_norm(step_offset)
      residual = distances.squared_norm(last_move)
      shift_limit = max_shift + SHIFT_NOISE * noise
      residual_limit = RESIDUAL_FRACTION * max_shift + RESIDUAL_NOISE * noise
      supported &= ((shift <= shift_limit * shift_limit) & (length >= MIN_STEP * MIN_STEP)
                    & (residual <= residual_limit * residual_limit))
    target_index = tf.stack([rows, target], axis=-1)
    poses = tf.tensor_scatter_nd_update(poses, target_index, point)
    found = tf.tensor_scatter_nd_update(found, target_index, supported)
  return Walk(poses, found)


def refinement_noise(seeds: tf.Tensor, seed_types: tf.Tensor, valid: tf.Tensor,
                     keycentroid: tf.Tensor, stride: int) -> tf.Tensor:
  """float32 `[]`: the median over the valid candidates of how far one more KeyCentroid
  refinement moves a refined seed (input pixels); 0 on perfect maps."""
  moves = tf.norm(sampling.sample_groups(keycentroid, seeds, seed_types, 2, stride), axis=-1)
  ordered = tf.sort(tf.where(valid, moves, float("inf")))
  count = tf.reduce_sum(tf.cast(valid, tf.int32))
  median = tf.gather(ordered, tf.maximum(count - 1, 0) // 2)
  return tf.where(count > 0, median, 0.0)


def walk_tree(seeds: tf.Tensor, seed_types: tf.Tensor, keycentroid: tf.Tensor,
              midrange: tf.Tensor, edge_orders: np.ndarray, stride: int,
              canvas_size: int) -> tf.Tensor:
  """The poses of `walk` without the support test: float32 `[C, K, 2]` in input pixels."""
  return walk(seeds, seed_types, keycentroid, midrange, edge_orders, stride, canvas_size).poses


def suppression_overlaps(poses: tf.Tensor, seeds: tf.Tensor, seed_types: tf.Tensor,
                         radius: float, found: Optional[tf.Tensor] = None) -> tf.Tensor:
  """float32 `[C, C]`: `[c, s] = 1` when pose s has its keypoint of c's seed type within `radius`
  of c's seed (and, given `found` bool `[C, K]`, found).

  Rows are the candidate, columns the already selected pose: the order in which
  NonMaxSuppressionWithOverlaps reads the matrix (`overlaps(candidate, selected)`).
  """
  by_type = tf.transpose(poses, [1, 0, 2])  # [K, C_s, 2]
  same_type = tf.gather(by_type, seed_types)  # [C_c, C_s, 2]
  squared = distances.squared_distance(same_type, seeds[:, None, :])
  close = squared <= radius * radius
  if found is not None:
    close &= tf.gather(tf.transpose(found), seed_types)  # [C_c, C_s]
  return tf.cast(close, tf.float32)


def repeated_poses(poses: tf.Tensor, radius: float, found: Optional[tf.Tensor] = None
                   ) -> tf.Tensor:
  """float32 `[P, P]`, symmetric: 1 where at least `DUPLICATE_FRACTION` of the keypoints of two
  poses `[P, K, 2]` lie within `radius` of each other's of the same type (counting, given `found`
  bool `[P, K]`, only keypoints found in both)."""
  squared = distances.squared_distance(poses[:, None], poses[None])  # [P, P, K]
  near = squared <= radius * radius
  if found is not None:
    near &= found[:, None] & found[None]
  close = tf.reduce_sum(tf.cast(near, tf.float32), axis=-1)
  return tf.cast(close >= math.ceil(DUPLICATE_FRACTION * poses.shape[1]), tf.float32)


def select_people(overlaps: tf.Tensor, scores: tf.Tensor, max_people: int,
                  score_threshold: float) -> tf.Tensor:
  """Greedy selection in descending score: int32 `[max_people]` candidate indices, -1 padded."""
  selected = tf.image.non_max_suppression_overlaps(
      overlaps, scores, max_people, overlap_threshold=0.5, score_threshold=score_threshold)
  padded = tf.pad(selected, [[0, max_people - tf.size(selected)]], constant_values=-1)
  return tf.ensure_shape(padded, [max_people])


def drop_repeats(selected: tf.Tensor, candidate_poses: tf.Tensor, radius: float,
                 max_people: int, found: Optional[tf.Tensor] = None) -> tf.Tensor:
  """The first `max_people` of `selected` (int32 `[P]`, -1 padded, in selection order) that
  repeat no earlier kept person (`repeated_poses`, with the candidates' `found` `[C, K]` when
  given): int32 `[max_people]`, -1 padded."""
  pool = selected.shape[0]
  valid = selected >= 0
  index = tf.maximum(selected, 0)
  repeats = repeated_poses(tf.gather(candidate_poses, index), radius,
                           None if found is None else tf.gather(found, index))
  rank = tf.where(valid, tf.cast(pool - tf.range(pool), tf.float32), -1.0)
  kept = select_people(repeats, rank, max_people, 0.0)
  return tf.where(kept >= 0, tf.gather(selected, tf.maximum(kept, 0)), -1)
