"""Poses from candidates: the kinematic-tree walk and greedy suppression (DESIGN.md 'Decoding' 3).

Every candidate is walked in parallel, as if it seeded a person: the seed is refined by its
KeyCentroid, then each directed edge (k -> l) of the tree, in breadth-first order from the seed's
type, places l at `current + midrange_{k->l}(current)`, refined twice by `p + KeyCentroid_l(p)`.
The sequential greedy part of PersonLab's decoder (candidates in descending score; one within the
NMS radius of the same keypoint type of an already selected person is skipped) then reduces to
non-maximum suppression over a custom `[C, C]` overlap matrix, one C++ op
(`tf.image.non_max_suppression_overlaps`).

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

import numpy as np
import tensorflow as tf

from kdc_tf.datasets import DatasetSpec
from kdc_tf.grouping import sampling

# KeyCentroid refinements of every keypoint reached along an edge (DESIGN.md).
REFINE_STEPS = 2
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


def walk_tree(seeds: tf.Tensor, seed_types: tf.Tensor, keycentroid: tf.Tensor,
              midrange: tf.Tensor, edge_orders: np.ndarray, stride: int,
              canvas_size: int) -> tf.Tensor:
  """Poses grown from every seed at once: float32 `[C, K, 2]` in input pixels.

  Args:
    seeds: float32 `[C, 2]` refined seed positions (input pixels).
    seed_types: int32 `[C]`.
    keycentroid: `[G, G, 2K]`; midrange: `[G, G, 2E]` (input pixels).
    edge_orders: `breadth_first_edges(spec)`.
    stride: pose-grid stride.
    canvas_size: input size S; positions are clipped to `[0, S - 1]`.
  """
  num_candidates = seeds.shape[0]
  num_types = edge_orders.shape[0]
  limit = float(canvas_size - 1)
  rows = tf.range(num_candidates)
  poses = tf.tensor_scatter_nd_update(
      tf.zeros([num_candidates, num_types, 2]), tf.stack([rows, seed_types], axis=-1), seeds)
  orders = tf.gather(tf.constant(edge_orders), seed_types)  # [C, K - 1, 3]
  for step in range(num_types - 1):
    source, target, edge = orders[:, step, 0], orders[:, step, 1], orders[:, step, 2]
    current = tf.gather(poses, source, batch_dims=1)
    point = current + sampling.sample_groups(midrange, current, edge, 2, stride)
    for _ in range(REFINE_STEPS):
      point = tf.clip_by_value(point, 0.0, limit)
      point += sampling.sample_groups(keycentroid, point, target, 2, stride)
    point = tf.clip_by_value(point, 0.0, limit)
    poses = tf.tensor_scatter_nd_update(poses, tf.stack([rows, target], axis=-1), point)
  return poses


def suppression_overlaps(poses: tf.Tensor, seeds: tf.Tensor, seed_types: tf.Tensor,
                         radius: float) -> tf.Tensor:
  """float32 `[C, C]`: `[c, s] = 1` when pose s has its keypoint of c's seed type within `radius`
  of c's seed.

  Rows are the candidate, columns the already selected pose: the order in which
  NonMaxSuppressionWithOverlaps reads the matrix (`overlaps(candidate, selected)`).
  """
  by_type = tf.transpose(poses, [1, 0, 2])  # [K, C_s, 2]
  same_type = tf.gather(by_type, seed_types)  # [C_c, C_s, 2]
  squared = tf.reduce_sum(tf.square(same_type - seeds[:, None, :]), axis=-1)
  return tf.cast(squared <= radius * radius, tf.float32)


def repeated_poses(poses: tf.Tensor, radius: float) -> tf.Tensor:
  """float32 `[P, P]`, symmetric: 1 where at least `DUPLICATE_FRACTION` of the keypoints of two
  poses `[P, K, 2]` lie within `radius` of each other's of the same type."""
  squared = tf.reduce_sum(tf.square(poses[:, None] - poses[None]), axis=-1)  # [P, P, K]
  close = tf.reduce_sum(tf.cast(squared <= radius * radius, tf.float32), axis=-1)
  return tf.cast(close >= math.ceil(DUPLICATE_FRACTION * poses.shape[1]), tf.float32)


def select_people(overlaps: tf.Tensor, scores: tf.Tensor, max_people: int,
                  score_threshold: float) -> tf.Tensor:
  """Greedy selection in descending score: int32 `[max_people]` candidate indices, -1 padded."""
  selected = tf.image.non_max_suppression_overlaps(
      overlaps, scores, max_people, overlap_threshold=0.5, score_threshold=score_threshold)
  padded = tf.pad(selected, [[0, max_people - tf.size(selected)]], constant_values=-1)
  return tf.ensure_shape(padded, [max_people])


def drop_repeats(selected: tf.Tensor, candidate_poses: tf.Tensor, radius: float,
                 max_people: int) -> tf.Tensor:
  """The first `max_people` of `selected` (int32 `[P]`, -1 padded, in selection order) that
  repeat no earlier kept person (`repeated_poses`): int32 `[max_people]`, -1 padded."""
  pool = selected.shape[0]
  valid = selected >= 0
  repeats = repeated_poses(tf.gather(candidate_poses, tf.maximum(selected, 0)), radius)
  rank = tf.where(valid, tf.cast(pool - tf.range(pool), tf.float32), -1.0)
  kept = select_people(repeats, rank, max_people, 0.0)
  return tf.where(kept >= 0, tf.gather(selected, tf.maximum(kept, 0)), -1)
