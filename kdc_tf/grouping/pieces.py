"""People assembled from exact skeleton pieces, where the embeddings are exact.

The mid-range offsets at a voted keypoint's own grid cell (`peaks.voted_keypoints`) belong to
that keypoint's person (the encoder gives a grid point to the person whose keypoint of the edge's
source type is nearest), so on perfect maps `cell + midrange_{k->l}(cell)` lands on the same
person's keypoint l exactly: linking the voted keypoints along those steps cuts the image's
keypoints into pieces, each a connected part of one person's skeleton (a person's pieces are
separated by its unlabelled keypoints, to which the offsets are 0). `complete_from_pieces` gives a
person that is still not whole (its keypoint mean is off its identity, DM_c) the pieces of its
keypoints that embed onto its identity plus up to `MAX_ADDED` more pieces whose union brings the
mean onto the identity, replacing all its keypoints: it adds occluded keypoints of several types
(which `claiming.complete_from_votes` bounds at 3, one candidate each) and drops a neighbour's
keypoints it held. Deviation from DESIGN.md 'Decoding'; measurements in docs/occlusion.md.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from kdc_tf.grouping import claiming, distances, merging, reductions

# A mid-range step lands on a voted keypoint when within this (input pixels).
LINK_DISTANCE = 1.0
# Steps shorter than this lead nowhere (the encoder's target where the destination is unlabelled).
MIN_STEP = 0.5
# Pieces a person may take besides those of its own keypoints, and how many candidate pieces
# (nearest to its identity, type-disjoint from its own) the search considers.
MAX_ADDED = 3
CANDIDATE_PIECES = 12
# Where at most this many people are eligible, the search runs on their rows alone (gathered, each
# person on its own: the same values); else on all `N` (docs/grouping.md, 'Speed, session 13,
# round 2').
REBUILT_ROWS = 8


def _piece_subsets(num_candidates: int, max_size: int) -> np.ndarray:
  """float32 `[S, R]`: the empty set, then every set of 1 to `max_size` candidates, smaller first."""
  empty = np.zeros((1, num_candidates), np.float32)
  return np.concatenate([empty, claiming.subset_indicators(num_candidates, max_size)])


def voted_links(voted_points: tf.Tensor, voted_valid: tf.Tensor, midrange: tf.Tensor,
                directed_edges: np.ndarray, stride: int) -> tf.Tensor:
  """bool `[E, M, M]`: `[e, i, j]` when the mid-range step of edge e (`source -> target`) read at
  the own grid cell of voted keypoint i of the source type lands on voted keypoint j of the
  target type.

  Args:
    voted_points: float32 `[M, K, 2]` input pixels; voted_valid: bool `[M, K]`.
    midrange: `[G, G, 2E]` input pixels; directed_edges: int `[E, 2]` (source, target) types.
    stride: pose-grid stride.
  """
  height, width, _ = midrange.shape
  num_edges = directed_edges.shape[0]
  by_type = tf.transpose(voted_points, [1, 0, 2])  # [K, M, 2]
  valid_by_type = tf.transpose(voted_valid)
  sources = tf.gather(by_type, directed_edges[:, 0])  # [E, M, 2]
  targets = tf.gather(by_type, directed_edges[:, 1])
  cells = tf.cast(tf.round(sources / float(stride)), tf.int32)
  column = tf.clip_by_value(cells[..., 0], 0, width - 1)
  row = tf.clip_by_value(cells[..., 1], 0, height - 1)
  flat = tf.reshape(midrange, [height * width, num_edges, 2])
  edges = tf.broadcast_to(tf.range(num_edges)[:, None], row.shape)
  steps = tf.gather_nd(flat, tf.stack([row * width + column, edges], axis=-1))  # [E, M, 2]
  landing = tf.cast(tf.stack([column, row], axis=-1), tf.float32) * float(stride) + steps
  distance = distances.squared_distance(landing[:, :, None], targets[:, None])
  moves = distances.squared_norm(steps) >= MIN_STEP * MIN_STEP
  return ((distance <= LINK_DISTANCE * LINK_DISTANCE)
          & (tf.gather(valid_by_type, directed_edges[:, 0]) & moves)[:, :, None]
          & tf.gather(valid_by_type, directed_edges[:, 1])[:, None])


def skeleton_diameter(directed_edges: np.ndarray, num_types: int) -> int:
  """The most edges on a path between two keypoint types of the skeleton tree (8 for COCO's and
  CrowdPose's)."""
  hops = np.full((num_types, num_types), num_types, np.int64)
  np.fill_diagonal(hops, 0)
  hops[directed_edges[:, 0], directed_edges[:, 1]] = 1
  hops[directed_edges[:, 1], directed_edges[:, 0]] = 1
  for middle in range(num_types):  # Floyd-Warshall
    hops = np.minimum(hops, hops[:, middle:middle + 1] + hops[middle:middle + 1])
  return int(hops.max())


def piece_labels(links: tf.Tensor, directed_edges: np.ndarray, num_types: int) -> tf.Tensor:
  """int32 `[M, K]`: per voted keypoint the smallest node index `m * K + k` of its piece (the
  connected component of `links`, `voted_links`).

  Label propagation along the links of each edge, both ways (`[E, M, M]` per round; a dense
  `[K M, K M]` adjacency cost 3.6 ms per call at 401, this 0.4 - 0.6 ms), one round per edge of
  the skeleton's diameter (8 for COCO, not K - 1 = 16: half the compiled ops).
  """
  _, slots, _ = links.shape
  nodes = slots * num_types
  by_type = tf.transpose(tf.reshape(tf.range(nodes), [slots, num_types]))  # [K, M]
  segments = np.concatenate([directed_edges[:, 0], directed_edges[:, 1]])
  # A piece is a subtree of the skeleton: at most the skeleton's diameter steps across.
  for _ in range(skeleton_diameter(directed_edges, num_types)):
    target_labels = tf.gather(by_type, directed_edges[:, 1])  # [E, M]
    source_labels = tf.gather(by_type, directed_edges[:, 0])
    from_targets = tf.reduce_min(tf.where(links, target_labels[:, None, :], nodes), axis=2)
    from_sources = tf.reduce_min(tf.where(links, source_labels[:, :, None], nodes), axis=1)
    by_type = tf.minimum(by_type, tf.math.unsorted_segment_min(
        tf.concat([from_targets, from_sources], 0), segments, num_types))
  return tf.transpose(by_type)


def complete_from_pieces(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                         identity: tf.Tensor, has_identity: tf.Tensor, voted_points: tf.Tensor,
                         voted_scores: tf.Tensor, labels: tf.Tensor, seg: tf.Tensor,
                         mask_offset: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                         keypoint_threshold: float, tolerance: tf.Tensor | float,
                         exact: tf.Tensor | bool) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each person that is not whole, rebuilt from pieces (see the module docstring).

  Its own pieces are those of its confident keypoints that lie on a voted keypoint (within
  `claiming.HELD_DISTANCE`) and embed onto its identity; they must hold at most one keypoint per
  type. Of the sets of up to `MAX_ADDED` further pieces (among the `CANDIDATE_PIECES` whose mean
  lies nearest its identity, with no type in common with its own), the one with which the mean of
  all the pieces' keypoints lies within `merging.WHOLE_FRACTION` of `tolerance` of the identity,
  closest (smaller sets first on ties), gives the person exactly those keypoints, the others
  scoring 0. Arguments as in `claiming.complete_from_votes`, with `labels` (`piece_labels`),
  `seg`, `mask_offset`, `mask_stride` and `seg_threshold` as in `claiming.claim_keypoints`.

  Returns:
    `(keypoints, scores)` of the same shapes.
  """
  num_people, num_types = scores.shape
  slots = voted_scores.shape[0]
  nodes = slots * num_types
  confident = (scores > keypoint_threshold) & valid[:, None]
  whole = merging.is_whole(keypoints, confident, identity, has_identity,
                           merging.WHOLE_FRACTION * tolerance)
  eligible = has_identity & valid & ~whole & exact  # [N]
  node_valid = tf.reshape(voted_scores > keypoint_threshold, [nodes])
  node_points = tf.reshape(voted_points, [nodes, 2])
  node_labels = tf.reshape(labels, [nodes])
  node_types = tf.one_hot(tf.tile(tf.range(num_types), [slots]), num_types)  # [V, K]
  # Pieces, indexed by label: their type counts, keypoint sums and sizes.
  node_weight = tf.cast(node_valid, tf.float32)[:, None]
  piece_types = tf.math.unsorted_segment_sum(node_types * node_weight, node_labels, nodes)  # [V, K]
  piece_sums = tf.math.unsorted_segment_sum(node_points * node_weight, node_labels, nodes)
  piece_sizes = tf.reduce_sum(piece_types, axis=1)  # [V]

  def rebuilt(rows: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """`(keypoints, scores)` of the people `rows` (int32 `[R]`), each rebuilt on its own."""
    row_keypoints, row_scores, row_valid, row_identity, row_confident, row_eligible = (
        tf.gather(t, rows) for t in (keypoints, scores, valid, identity, confident, eligible))
    # The person's own pieces: its confident keypoints on a voted keypoint that embed onto it.
    distance = distances.squared_distance(row_keypoints[:, None], voted_points[None])  # [R, M, K]
    on_voted = tf.where(row_valid[:, None, None]
                        & tf.reshape(node_valid, [slots, num_types])[None],
                        distance, float("inf"))
    nearest = reductions.argmin(on_voted, axis=1)  # [R, K]
    held = tf.reduce_min(on_voted, axis=1) <= claiming.HELD_DISTANCE ** 2
    embeddings, weights = claiming.corner_embeddings(row_keypoints, seg, mask_offset,
                                                     mask_stride, seg_threshold)
    own = (row_confident & held
           & claiming.agrees(embeddings, weights, row_identity[:, None], tolerance))  # [R, K]
    own_labels = tf.gather(node_labels, nearest * num_types + tf.range(num_types)[None])
    # 1 at the labels of the person's own keypoints: a scatter of R K values, not a max over an
    # [R, K, V] one-hot (0.3 ms at 401).
    own_pieces = tf.tensor_scatter_nd_max(
        tf.zeros([rows.shape[0], nodes]),
        tf.reshape(tf.stack([tf.broadcast_to(tf.range(rows.shape[0])[:, None], own_labels.shape),
                             own_labels], axis=-1), [-1, 2]),
        tf.reshape(tf.cast(own, tf.float32), [-1]))  # [R, V]
    own_types = tf.linalg.matmul(own_pieces, piece_types)  # [R, K]
    own_sums = tf.linalg.matmul(own_pieces, piece_sums)
    own_sizes = tf.linalg.matmul(own_pieces, piece_sizes[:, None])[:, 0]
    row_eligible &= (own_sizes > 0.0) & (tf.reduce_max(own_types, axis=1) <= 1.0)
    # Candidate pieces: type-disjoint from the person's own, nearest to its identity.
    overlap = tf.linalg.matmul(own_types, piece_types, transpose_b=True)  # [R, V]
    piece_means = piece_sums / tf.maximum(piece_sizes, 1.0)[:, None]
    to_identity = distances.squared_distance(piece_means[None], row_identity[:, None])
    usable = (overlap == 0.0) & (own_pieces == 0.0) & (piece_sizes > 0.0)[None]
    nearest_pieces = tf.math.top_k(-tf.where(usable, to_identity, float("inf")),
                                   k=min(CANDIDATE_PIECES, nodes))
    candidates = nearest_pieces.indices  # [R, C]
    candidate_ok = tf.cast(tf.math.is_finite(nearest_pieces.values), tf.float32)
    subsets = tf.constant(_piece_subsets(candidates.shape[1], MAX_ADDED))  # [S, C]
    chosen = subsets[None] * candidate_ok[:, None]  # [R, S, C]
    complete = tf.equal(tf.reduce_sum(chosen, axis=2), tf.reduce_sum(subsets, axis=1)[None])
    types = own_types[:, None] + tf.einsum("nsr,nrk->nsk", chosen, tf.gather(piece_types,
                                                                               candidates))
    sums = own_sums[:, None] + tf.einsum("nsr,nrc->nsc", chosen,
                                         tf.gather(piece_sums, candidates))
    sizes = own_sizes[:, None] + tf.einsum("nsr,nr->ns", chosen,
                                           tf.gather(piece_sizes, candidates))
    gaps = distances.squared_distance(sums / tf.maximum(sizes, 1.0)[..., None],
                                      row_identity[:, None])  # [R, S]
    fits = (complete & (tf.reduce_max(types, axis=2) <= 1.0) & row_eligible[:, None]
            & (gaps <= tf.square(merging.WHOLE_FRACTION * tolerance)))
    costs = tf.where(fits, gaps, float("inf"))
    best = reductions.argmin(costs, axis=1)
    is_rebuilt = tf.math.is_finite(tf.reduce_min(costs, axis=1))  # [R]
    added = tf.gather(chosen, best, batch_dims=1)  # [R, C]
    pieces = own_pieces + tf.einsum("nr,nrv->nv", added, tf.one_hot(candidates, nodes))  # [R, V]
    taken = tf.reshape(tf.gather(pieces, node_labels, axis=1)
                       * tf.cast(node_valid, tf.float32)[None], [-1, slots, num_types])
    has_type = tf.reduce_sum(taken, axis=1) > 0.0  # [R, K]
    new_points = tf.einsum("nmk,mkc->nkc", taken, voted_points)
    new_scores = tf.einsum("nmk,mk->nk", taken, voted_scores)
    return (tf.where((is_rebuilt[:, None] & has_type)[..., None], new_points, row_keypoints),
            tf.where(is_rebuilt[:, None], new_scores, row_scores))

  if num_people <= REBUILT_ROWS:
    return rebuilt(tf.range(num_people))

  def first_eligible() -> Tuple[tf.Tensor, tf.Tensor]:
    """The first `REBUILT_ROWS` people, the eligible ones among them, rebuilt (each person on its
    own: the others are unchanged)."""
    order = tf.where(eligible, float(num_people) - tf.range(num_people, dtype=tf.float32), 0.0)
    rows = tf.math.top_k(order, k=REBUILT_ROWS).indices
    row_keypoints, row_scores = rebuilt(rows)
    return (tf.tensor_scatter_nd_update(keypoints, rows[:, None], row_keypoints),
            tf.tensor_scatter_nd_update(scores, rows[:, None], row_scores))

  return tf.cond(tf.reduce_sum(tf.cast(eligible, tf.int32)) <= REBUILT_ROWS, first_eligible,
                 lambda: rebuilt(tf.range(num_people)))
