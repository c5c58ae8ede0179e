"""The grouping module: head outputs of one image -> people (ARCHITECTURE.md section 5).

`Grouper.group` is a `tf.function` with a fixed input signature (grid sizes fixed by the input
size; `output_size` and `input_scale` dynamic), usable in eager code, in evaluation and inside an
exported SavedModel. It runs in stages:

1. (XLA when `jit_compile`) Hough voting (or, with `use_keycentroid` off, the heatmap itself) + PGO,
   candidates, all candidates' poses walked in parallel, the `[C, C]` suppression overlaps
   (`poses`).
2. Greedy selection: `tf.image.non_max_suppression_overlaps` (no XLA kernel), then the people
   that repeat an earlier person's pose are dropped (`poses.drop_repeats`).
3. (XLA) people's keypoints, fragment merging and completion (`merging`), keypoints claimed by
   identity and completion from the candidates' walks (`claiming`) and from skeleton pieces
   (`pieces`), scores, membership
   (`masks`), mask-only people in the remaining slots (`mask_only`), IGO instance maps; then (XLA)
   the maps' resampling tables; then, at the dynamic output size, the masks, and the keypoints in
   output pixels, clipped to the output image (the square input's padding maps beyond it).

Every compiled stage has static shapes that do not depend on input values, so XLA compiles each
once per input size, not once per image (`tests/test_grouping.py` checks it).

Deviations from DESIGN.md 'Decoding', each justified by a measurement in docs/grouping.md or
docs/occlusion.md: repeated poses suppressed, walks stopped at unsupported keypoints and offsets
read from the corners that vote for the keypoint (`poses`), keypoint scores as vote mass
(`voting`), fragments merged and people completed (`merging`), keypoints claimed by identity
(`claiming`), also from the keypoints the KeyCentroid votes land on (`peaks`), people rebuilt from
the skeleton pieces the voted keypoints' mid-range steps link (`pieces`), mask centroid as
the plain mean of the confident keypoints (`masks`), mask-only people (`mask_only`), keypoint
scores over the owned part of the disk and a separate mask ranking (`scoring`; on learned maps
times each mask's assignment margin, `mask_ranking`).

Person score (`scores`, the keypoints' ranking): the mean over all K types of the keypoint scores
(DESIGN.md 'Decoding' 4), each in [0, 1] and about 1 when perfect: the fraction of a whole
skeleton's evidence. A perfect person with every keypoint labelled scores about 1, one with n
labelled keypoints about n / K, a fragment less than the whole person it is a piece of (halved
where the embeddings are exact, `scoring`). `mask_scores` rank the masks (`scoring`,
`mask_ranking`).
"""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

from kdc_tf import geometry
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.grouping import (claiming, gaussian, mask_only, mask_ranking, masks, merging, peaks,
                             pieces, poses, sampling, scoring, voting)

INPUT_KEYS = ("heatmap", "keycentroid", "midrange", "seg", "mask_offset")
# People selected by the seed rule before repeated poses are dropped, per output slot.
REPEAT_POOL = 2
# Candidates whose walked keypoints people may claim (`claiming`), per output slot.
CLAIM_POOL = 4
# The pose-grid stride whose score maps `GroupingConfig.peak_threshold` applies to as they are.
SCORE_REFERENCE_STRIDE = 8


def model_outputs_to_grouping_inputs(outputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """One image's model outputs (ARCHITECTURE.md 4) -> the grouping inputs (section 5).

  Applies the sigmoid to `heatmap_logits` and `seg_logits`. Accepts tensors without a batch
  dimension or with a batch of exactly one image.
  """

  def one_image(name: str) -> tf.Tensor:
    tensor = tf.convert_to_tensor(outputs[name], tf.float32)
    if tensor.shape.rank == 4:
      if tensor.shape[0] is not None and tensor.shape[0] != 1:
        raise ValueError(f"{name}: grouping takes one image, got a batch of {tensor.shape[0]}")
      with tf.control_dependencies([tf.debugging.assert_equal(
          tf.shape(tensor)[0], 1, message=f"{name}: grouping takes one image")]):
        tensor = tf.identity(tensor[0])
    elif tensor.shape.rank != 3:
      raise ValueError(f"{name}: expected [H, W, C] or [1, H, W, C], got shape {tensor.shape}")
    return tensor

  return {
      "heatmap": tf.sigmoid(one_image("heatmap_logits")),
      "keycentroid": one_image("keycentroid"),
      "midrange": one_image("midrange"),
      "seg": tf.sigmoid(one_image("seg_logits")),
      "mask_offset": one_image("mask_offset"),
  }


class Grouper(tf.Module):
  """Decodes one image's head outputs into at most `config.max_people` people.

  Call `grouper(inputs, output_size, input_scale)` with the dict of
  `model_outputs_to_grouping_inputs` (or perfect targets), or the tf.function `grouper.group`
  with the same tensors positionally. Output (ARCHITECTURE.md 5): `keypoints` float32 `[N, K, 3]`
  `(x, y, score)` in output pixels, `scores` float32 `[N]`, `mask_scores` float32 `[N]`, `masks`
  uint8 `[N, Ho, Wo]`, `num_people` int32; valid people first, in descending seed score.
  """

  def __init__(self, experiment: ExperimentConfig, config: GroupingConfig,
               jit_compile: bool = True):
    """Decodes the head outputs of the model `experiment` describes.

    Args:
      experiment: the model's configuration: its `geometry` (keypoint layout, input size, output
        stride, disk radius), the MaskCentroid mode (`encoder.centroid_mode`) and the membership
        sigma (`loss.membership_sigma`) it was trained with, so that train and test agree.
      config: the decoder's own settings.
      jit_compile: XLA-compile the stages that allow it.
    """
    super().__init__(name="grouper")
    if config.max_people < 1 or config.peaks_per_type < 1:
      raise ValueError("max_people and peaks_per_type must be >= 1")
    if config.peak_threshold < 0 or config.nms_radius < 0:
      raise ValueError("peak_threshold and nms_radius must be >= 0")
    if not 0 < config.membership_threshold <= 1:
      raise ValueError(f"membership_threshold must be in (0, 1], got {config.membership_threshold}")
    shape = experiment.geometry
    self._spec = shape.spec
    self._config = config
    self._centroid_mode = experiment.encoder.centroid_mode
    self._membership_sigma = experiment.loss.membership_sigma
    self._input_size = shape.input_size
    self._stride = shape.output_stride
    self._disk_radius = shape.disk_radius
    self._pose_grid = shape.pose_grid_size
    self._mask_grid = shape.mask_grid_size
    if self._pose_grid < 2:
      raise ValueError(f"input size {shape.input_size} gives a pose grid of {self._pose_grid} "
                       "point")
    self._edge_orders = poses.breadth_first_edges(self._spec)
    self._directed_edges = np.asarray(self._spec.directed_edges, np.int32)
    self._pgo_kernels = gaussian.gaussian_kernels_1d(gaussian.pgo_sigmas_in_cells(
        self._spec.high_variance, config.pgo_sigma_high, config.pgo_sigma_low, self._stride))
    # Score maps in units of the stride-8 grid's, where `peak_threshold` was tuned: a perfect
    # disk's peak reads the same at every stride (a finer grid spreads PGO over more cells).
    reference_kernels = gaussian.gaussian_kernels_1d(gaussian.pgo_sigmas_in_cells(
        self._spec.high_variance, config.pgo_sigma_high, config.pgo_sigma_low,
        SCORE_REFERENCE_STRIDE))
    self._score_scale = (gaussian.mean_peak_heights(reference_kernels)
                         / gaussian.mean_peak_heights(self._pgo_kernels))
    self._igo_cells = gaussian.sigma_in_cells(config.igo_sigma, geometry.MASK_STRIDE)
    self._find_poses = tf.function(self._poses_of_all_candidates, jit_compile=jit_compile,
                                   autograph=False)
    self._make_people = tf.function(self._people_and_instance_maps, jit_compile=jit_compile,
                                    autograph=False)
    # A separate XLA cluster: fused with the IGO smoothing, XLA recomputes the smoothing in every
    # consumer (docs/grouping.md).
    self._resampling_tables = tf.function(masks.resampling_tables, jit_compile=jit_compile,
                                          autograph=False)
    self.group = tf.function(self._group, input_signature=self.input_signature, autograph=False)

  @property
  def centroid_mode(self) -> str:
    """The trained model's MaskCentroid mode (`EncoderConfig.centroid_mode`)."""
    return self._centroid_mode

  @property
  def membership_sigma(self) -> float:
    """The trained model's membership sigma (`LossConfig.membership_sigma`)."""
    return self._membership_sigma

  @property
  def input_signature(self):
    g, m = self._pose_grid, self._mask_grid
    k, e = self._spec.num_keypoints, self._spec.num_directed_edges
    return [
        tf.TensorSpec([g, g, k], tf.float32, "heatmap"),
        tf.TensorSpec([g, g, 2 * k], tf.float32, "keycentroid"),
        tf.TensorSpec([g, g, 2 * e], tf.float32, "midrange"),
        tf.TensorSpec([m, m, 1], tf.float32, "seg"),
        tf.TensorSpec([m, m, 2], tf.float32, "mask_offset"),
        tf.TensorSpec([2], tf.int32, "output_size"),
        tf.TensorSpec([], tf.float32, "input_scale"),
    ]

  def __call__(self, inputs: Mapping[str, tf.Tensor], output_size,
               input_scale) -> Dict[str, tf.Tensor]:
    missing = [key for key in INPUT_KEYS if key not in inputs]
    if missing:
      raise KeyError(f"grouping inputs lack {missing}; expected {INPUT_KEYS}")
    return self.group(*(inputs[key] for key in INPUT_KEYS),
                      tf.convert_to_tensor(output_size, tf.int32),
                      tf.convert_to_tensor(input_scale, tf.float32))

  def _group(self, heatmap, keycentroid, midrange, seg, mask_offset, output_size, input_scale):
    tf.debugging.assert_positive(output_size, message="output_size must be positive")
    tf.debugging.assert_positive(input_scale, message="input_scale must be positive")
    (candidate_poses, keypoint_scores, seed_scores, overlaps, finite, voted_points,
     voted_scores) = self._find_poses(heatmap, keycentroid, midrange, seg, mask_offset)
    message = f"grouping inputs are not finite; finite flags of {INPUT_KEYS}:"
    tf.debugging.Assert(tf.reduce_all(finite), [message, finite], summarize=len(INPUT_KEYS))
    pool = poses.select_people(overlaps, seed_scores, REPEAT_POOL * self._config.max_people,
                               self._config.peak_threshold)
    selected = poses.drop_repeats(pool, candidate_poses, self._config.nms_radius,
                                  self._config.max_people, keypoint_scores > 0.0)
    keypoints, scores, mask_scores, maps, num_people, exact = self._make_people(
        selected, candidate_poses, keypoint_scores, voted_points, voted_scores, midrange, seg,
        mask_offset)
    tables = self._resampling_tables(maps)
    # On the output image, not in the padding of the square input (which maps beyond it).
    last_pixel = tf.cast(tf.reverse(output_size, [0]) - 1, tf.float32)  # (x, y)
    xy = tf.minimum(tf.maximum(keypoints[..., :2] / input_scale, 0.0), last_pixel)
    return {
        "keypoints": tf.concat([xy, keypoints[..., 2:]], axis=-1),
        "scores": scores,
        "mask_scores": mask_scores,
        # On learned maps the person probability draws the masks' borders (`output_masks`).
        "masks": masks.output_masks(tables, output_size, input_scale, geometry.MASK_STRIDE,
                                    seg, self._config.seg_threshold, use_probability=~exact),
        "num_people": num_people,
    }

  def _poses_of_all_candidates(self, heatmap, keycentroid, midrange, seg, mask_offset):
    """Stage 1: every candidate's pose `[C, K, 2]`, keypoint scores `[C, K]`, seed scores `[C]`
    (-1 for invalid slots), suppression overlaps `[C, C]`, and whether each input is finite
    (checked here, fused by XLA, rather than by 5 check_numerics ops), and the voted keypoints
    `[M, K, 2]` with their evidence `[M, K]` (`peaks.voted_keypoints`; 0 in empty slots)."""
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(t))
                       for t in (heatmap, keycentroid, midrange, seg, mask_offset)])
    g, k = self._pose_grid, self._spec.num_keypoints
    if self._config.use_keycentroid:
      votes = voting.hough_score_maps(heatmap, keycentroid, self._stride, self._disk_radius)
    else:  # Without KeyCentroid: heatmap peaks, no voting, no refinement (zero offsets).
      votes, keycentroid = heatmap, tf.zeros_like(keycentroid)
    score_maps = gaussian.smooth(votes, self._pgo_kernels) * self._score_scale
    candidates = peaks.find_candidates(score_maps, self._config.peak_threshold,
                                       self._config.peaks_per_type)
    cell_points = tf.reshape(geometry.grid_points(g, g, self._stride), [g * g, 2])
    seed_offsets = tf.gather_nd(tf.reshape(keycentroid, [g * g, k, 2]),
                                tf.stack([candidates.cells, candidates.types], axis=-1))
    seeds = tf.clip_by_value(tf.gather(cell_points, candidates.cells) + seed_offsets, 0.0,
                             self._input_size - 1.0)
    noise = poses.refinement_noise(seeds, candidates.types, candidates.valid, keycentroid,
                                   self._stride)
    walked, found = poses.walk(seeds, candidates.types, keycentroid, midrange, self._edge_orders,
                               self._stride, self._input_size,
                               self._config.max_refinement_shift * self._disk_radius, noise)
    all_types = tf.broadcast_to(tf.range(k), walked.shape[:2])
    window = voting.window_mass(votes)
    evidence = sampling.sample_groups(window, walked, all_types, 1, self._stride)[..., 0]
    keypoint_scores = tf.where(found & candidates.valid[:, None], evidence, 0.0)
    overlaps = poses.suppression_overlaps(walked, seeds, candidates.types,
                                          self._config.nms_radius, found)
    seed_scores = tf.where(candidates.valid, candidates.scores, -1.0)
    # Every keypoint its own grid cell votes for, `max_people` per type, a claiming pool
    # (`claiming`) that holds also the keypoints no walk reaches.
    voted = peaks.voted_keypoints(heatmap, keycentroid, window, self._stride,
                                  self._config.max_people)
    voted_evidence = sampling.sample_groups(
        window, voted.points, tf.broadcast_to(tf.range(k)[:, None], voted.mass.shape), 1,
        self._stride)[..., 0]
    voted_points = tf.transpose(voted.points, [1, 0, 2])
    voted_scores = tf.transpose(tf.where(voted.mass > 0.0, voted_evidence, 0.0))
    return (walked, keypoint_scores, seed_scores, overlaps, finite, voted_points, voted_scores)

  def _from_pieces(self, xy, point_scores, valid, identity, has_identity, voted, midrange, seg,
                   mask_offset, claim):
    """`pieces.complete_from_pieces` with the pieces the voted keypoints' mid-range steps link."""
    links = pieces.voted_links(voted[0], voted[1] > 0.0, midrange, self._directed_edges,
                               self._stride)
    labels = pieces.piece_labels(links, self._directed_edges, self._spec.num_keypoints)
    return pieces.complete_from_pieces(
        xy, point_scores, valid, identity, has_identity, *voted, labels, seg, mask_offset,
        mask_stride=geometry.MASK_STRIDE, seg_threshold=self._config.seg_threshold, **claim)

  def _people_and_instance_maps(self, selected, candidate_poses, keypoint_scores, voted_points,
                                voted_scores, midrange, seg, mask_offset):
    """Stage 3: keypoints `[N, K, 3]` (input pixels), scores `[N]`, mask scores `[N]`, instance
    maps `[N, M, M]`, the number of people and whether the embeddings are exact (perfect maps)."""
    config = self._config
    valid = selected >= 0
    index = tf.maximum(selected, 0)
    valid_weight = tf.cast(valid, tf.float32)
    xy = tf.gather(candidate_poses, index) * valid_weight[:, None, None]
    # Keypoint score: the vote mass near the keypoint relative to a perfect disk's there.
    perfect = voting.disk_mass(xy, self._disk_radius, self._stride)
    point_scores = (tf.minimum(tf.gather(keypoint_scores, index) / perfect, 1.0)
                    * valid_weight[:, None])
    # How precisely the MaskCentroid embeddings land: 0 on perfect maps (merging).
    noise = merging.embedding_noise(seg, mask_offset, mask_stride=geometry.MASK_STRIDE,
                                    seg_threshold=config.seg_threshold)
    settings = dict(mask_stride=geometry.MASK_STRIDE, seg_threshold=config.seg_threshold,
                    keypoint_threshold=config.centroid_keypoint_threshold,
                    radius=config.nms_radius,
                    tolerance=merging.identity_tolerance(noise, config.nms_radius))
    exact = noise <= merging.EXACT_EMBEDDING_NOISE
    people = (xy, point_scores, valid)
    identity, has_identity = merging.identities(*people, seg, mask_offset, **settings)
    if config.merge_fragments:
      # Each step takes the identities of the people it starts from; they are recomputed only
      # where the step changed someone (`merging.identities_if_changed`).
      for step in (merging.merge_fragments, merging.complete_people):
        changed = step(*people, seg, mask_offset, exact=exact,
                       people_identities=(identity, has_identity), **settings)
        identity, has_identity = merging.identities_if_changed(
            people, changed, (identity, has_identity), seg, mask_offset, **settings)
        people = changed
      xy, point_scores, valid = people
      # The walks of the `CLAIM_POOL` x output slots candidates with the most evidence, their
      # keypoints scored like people's (`claiming`).
      _, best = tf.math.top_k(tf.reduce_sum(keypoint_scores, axis=1),
                              k=min(CLAIM_POOL * config.max_people, keypoint_scores.shape[0]))
      pool_keypoints = tf.gather(candidate_poses, best)
      pool = (pool_keypoints, tf.minimum(tf.gather(keypoint_scores, best) / voting.disk_mass(
          pool_keypoints, self._disk_radius, self._stride), 1.0))
      claim = dict(keypoint_threshold=config.centroid_keypoint_threshold,
                   tolerance=settings["tolerance"], exact=exact)
      # Claims also take the voted keypoints, which no walk may reach.
      voted = (voted_points, tf.minimum(voted_scores / voting.disk_mass(
          voted_points, self._disk_radius, self._stride), 1.0))
      claim_pool = [tf.concat([walks, points], axis=0) for walks, points in zip(pool, voted)]
      xy, point_scores = claiming.claim_keypoints(
          xy, point_scores, valid, identity, has_identity, *claim_pool, seg, mask_offset,
          mask_stride=geometry.MASK_STRIDE, seg_threshold=config.seg_threshold, **claim)
      xy, point_scores = claiming.complete_from_walks(xy, point_scores, valid, identity,
                                                      has_identity, *pool, **claim)
      xy, point_scores = claiming.complete_from_votes(xy, point_scores, valid, identity,
                                                      has_identity, *voted, **claim)
      xy, point_scores = claiming.swap_from_votes(xy, point_scores, valid, identity,
                                                  has_identity, *voted, **claim)
      # Skipped (and its pieces not built) where every person is whole, as on most images.
      not_whole = valid & has_identity & ~merging.is_whole(
          xy, (point_scores > config.centroid_keypoint_threshold) & valid[:, None], identity,
          has_identity, merging.WHOLE_FRACTION * settings["tolerance"])
      xy, point_scores = tf.cond(exact & tf.reduce_any(not_whole), lambda: self._from_pieces(
          xy, point_scores, valid, identity, has_identity, voted, midrange, seg, mask_offset,
          claim), lambda: (xy, point_scores))
      identity, has_identity = merging.identities_if_changed(
          people, (xy, point_scores, valid), (identity, has_identity), seg, mask_offset,
          **settings)
    centres = masks.keypoint_centroids(xy, point_scores, config.centroid_keypoint_threshold)
    # Where the embeddings are exact, a person's mask centre is where its keypoints' embeddings
    # point, which holds for a fragment too; the keypoint mean is off it for a fragment.
    centres = tf.where((has_identity & exact)[:, None], identity, centres)
    # The masks' ranking (`scoring`): the mean vote-mass score, which merging and claiming used.
    mask_scores = tf.reduce_mean(point_scores, axis=1)
    membership = masks.membership_maps(
        seg, mask_offset, centres, masks.mask_owners(centres, mask_scores, valid),
        mask_stride=geometry.MASK_STRIDE, seg_threshold=config.seg_threshold,
        membership_threshold=config.membership_threshold,
        membership_sigma=self._membership_sigma,
        refine_centres=tf.logical_or(self._centroid_mode == "static", tf.logical_not(exact)),
        lowered_threshold=(mask_only.joins_where_every_slot_is_taken(valid)
                           if config.mask_only_people else None))
    # The keypoints' ranking: owned-disk keypoint scores, fragments and mixtures lower.
    whole = merging.is_whole(xy, (point_scores > config.centroid_keypoint_threshold)
                             & valid[:, None], identity, has_identity,
                             merging.WHOLE_FRACTION * settings["tolerance"])
    point_scores = tf.cond(exact, lambda: scoring.owned_keypoint_scores(
        xy, point_scores, voted_points, voted_scores > 0.0, self._disk_radius, self._stride,
        self._pose_grid), lambda: point_scores)
    scores = scoring.person_scores(point_scores, whole, has_identity & exact)
    keypoints = tf.concat([xy, point_scores[..., None]], axis=-1)
    if config.mask_only_people:
      keypoint_people = valid
      keypoints, mask_scores, membership, valid = mask_only.add_mask_only_people(
          keypoints, mask_scores, membership, valid, seg, mask_offset,
          mask_stride=geometry.MASK_STRIDE, seg_threshold=config.seg_threshold,
          membership_threshold=config.membership_threshold,
          membership_sigma=self._membership_sigma, radius=config.nms_radius)
      scores = tf.where(keypoint_people, scores, mask_scores)
    if config.rank_masks_by_margin:
      mask_scores = tf.cond(exact, lambda: mask_scores, lambda: mask_scores * (
          mask_ranking.assignment_margins(membership, mask_offset,
                                          mask_stride=geometry.MASK_STRIDE,
                                          membership_sigma=self._membership_sigma)))
    mask_scores = scoring.order_ties_by_area(mask_scores, tf.reduce_sum(membership, axis=[1, 2]))
    num_people = tf.reduce_sum(tf.cast(valid, tf.int32))
    return (keypoints, scores, mask_scores, masks.instance_maps(membership, self._igo_cells),
            num_people, exact)
