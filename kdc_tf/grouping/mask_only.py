"""Mask-only people: foreground that no keypoint person claimed, clustered by its embeddings.

A deviation from DESIGN.md's decoder, where every person starts from a keypoint seed. People with
no labelled keypoint (COCO has many: small, occluded, at the image border) have masks in the
segmentation ground truth, and SegNet and MaskCentroid learn them (the encoder's DM_c target falls
back to the SM_c mask mean for them), but they can never seed a person, which lowers the mask AP
even perfect grouping can reach (docs/grouping.md).

So the foreground points (`seg > seg_threshold`) that joined no keypoint person are clustered in
embedding space (`e = p + mask_offset(p)`), in fixed-size, vectorised steps:

1. their embeddings vote (bilinear splat) into a density map on the mask grid, smoothed by a
   Gaussian of `DENSITY_SIGMA` cells;
2. centres are the density's local maxima, at most one within the NMS radius (the max-pool
   window spans `ceil(radius / mask_stride)` cells each side), the best `N` of them;
3. membership as for keypoint people (`masks.membership_maps` in SM_c mode: one k-means step, then
   sigma_j from the cluster's area and phi_j > membership_threshold);
4. a cluster whose centre lies within `OWNER_SIGMAS` sigma_j of a keypoint person's mean member
   embedding is that person's (its centre missed them: a fragment's, or an embedding error) and
   joins its mask instead of becoming a speck of its own (docs/occlusion.md);
5. the other clusters of at least `MIN_AREA` input pixels^2 and `MIN_AREA_FRACTION` of the input
   become people in the slots after the keypoint people, largest score first, with all keypoint scores 0 (the evaluation gives them segm results
   only, `kdc_tf.evaluation.results`) and score `SCORE_SCALE * mean seg probability` of their
   points: below a keypoint person with 2 perfect keypoints (score 2/K, `decoder`); with a trained
   model they are the least reliable detections too.

The keypoint people's keypoints are unchanged (their masks only gain the clusters of step 4), so
keypoint AP cannot change. Where the keypoint people took every foreground point, the steps are
skipped (`tf.cond`): they would find nothing. Where every slot holds a keypoint person, no
mask-only person can be placed and only step 4's joins could change the people; there the
clustering is skipped too, and the joins are taken point by point in the keypoint people's own
membership (`joins_where_every_slot_is_taken`): a foreground point joins the person of its
largest phi_j when it lies within `OWNER_SIGMAS` sigma'_j of C_j, sigma'_j from the area of j's
members. Not exactly step 4 (per point instead of per cluster; from C_j, not from the mean member
embedding; the person of the largest phi_j, not the nearest): a person's missed part still joins
it and a blob far from everybody joins nobody, without the density, centres and labels (0.2 -
0.5 ms at 40 people; docs/grouping.md, 'Speed, session 13').
Measurements (segm AP with and without, cost): docs/grouping.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import tensorflow as tf

from kdc_tf import geometry
from kdc_tf.grouping import distances, gaussian, masks, peaks, reductions, sampling

# Smoothing of the embedding density, in mask-grid cells.
DENSITY_SIGMA = 1.0
# Smallest mask-only person, in input pixels^2: 4 mask-grid points at stride 4, and at least this
# fraction of the square input's area (80 px^2 at 401, 320 at 801).
MIN_AREA = 64.0
MIN_AREA_FRACTION = 5e-4
# A leftover cluster within this many sigma_j of a keypoint person's mean member embedding is that
# person's (phi_j = exp(-1.28) = 0.28 there; membership claims phi_j > 0.5, 1.18 sigma_j).
OWNER_SIGMAS = 1.6
# Where every slot is taken, a point joins the person of its largest phi_j within OWNER_SIGMAS
# sigma'_j (phi at that distance, `masks.membership_maps`'s `lowered_threshold`).
JOIN_PHI = math.exp(-0.5 * OWNER_SIGMAS ** 2)
# Mask-only person score = SCORE_SCALE * mean person probability of its points.
SCORE_SCALE = 0.1
# The clusters' labels are computed with the valid centres only, gathered into this many rows,
# where there are at most this many (1 - 4 on the benchmark's 40-person scenes); else with all
# `N` (the same labels: a centre without a density peak takes no point). Docs/grouping.md,
# 'Speed, session 12'.
CENTRE_ROWS = 4


class People(NamedTuple):
  """All people of an image, fixed size `N`: keypoint people first, then mask-only ones."""

  keypoints: tf.Tensor  # float32 [N, K, 3]
  scores: tf.Tensor  # float32 [N]
  membership: tf.Tensor  # float32 [N, M, M]
  valid: tf.Tensor  # bool [N]


def joins_where_every_slot_is_taken(valid: tf.Tensor) -> Tuple[tf.Tensor, float]:
  """`masks.membership_maps`'s `lowered_threshold` for the keypoint people valid `[N]` (valid
  ones first): `JOIN_PHI` where every slot holds one (module docstring)."""
  return tf.reduce_all(valid), JOIN_PHI


def cluster_centres(leftover: tf.Tensor, mask_offset: tf.Tensor, *, mask_stride: int,
                    radius: float, num_centres: int):
  """Embedding-density peaks of the `leftover` points: (`[C, 2]` input pixels, bool `[C]`).

  Args:
    leftover: float32 `[M, M]`, 1 on the points to cluster.
    mask_offset: `[M, M, 2]` input pixels.
    radius: centres are at least about this far apart (input pixels).
    num_centres: C.
  """
  height, width = leftover.shape
  embeddings = geometry.grid_points(height, width, mask_stride) + mask_offset
  density = sampling.splat(leftover, embeddings, tf.zeros([height, width], tf.int32),
                           float(mask_stride), (height, width, 1))
  density = gaussian.smooth(density, gaussian.gaussian_kernels_1d([DENSITY_SIGMA]))
  window = 2 * math.ceil(radius / mask_stride) + 1
  found = peaks.find_candidates(density, 0.0, num_centres, window, separable=True)
  centres = tf.gather(tf.reshape(geometry.grid_points(height, width, mask_stride), [-1, 2]),
                      found.cells)
  return centres, found.valid


def _owning_people(membership: tf.Tensor, valid: tf.Tensor, centres: tf.Tensor,
                   mask_offset: tf.Tensor, *, mask_stride: int, membership_sigma: float):
  """Per cluster centre `[C, 2]`, the keypoint person whose mean member embedding is nearest
  (int32 `[C]`) and whether it lies within `OWNER_SIGMAS` of that person's sigma_j (bool `[C]`)."""
  num_people, height, width = membership.shape
  embeddings = tf.reshape(geometry.grid_points(height, width, mask_stride) + mask_offset, [-1, 2])
  members = tf.reshape(membership, [num_people, -1])
  counts = tf.reduce_sum(members, axis=1)
  person_centres = tf.linalg.matmul(members, embeddings) / tf.maximum(counts, 1.0)[:, None]
  sigma_squared = tf.square(membership_sigma) * counts * float(mask_stride * mask_stride)
  squared = distances.squared_distance(centres[:, None], person_centres[None])  # [C, N]
  squared = tf.where((valid & (counts > 0))[None], squared, 1e30)
  owner = reductions.argmin(squared, axis=1)
  reach = tf.square(OWNER_SIGMAS) * tf.gather(sigma_squared, owner)
  within = tf.gather(squared, owner, batch_dims=1) <= reach
  return owner, within


def add_mask_only_people(keypoints: tf.Tensor, scores: tf.Tensor, membership: tf.Tensor,
                         valid: tf.Tensor, seg: tf.Tensor, mask_offset: tf.Tensor, *,
                         mask_stride: int, seg_threshold: float, membership_threshold: float,
                         membership_sigma: float, radius: float) -> People:
  """Fills the slots after the keypoint people with mask-only people.

  Args:
    keypoints: float32 `[N, K, 3]`, scores `[N]` (>= 0), membership `[N, M, M]` (0 / 1, as
      `masks.membership_maps` gives), valid bool `[N]`: the keypoint people, valid ones first.
    seg: `[M, M, 1]` person probability; mask_offset: `[M, M, 2]` input pixels.
    radius: the NMS radius (input pixels): the smallest distance between two mask-only centres.
  """
  num_people, height, _ = membership.shape
  probability = seg[..., 0]
  claimed = tf.reduce_sum(membership, axis=0) > 0.0
  leftover = (probability > seg_threshold) & ~claimed
  # Slot i: keypoint person i for i < n; then the mask-only people.
  num_keypoint_people = tf.reduce_sum(tf.cast(valid, tf.int32))
  slots = tf.range(num_people)
  from_extra = slots >= num_keypoint_people

  def clusters():
    """Per point its cluster, int32 `[M M]` (-1: none), whether each cluster has an owner `[C]`,
    and the keypoint people's memberships with the clusters their owners took `[N, M, M]`."""
    centres, has_centre = cluster_centres(
        tf.cast(leftover, tf.float32), mask_offset, mask_stride=mask_stride, radius=radius,
        num_centres=num_people)

    def labels_and_owners(rows):
      """Per point its cluster and the person it joins (int32 `[M M]`, -1: none), and whether
      each cluster has an owner, computed with the centres `rows` only (int32 `[R]`)."""
      row_centres, row_has_centre = tf.gather(centres, rows), tf.gather(has_centre, rows)
      # Per point its cluster or -1: the clusters' memberships are disjoint 0 / 1 maps.
      label = masks.membership_labels(
          tf.where(leftover, probability, 0.0)[..., None], mask_offset, row_centres,
          row_has_centre, mask_stride=mask_stride, seg_threshold=seg_threshold,
          membership_threshold=membership_threshold, membership_sigma=membership_sigma)
      # A cluster whose embeddings point at a keypoint person's is that person's: pixels its
      # (fragment- or error-shifted) centre missed, not a person of their own.
      owner, owned = _owning_people(membership, valid, row_centres, mask_offset,
                                    mask_stride=mask_stride, membership_sigma=membership_sigma)
      owned &= row_has_centre
      # Each point joins the owner of its cluster, if any (a gather, not a [C, N] x [C, M M]
      # product of 18 MFLOP at 401).
      index = tf.maximum(label, 0)
      joins = tf.where(label >= 0, tf.gather(tf.where(owned, owner, -1), index), -1)
      cluster = tf.where(label >= 0, tf.gather(rows, index), -1)
      return cluster, joins, tf.scatter_nd(rows[:, None], tf.cast(owned, tf.int32),
                                           [num_people]) > 0

    def first_centres():
      """The first `CENTRE_ROWS` centre slots holding the valid centres, in slot order."""
      order = tf.where(has_centre, float(num_people) - tf.range(num_people, dtype=tf.float32),
                       0.0)
      return labels_and_owners(tf.math.top_k(order, k=CENTRE_ROWS).indices)

    if num_people <= CENTRE_ROWS:
      cluster, joins, owned = labels_and_owners(tf.range(num_people))
    else:  # Only the valid centres take points: where few, the labels of those alone.
      cluster, joins, owned = tf.cond(
          tf.reduce_sum(tf.cast(has_centre, tf.int32)) <= CENTRE_ROWS, first_centres,
          lambda: labels_and_owners(tf.range(num_people)))
    people = tf.range(num_people)[:, None]
    joined = tf.cast(tf.equal(people, joins[None]), tf.float32)
    joined_membership = tf.minimum(membership + tf.reshape(joined, membership.shape), 1.0)
    return cluster, owned, joined_membership

  def with_clusters() -> People:
    cluster, owned, joined_membership = clusters()
    extra = tf.reshape(tf.cast(tf.equal(tf.range(num_people)[:, None], cluster[None]), tf.float32),
                       membership.shape)  # [C, M, M]
    points = tf.reduce_sum(extra, axis=[1, 2])
    min_area = max(MIN_AREA, MIN_AREA_FRACTION * float(((height - 1) * mask_stride + 1) ** 2))
    extra_valid = (points * float(mask_stride * mask_stride) >= min_area) & ~owned
    mean_probability = (tf.reduce_sum(extra * probability[None], axis=[1, 2])
                        / tf.maximum(points, 1.0))
    extra_scores = tf.where(extra_valid, SCORE_SCALE * mean_probability, -1.0)
    # The (i - n)-th best mask-only person in slot i >= n.
    ranked = tf.argsort(extra_scores, direction="DESCENDING")
    rank = tf.clip_by_value(slots - num_keypoint_people, 0, num_people - 1)
    source = tf.where(from_extra, num_people + tf.gather(ranked, rank), slots)
    all_valid = tf.where(from_extra, tf.gather(extra_valid, tf.gather(ranked, rank)), valid)
    weight = tf.cast(all_valid, tf.float32)
    all_scores = tf.concat([scores, tf.maximum(extra_scores, 0.0)], axis=0)
    all_membership = tf.concat([joined_membership, extra], axis=0)
    return People(
        keypoints=keypoints * tf.cast(~from_extra & valid, tf.float32)[:, None, None],
        scores=tf.gather(all_scores, source) * weight,
        membership=tf.gather(all_membership, source) * weight[:, None, None],
        valid=all_valid)

  def without_clusters() -> People:
    """The same people where no point is left over or every slot holds a keypoint person (whose
    joins `membership` has: `joins_where_every_slot_is_taken`): no mask-only person."""
    all_valid = valid & ~from_extra
    weight = tf.cast(all_valid, tf.float32)
    return People(
        keypoints=keypoints * tf.cast(~from_extra & valid, tf.float32)[:, None, None],
        scores=scores * weight, membership=membership * weight[:, None, None], valid=all_valid)

  # Skipped where the keypoint people took every foreground point (most perfect scenes) or
  # every slot holds a keypoint person (no mask-only person can be placed).
  return People(*tf.cond(tf.reduce_any(leftover) & (num_keypoint_people < num_people),
                         with_clusters, without_clusters))
