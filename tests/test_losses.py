"""KDC losses on hand-built tensors: exact values, ignored pixels, membership, reductions."""

import numpy as np
import pytest
import tensorflow as tf

from kdc_tf.config import EncoderConfig, LossConfig
from kdc_tf.geometry import MASK_STRIDE, OFFSET_SCALE, Geometry
from kdc_tf.datasets import COCO
from kdc_tf.losses import (LOSS_TERMS, compute_losses, masked_bce, membership_loss, offset_l1,
                           per_example_losses)

GEOMETRY = Geometry(input_size=33, disk_radius=8.0)  # G = 5, M = 9
ENCODER = EncoderConfig(max_people=4)
G, M = GEOMETRY.pose_grid_size, GEOMETRY.mask_grid_size
K, E = COCO.num_keypoints, COCO.num_directed_edges
UNIT = LossConfig(heatmap=1, segmentation=1, keycentroid=1, midrange=1, mask_offset=1,
                  membership=1)


def _targets(batch=2, seed=0):
  """Consistent targets: two people per example, instance 2 in the bottom-right corner."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((batch, M, M), np.int32)
  ids[:, 1:4, 1:4] = 1
  ids[:, 5:8, 4:8] = 2
  ids[:, 3, 3] = -1  # one overlap pixel
  positions = np.stack(np.meshgrid(np.arange(M), np.arange(M)), -1) * MASK_STRIDE  # (x, y)
  centres = {1: np.array([8.0, 8.0]), 2: np.array([22.0, 24.0])}
  mask_offset = np.zeros((batch, M, M, 2), np.float32)
  for j, c in centres.items():
    mask_offset[ids == j] = (c - positions[None].repeat(batch, 0))[ids == j]
  heatmap = (rng.uniform(size=(batch, G, G, K)) > 0.8).astype(np.float32)
  keypoint_weight = np.ones((batch, G, G, 1), np.float32)
  keypoint_weight[:, 0, 0] = 0
  return {
      "heatmap": heatmap,
      "keypoint_weight": keypoint_weight,
      "keycentroid": rng.normal(0, 8, (batch, G, G, 2 * K)).astype(np.float32),
      "keycentroid_weight": heatmap * keypoint_weight,
      "midrange": rng.normal(0, 20, (batch, G, G, 2 * E)).astype(np.float32),
      "midrange_weight": (rng.uniform(size=(batch, G, G, E)) > 0.7).astype(np.float32),
      "seg": (ids != 0).astype(np.float32)[..., None],
      "seg_weight": np.ones((batch, M, M, 1), np.float32),
      "mask_offset": mask_offset,
      "mask_offset_weight": (ids > 0).astype(np.float32)[..., None],
      "instance_ids": ids,
  }


def _perfect_outputs(targets):
  return {"heatmap_logits": 20.0 * (2 * targets["heatmap"] - 1),
          "keycentroid": targets["keycentroid"].copy(), "midrange": targets["midrange"].copy(),
          "seg_logits": 20.0 * (2 * targets["seg"] - 1),
          "mask_offset": targets["mask_offset"].copy()}


def _numpy(losses):
  return {k: v.numpy() for k, v in losses.items()}


def test_perfect_prediction_gives_zero_offset_losses_and_near_zero_bce():
  targets = _targets()
  losses = _numpy(per_example_losses(targets, _perfect_outputs(targets), UNIT, ENCODER))
  for name in ("keycentroid", "midrange", "mask_offset"):
    np.testing.assert_array_equal(losses[name], 0.0)
  for name in ("heatmap", "seg"):
    assert (losses[name] < 1e-6).all()


def test_offset_l1_is_the_vector_l1_norm_over_radius_averaged_over_weighted_pixels():
  target = np.zeros((1, 2, 2, 4), np.float32)
  prediction = target.copy()
  prediction[0, 0, 0, 0:2] = [8.0, -4.0]  # type 0 at (0, 0): |error|_1 = 12
  weights = np.zeros((1, 2, 2, 2), np.float32)
  weights[0, 0, 0, 0] = weights[0, 1, 1, 1] = 1.0  # two weighted vectors, one exact
  prediction[0, 1, 0, 2:4] = [100.0, 100.0]  # unweighted: ignored
  loss = offset_l1(target, prediction, weights, radius=8.0).numpy()
  np.testing.assert_allclose(loss, [12.0 / 8.0 / 2.0])


def test_offset_losses_are_in_offset_scale_units_not_disk_radii():
  """R changes the disks alone: the offset L1 terms are normalised by OFFSET_SCALE, and the losses
  do not take the geometry (its disk radius) at all."""
  targets = _targets()
  outputs = {k: v + 3.0 for k, v in _perfect_outputs(targets).items()}
  losses = _numpy(per_example_losses(targets, outputs, UNIT, ENCODER))
  # Every offset is off by (3, 3): |error|_1 = 6 per weighted vector.
  for name in ("keycentroid", "midrange", "mask_offset"):
    np.testing.assert_allclose(losses[name], 6.0 / OFFSET_SCALE, rtol=1e-5, err_msg=name)


def test_masked_bce_matches_numpy_and_ignores_zero_weight_pixels():
  rng = np.random.default_rng(1)
  labels = (rng.uniform(size=(2, 3, 3, 4)) > 0.5).astype(np.float32)
  logits = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  weights = (rng.uniform(size=(2, 3, 3, 1)) > 0.3).astype(np.float32)
  p = 1 / (1 + np.exp(-logits))
  bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  w = np.broadcast_to(weights, bce.shape)
  expected = (bce * w).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3))
  np.testing.assert_allclose(masked_bce(labels, logits, weights).numpy(), expected, rtol=1e-5)
  changed = logits.copy()
  changed[np.broadcast_to(weights == 0, logits.shape)] = 50.0
  np.testing.assert_allclose(masked_bce(labels, changed, weights).numpy(), expected, rtol=1e-5)


def test_ignored_pixels_do_not_count_in_any_term():
  targets = _targets()
  outputs = {k: v + 1.0 for k, v in _perfect_outputs(targets).items()}
  base = _numpy(per_example_losses(targets, outputs, UNIT, ENCODER))
  spoiled = {k: v.copy() for k, v in outputs.items()}
  spoiled["heatmap_logits"][:, 0, 0] = -100.0  # keypoint_weight 0 there
  kc_ignored = np.repeat(targets["keycentroid_weight"] == 0, 2, axis=-1)
  spoiled["keycentroid"][kc_ignored] = 1e4
  spoiled["midrange"][np.repeat(targets["midrange_weight"] == 0, 2, axis=-1)] = 1e4
  overlap_or_background = targets["instance_ids"] <= 0
  spoiled["mask_offset"][overlap_or_background] = 1e4  # no offset/membership loss there
  after = _numpy(per_example_losses(targets, spoiled, UNIT, ENCODER))
  for name in ("heatmap", "keycentroid", "midrange", "mask_offset", "membership"):
    np.testing.assert_allclose(after[name], base[name], rtol=1e-5, err_msg=name)


def _membership_reference(ids, offsets, target_offsets, membership_sigma, mode):
  """Direct per-instance loop of eq. 7 (the vectorised loss must agree)."""
  positions = np.stack(np.meshgrid(np.arange(M), np.arange(M)), -1) * float(MASK_STRIDE)
  out = []
  for b in range(ids.shape[0]):
    fg = ids[b] > 0
    emb = positions + offsets[b]
    total = np.zeros(fg.sum())
    for j in np.unique(ids[b][fg]):
      member = ids[b] == j
      source = emb if mode == "dynamic" else positions + target_offsets[b]
      centre = source[member].mean(axis=0)
      sigma_sq = membership_sigma**2 * member.sum() * MASK_STRIDE**2
      phi = np.exp(-((emb[fg] - centre) ** 2).sum(-1) / (2 * sigma_sq))
      label = (ids[b][fg] == j).astype(np.float64)
      phi = np.clip(phi, 1e-30, 1 - 1e-7)
      total += -(label * np.log(phi) + (1 - label) * np.log(1 - phi))
    out.append(total.mean() if fg.any() else 0.0)
  return np.array(out)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_membership_matches_a_per_instance_reference(mode):
  targets = _targets()
  offsets = targets["mask_offset"] + np.random.default_rng(2).normal(
      0, 3, targets["mask_offset"].shape).astype(np.float32)
  loss = membership_loss(targets["instance_ids"], offsets, targets["mask_offset"],
                         targets["mask_offset_weight"], 0.5, ENCODER.max_people, mode).numpy()
  expected = _membership_reference(targets["instance_ids"], offsets, targets["mask_offset"], 0.5,
                                   mode)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_membership_is_lower_for_well_clustered_embeddings(mode):
  targets = _targets()
  rng = np.random.default_rng(3)
  clustered = targets["mask_offset"] + rng.normal(0, 0.5, targets["mask_offset"].shape)
  scattered = rng.normal(0, 15, targets["mask_offset"].shape)
  losses = [membership_loss(targets["instance_ids"], o.astype(np.float32), targets["mask_offset"],
                            targets["mask_offset_weight"], 0.5, 4, mode).numpy()
            for o in (clustered, scattered)]
  assert (losses[0] < losses[1]).all()
  assert (losses[0] < 0.1).all()


def test_membership_has_finite_gradients_with_embeddings_on_a_foreign_centre():
  targets = _targets(batch=1)
  offsets = tf.Variable(np.zeros((1, M, M, 2), np.float32))
  with tf.GradientTape() as tape:  # every embedding at its own pixel: some sit on C of others
    loss = membership_loss(targets["instance_ids"], offsets, targets["mask_offset"],
                           targets["mask_offset_weight"], 0.5, 4, "dynamic")
  gradient = tape.gradient(loss, offsets)
  assert np.isfinite(loss.numpy()).all() and np.isfinite(gradient.numpy()).all()


def test_an_example_without_people_or_masks_gives_finite_zero_losses():
  targets = _targets(batch=1)
  empty = {k: np.zeros_like(v) for k, v in targets.items()}
  empty["keypoint_weight"] = np.ones_like(targets["keypoint_weight"])
  outputs = {k: tf.Variable(v) for k, v in _perfect_outputs(targets).items()}
  with tf.GradientTape() as tape:
    losses = per_example_losses(empty, outputs, UNIT, ENCODER)
  gradients = tape.gradient(losses["total"], list(outputs.values()))
  for name in ("keycentroid", "midrange", "seg", "mask_offset", "membership"):
    np.testing.assert_array_equal(losses[name].numpy(), 0.0)
  assert losses["heatmap"].numpy()[0] > 1.0  # every disk predicted where none is
  assert all(np.isfinite(g.numpy()).all() for g in gradients if g is not None)


def test_weights_scale_terms_and_total_is_their_sum():
  targets = _targets()
  outputs = {k: v + 0.5 for k, v in _perfect_outputs(targets).items()}
  unit = _numpy(per_example_losses(targets, outputs, UNIT, ENCODER))
  config = LossConfig()
  weighted = _numpy(per_example_losses(targets, outputs, config, ENCODER))
  factors = {"heatmap": config.heatmap, "seg": config.segmentation,
             "keycentroid": config.keycentroid, "midrange": config.midrange,
             "mask_offset": config.mask_offset, "membership": config.membership}
  for name in LOSS_TERMS:
    np.testing.assert_allclose(weighted[name], factors[name] * unit[name], rtol=1e-5)
    assert (unit[name] > 0).all(), name
  np.testing.assert_allclose(weighted["total"], sum(weighted[n] for n in LOSS_TERMS), rtol=1e-5)


def test_replica_sums_over_the_global_batch_add_up_to_the_batch_mean():
  targets = _targets(batch=4, seed=5)
  outputs = {k: v * 0.7 for k, v in _perfect_outputs(targets).items()}
  mean = _numpy(compute_losses(targets, outputs, UNIT, ENCODER))
  halves = [_numpy(compute_losses({k: v[s] for k, v in targets.items()},
                                  {k: v[s] for k, v in outputs.items()}, UNIT, ENCODER,
                                  global_batch_size=4))
            for s in (slice(0, 1), slice(1, 4))]
  for name in mean:
    np.testing.assert_allclose(halves[0][name] + halves[1][name], mean[name], rtol=1e-5)


def test_static_mode_uses_the_target_centroid():
  targets = _targets(batch=1)
  # Every embedding shifted by the same vector: the learned (dynamic) centre moves along, the
  # static target centre does not.
  shifted = targets["mask_offset"] + np.array([12.0, 0.0], np.float32)
  losses = {mode: membership_loss(targets["instance_ids"], shifted, targets["mask_offset"],
                                  targets["mask_offset_weight"], 0.5, 4, mode).numpy()
            for mode in ("dynamic", "static")}
  assert losses["dynamic"][0] < 0.1 * losses["static"][0]


def test_missing_targets_and_mismatched_grids_are_clear_errors():
  targets = _targets()
  outputs = _perfect_outputs(targets)
  with pytest.raises(KeyError, match="instance_ids"):
    per_example_losses({k: v for k, v in targets.items() if k != "instance_ids"}, outputs, UNIT,
                       ENCODER)
  bad = dict(outputs, seg_logits=np.zeros((2, M + 1, M + 1, 1), np.float32))
  with pytest.raises(ValueError, match="seg_logits"):
    per_example_losses(targets, bad, UNIT, ENCODER)
  with pytest.raises(ValueError, match="centroid_mode"):
    membership_loss(targets["instance_ids"], outputs["mask_offset"], targets["mask_offset"],
                    targets["mask_offset_weight"], 0.5, 4, "learned")


def test_people_beyond_max_people_are_left_out_of_membership():
  targets = _targets(batch=1)
  ids = targets["instance_ids"].copy()
  ids[ids == 2] = 9  # beyond max_people = 4: no segment, no loss
  only_first = ids.copy()
  only_first[ids == 9] = 0
  args = (targets["mask_offset"], targets["mask_offset"] + 1.0, targets["mask_offset_weight"])
  a = membership_loss(ids, args[1], args[0], args[2], 0.5, 4, "dynamic").numpy()
  b = membership_loss(only_first, args[1], args[0], args[2], 0.5, 4, "dynamic").numpy()
  np.testing.assert_allclose(a, b, rtol=1e-6)
