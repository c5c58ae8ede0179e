"""Fragment merging: people split by a missing keypoint, rejoined through their mask embeddings.

The tree walk cannot cross a keypoint the heads know nothing about: with perfect targets, an
unlabelled nose cuts a person into a left and a right half (COCO's tree joins the shoulders only
through the nose), an unlabelled elbow leaves its wrist an orphan that seeds a person of its own.
The MaskCentroid embedding still ties the pieces together: every pixel of a person, keypoints
included, points to the same centre C_j. So each decoded person gets an identity, the
score-weighted mean embedding `q + mask_offset(q)` of its confident keypoints that lie on the
person mask and that no earlier (higher-seeded) person shares (a broken walk often ends on other
people's keypoints). A person merges into the earliest one whose identity is within the NMS
radius of its own, unless the two disagree: a keypoint type confident in both at places more than
the NMS radius apart means two people (unless one of the two keypoints is shared with a third
person). The identity is the embedding that most of the person's confident keypoints agree with
(score-weighted), averaged over those that agree, each read at the nearest mask-grid point: an
occluded keypoint lies on the occluder's mask and points to the occluder's centre, and a bilinear
read mixes a thin limb's offsets with the background's (docs/occlusion.md). The merged person
keeps, per type, the keypoint of highest score among its pieces, preferring confident ones that no
other person shares. Measurements: docs/grouping.md.
"""

from __future__ import annotations

import math
from typing import Tuple

import tensorflow as tf

from kdc_tf.grouping import sampling


def _first_true(flags: tf.Tensor, axis: int) -> tf.Tensor:
  """int32: index of the first True along `axis` (the axis size when there is none)."""
  size = flags.shape[axis]
  positions = tf.reshape(tf.range(size), [-1 if i == axis else 1 for i in range(flags.shape.rank)])
  return tf.reduce_min(tf.where(flags, positions, size), axis=axis)


def merge_fragments(keypoints: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor, seg: tf.Tensor,
                    mask_offset: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                    keypoint_threshold: float, radius: float
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Merges fragments into the person they belong to; survivors keep their order, first.

  Args:
    keypoints: float32 `[N, K, 2]` input pixels; scores: `[N, K]`; valid: bool `[N]`, in
      descending seed score.
    seg: `[M, M, 1]` person probability; mask_offset: `[M, M, 2]` input pixels.
    mask_stride: mask-grid stride.
    seg_threshold: a keypoint is on the person mask above it.
    keypoint_threshold: a keypoint is confident above it.
    radius: the NMS radius, input pixels.

  Returns:
    `(keypoints, scores, valid)` of the same shapes.
  """
  num_people, num_types = scores.shape
  people = tf.range(num_people)
  squared_radius = radius * radius
  confident = (scores > keypoint_threshold) & valid[:, None]
  # [a, b, k]: both confident at the same place (a keypoint shared by two decoded people).
  apart = tf.reduce_sum(tf.square(keypoints[:, None] - keypoints[None]), axis=-1) > squared_radius
  both = confident[:, None] & confident[None]
  shared = both & ~apart & tf.not_equal(people[:, None], people[None])[..., None]
  # A broken walk often ends on other people's keypoints: those claimed by an earlier person say
  # nothing about who a fragment is.
  claimed_earlier = tf.reduce_any(shared & (people[:, None] < people[None])[..., None], axis=0)

  # At the nearest mask-grid point: a bilinear read mixes the offsets of the person, of the
  # background and of a neighbour at a thin limb's keypoints.
  on_mask = sampling.sample_nearest(seg, keypoints, mask_stride)[..., 0] > seg_threshold
  grid_keypoints = tf.round(keypoints / mask_stride) * mask_stride
  embeddings = grid_keypoints + sampling.sample_nearest(mask_offset, keypoints, mask_stride)
  weights = tf.where(confident & on_mask & ~claimed_earlier, scores, 0.0)
  # The embedding most of the person's keypoints agree with (score-weighted), then the mean of
  # those that agree with it: an occluded keypoint lies on the occluder's mask and points to the
  # occluder's centre, which a plain mean would mix in.
  agree = tf.cast(tf.reduce_sum(tf.square(embeddings[:, :, None] - embeddings[:, None]), axis=-1)
                  <= squared_radius, tf.float32)  # [N, K, K]
  support = tf.reduce_sum(agree * weights[:, None, :], axis=-1)  # [N, K]
  support = tf.where(weights > 0.0, support, -1.0)
  best = _first_true(support >= tf.reduce_max(support, axis=1, keepdims=True), axis=1)
  weights *= tf.gather(agree, tf.minimum(best, num_types - 1), batch_dims=1)
  total = tf.reduce_sum(weights, axis=1)
  has_identity = total > 0.0
  identity = (tf.reduce_sum(embeddings * weights[..., None], axis=1)
              / tf.maximum(total, 1e-12)[:, None])

  # Pairs [a, b]: may b (later) merge into a (earlier)? Not if a type is confident in both at
  # different places, unless one of the two is shared with a third person.
  close = tf.reduce_sum(tf.square(identity[:, None] - identity[None]), axis=-1) <= squared_radius
  shared_with_any = tf.reduce_any(shared, axis=0)  # [N, K]
  conflict = tf.reduce_any(both & apart & ~shared_with_any[:, None] & ~shared_with_any[None],
                           axis=-1)
  compatible = (close & ~conflict & (people[:, None] < people[None])
                & has_identity[:, None] & has_identity[None])
  merged_away = tf.reduce_any(compatible, axis=0)
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

  keep = valid & ~merged_away
  order = tf.argsort(tf.where(keep, people, num_people + people))
  keep = tf.gather(keep, order)
  weight = tf.cast(keep, tf.float32)
  return (tf.gather(merged_keypoints, order) * weight[:, None, None],
          tf.gather(merged_scores, order) * weight[:, None], keep)
