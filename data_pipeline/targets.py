"""The KDC target encoder: augmented example (ARCHITECTURE.md 2) -> training targets (section 3).

The representation is DESIGN.md's; this module only computes it, vectorised over people and grid
points (distances broadcast to [P, G, G, K], argmin over people), so it runs inside tf.data with a
variable number of people, including none. A sentinel person with nothing labelled and an empty mask
is appended internally so that arg-reductions over people are defined when P = 0.

Choices the tables leave open, fixed here:
  * "People with no labelled keypoint" is judged after augmentation (keypoints cropped out count as
    unlabelled), so their visible mask is ignored by the keypoint losses.
  * `midrange_weight` also carries `keypoint_weight` (DESIGN.md: the ignore regions weigh 0 in every
    keypoint loss), like `keycentroid_weight`.
  * `mask_offset_weight` is also 0 in crowd regions (a segmentation loss).
  * People beyond `EncoderConfig.max_people` (the first ones are kept) are dropped, with a warning in
    TF's log; their masks join the ignore regions of every loss rather than being taught as
    background.
  * Offsets (`keycentroid`, `midrange`, `mask_offset`) are defined wherever their disk/instance is,
    and zero elsewhere; the weights say where a loss applies.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict

import tensorflow as tf
from absl import logging

from kdc_tf.config import EncoderConfig
from kdc_tf.geometry import MASK_STRIDE, Geometry, square_grid_points

# Squared distance standing for "no labelled keypoint": larger than any squared disk radius in use.
_FAR = 1e12


def _check_shapes(augmented: dict, geometry: Geometry) -> None:
  """Trace-time checks of the static shapes, so a mismatch fails here with a clear message."""
  num_keypoints = geometry.spec.num_keypoints
  if not augmented["keypoints"].shape.is_compatible_with([None, num_keypoints, 3]):
    raise ValueError(f"keypoints must be [P, {num_keypoints}, 3] for dataset "
                     f"{geometry.dataset!r}, got {augmented['keypoints'].shape}")
  size = geometry.mask_grid_size
  for key, expected in (("instance_masks", [None, size, size]), ("crowd_mask", [size, size])):
    if not augmented[key].shape.is_compatible_with(expected):
      raise ValueError(f"{key} must be {expected} on the mask grid of a {geometry.input_size} "
                       f"input, got {augmented[key].shape}")


def _cap_people(keypoints: tf.Tensor, masks: tf.Tensor, max_people: int):
  """Keeps the first `max_people` people; returns (keypoints, masks, union of dropped masks)."""
  num_people = tf.shape(keypoints)[0]

  def log_drop():
    tf.print("encode_targets: dropping", num_people - max_people, "people beyond max_people =",
             max_people, output_stream=logging.warning)
    return tf.constant(True)

  tf.cond(num_people > max_people, log_drop, lambda: tf.constant(False))
  dropped = tf.reduce_any(masks[max_people:] > 0, axis=0)
  return keypoints[:max_people], masks[:max_people], dropped


def _append_sentinel(keypoints: tf.Tensor, masks: tf.Tensor):
  """Adds one person with nothing labelled and an empty mask, so that P + 1 >= 1."""
  def with_sentinel(values):
    sentinel = tf.zeros(tf.concat([[1], tf.shape(values)[1:]], axis=0), values.dtype)
    return tf.concat([values, sentinel], axis=0)

  return with_sentinel(keypoints), with_sentinel(masks)


def _gather_person(values: tf.Tensor, person: tf.Tensor, types: tf.Tensor) -> tf.Tensor:
  """values [P, K, ...] at (person[..., t], types[t]) for every grid point: [..., T, ...]."""
  types = tf.broadcast_to(types, tf.shape(person))
  return tf.gather_nd(values, tf.stack([person, types], axis=-1))


def _keypoint_targets(xy: tf.Tensor, labelled: tf.Tensor, keypoint_weight: tf.Tensor,
                      geometry: Geometry) -> Dict[str, tf.Tensor]:
  """Disk heatmaps, KeyCentroid and mid-range offsets on the pose grid.

  xy [P, K, 2] and labelled [P, K] include the sentinel person; keypoint_weight is [G, G, 1].
  """
  spec = geometry.spec
  size = geometry.pose_grid_size
  points = square_grid_points(size, geometry.output_stride)  # [G, G, 2]

  # Squared distance from every grid point to every person's keypoint of every type: [P, G, G, K].
  dx = points[tf.newaxis, :, :, tf.newaxis, 0] - xy[:, tf.newaxis, tf.newaxis, :, 0]
  dy = points[tf.newaxis, :, :, tf.newaxis, 1] - xy[:, tf.newaxis, tf.newaxis, :, 1]
  distance2 = tf.where(labelled[:, tf.newaxis, tf.newaxis, :], dx * dx + dy * dy, _FAR)
  owner = tf.argmin(distance2, axis=0, output_type=tf.int32)  # [G, G, K], nearest person
  heatmap = tf.cast(tf.reduce_min(distance2, axis=0) <= geometry.disk_radius ** 2, tf.float32)

  types = tf.range(spec.num_keypoints, dtype=tf.int32)
  owned_xy = _gather_person(xy, owner, types)  # [G, G, K, 2]
  keycentroid = (owned_xy - points[:, :, tf.newaxis, :]) * heatmap[..., tf.newaxis]

  sources = tf.constant([k for k, _ in spec.directed_edges], tf.int32)
  destinations = tf.constant([l for _, l in spec.directed_edges], tf.int32)
  source_owner = tf.gather(owner, sources, axis=-1)  # [G, G, E]
  destination_xy = _gather_person(xy, source_owner, destinations)  # [G, G, E, 2]
  destination_labelled = tf.cast(
      _gather_person(labelled, source_owner, destinations), tf.float32)
  midrange_mask = tf.gather(heatmap, sources, axis=-1) * destination_labelled
  midrange = (destination_xy - points[:, :, tf.newaxis, :]) * midrange_mask[..., tf.newaxis]

  return {
      "heatmap": heatmap,
      "keypoint_weight": keypoint_weight,
      "keycentroid": tf.reshape(keycentroid, [size, size, 2 * spec.num_keypoints]),
      "keycentroid_weight": heatmap * keypoint_weight,
      "midrange": tf.reshape(midrange, [size, size, 2 * spec.num_directed_edges]),
      "midrange_weight": midrange_mask * keypoint_weight,
  }


def _mask_centroids(masks: tf.Tensor, xy: tf.Tensor, labelled: tf.Tensor, points: tf.Tensor,
                    centroid_mode: str) -> tf.Tensor:
  """C_j [P, 2] in input pixels (DESIGN.md): keypoint mean (dynamic) or mask-grid mean (static)."""
  area = tf.reduce_sum(masks, axis=[1, 2])
  mask_mean = tf.einsum("pij,ijc->pc", masks, points) / tf.maximum(area, 1.0)[:, tf.newaxis]
  if centroid_mode == "static":
    return mask_mean
  labelled = tf.cast(labelled, tf.float32)
  count = tf.reduce_sum(labelled, axis=1)
  keypoint_mean = (tf.reduce_sum(xy * labelled[..., tf.newaxis], axis=1)
                   / tf.maximum(count, 1.0)[:, tf.newaxis])
  return tf.where((count > 0)[:, tf.newaxis], keypoint_mean, mask_mean)


def _segmentation_targets(masks: tf.Tensor, xy: tf.Tensor, labelled: tf.Tensor,
                          valid: tf.Tensor, has_masks: tf.Tensor,
                          geometry: Geometry, config: EncoderConfig) -> Dict[str, tf.Tensor]:
  """Person mask, MaskCentroid offsets and instance ids on the mask grid.

  masks [P, M, M] float (sentinel included); valid [M, M] is 1 outside crowd/dropped regions.
  """
  points = square_grid_points(geometry.mask_grid_size, MASK_STRIDE)  # [M, M, 2]
  count = tf.reduce_sum(masks, axis=0)
  exclusive = tf.cast(tf.equal(count, 1.0), tf.float32)
  instance = tf.argmax(masks, axis=0, output_type=tf.int32)  # the only instance where exclusive
  centroids = _mask_centroids(masks, xy, labelled, points, config.centroid_mode)
  mask_offset = (tf.gather(centroids, instance) - points) * exclusive[..., tf.newaxis]
  instance_ids = tf.where(count > 0, tf.where(count > 1, -1, instance + 1), 0)
  segmentation_on = tf.cast(has_masks, tf.float32)
  return {
      "seg": tf.cast(count > 0, tf.float32)[..., tf.newaxis],
      "seg_weight": (valid * segmentation_on)[..., tf.newaxis],
      "mask_offset": mask_offset,
      "mask_offset_weight": (exclusive * valid * segmentation_on)[..., tf.newaxis],
      "instance_ids": instance_ids,
  }


@functools.lru_cache(maxsize=None)
def _compiled_encoder(geometry: Geometry,
                      config: EncoderConfig) -> Callable[..., Dict[str, tf.Tensor]]:
  """The encoder's arithmetic as one XLA-compiled function (one compilation per person count).

  Fused by XLA, the [P, G, G, K] distances, arg-reductions and gathers cost a sixth of the CPU
  time of the op-by-op graph, with identical targets (docs/pipeline.md); the input pipeline
  runs beside the training step on the same cores, so its CPU time slows training.
  """
  num_keypoints = geometry.spec.num_keypoints
  size = geometry.mask_grid_size

  @tf.function(jit_compile=True, input_signature=[
      tf.TensorSpec([None, num_keypoints, 3], tf.float32),
      tf.TensorSpec([None, size, size], tf.float32),
      tf.TensorSpec([size, size], tf.float32),
      tf.TensorSpec([size, size], tf.bool),
      tf.TensorSpec([], tf.bool)])
  def encode(keypoints, masks, crowd, dropped, has_masks):
    keypoints, masks = _append_sentinel(keypoints, masks)
    xy = keypoints[..., :2]
    labelled = keypoints[..., 2] > 0

    # Ignore regions (mask grid): crowd, masks of people with nothing labelled, dropped people.
    unlabelled_people = tf.cast(~tf.reduce_any(labelled, axis=1), tf.float32)
    unlabelled_area = tf.reduce_max(masks * unlabelled_people[:, tf.newaxis, tf.newaxis], axis=0)
    dropped = tf.cast(dropped, tf.float32)
    keypoint_ignore = tf.maximum(tf.maximum(crowd, dropped), unlabelled_area)
    step = geometry.output_stride // MASK_STRIDE
    keypoint_weight = (1.0 - keypoint_ignore[::step, ::step])[..., tf.newaxis]

    targets = _keypoint_targets(xy, labelled, keypoint_weight, geometry)
    valid = (1.0 - crowd) * (1.0 - dropped)
    targets.update(_segmentation_targets(masks, xy, labelled, valid, has_masks, geometry, config))
    return targets

  return encode


def encode_targets(augmented: dict, geometry: Geometry,
                   config: EncoderConfig = EncoderConfig()) -> Dict[str, tf.Tensor]:
  """One augmented example -> the targets of ARCHITECTURE.md section 3 (unbatched).

  Needs `keypoints` [P, K, 3] and `instance_masks` [P, M, M] in input pixels / on the mask grid,
  `crowd_mask` [M, M] and `has_masks`; P may be 0 (all-zero targets, weights 1 outside crowd).
  """
  _check_shapes(augmented, geometry)
  keypoints = tf.cast(augmented["keypoints"], tf.float32)
  masks = tf.cast(augmented["instance_masks"] > 0, tf.float32)
  crowd = tf.cast(augmented["crowd_mask"] > 0, tf.float32)
  keypoints, masks, dropped = _cap_people(keypoints, masks, config.max_people)
  return _compiled_encoder(geometry, config)(
      keypoints, masks, crowd, dropped, tf.cast(augmented["has_masks"], tf.bool))
