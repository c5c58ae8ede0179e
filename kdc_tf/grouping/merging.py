"""Fragment merging: people split by a missing keypoint, rejoined through their mask embeddings.

The tree walk cannot cross a keypoint the heads know nothing about: with perfect targets, an
unlabelled nose cuts a person into a left and a right half (COCO's tree joins the shoulders only
through the nose), an unlabelled elbow leaves its wrist an orphan that seeds a person of its own.
The MaskCentroid embedding still ties the pieces together: every pixel of a person, keypoints
included, points to the same centre C_j. So each decoded person gets an identity, the
score-weighted mean embedding `q + mask_offset(q)` of its confident keypoints that lie on the
person mask and that no earlier (higher-seeded) person shares (a broken walk often ends on other
people's keypoints). A person merges into the earliest one whose identity is within the identity
tolerance of its own (`identity_tolerance`: 2 px on perfect maps, where a person standing behind
another has its centre a few pixels from the front person's; up to the NMS radius on a trained
network's noisier maps), unless the two disagree: a keypoint type confident in both at places more than
the NMS radius apart means two people (unless one of the two keypoints is shared with a third
person). The identity is the embedding that most of the person's confident keypoints agree with
(score-weighted), averaged over those that agree, a keypoint agreeing when one of the 4 mask-grid
points around it does: an occluded keypoint lies on the occluder's mask and points to the
occluder's centre, a bilinear read mixes a thin limb's offsets with the background's, and the
nearest point to a keypoint at its mask's edge often lies on a neighbour (docs/occlusion.md). The merged person
keeps, per type, the keypoint of highest score among its pieces, preferring confident ones that no
other person shares. Then `complete_people` gives a person whose keypoint mean is off its identity
the piece that brings the mean onto it: a piece of occluded keypoints, whose embeddings point to
the occluder. Both are deviations from DESIGN.md. Measurements: docs/grouping.md,
docs/occlusion.md.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import tensorflow as tf

from kdc_tf import geometry
from kdc_tf.grouping import distances, sampling

# Two embeddings, or two identities, within this many input pixels, plus `TOLERANCE_NOISE` times
# the field's `embedding_noise` (0 on perfect maps, 3 - 6 px on the quick-start model's), are the
# same person's; never more than the NMS radius (`identity_tolerance`).
IDENTITY_TOLERANCE = 2.0
TOLERANCE_NOISE = 8.0
# The tests that need embeddings landing exactly on their person's centre (a person is whole when
# its keypoint mean is at its identity; completion; identities as mask centres) apply only where
# `embedding_noise` is at most this (input pixels).
EXACT_EMBEDDING_NOISE = 0.25
# `embedding_noise` resolution (input pixels) and range (in steps).
NOISE_STEP = 0.125
NOISE_STEPS = 32
# A person is whole when its keypoint mean lies within this fraction of the identity tolerance of
# its identity (0.5 px on perfect maps, where whole people's means are exact): at the full
# tolerance, a person lacking one keypoint (a 12-keypoint person lacking one 20 px from its centre
# has its mean 1.7 px off) passed as whole and kept its own piece away (COCO sample oracle 0.990).
WHOLE_FRACTION = 0.25


def embedding_noise(seg: tf.Tensor, mask_offset: tf.Tensor, *, mask_stride: int,
                    seg_threshold: float) -> tf.Tensor:
  """float32 `[]`: the median, over horizontally adjacent foreground mask-grid points, of how far
  apart their embeddings `p + mask_offset(p)` land (input pixels): 0 on perfect maps, where all of
  a person's points embed onto its centre and only its boundary differs.

  Rounded up to a multiple of `NOISE_STEP`, at most `NOISE_STEPS` of them (counts below each
  step: no sort, which cost 0.7 ms at 401). The counts come from a histogram of the gaps in
  steps (a gap is at most step i exactly when ceil(gap / NOISE_STEP) <= i: NOISE_STEP is a power
  of 2), not from one comparison per pair and step (0.12 ms at 401).
  """
  height, width, _ = seg.shape
  embeddings = geometry.grid_points(height, width, mask_stride) + mask_offset
  foreground = seg[..., 0] > seg_threshold
  pairs = tf.cast(foreground[:, 1:] & foreground[:, :-1], tf.float32)
  gaps = tf.norm(embeddings[:, 1:] - embeddings[:, :-1], axis=-1)
  steps = NOISE_STEP * tf.range(NOISE_STEPS + 1, dtype=tf.float32)  # 0, ..., the largest
  # Bin b: the gaps in (b - 1, b] steps; bin NOISE_STEPS + 1: beyond the largest step.
  bins = tf.cast(tf.minimum(tf.math.ceil(gaps / NOISE_STEP), NOISE_STEPS + 1.0), tf.int32)
  histogram = tf.raw_ops.DenseBincount(input=tf.reshape(bins, [-1]), size=NOISE_STEPS + 2,
                                       weights=tf.reshape(pairs, [-1]), binary_output=False)
  cumulative = tf.cast(tf.range(NOISE_STEPS + 2)[None] <= tf.range(NOISE_STEPS + 1)[:, None],
                       tf.float32)  # [step, bin]
  below = tf.reduce_sum(cumulative * histogram[None], axis=1)  # pairs at most each step apart
  half = 0.5 * tf.reduce_sum(pairs)
  return tf.gather(steps, tf.minimum(_first_true(below >= half, axis=0), NOISE_STEPS))


def identity_tolerance(noise: tf.Tensor | float, radius: float) -> tf.Tensor:
  """float32 `[]`: the identity tolerance (input pixels) for a field of `embedding_noise`
  `noise`: front / back pairs' centres lie a few pixels apart, so perfect maps need it tight; a
  trained network's embeddings scatter by several pixels."""
  return tf.minimum(IDENTITY_TOLERANCE + TOLERANCE_NOISE * tf.convert_to_tensor(noise, tf.float32),
                    radius)


def _first_true(flags: tf.Tensor, axis: int) -> tf.Tensor:
  """int32: index of the first True along `axis` (the axis size when there is none)."""
  size = flags.shape[axis]
  positions = tf.reshape(tf.range(size), [-1 if i == axis else 1 for i in range(flags.shape.rank)])
  return tf.reduce_min(tf.where(flags, positions, size), axis=axis)


def _shared_keypoints(keypoints: tf.Tensor, confident: tf.Tensor, radius: float
                      ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """bool `[N, N, K]` each: `both` confident, `apart` (further than `radius`), and `shared` (both
  confident at the same place: a keypoint shared by two decoded people)."""
  people = tf.range(confident.shape[0])
  apart = distances.squared_distance(keypoints[:, None], keypoints[None]) > radius * radius
  both = confident[:, None] & confident[None]
  shared = both & ~apart & tf.not_equal(people[:, None], people[None])[..., None]
  return both, apart, shared


def identities(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor, seg: tf.Tensor,
               mask_offset: tf.Tensor, *, mask_stride: int, seg_threshold: float,
               keypoint_threshold: float, radius: float, tolerance: tf.Tensor | float
               ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Each person's identity, float32 `[N, 2]` input pixels, and whether it has one, bool `[N]`.

  The embedding that most of the person's confident on-mask keypoints agree with (within
  `tolerance`, score-weighted), averaged over those that agree; keypoints claimed by an earlier
  person (within `radius`) are left out. Arguments as in `merge_fragments`.
  """
  num_types = scores.shape[1]
  people = tf.range(scores.shape[0])
  confident = (scores > keypoint_threshold) & valid[:, None]
  _, _, shared = _shared_keypoints(keypoints, confident, radius)
  # A broken walk often ends on other people's keypoints: those claimed by an earlier person say
  # nothing about who a fragment is.
  claimed_earlier = tf.reduce_any(shared & (people[:, None] < people[None])[..., None], axis=0)

  # The embeddings of the 4 mask-grid points around each keypoint, each on its own: a bilinear
  # read mixes the offsets of the person, of the background and of a neighbour at a thin limb's
  # keypoints, and the nearest point of a keypoint at its mask's edge often lies on the neighbour
  # or the background. A keypoint agrees with an embedding when one of its points does.
  num_people = scores.shape[0]
  height, width, _ = seg.shape
  cells, _ = sampling.bilinear_corners(keypoints, mask_stride, height, width)  # [N, K, 4]
  grid_points = tf.cast(tf.stack([cells % width, cells // width], axis=-1), tf.float32)
  embeddings = grid_points * mask_stride + tf.gather(tf.reshape(mask_offset, [-1, 2]), cells)
  usable = confident & ~claimed_earlier
  on_mask = (tf.gather(tf.reshape(seg, [-1]), cells) > seg_threshold) & usable[..., None]
  weights = tf.where(usable, scores, 0.0)
  # [N, 4K, K, 4]: does point (k, c) embed within `tolerance` of point (k', c')?
  candidates = tf.reshape(embeddings, [num_people, 4 * num_types, 1, 1, 2])
  close = (distances.squared_distance(candidates, embeddings[:, None])
           <= tf.square(tolerance)) & on_mask[:, None]
  # The embedding most of the person's keypoints agree with (score-weighted), then the mean of
  # those that agree with it: an occluded keypoint lies on the occluder's mask and points to the
  # occluder's centre, which a plain mean would mix in.
  support = tf.reduce_sum(tf.cast(tf.reduce_any(close, axis=-1), tf.float32) * weights[:, None],
                          axis=-1)  # [N, 4K]
  support = tf.where(tf.reshape(on_mask, [num_people, -1]), support, -1.0)
  best = _first_true(support >= tf.reduce_max(support, axis=1, keepdims=True), axis=1)
  agreeing = tf.gather(close, tf.minimum(best, 4 * num_types - 1), batch_dims=1)  # [N, K, 4]
  agreeing &= (tf.reduce_max(support, axis=1) > 0.0)[:, None, None]
  count = tf.reduce_sum(tf.cast(agreeing, tf.float32), axis=-1)  # [N, K]
  keypoint_embeddings = (tf.reduce_sum(embeddings * tf.cast(agreeing, tf.float32)[..., None], -2)
                         / tf.maximum(count, 1.0)[..., None])
  weights *= tf.cast(count > 0.0, tf.float32)
  total = tf.reduce_sum(weights, axis=1)
  identity = (tf.reduce_sum(keypoint_embeddings * weights[..., None], axis=1)
              / tf.maximum(total, 1e-12)[:, None])
  return identity, total > 0.0


def _reordered(valid: tf.Tensor) -> tf.Tensor:
  """bool `[]`: some valid person comes after an invalid slot (the steps put valid people
  first)."""
  return tf.reduce_any(valid[1:] & ~valid[:-1])


def _kept_in_place(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor
                   ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """What `merge_fragments` and `complete_people` return where they change nobody and the valid
  people come first: the people as they are, empty slots zeroed."""
  weight = tf.cast(valid, tf.float32)
  return keypoints * weight[:, None, None], scores * weight[:, None], valid


def _kept_first(keypoints: tf.Tensor, scores: tf.Tensor, keep: tf.Tensor
                ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The kept people moved to the first slots in their order, the other slots emptied."""
  num_people = keep.shape[0]
  people = tf.range(num_people)
  order = tf.argsort(tf.where(keep, people, num_people + people))
  return _kept_in_place(tf.gather(keypoints, order), tf.gather(scores, order),
                        tf.gather(keep, order))


def identities_if_changed(before: Tuple[tf.Tensor, tf.Tensor, tf.Tensor],
                          after: Tuple[tf.Tensor, tf.Tensor, tf.Tensor],
                          before_identities: Tuple[tf.Tensor, tf.Tensor], seg: tf.Tensor,
                          mask_offset: tf.Tensor, **settings) -> Tuple[tf.Tensor, tf.Tensor]:
  """`identities` of the people `after` = `(keypoints, scores, valid)`: those of `before`
  (`before_identities`) when no value changed, else computed (under `tf.cond`: a step that
  changes nobody, as merging and completion on most images, costs no second computation).
  `settings` as for `identities`."""
  changed = tf.reduce_any([tf.reduce_any(tf.not_equal(old, new))
                          for old, new in zip(before, after)])
  return tf.cond(changed, lambda: identities(*after, seg, mask_offset, **settings),
                 lambda: tuple(before_identities))


def merge_fragments(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor, seg: tf.Tensor,
                    mask_offset: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                    keypoint_threshold: float, radius: float,
                    tolerance: Optional[tf.Tensor | float] = None,
                    exact: tf.Tensor | bool = False,
                    people_identities: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Merges fragments into the person they belong to; survivors keep their order, first.

  Args:
    keypoints: float32 `[N, K, 2]` input pixels; scores: `[N, K]` in [0, 1]; valid: bool `[N]`, in
      descending seed score.
    seg: `[M, M, 1]` person probability; mask_offset: `[M, M, 2]` input pixels.
    mask_stride: mask-grid stride.
    seg_threshold: a keypoint is on the person mask above it.
    keypoint_threshold: a keypoint is confident above it.
    radius: the NMS radius, input pixels: keypoints further apart are different keypoints.
    tolerance: input pixels within which two embeddings, or two identities, are the same
      person's (default `radius`).
    exact: the embeddings are exact (`EXACT_EMBEDDING_NOISE`): neither a person decoded whole
      (its keypoint mean at its identity) nor a piece whose identity is a whole person's (its
      keypoints are hidden behind that person, like other people's) merges.
    people_identities: the people's `identities` with these settings, when already computed.

  Returns:
    `(keypoints, scores, valid)` of the same shapes.
  """
  num_people, num_types = scores.shape
  people = tf.range(num_people)
  tolerance = radius if tolerance is None else tolerance
  confident = (scores > keypoint_threshold) & valid[:, None]
  both, apart, shared = _shared_keypoints(keypoints, confident, radius)
  identity, has_identity = people_identities or identities(
      keypoints, scores, valid, seg, mask_offset, mask_stride=mask_stride,
      seg_threshold=seg_threshold, keypoint_threshold=keypoint_threshold, radius=radius,
      tolerance=tolerance)

  # Pairs [a, b]: may b (later) merge into a (earlier)? Not if a type is confident in both at
  # different places, unless one of the two is shared with a third person.
  close = (distances.squared_distance(identity[:, None], identity[None])
           <= tf.square(tolerance))
  shared_with_any = tf.reduce_any(shared, axis=0)  # [N, K]
  conflict = tf.reduce_any(both & apart & ~shared_with_any[:, None] & ~shared_with_any[None],
                           axis=-1)
  whole = is_whole(keypoints, confident, identity, has_identity, WHOLE_FRACTION * tolerance)
  # A piece pointing to a person decoded whole holds someone's keypoints hidden behind that person
  # (on its mask): pieces of several people hidden behind it look alike, so none merges.
  behind = tf.reduce_any(close & whole[:, None] & tf.not_equal(people[:, None], people[None]),
                         axis=0)
  unsure = (whole | behind) & exact
  compatible = (close & ~conflict & (people[:, None] < people[None])
                & has_identity[:, None] & has_identity[None] & ~unsure[:, None] & ~unsure[None])
  merged_away = tf.reduce_any(compatible, axis=0)

  def merged() -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    parent = tf.where(merged_away, _first_true(compatible, axis=0), people)
    # A parent that merged itself passes its pieces on: pointer jumping resolves chains of any
    # length (parent[i] <= i, roots point to themselves) in ceil(log2(N)) gathers.
    root = parent
    for _ in range(max(1, math.ceil(math.log2(max(num_people, 2))))):
      root = tf.gather(root, root)

    # Per surviving person and type, the best keypoint among its pieces, confident ones that no
    # other merged person shares first: [N, N, K] one-hot over pieces.
    same_root = tf.equal(root[:, None], root[None])[..., None]
    shared_elsewhere = tf.reduce_any(shared & ~same_root, axis=0)
    member = tf.equal(root[None], people[:, None]) & valid[None]  # [root, piece]
    preferred = confident & ~shared_elsewhere
    rank = tf.where(preferred, scores + tf.reduce_max(scores) + 1.0, scores)
    piece_rank = tf.where(member[..., None], rank[None], -1.0)
    best_piece = _first_true(piece_rank >= tf.reduce_max(piece_rank, axis=1, keepdims=True),
                             axis=1)  # [N, K]
    pick = tf.cast(tf.equal(best_piece[:, None], people[None, :, None]), tf.float32)  # [N, N, K]
    merged_keypoints = tf.reduce_sum(pick[..., None] * keypoints[None], axis=1)
    merged_scores = tf.reduce_sum(pick * scores[None], axis=1)

    return _kept_first(merged_keypoints, merged_scores, valid & ~merged_away)

  # Skipped where nobody merges (most images): each person keeps its own keypoints.
  return tf.cond(tf.reduce_any(merged_away) | _reordered(valid), merged,
                 lambda: _kept_in_place(keypoints, scores, valid))


def keypoint_sums(keypoints: tf.Tensor, confident: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Per person the number of confident keypoints `[N]` and their sum `[N, 2]`."""
  weight = tf.cast(confident, tf.float32)
  return tf.reduce_sum(weight, axis=1), tf.reduce_sum(keypoints * weight[..., None], axis=1)


def is_whole(keypoints: tf.Tensor, confident: tf.Tensor, identity: tf.Tensor,
              has_identity: tf.Tensor, tolerance: tf.Tensor | float) -> tf.Tensor:
  """bool `[N]`: the mean of the person's confident keypoints lies within `tolerance` of its
  identity, where its embeddings point (DM_c): nothing of it is missing."""
  count, total = keypoint_sums(keypoints, confident)
  gap = distances.squared_distance(total / tf.maximum(count, 1.0)[:, None], identity)
  return has_identity & (count > 0.0) & (gap <= tf.square(tolerance))


def _first_min_one_hot(costs: tf.Tensor, axis: int) -> tf.Tensor:
  """bool, the shape of `costs`: the first minimum along `axis`, where it is finite."""
  lowest = tf.reduce_min(costs, axis=axis, keepdims=True)
  first = _first_true(costs <= lowest, axis)
  positions = tf.reshape(tf.range(costs.shape[axis]),
                         [-1 if i == axis else 1 for i in range(costs.shape.rank)])
  return tf.equal(positions, tf.expand_dims(first, axis)) & tf.math.is_finite(costs)


def complete_people(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor, seg: tf.Tensor,
                    mask_offset: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                    keypoint_threshold: float, radius: float, tolerance: tf.Tensor | float,
                    exact: tf.Tensor | bool,
                    people_identities: Optional[Tuple[tf.Tensor, tf.Tensor]] = None
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Gives each incomplete person the piece whose keypoints complete it; arguments and result as
  in `merge_fragments` (nothing changes unless `exact`).

  A person's embeddings point to the mean of its labelled keypoints (DM_c), so a person decoded
  whole has its keypoint mean at its identity. A person whose mean is off its identity by more
  than `WHOLE_FRACTION` of `tolerance` lacks keypoints; a piece with none of its keypoint types
  completes it when the mean of both lies that close to its identity. This finds the pieces that identities
  alone cannot place: occluded keypoints lie on the occluder's mask, so their embeddings point to
  the occluder. Each piece goes to the person it completes best, each person takes its best
  piece (a second round completes no more people on the occlusion scenes).
  """
  num_people = scores.shape[0]
  people = tf.range(num_people)
  squared_tolerance = tf.square(WHOLE_FRACTION * tolerance)
  confident = (scores > keypoint_threshold) & valid[:, None]
  identity, has_identity = people_identities or identities(
      keypoints, scores, valid, seg, mask_offset, mask_stride=mask_stride,
      seg_threshold=seg_threshold, keypoint_threshold=keypoint_threshold, radius=radius,
      tolerance=tolerance)
  weight = tf.cast(confident, tf.float32)
  count, total = keypoint_sums(keypoints, confident)
  whole = is_whole(keypoints, confident, identity, has_identity, WHOLE_FRACTION * tolerance)
  union = ((total[:, None] + total[None])
           / tf.maximum(count[:, None] + count[None], 1.0)[..., None])  # [a, b, 2]
  union_gap = distances.squared_distance(union, identity[:, None])  # [a, b]
  disjoint = ~tf.reduce_any(confident[:, None] & confident[None], axis=-1)
  fits = (exact & (has_identity & ~whole)[:, None] & ~whole[None] & (count > 0.0)[None]
          & disjoint & tf.not_equal(people[:, None], people[None])
          & (union_gap <= squared_tolerance))
  costs = tf.where(fits, union_gap, float("inf"))
  chosen = _first_min_one_hot(costs, axis=0)  # each piece b: the person a it completes best
  take = _first_min_one_hot(tf.where(chosen, costs, float("inf")), axis=1)
  take &= ~tf.reduce_any(take, axis=0)[:, None]  # a person given away takes nothing

  def completed() -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    given = tf.reduce_any(take, axis=0)
    take_weight = tf.cast(take, tf.float32)
    from_piece = tf.linalg.matmul(take_weight, weight) > 0.0  # [a, K]
    piece_keypoints = tf.einsum("ab,bkc->akc", take_weight, keypoints)
    piece_scores = tf.linalg.matmul(take_weight, scores)
    new_keypoints = tf.where(from_piece[..., None], piece_keypoints, keypoints)
    new_scores = tf.where(from_piece, piece_scores, scores)
    return _kept_first(new_keypoints, new_scores, valid & ~given)

  # Skipped where no piece completes anyone (most images).
  return tf.cond(tf.reduce_any(take) | _reordered(valid), completed,
                 lambda: _kept_in_place(keypoints, scores, valid))
