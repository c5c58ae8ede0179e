"""KDC training losses (DESIGN.md; targets: ARCHITECTURE.md section 3, outputs: section 4).

Every term is first computed per example, normalised by that example's own count of weighted
pixels (an example with none contributes 0), then weighted by `LossConfig`. Batch reduction sums
the per-example terms and divides by the global batch size, so that under tf.distribute the
replicas' sums add up to the mean over the global batch whatever the split.

Terms (all offsets in input pixels; offset L1 losses are divided by `OFFSET_SCALE`, a constant
independent of the disk radius R, so that the R ablation changes the disks alone):
- heatmap: BCE of the disk logits over all pixels and types, weight `keypoint_weight` (eq. 1).
- keycentroid: L1 norm |pred - target|_1 / OFFSET_SCALE of the KeyCentroid vectors, mean over
  disk pixels (`keycentroid_weight`).
- midrange: the same for mid-range offsets over source disks (`midrange_weight`).
- seg: person-mask BCE, weight `seg_weight`.
- mask_offset: L1 / OFFSET_SCALE of the MaskCentroid offsets (eq. 5), weight `mask_offset_weight`.
- membership (eq. 7): on the mask grid, embedding e_i = p_i + v_i (p_i = the pixel's input
  position, v_i the predicted offset). For each instance j present (`instance_ids == j + 1`) its
  centre C_j and sigma_j = membership_sigma * sqrt(area_j), area_j = pixel count * 4^2 input
  pixels^2 (`geometry.membership_variance`);
  phi_j(e_i) = exp(-|e_i - C_j|^2 / (2 sigma_j^2)); the loss is BCE(phi_j(e_i), [i in j]) summed
  over the instances present and averaged over the pixels of exactly one instance (overlap pixels,
  id -1, have no single label and are left out, like in the offset loss; crowd and background
  pixels are not foreground).
  Dynamic mode (DM_c, DESIGN.md eq. 7): C_j = the mean embedding over j's pixels, learned:
  gradients flow through the mean. Static mode (SM_c): C_j = the target centroid, the mean over j's
  pixels of p_i + target offset (= the mask mean for the static encoder), a constant.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import tensorflow as tf

from kdc_tf import geometry
from kdc_tf.config import EncoderConfig, LossConfig, check_centroid_mode
from kdc_tf.geometry import OFFSET_SCALE

TARGET_KEYS = ("heatmap", "keypoint_weight", "keycentroid", "keycentroid_weight", "midrange",
               "midrange_weight", "seg", "seg_weight", "mask_offset", "mask_offset_weight",
               "instance_ids")
LOSS_TERMS = ("heatmap", "keycentroid", "midrange", "seg", "mask_offset", "membership")
# Largest -log(1 - phi) of the membership BCE (phi clipped at 1 - 1e-7, as Keras' BCE does).
_MEMBERSHIP_EPSILON = 1e-7


def _per_example_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """sum(w * v) / sum(w) over all but the batch axis; 0 where an example has no weight."""
  axes = list(range(1, values.shape.rank))
  weights = tf.broadcast_to(weights, tf.shape(values))
  total = tf.reduce_sum(values * weights, axis=axes)
  return tf.math.divide_no_nan(total, tf.reduce_sum(weights, axis=axes))


def masked_bce(labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """Per-example weighted mean of the sigmoid cross-entropy. [B]."""
  bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
  return _per_example_mean(bce, weights)


def offset_l1(target: tf.Tensor, prediction: tf.Tensor, weights: tf.Tensor,
              radius: float) -> tf.Tensor:
  """Per-example mean of |prediction - target|_1 / radius over weighted vectors. [B].

  `target`, `prediction`: [B, H, W, 2C] (x, y pairs); `weights`: [B, H, W, C] or [B, H, W, 1].
  """
  difference = tf.abs(prediction - target)
  shape = tf.concat([tf.shape(difference)[:-1], [-1, 2]], axis=0)
  l1 = tf.reduce_sum(tf.reshape(difference, shape), axis=-1) / radius
  return _per_example_mean(l1, weights)


def membership_loss(instance_ids: tf.Tensor, predicted_offset: tf.Tensor,
                    target_offset: tf.Tensor, offset_weight: tf.Tensor, membership_sigma: float,
                    max_people: int, centroid_mode: str = "dynamic") -> tf.Tensor:
  """Per-example MaskCentroid membership BCE (eq. 7, module docstring). [B].

  `instance_ids` int32 [B, M, M]; offsets float32 [B, M, M, 2]; `offset_weight` [B, M, M, 1].
  Vectorised over people with segment ops, one segment per instance id present in the batch
  (at most `max_people`): the [B, N, people] BCE is the loss's largest tensor, and at 64 slots for
  a handful of people it was 60 % of the losses' time (docs/learning.md).
  """
  check_centroid_mode(centroid_mode)
  batch = tf.shape(instance_ids)[0]
  size = instance_ids.shape[1]
  positions = tf.reshape(geometry.square_grid_points(size, geometry.MASK_STRIDE),
                         [1, -1, 2])  # [1, N, 2], row-major
  ids = tf.reshape(tf.cast(instance_ids, tf.int32), [batch, -1])  # [B, N]
  embeddings = positions + tf.reshape(predicted_offset, [batch, -1, 2])  # [B, N, 2]
  member = (ids > 0) & (ids <= max_people) & (tf.reshape(offset_weight, [batch, -1]) > 0)
  member_f = tf.cast(member, tf.float32)
  slots = tf.clip_by_value(tf.reduce_max(ids), 1, max_people)  # instance ids 1..slots occur

  # Segment b * slots + j for pixel of instance j of example b; the rest go to a spare one.
  spare = batch * slots
  segments = tf.where(member, ids - 1 + tf.range(batch)[:, tf.newaxis] * slots, spare)
  if centroid_mode == "dynamic":
    centre_source = embeddings
  else:
    centre_source = positions + tf.reshape(target_offset, [batch, -1, 2])
  sums = tf.math.unsorted_segment_sum(centre_source, segments, spare + 1)[:-1]
  counts = tf.math.unsorted_segment_sum(member_f, segments, spare + 1)[:-1]
  sums = tf.reshape(sums, [batch, slots, 2])
  counts = tf.reshape(counts, [batch, slots])
  present = counts > 0
  centres = tf.math.divide_no_nan(sums, counts[..., tf.newaxis])  # [B, P, 2]
  # 2 sigma_j^2 with sigma_j = membership_sigma * sqrt(area_j), area_j in input pixels^2.
  two_sigma_sq = 2.0 * geometry.membership_variance(membership_sigma, counts)
  two_sigma_sq = tf.where(present, two_sigma_sq, 1.0)

  distance_sq = tf.reduce_sum(
      tf.square(embeddings[:, :, tf.newaxis, :] - centres[:, tf.newaxis, :, :]), axis=-1)
  exponent = distance_sq / two_sigma_sq[:, tf.newaxis, :]  # -log phi, [B, N, P]
  labels = tf.one_hot(ids - 1, slots, dtype=tf.float32)  # all zero for id <= 0 or > slots
  # BCE(phi, y) = y * (-log phi) + (1 - y) * (-log(1 - phi)), with 1 - phi = -expm1(-exponent).
  negative = -tf.math.log(-tf.math.expm1(-tf.maximum(exponent, _MEMBERSHIP_EPSILON)))
  bce = labels * exponent + (1.0 - labels) * negative
  per_pixel = tf.reduce_sum(bce * tf.cast(present, tf.float32)[:, tf.newaxis, :], axis=-1)
  return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * member_f, axis=1),
                               tf.reduce_sum(member_f, axis=1))


def _check_inputs(targets: Mapping[str, tf.Tensor], outputs: Mapping[str, tf.Tensor]) -> None:
  missing = [k for k in TARGET_KEYS if k not in targets]
  if missing:
    raise KeyError(f"targets lack {missing} (ARCHITECTURE.md section 3); got {sorted(targets)}")
  for target_key, output_key in (("heatmap", "heatmap_logits"), ("keycentroid", "keycentroid"),
                                 ("midrange", "midrange"), ("seg", "seg_logits"),
                                 ("mask_offset", "mask_offset")):
    if output_key not in outputs:
      raise KeyError(f"model outputs lack {output_key!r}; got {sorted(outputs)}")
    t_shape = tf.TensorShape(targets[target_key].shape)
    o_shape = tf.TensorShape(outputs[output_key].shape)
    if not t_shape[1:].is_compatible_with(o_shape[1:]):
      raise ValueError(f"target {target_key!r} {t_shape} does not match output {output_key!r} "
                       f"{o_shape}: encoder and model disagree on input size, stride or dataset")


def per_example_losses(targets: Mapping[str, tf.Tensor], outputs: Mapping[str, tf.Tensor],
                       loss_config: LossConfig,
                       encoder_config: EncoderConfig) -> Dict[str, tf.Tensor]:
  """Each weighted loss term and 'total', per example: dict of float32 [B]."""
  _check_inputs(targets, outputs)
  target = {k: tf.cast(targets[k], tf.float32) for k in TARGET_KEYS if k != "instance_ids"}
  output = {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
  unit = OFFSET_SCALE
  raw = {
      "heatmap": masked_bce(target["heatmap"], output["heatmap_logits"],
                            target["keypoint_weight"]),
      "keycentroid": offset_l1(target["keycentroid"], output["keycentroid"],
                               target["keycentroid_weight"], unit),
      "midrange": offset_l1(target["midrange"], output["midrange"], target["midrange_weight"],
                            unit),
      "seg": masked_bce(target["seg"], output["seg_logits"], target["seg_weight"]),
      "mask_offset": offset_l1(target["mask_offset"], output["mask_offset"],
                               target["mask_offset_weight"], unit),
      "membership": membership_loss(
          targets["instance_ids"], output["mask_offset"], target["mask_offset"],
          target["mask_offset_weight"], loss_config.membership_sigma, encoder_config.max_people,
          encoder_config.centroid_mode),
  }
  weights = {"heatmap": loss_config.heatmap, "keycentroid": loss_config.keycentroid,
             "midrange": loss_config.midrange, "seg": loss_config.segmentation,
             "mask_offset": loss_config.mask_offset, "membership": loss_config.membership}
  weighted = {name: weights[name] * raw[name] for name in LOSS_TERMS}
  weighted["total"] = tf.add_n([weighted[name] for name in LOSS_TERMS])
  return weighted


def compute_losses(targets: Mapping[str, tf.Tensor], outputs: Mapping[str, tf.Tensor],
                   loss_config: LossConfig, encoder_config: EncoderConfig,
                   global_batch_size: Optional[int] = None) -> Dict[str, tf.Tensor]:
  """Scalar weighted terms and 'total': per-example sums over `global_batch_size` (default: mean).

  Under tf.distribute pass the global batch size so that replicas' results add up to the mean.
  """
  per_example = per_example_losses(targets, outputs, loss_config, encoder_config)
  if global_batch_size is None:
    return {k: tf.reduce_mean(v) for k, v in per_example.items()}
  return {k: tf.reduce_sum(v) / float(global_batch_size) for k, v in per_example.items()}
