"""Keypoints placed by identity, where the MaskCentroid embeddings are exact.

A visible keypoint lies on its own person's mask, so its embedding is its person's identity, and
a person's identity is the mean of all its labelled keypoints (DM_c). After merging and
completion (`merging`), a person may still lack keypoints that some candidate's walk placed (in a
mixture, an unmerged fragment, a candidate that was suppressed), or hold a neighbour's keypoint of
that type. The rules use the walked keypoints of every candidate as a pool and the keypoints the
KeyCentroid votes land on (`peaks.voted_keypoints`, which no walk may reach):

1. `claim_keypoints`: a person's keypoint that does not embed onto its identity is replaced by the
   best-scoring pool keypoint of that type that does (identity-first assembly). Keypoints that
   agree stay: a keypoint hidden behind the person (labelled but occluded) embeds onto it as well,
   and only the walk tells the two apart.
2. `complete_from_walks`, then `complete_from_votes`: a person's identity is the mean of all its
   labelled keypoints, so the keypoints it lacks are those whose addition brings its keypoint
   mean onto its identity; one candidate's walked keypoints of the types it lacks that do so
   complete it (or two candidates' with no type in common), else up to three voted keypoints
   that no whole person holds. This places occluded keypoints, whose embeddings point to the
   occluder (`merging.complete_people` does the same with the selected pieces only).
3. `swap_from_votes`: by the same test, a person holding one wrong keypoint (one that embeds onto
   its identity: someone's hidden behind it) gets the voted keypoint of that type instead.

All apply only where the embeddings are exact (`merging.EXACT_EMBEDDING_NOISE`): a trained
network's embeddings are biased. Deviation from DESIGN.md 'Decoding'; measurements in
docs/occlusion.md.
"""

from __future__ import annotations

import itertools
from typing import Tuple

import numpy as np
import tensorflow as tf

from kdc_tf.grouping import distances, merging, reductions, sampling

# A keypoint embeds onto an identity when at least this fraction of the bilinear weight of its
# on-mask grid corners embeds within the identity tolerance of it.
AGREEMENT = 0.5
# `complete_from_walks` pairs walks among the this many per person whose keypoints alone bring
# the person's keypoint mean closest to its identity (the figures of all 120 with 32).
PAIR_WALKS = 32
# `complete_from_votes` adds at most this many keypoints to a person.
VOTE_COMPLETION_SIZE = 3
# A voted keypoint is held by a whole person whose keypoint of its type lies within this (input
# pixels); `complete_from_votes` gives it to no other person.
HELD_DISTANCE = 1.0


def subset_indicators(num_items: int, max_size: int) -> np.ndarray:
  """float32 `[S, num_items]`: one 0/1 row per set of 1 to `max_size` items, smaller sets first."""
  rows = []
  for size in range(1, max_size + 1):
    for chosen in itertools.combinations(range(num_items), size):
      row = np.zeros(num_items, np.float32)
      row[list(chosen)] = 1.0
      rows.append(row)
  return np.stack(rows)


def corner_embeddings(keypoints: tf.Tensor, seg: tf.Tensor, mask_offset: tf.Tensor,
                      mask_stride: int, seg_threshold: float) -> Tuple[tf.Tensor, tf.Tensor]:
  """The embeddings `[..., 4, 2]` of the 4 mask-grid corners around each keypoint `[..., 2]` and
  their bilinear weights `[..., 4]`, 0 off the person mask."""
  height, width, _ = seg.shape
  cells, weights = sampling.bilinear_corners(keypoints, mask_stride, height, width)
  grid_points = tf.cast(tf.stack([cells % width, cells // width], axis=-1), tf.float32)
  embeddings = grid_points * mask_stride + tf.gather(tf.reshape(mask_offset, [-1, 2]), cells)
  on_mask = tf.cast(tf.gather(tf.reshape(seg, [-1]), cells) > seg_threshold, tf.float32)
  return embeddings, weights * on_mask


def agrees(embeddings: tf.Tensor, weights: tf.Tensor, identity: tf.Tensor,
           tolerance: tf.Tensor | float) -> tf.Tensor:
  """bool: at least `AGREEMENT` of the on-mask corner weight embeds within `tolerance` of
  `identity` (`[..., 2]`, broadcast against the keypoints' leading dimensions)."""
  close = tf.cast(distances.squared_distance(embeddings, identity[..., None, :])
                  <= tf.square(tolerance), tf.float32)
  mass = tf.reduce_sum(weights, axis=-1)
  return (mass > 0.0) & (tf.reduce_sum(close * weights, axis=-1) >= AGREEMENT * mass)


def claim_keypoints(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                    identity: tf.Tensor, has_identity: tf.Tensor, pool_keypoints: tf.Tensor,
                    pool_scores: tf.Tensor, seg: tf.Tensor, mask_offset: tf.Tensor, *,
                    mask_stride: int, seg_threshold: float, keypoint_threshold: float,
                    tolerance: tf.Tensor | float, exact: tf.Tensor | bool
                    ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each person's keypoints that do not embed onto its identity, replaced by the best-scoring
  pool keypoint of the same type that does (nothing changes unless `exact`).

  Args:
    keypoints: float32 `[N, K, 2]` input pixels; scores: `[N, K]`; valid: bool `[N]`: the people.
    identity, has_identity: their `merging.identities`. The identities do not change here: a
      claimed keypoint embeds onto its person's identity.
    pool_keypoints: float32 `[P, K, 2]`, pool_scores: `[P, K]` (0 where not placed): every
      candidate's walked keypoints.
    Other arguments as in `merging.merge_fragments`. People whose identity lies within
    `tolerance` of another person's (pieces hidden behind a whole person) claim nothing: the
    embeddings cannot tell whose the keypoints are.

  Returns:
    `(keypoints, scores)` of the same shapes.
  """
  people = tf.range(scores.shape[0])
  near_other = tf.reduce_any(
      (distances.squared_distance(identity[:, None], identity[None])
       <= tf.square(tolerance)) & (has_identity & valid)[None]
      & tf.not_equal(people[:, None], people[None]), axis=1)
  claims = has_identity & valid & ~near_other & exact  # [N]
  embeddings, weights = corner_embeddings(keypoints, seg, mask_offset, mask_stride,
                                          seg_threshold)
  agreeing = (agrees(embeddings, weights, identity[:, None], tolerance)
              & (scores > keypoint_threshold))  # [N, K]
  pool_embeddings, pool_weights = corner_embeddings(pool_keypoints, seg, mask_offset,
                                                    mask_stride, seg_threshold)
  owned = (agrees(pool_embeddings[None], pool_weights[None], identity[:, None, None], tolerance)
           & (pool_scores > keypoint_threshold)[None])  # [N, P, K]
  best = reductions.argmax(tf.where(owned, pool_scores[None], -1.0), axis=1)
  replace = tf.reduce_any(owned, axis=1) & ~agreeing & claims[:, None]  # [N, K]
  index = tf.stack([best, tf.broadcast_to(tf.range(scores.shape[1]), best.shape)], axis=-1)
  keypoints = tf.where(replace[..., None], tf.gather_nd(pool_keypoints, index), keypoints)
  scores = tf.where(replace, tf.gather_nd(pool_scores, index), scores)
  return keypoints, scores


def complete_from_walks(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                        identity: tf.Tensor, has_identity: tf.Tensor, pool_keypoints: tf.Tensor,
                        pool_scores: tf.Tensor, *, keypoint_threshold: float,
                        tolerance: tf.Tensor | float, exact: tf.Tensor | bool
                        ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each incomplete person gets the keypoints of one candidate's walk that complete it: the walk's
  keypoints of the types the person lacks, when with them the person's keypoint mean lies within
  `merging.WHOLE_FRACTION` of `tolerance` of its identity (its embeddings point to the mean of all
  its labelled keypoints, DM_c). Of several, the walk that brings the mean closest. Where no single
  walk does, two walks with no type in common, among the `PAIR_WALKS` that alone bring the mean
  closest. Arguments and result as in `claim_keypoints` (nothing changes unless `exact`; the
  identities do not change: the added keypoints are occluded ones, whose embeddings point
  elsewhere); a person decoded whole takes nothing."""
  confident = (scores > keypoint_threshold) & valid[:, None]
  count, total = merging.keypoint_sums(keypoints, confident)
  whole = merging.is_whole(keypoints, confident, identity, has_identity,
                           merging.WHOLE_FRACTION * tolerance)
  eligible = has_identity & valid & ~whole & (count > 0.0) & exact
  squared_tolerance = tf.square(merging.WHOLE_FRACTION * tolerance)
  use = ~confident[:, None] & (pool_scores > keypoint_threshold)[None]  # [N, P, K]
  use_weight = tf.cast(use, tf.float32)
  added = tf.reduce_sum(use_weight, axis=-1)  # [N, P]
  sums = tf.einsum("npk,pkc->npc", use_weight, pool_keypoints)
  union = (total[:, None] + sums) / tf.maximum(count[:, None] + added, 1.0)[..., None]
  gaps = distances.squared_distance(union, identity[:, None])  # [N, P]
  fits = (added > 0.0) & (gaps <= squared_tolerance) & eligible[:, None]
  costs = tf.where(fits, gaps, float("inf"))
  best = reductions.argmin(costs, axis=1)
  found = tf.math.is_finite(tf.reduce_min(costs, axis=1))
  add = tf.gather(use, best, batch_dims=1) & found[:, None]  # [N, K]
  keypoints = tf.where(add[..., None], tf.gather(pool_keypoints, best), keypoints)
  scores = tf.where(add, tf.gather(pool_scores, best), scores)
  # Else two walks with no type in common, among the `PAIR_WALKS` that alone bring the person's
  # mean closest to its identity.
  closest = tf.math.top_k(-tf.where(added > 0.0, gaps, float("inf")),
                          k=min(PAIR_WALKS, pool_scores.shape[0]))
  walks = closest.indices  # [N, M]
  walk_use = tf.gather(use_weight, walks, batch_dims=1)  # [N, M, K]
  walk_sums = tf.gather(sums, walks, batch_dims=1)  # [N, M, 2]
  walk_added = tf.gather(added, walks, batch_dims=1)  # [N, M]
  common = tf.einsum("npk,nqk->npq", walk_use, walk_use)
  pair_union = ((total[:, None, None] + walk_sums[:, :, None] + walk_sums[:, None])
                / tf.maximum(count[:, None, None] + walk_added[:, :, None] + walk_added[:, None],
                             1.0)[..., None])
  pair_gaps = distances.squared_distance(pair_union, identity[:, None, None])
  pair_fits = ((common == 0.0) & tf.math.is_finite(closest.values)[:, :, None]
               & tf.math.is_finite(closest.values)[:, None]
               & (pair_gaps <= squared_tolerance) & (eligible & ~found)[:, None, None])  # [N, M, M]
  pair_costs = tf.reshape(tf.where(pair_fits, pair_gaps, float("inf")), [scores.shape[0], -1])
  pair = reductions.argmin(pair_costs, axis=1)
  pair_found = tf.math.is_finite(tf.reduce_min(pair_costs, axis=1))
  for slot in (pair // walks.shape[1], pair % walks.shape[1]):
    walk = tf.gather(walks, slot, batch_dims=1)  # [N]
    add = tf.gather(use, walk, batch_dims=1) & pair_found[:, None]
    keypoints = tf.where(add[..., None], tf.gather(pool_keypoints, walk), keypoints)
    scores = tf.where(add, tf.gather(pool_scores, walk), scores)
  return keypoints, scores


def _vote_rule_inputs(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                      identity: tf.Tensor, has_identity: tf.Tensor, voted_points: tf.Tensor,
                      voted_scores: tf.Tensor, keypoint_threshold: float,
                      tolerance: tf.Tensor | float, exact: tf.Tensor | bool):
  """What both rules on voted keypoints start from: the confident keypoints, bool `[N, K]`, their
  count `[N]` and sum `[N, 2]` (`merging.keypoint_sums`), the people a rule may change (not
  whole, with an identity, only if `exact`), bool `[N]`, and the voted keypoints no whole person
  holds, bool `[M, K]`."""
  confident = (scores > keypoint_threshold) & valid[:, None]
  count, total = merging.keypoint_sums(keypoints, confident)
  whole = merging.is_whole(keypoints, confident, identity, has_identity,
                           merging.WHOLE_FRACTION * tolerance)
  eligible = has_identity & valid & ~whole & (count > 0.0) & exact
  distance = distances.squared_distance(keypoints[:, None], voted_points[None])  # [N, M, K]
  held = tf.reduce_any((confident & whole[:, None])[:, None] & (distance <= HELD_DISTANCE ** 2),
                       axis=0)
  free = (voted_scores > keypoint_threshold) & ~held
  return confident, count, total, eligible, free


def complete_from_votes(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                        identity: tf.Tensor, has_identity: tf.Tensor, voted_points: tf.Tensor,
                        voted_scores: tf.Tensor, *, keypoint_threshold: float,
                        tolerance: tf.Tensor | float, exact: tf.Tensor | bool
                        ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each incomplete person gets 1 to `VOTE_COMPLETION_SIZE` voted keypoints of types it lacks
  when with them its keypoint mean lies within `merging.WHOLE_FRACTION` of `tolerance` of its
  identity: occluded keypoints spread over several walks or walked by none. Per lacking type the
  candidate is the voted keypoint nearest to the person's identity that no whole person holds (an
  occluder's own keypoints often lie nearer than the occluded person's); of the sets of types that
  fit, the one that brings the mean closest (the smallest set first on ties). Arguments as in
  `claim_keypoints`, with `voted_points` `[M, K, 2]`, `voted_scores` `[M, K]` (0 in empty slots;
  `peaks.voted_keypoints`); nothing changes unless `exact`."""
  num_types = scores.shape[1]
  confident, count, total, eligible, free = _vote_rule_inputs(
      keypoints, scores, valid, identity, has_identity, voted_points, voted_scores,
      keypoint_threshold, tolerance, exact)
  to_identity = distances.squared_distance(voted_points[None], identity[:, None, None])
  nearest = reductions.argmin(tf.where(free[None], to_identity, float("inf")), axis=1)  # [N,K]
  available = ~confident & tf.reduce_any(free, axis=0)[None]  # [N, K]
  types = tf.broadcast_to(tf.range(num_types), nearest.shape)
  points = tf.gather_nd(voted_points, tf.stack([nearest, types], axis=-1))  # [N, K, 2]
  subsets = tf.constant(subset_indicators(num_types, VOTE_COMPLETION_SIZE))  # [S, K]
  feasible = tf.linalg.matmul(1.0 - tf.cast(available, tf.float32), subsets,
                              transpose_b=True) == 0.0  # [N, S]
  sums = tf.einsum("sk,nkc->nsc", subsets, points * tf.cast(available, tf.float32)[..., None])
  means = (total[:, None] + sums) / (count[:, None] + tf.reduce_sum(subsets, axis=1))[..., None]
  gaps = distances.squared_distance(means, identity[:, None])  # [N, S]
  fits = feasible & (gaps <= tf.square(merging.WHOLE_FRACTION * tolerance)) & eligible[:, None]
  costs = tf.where(fits, gaps, float("inf"))
  best = reductions.argmin(costs, axis=1)
  add = (tf.gather(subsets, best) > 0.0) & tf.math.is_finite(tf.reduce_min(costs, axis=1))[:, None]
  keypoints = tf.where(add[..., None], points, keypoints)
  scores = tf.where(add, tf.gather_nd(voted_scores, tf.stack([nearest, types], axis=-1)), scores)
  return keypoints, scores


def swap_from_votes(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                    identity: tf.Tensor, has_identity: tf.Tensor, voted_points: tf.Tensor,
                    voted_scores: tf.Tensor, *, keypoint_threshold: float,
                    tolerance: tf.Tensor | float, exact: tf.Tensor | bool
                    ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each person that is not whole and holds one wrong keypoint (e.g. a keypoint of someone hidden
  behind it, which embeds onto its identity too) gets it replaced by the voted keypoint of that
  type, held by no whole person, with which its keypoint mean lies within
  `merging.WHOLE_FRACTION` of `tolerance` of its identity; of several, the closest. Arguments as
  in `complete_from_votes`."""
  confident, count, total, eligible, free = _vote_rule_inputs(
      keypoints, scores, valid, identity, has_identity, voted_points, voted_scores,
      keypoint_threshold, tolerance, exact)
  means = ((total[:, None, None] - keypoints[:, None] + voted_points[None])
           / tf.maximum(count, 1.0)[:, None, None, None])  # [N, M, K, 2]
  gaps = distances.squared_distance(means, identity[:, None, None])  # [N, M, K]
  fits = (free[None] & confident[:, None] & eligible[:, None, None]
          & (gaps <= tf.square(merging.WHOLE_FRACTION * tolerance)))
  costs = tf.reshape(tf.where(fits, gaps, float("inf")), [scores.shape[0], -1])
  best = reductions.argmin(costs, axis=1)
  found = tf.math.is_finite(tf.reduce_min(costs, axis=1))
  slot, kind = best // scores.shape[1], best % scores.shape[1]
  swap = (tf.one_hot(kind, scores.shape[1]) > 0.5) & found[:, None]  # [N, K]
  index = tf.stack([slot, kind], axis=-1)
  keypoints = tf.where(swap[..., None], tf.gather_nd(voted_points, index)[:, None], keypoints)
  scores = tf.where(swap, tf.gather_nd(voted_scores, index)[:, None], scores)
  return keypoints, scores
