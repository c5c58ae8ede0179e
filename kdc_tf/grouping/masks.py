"""Instance masks from the person mask and MaskCentroid embeddings (DESIGN.md 'Decoding' 5).

For every mask-grid point p with person probability above `seg_threshold`, the embedding is
`e = p + mask_offset(p)`. Person j has a centre C_j and a spread sigma_j; p joins the person with
the largest phi_j(e) = exp(-|e - C_j|^2 / (2 sigma_j^2)) when that phi exceeds
`membership_threshold` (eq. 6).

- C_j starts, in dynamic mode (DM_c), at the plain mean of j's keypoints scoring above
  `centroid_keypoint_threshold` (score-weighted mean of all of j's keypoints if none passes), the
  training target's definition (mean of the labelled keypoints). The keypoint scores only gate:
  weighting by them (DESIGN.md's first reading) moves the centre towards whichever keypoints
  happen to score high, away from the centre the embeddings were trained to point at
  (docs/grouping.md). Where the embeddings are exact (perfect maps), the decoder passes the
  person's identity (`merging.identities`) instead, right for a fragment too (docs/occlusion.md).
- Then one k-means step in embedding space: foreground points go to the nearest centre and C_j
  becomes the mean embedding of j's points (j keeps its centre if none went to it). In static
  mode (SM_c, target = mean position of the mask pixels) this is the centre's definition: for
  exact offsets, j's mask mean. In dynamic mode the decoder takes it on learned maps only (a
  deviation from DESIGN.md): a learned embedding field clusters a person's points around a centre
  off the decoded keypoints' mean, and the step follows the cluster (segm AP +0.002 to +0.019 on
  four trained models: docs/grouping.md). Perfect maps have the identity already, and there the
  step would pull a centre towards the cluster of a person without keypoints.
- sigma_j = membership_sigma * sqrt(area_j), area_j in input pixels^2 like the training loss's
  mask area (`geometry.membership_variance`): the number of foreground mask-grid points whose
  embedding is nearest to C_j, times mask_stride^2, which tracks the true mask area far better
  than the keypoints' bounding box (docs/grouping.md).

Each person's binary membership map (1 where j won the point) is smoothed by IGO (a Gaussian of
`GroupingConfig.igo_sigma`, converted to mask-grid cells by `gaussian.sigma_in_cells`) and resampled bilinearly to the output image: output pixel (x, y)
reads mask-grid coordinate (x, y) * input_scale / mask_stride, clipped to the grid; a pixel
belongs to j where the resampled map exceeds 0.5.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import tensorflow as tf

from kdc_tf import geometry
from kdc_tf.grouping import distances, gaussian

# Membership threshold of the final, resampled instance maps.
MASK_THRESHOLD = 0.5
# Where the person probability draws the border (`output_masks`), a pixel needs at least this much
# of a person's resampled map: up to about half a cell beyond the grid points it won (0.2 - 0.3
# gave the same segm AP on the quick-start model).
INSTANCE_FLOOR = 0.3
# Centres closer than this (input pixels) are the same centre: pieces of one person that share its
# identity differ only by float round-off, which differs between CPUs.
SAME_CENTRE_PX = 0.01
# `column_max` / `column_min` of at most this many rows are chains of elementwise maximums
# (minimums); of more, reductions: with 30 rows XLA then recomputed the rows' producer in each
# link (membership labels at 401: 0.46 -> 0.34 ms with 8 rows, 0.67 -> 1.45 ms with 30).
CHAINED_ROWS = 8


def keypoint_centroids(keypoints: tf.Tensor, scores: tf.Tensor, threshold: float) -> tf.Tensor:
  """float32 `[N, 2]`: per person the mean of its keypoints above `threshold` (the score-weighted
  mean of all of them when none is above).

  Args:
    keypoints: float32 `[N, K, 2]` `(x, y)`; scores: float32 `[N, K]`.
  """
  confident = tf.cast(scores > threshold, tf.float32)
  has_confident = tf.reduce_sum(confident, axis=1, keepdims=True) > 0.0
  weights = tf.where(has_confident, confident, scores) + 1e-12
  return tf.reduce_sum(keypoints * weights[..., None], axis=1) / tf.reduce_sum(
      weights, axis=1)[:, None]


def mask_owners(centres: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
  """bool `[N]`: the people that may take mask points; of those sharing a centre (within
  `SAME_CENTRE_PX`), only the best-scoring (the first on equal scores).

  Without it, which of several pieces with one identity took the whole mask was decided by the
  round-off of their centres, i.e. by the CPU.

  Args:
    centres: float32 `[N, 2]`; scores: float32 `[N]`; valid: bool `[N]`.
  """
  people = tf.range(centres.shape[0])
  same = (distances.squared_distance(centres[:, None], centres[None])
          <= SAME_CENTRE_PX ** 2) & valid[:, None] & valid[None]
  ahead = (scores[:, None] > scores[None]) | (
      (scores[:, None] == scores[None]) & (people[:, None] < people[None]))  # [i, j]: i before j
  return valid & ~tf.reduce_any(same & ahead, axis=0)


def _column_extreme(values: tf.Tensor, elementwise, reduce) -> tf.Tensor:
  """`[1, P]`: `reduce` of each column of `values` `[N, P]`; for at most `CHAINED_ROWS` rows as a
  chain of `elementwise` over the rows: the same values (a maximum or minimum does not round),
  fused by XLA into its consumers, where its CPU reduce over the leading axis is a kernel of its
  own (docs/grouping.md, 'Speed, session 12')."""
  if values.shape[0] > CHAINED_ROWS:
    return reduce(values, axis=0, keepdims=True)
  rows = tf.unstack(values, axis=0)
  best = rows[0]
  for row in rows[1:]:
    best = elementwise(best, row)
  return best[None]


def column_max(values: tf.Tensor) -> tf.Tensor:
  """`[1, P]`: the maximum of each column of `values` `[N, P]` (`_column_extreme`)."""
  return _column_extreme(values, tf.maximum, tf.reduce_max)


def column_min(values: tf.Tensor) -> tf.Tensor:
  """`[1, P]`: the minimum of each column of `values` `[N, P]` (`_column_extreme`)."""
  return _column_extreme(values, tf.minimum, tf.reduce_min)


def first_max(values: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """The maximum of each column of `values` `[N, P]` and the first row holding it, both `[1, P]`.

  Maximums and minimums over the rows (`column_max`): XLA's CPU argmax (a variadic reduce) and
  cumsum, and reductions over a short minor axis, are several times slower.
  """
  best = column_max(values)
  rows = tf.range(values.shape[0])[:, None]
  return best, column_min(tf.where(values >= best, rows, values.shape[0]))


def one_hot_first_max(values: tf.Tensor) -> tf.Tensor:
  """float32 one-hot `[N, P]` of the first maximum of each column (over N)."""
  _, first = first_max(values)
  return tf.cast(tf.equal(tf.range(values.shape[0])[:, None], first), tf.float32)


def _log_phi(seg: tf.Tensor, mask_offset: tf.Tensor, centres: tf.Tensor, valid: tf.Tensor, *,
             mask_stride: int, seg_threshold: float, membership_sigma: float,
             refine_centres: Union[bool, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """log phi_j of every point `[N, P]` (-1e30 for people that do not exist), the foreground
  `[1, P]` (0 / 1) of `membership_maps` and per person the foreground points nearest its centre
  `[N]` (sigma_j's area)."""
  height, width, _ = seg.shape
  embeddings = tf.reshape(geometry.grid_points(height, width, mask_stride) + mask_offset, [-1, 2])
  foreground = tf.cast(tf.reshape(seg, [1, -1]) > seg_threshold, tf.float32)  # [1, P]
  no_one = -1e30  # log phi (or -distance) of people that do not exist

  def squared_distances(points):  # [N, P]
    return (tf.square(embeddings[None, :, 0] - points[:, 0:1])
            + tf.square(embeddings[None, :, 1] - points[:, 1:2]))

  distances = squared_distances(centres)
  nearest = one_hot_first_max(tf.where(valid[:, None], -distances, no_one)) * foreground
  counts = tf.reduce_sum(nearest, axis=1)  # [N]

  def refined():
    mean_embedding = tf.linalg.matmul(nearest, embeddings) / tf.maximum(counts, 1.0)[:, None]
    moved = tf.where((counts > 0)[:, None], mean_embedding, centres)
    return moved, squared_distances(moved)

  if isinstance(refine_centres, bool):
    if refine_centres:
      centres, distances = refined()
  else:  # A condition of the maps (learned or exact): skipped, not computed and discarded.
    centres, distances = tf.cond(refine_centres, refined, lambda: (centres, distances))
  sigma_squared = geometry.membership_variance(membership_sigma, counts, mask_stride)  # [N]
  present = valid & (sigma_squared > 0.0)
  # log phi = -d^2 / (2 sigma^2), compared with log(membership_threshold): no exp over [N, P].
  scale = tf.where(present, 0.5 / tf.maximum(sigma_squared, 1e-12), 0.0)
  return -distances * scale[:, None] + tf.where(present, 0.0, no_one)[:, None], foreground, counts


def membership_maps(seg: tf.Tensor, mask_offset: tf.Tensor, centres: tf.Tensor,
                    valid: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                    membership_threshold: float, membership_sigma: float,
                    refine_centres: Union[bool, tf.Tensor] = True,
                    lowered_threshold: Optional[Tuple[tf.Tensor, float]] = None) -> tf.Tensor:
  """float32 `[N, M, M]` (people-major): 1 where a foreground point joins person j, else 0.

  Args:
    seg: `[M, M, 1]` person probability; mask_offset: `[M, M, 2]` input pixels.
    centres: float32 `[N, 2]` keypoint-based centres (`keypoint_centroids`).
    valid: bool `[N]`, people that exist; the others get no point.
    refine_centres: (scalar bool) move the centres to the mean embedding of their nearest
      foreground points first (module docstring).
    lowered_threshold: (scalar bool, phi): where the bool holds, a point joins its person j of
      the largest phi_j also where it lies within sqrt(-2 log phi) sigma'_j of C_j, sigma'_j from
      the area of j's members above `membership_threshold`
      (`mask_only.joins_where_every_slot_is_taken`).
  """
  height, width, _ = seg.shape
  log_phi, foreground, nearest = _log_phi(
      seg, mask_offset, centres, valid, mask_stride=mask_stride, seg_threshold=seg_threshold,
      membership_sigma=membership_sigma, refine_centres=refine_centres)
  best, first = first_max(log_phi)
  people = tf.range(centres.shape[0])[:, None]
  log_threshold = math.log(membership_threshold)
  if lowered_threshold is not None:
    lowered, phi = lowered_threshold

    def reach():
      """Per person `[N]`: log phi_j at sqrt(-2 log(phi)) sigma'_j from C_j, sigma'_j from the
      area of j's members (above `membership_threshold`), not of the points nearest C_j."""
      members = tf.reduce_sum(tf.cast(tf.equal(people, first) & (best > log_threshold),
                                      tf.float32) * foreground, axis=1)
      return math.log(phi) * members / tf.maximum(nearest, 1.0)

    log_threshold = tf.gather(tf.cond(lowered, reach, lambda: tf.fill(
        [centres.shape[0]], log_threshold)), first)
  member = tf.equal(people, first) & (best > log_threshold)
  membership = tf.cast(member, tf.float32) * foreground
  return tf.reshape(membership, [centres.shape[0], height, width])


def membership_labels(seg: tf.Tensor, mask_offset: tf.Tensor, centres: tf.Tensor,
                      valid: tf.Tensor, *, mask_stride: int, seg_threshold: float,
                      membership_threshold: float, membership_sigma: float,
                      refine_centres: Union[bool, tf.Tensor] = True) -> tf.Tensor:
  """int32 `[M * M]`: the person each point joins in `membership_maps` (the row of its 1), -1
  where it joins none; arguments as there. One label per point instead of `N` maps."""
  log_phi, foreground, _ = _log_phi(
      seg, mask_offset, centres, valid, mask_stride=mask_stride, seg_threshold=seg_threshold,
      membership_sigma=membership_sigma, refine_centres=refine_centres)
  best, first = first_max(log_phi)
  joins = (foreground[0] > 0.0) & (best[0] > math.log(membership_threshold))
  return tf.where(joins, first[0], -1)


def instance_maps(membership: tf.Tensor, igo_sigma: float) -> tf.Tensor:
  """IGO: each person's membership map `[N, M, M]` smoothed by a Gaussian of `igo_sigma` cells
  (`GroupingConfig.igo_sigma` converted by `gaussian.sigma_in_cells`).

  The kernel is non-negative and sums to 1 and the memberships are disjoint, so the maps still sum
  to at most 1 at every point: at most one person exceeds 0.5 anywhere (used by `output_masks`).
  """
  kernel = gaussian.gaussian_kernels_1d([igo_sigma])
  return gaussian.smooth(membership, kernel, axes=(1, 2))


class ResamplingTables(NamedTuple):
  """Instance maps prepared (on the mask grid, static shapes) for `output_masks`."""

  values: tf.Tensor  # float32 [N * M * M]: the maps, flat, people-major
  x_slopes: tf.Tensor  # float32 [N * M * M]: value at the next column minus value (0 at the last)
  row_starts: tf.Tensor  # int32 [M, M]: flat index of (largest person at (r, c), row r, column 0)


def resampling_tables(maps: tf.Tensor) -> ResamplingTables:
  """`ResamplingTables` of instance maps `[N, M, M]`."""
  num_people, height, width = maps.shape
  slopes = tf.pad(maps[:, :, 1:] - maps[:, :, :-1], [[0, 0], [0, 0], [0, 1]])
  best = one_hot_first_max(tf.reshape(maps, [num_people, height * width]))
  people = tf.range(num_people, dtype=tf.float32)[:, None]
  labels = tf.reshape(tf.cast(tf.reduce_sum(best * people, axis=0), tf.int32), [height, width])
  row_starts = (labels * height + tf.range(height)[:, None]) * width
  return ResamplingTables(tf.reshape(maps, [-1]), tf.reshape(slopes, [-1]), row_starts)


def _resampling_axis(size: tf.Tensor, grid: int, step: tf.Tensor):
  """Per output pixel along one axis: the lower grid index and the bilinear weight of the upper."""
  coords = tf.clip_by_value(tf.range(size, dtype=tf.float32) * step, 0.0, grid - 1.0)
  lower = tf.minimum(tf.floor(coords), grid - 2.0)
  return tf.cast(lower, tf.int32), coords - lower


def output_masks(tables: ResamplingTables, output_size: tf.Tensor, input_scale: tf.Tensor,
                 mask_stride: int, person_probability: Optional[tf.Tensor] = None,
                 seg_threshold: float = 0.5, use_probability: Union[bool, tf.Tensor] = True
                 ) -> tf.Tensor:
  """uint8 `[N, Ho, Wo]`: each instance map resampled bilinearly to the output, > 0.5.

  With `person_probability` (the seg map `[M, M, 1]`) and where `use_probability` holds, the
  person probability draws the border instead: a pixel belongs to the person whose resampled map
  is the larger of the two vertical candidates below when it exceeds `INSTANCE_FLOOR` and the
  bilinearly resampled probability exceeds `seg_threshold`. A learned probability map places the
  border between grid points, where the binary membership maps cannot (segm AP of the quick-start
  model 0.332 -> 0.350); a perfect, binary one carries no such information (oracle segm AP 0.002
  - 0.009 lower), so the decoder uses it on learned maps only (docs/grouping.md).

  Without the probability: exactly the per-person resampling, at a cost independent of N at
  output resolution. The maps sum to at most 1 at every point, and bilinear weights keep that, so
  at most one person exceeds 0.5 anywhere; one above 0.5 at an interpolated point is above 0.5 at one of the two grid points
  it is interpolated from, where it is the largest. So horizontally (on mask-grid rows, `[M, Wo]`)
  only the largest people of the left and right grid points are interpolated, and vertically only
  the winners of the upper and lower rows; the label image is expanded by one `one_hot`.

  Args:
    tables: `resampling_tables` of maps summing to at most 1 over people.
    output_size: int32 `[2]` `(Ho, Wo)`.
    input_scale: float32 `[]` input pixels per output pixel.
    mask_stride: input pixels per mask-grid cell.
  """
  grid_h, grid_w = tables.row_starts.shape
  num_people = tables.values.shape[0] // (grid_h * grid_w)
  step = input_scale / float(mask_stride)
  y_lower, y_weight = _resampling_axis(output_size[0], grid_h, step)
  x_lower, x_weight = _resampling_axis(output_size[1], grid_w, step)

  def along_row(starts):
    """Horizontal interpolation at every output column of the (person, row) of `starts`."""
    index = starts + x_lower
    return tf.gather(tables.values, index) + x_weight * tf.gather(tables.x_slopes, index)

  # Horizontal pass on mask-grid rows, [M, Wo]: the larger of the left and right candidates.
  left_starts = tf.gather(tables.row_starts, x_lower, axis=1)
  right_starts = tf.gather(tables.row_starts, x_lower + 1, axis=1)
  left_value, right_value = along_row(left_starts), along_row(right_starts)
  starts = tf.where(left_value >= right_value, left_starts, right_starts)
  value = tf.maximum(left_value, right_value)
  # Each row's winner read on the next row, the next row's winner on this row: [M - 1, Wo].
  down_slope = along_row(starts[:-1] + grid_w) - value[:-1]
  up = along_row(starts[1:] - grid_w)
  up_slope = value[1:] - up
  row_label = starts // (grid_h * grid_w)

  # Vertical pass at output resolution, [Ho, Wo].
  weight = y_weight[:, None]
  upper_value = tf.gather(value, y_lower) + weight * tf.gather(down_slope, y_lower)
  lower_value = tf.gather(up, y_lower) + weight * tf.gather(up_slope, y_lower)
  upper_label, lower_label = tf.gather(row_label, y_lower), tf.gather(row_label, y_lower + 1)

  def from_maps():
    return tf.where(upper_value > MASK_THRESHOLD, upper_label,
                    tf.where(lower_value > MASK_THRESHOLD, lower_label, -1))

  def from_probability():
    upper_wins = upper_value >= lower_value
    best = tf.where(upper_wins, upper_value, lower_value)
    probability = _resample_map(person_probability[..., 0], x_lower, x_weight, y_lower, weight)
    return tf.where((best > INSTANCE_FLOOR) & (probability > seg_threshold),
                    tf.where(upper_wins, upper_label, lower_label), -1)

  if person_probability is None:
    pixel_label = from_maps()
  else:
    pixel_label = tf.cond(tf.convert_to_tensor(use_probability), from_probability, from_maps)
  return tf.one_hot(pixel_label, num_people, on_value=1, off_value=0, axis=0, dtype=tf.uint8)


def _resample_map(grid_map: tf.Tensor, x_lower: tf.Tensor, x_weight: tf.Tensor,
                  y_lower: tf.Tensor, y_weight: tf.Tensor) -> tf.Tensor:
  """One `[M, M]` map resampled bilinearly to `[Ho, Wo]` (the axes of `_resampling_axis`)."""
  rows = (tf.gather(grid_map, x_lower, axis=1) * (1.0 - x_weight)
          + tf.gather(grid_map, x_lower + 1, axis=1) * x_weight)
  return tf.gather(rows, y_lower) * (1.0 - y_weight) + tf.gather(rows, y_lower + 1) * y_weight
