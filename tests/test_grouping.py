"""Tests of kdc_tf.grouping: perfect targets from the encoder must decode back to the people."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.targets import encode_targets
from kdc_tf.config import EncoderConfig, ExperimentConfig, GroupingConfig
from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.geometry import Geometry
from kdc_tf.grouping import (INPUT_KEYS, Grouper, claiming, gaussian, mask_only, mask_ranking,
                             masks, merging, model_outputs_to_grouping_inputs, peaks, pieces, poses,
                             reductions, sampling, scoring, voting)
from kdc_tf.synthetic import scenes

SIZE = 161  # pose grid 21 x 21, mask grid 41 x 41
MAX_PEOPLE = 6


def _experiment(centroid_mode="dynamic"):
  return ExperimentConfig(geometry=Geometry(input_size=SIZE),
                          encoder=EncoderConfig(centroid_mode=centroid_mode))


def _grouping_config(**overrides):
  return GroupingConfig(max_people=MAX_PEOPLE, peaks_per_type=8, **overrides)


@pytest.fixture(scope="module")
def grouper():
  return Grouper(_experiment(), _grouping_config())


@pytest.fixture(scope="module")
def eager_grouper():
  return Grouper(_experiment(), _grouping_config(), jit_compile=False)


def _targets(scene, experiment=None):
  augmented = {key: tf.constant(scene[key])
               for key in ("keypoints", "instance_masks", "crowd_mask", "has_masks")}
  experiment = experiment or _experiment()
  targets = encode_targets(augmented, experiment.geometry, experiment.encoder)
  return {key: targets[key] for key in INPUT_KEYS}


def _run(grouper, inputs, output_size=(SIZE, SIZE), input_scale=1.0):
  return {key: value.numpy() for key, value in grouper(inputs, output_size, input_scale).items()}


def _match(found_keypoints, truth):
  """Per true person, the largest keypoint error of the closest decoded person (input pixels)."""
  errors = np.linalg.norm(found_keypoints[:, None, :, :2] - truth[None, :, :, :2], axis=-1)
  labelled = truth[None, :, :, 2] > 0
  worst = np.where(labelled, errors, 0.0).max(axis=2)  # [found, true]
  return worst.min(axis=0), worst.argmin(axis=0)


def _reference_masks(maps, output_size, input_scale):
  """Brute force: every map resampled bilinearly (mask-grid coordinate = pixel * scale / 4)."""
  return _resampled(maps, output_size, input_scale) > 0.5


def _resampled(maps, output_size, input_scale):
  """Every map `[N, M, M]` resampled bilinearly to `output_size`."""
  grid = maps.shape[-1]

  def axis(size):
    coords = np.clip(np.arange(size) * input_scale / 4.0, 0.0, grid - 1.0)
    lower = np.minimum(np.floor(coords), grid - 2).astype(int)
    return lower, coords - lower

  (y0, wy), (x0, wx) = axis(output_size[0]), axis(output_size[1])
  wy, wx = wy[:, None], wx[None, :]
  top = maps[:, y0][:, :, x0] * (1 - wx) + maps[:, y0][:, :, x0 + 1] * wx
  bottom = maps[:, y0 + 1][:, :, x0] * (1 - wx) + maps[:, y0 + 1][:, :, x0 + 1] * wx
  return top * (1 - wy) + bottom * wy


def _iou(a, b):
  return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def test_breadth_first_edges_place_every_source_first():
  for spec in (COCO, CROWDPOSE):
    orders = poses.breadth_first_edges(spec)
    assert orders.shape == (spec.num_keypoints, spec.num_keypoints - 1, 3)
    for root, order in enumerate(orders):
      placed = {root}
      for source, target, edge in order:
        assert source in placed and target not in placed
        assert spec.directed_edges[edge] == (source, target)
        placed.add(target)
      assert placed == set(range(spec.num_keypoints))


def test_gaussian_kernels_are_normalised_and_smooth_matches_convolution():
  kernels = gaussian.gaussian_kernels_1d([0.0, 0.3, 0.7])
  np.testing.assert_allclose(kernels.sum(axis=0), 1.0, rtol=1e-6)
  assert kernels[:, 0].tolist() == [0, 0, 0, 1, 0, 0, 0]  # sigma 0 is the identity
  maps = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
  expected = np.empty_like(maps)
  for c in range(3):
    rows = np.apply_along_axis(np.convolve, 0, maps[..., c], kernels[:, c], "same")
    expected[..., c] = np.apply_along_axis(np.convolve, 1, rows, kernels[:, c], "same")
  np.testing.assert_allclose(gaussian.smooth(tf.constant(maps), kernels).numpy(), expected,
                             atol=1e-5)


@pytest.mark.parametrize("sigma_cells", [0.2, 0.4, 1.4, 2.8])
def test_mean_peak_height_is_the_peak_of_a_splatted_unit_mass_averaged_over_positions(
    sigma_cells):
  kernels = gaussian.gaussian_kernels_1d([sigma_cells])
  positions = np.random.default_rng(0).uniform(20.0, 28.0, (400, 2)).astype(np.float32)
  votes = sampling.splat(tf.ones([400]), tf.constant(positions), tf.range(400), 4.0,
                         (15, 15, 400))
  peaks = tf.reduce_max(gaussian.smooth(votes, np.repeat(kernels, 400, axis=1)), axis=(0, 1))
  assert gaussian.mean_peak_heights(kernels)[0] == pytest.approx(float(tf.reduce_mean(peaks)),
                                                                rel=0.02)


def test_perfect_disk_votes_a_mass_of_about_one_at_its_keypoint():
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 20.0, 120.0)])
  inputs = _targets(scene)
  score_maps = voting.hough_score_maps(inputs["heatmap"], inputs["keycentroid"], 8, 32.0).numpy()
  keypoints = scene["keypoints"][0]
  for k in range(COCO.num_keypoints):
    col, row = keypoints[k, :2] / 8.0
    window = score_maps[int(row):int(row) + 2, int(col):int(col) + 2, k]
    # A full disk holds about pi (R / s)^2 grid points; all of its mass lands on the 4 corners.
    disk_points = inputs["heatmap"].numpy()[..., k].sum()
    assert window.sum() == pytest.approx(disk_points / voting.vote_normaliser(32.0, 8), rel=1e-4)
    assert 0.85 < window.sum() < 1.1
    assert window.sum() == pytest.approx(score_maps[..., k].sum(), rel=1e-4)


def test_suppression_overlaps_rows_are_candidates_for_tf_nms():
  # Pins TF's reading of the matrix: overlaps[candidate, selected].
  scores = tf.constant([0.9, 0.8])
  suppressed = tf.constant([[0.0, 0.0], [1.0, 0.0]])
  assert poses.select_people(suppressed, scores, 2, 0.0).numpy().tolist() == [0, -1]
  not_suppressed = tf.constant([[0.0, 1.0], [0.0, 0.0]])
  assert poses.select_people(not_suppressed, scores, 2, 0.0).numpy().tolist() == [0, 1]
  # Pose 1 has its type-0 keypoint 5 px from candidate 0's seed: candidate 0 is covered by pose 1.
  walked = tf.constant([[[0.0, 0.0], [50.0, 50.0]], [[5.0, 0.0], [90.0, 90.0]]])
  overlaps = poses.suppression_overlaps(walked, tf.constant([[0.0, 0.0], [90.0, 99.0]]),
                                        tf.constant([0, 1]), 10.0).numpy()
  assert overlaps.tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_drop_repeats_keeps_the_first_of_repeated_poses():
  assert poses.DUPLICATE_FRACTION == 0.5
  pose = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0], [60.0, 0.0]], np.float32)
  moved_two, moved_three = pose.copy(), pose.copy()
  moved_two[:2] += 30.0  # half of the keypoints still within 10 px: the same person
  moved_three[:3] += 30.0  # a quarter: another person
  elsewhere = pose + 200.0
  candidates = tf.constant(np.stack([pose, moved_two, moved_three, elsewhere]))
  repeats = poses.repeated_poses(candidates, 10.0).numpy()
  np.testing.assert_array_equal(repeats, repeats.T)
  assert repeats[0].tolist() == [1.0, 1.0, 0.0, 0.0]
  # In selection order, -1 padded; the first of two repeats is kept.
  kept = poses.drop_repeats(tf.constant([0, 1, 2, 3, -1, -1]), candidates, 10.0, 4)
  assert kept.numpy().tolist() == [0, 2, 3, -1]
  kept = poses.drop_repeats(tf.constant([3, 1, 0, -1]), candidates, 10.0, 2)
  assert kept.numpy().tolist() == [3, 1]


def test_single_person_keypoints_recovered_exactly(grouper):
  scene = scenes.make_scene(COCO, SIZE, [(75.0, 12.0, 130.0)], np.random.default_rng(1))
  result = _run(grouper, _targets(scene))
  assert result["num_people"] == 1
  error, _ = _match(result["keypoints"][:1], scene["keypoints"])
  assert error[0] < 0.5
  assert result["scores"][0] > 0 and np.all(result["scores"][1:] == 0)
  assert np.all(result["keypoints"][1:] == 0) and not result["masks"][1:].any()


@pytest.mark.parametrize("dataset, stride", [("crowdpose", 8), ("coco", 16), ("coco", 4)])
def test_other_layouts_and_strides_recover_keypoints(dataset, stride):
  experiment = ExperimentConfig(geometry=Geometry(dataset=dataset, input_size=SIZE,
                                                 output_stride=stride))
  spec = experiment.geometry.spec
  scene = scenes.make_scene(spec, SIZE, [(75.0, 12.0, 130.0)], np.random.default_rng(11))
  grouper = Grouper(experiment, _grouping_config(), jit_compile=False)
  result = _run(grouper, _targets(scene, experiment))
  assert result["num_people"] == 1
  assert result["keypoints"].shape == (MAX_PEOPLE, spec.num_keypoints, 3)
  error, _ = _match(result["keypoints"][:1], scene["keypoints"])
  assert error[0] < 0.5


def test_two_people_with_overlapping_disks_stay_apart(grouper):
  # 40 px apart: every keypoint's disk (R = 32) overlaps the other person's same-type disk.
  scene = scenes.make_scene(COCO, SIZE, [(55.0, 10.0, 130.0), (95.0, 14.0, 130.0)],
                            np.random.default_rng(2))
  result = _run(grouper, _targets(scene))
  assert result["num_people"] == 2
  error, which = _match(result["keypoints"][:2], scene["keypoints"])
  assert sorted(which.tolist()) == [0, 1]
  assert np.all(error < 1.0)


def _split_at_nose_and_elbow():
  """Two people, the first without its nose and left elbow, decoded without fragment merging:
  (scene, perfect targets, the unmerged result)."""
  scene = scenes.make_scene(COCO, SIZE, [(60.0, 8.0, 140.0), (125.0, 20.0, 120.0)],
                            np.random.default_rng(10))
  for name in ("nose", "left_elbow"):
    scene["keypoints"][0, COCO.keypoint_names.index(name)] = 0.0
  inputs = _targets(scene)
  split = _run(Grouper(_experiment(), _grouping_config(merge_fragments=False),
                       jit_compile=False), inputs)
  return scene, inputs, split


def test_people_split_at_unlabelled_keypoints_are_merged_back(grouper):
  # Without an elbow the walk cannot reach the wrist (40 px beyond the shoulder, out of the wrist's
  # disk): the wrist seeds a fragment. Without a nose the two sides only meet where their disks do.
  scene, inputs, split = _split_at_nose_and_elbow()
  assert split["num_people"] > 2
  merged = _run(grouper, inputs)
  assert merged["num_people"] == 2
  error, which = _match(merged["keypoints"][:2], scene["keypoints"])
  assert sorted(which.tolist()) == [0, 1] and np.all(error < 1.0)


def test_no_people_gives_no_people(grouper):
  result = _run(grouper, _targets(scenes.make_scene(COCO, SIZE, [])))
  assert result["num_people"] == 0
  assert not result["scores"].any() and not result["keypoints"].any() and not result["masks"].any()


def test_person_scores_follow_heatmap_confidence(grouper):
  scene = scenes.make_scene(COCO, SIZE, [(40.0, 10.0, 120.0), (120.0, 14.0, 120.0)],
                            np.random.default_rng(3))
  inputs = _targets(scene)
  # Embeddings scattered by 1 px, as a trained network's: keypoint scores are then the vote mass
  # relative to a whole disk's (`scoring` re-bases them only where the embeddings are exact).
  scatter = np.random.default_rng(0).normal(0.0, 1.0, inputs["mask_offset"].shape)
  inputs["mask_offset"] = inputs["mask_offset"] + scatter.astype(np.float32)
  full = _run(grouper, inputs)
  # The same people, the right one less confident: same keypoints, its score scaled by 0.4.
  columns = np.arange(inputs["heatmap"].shape[1])[None, :, None] * 8.0
  voted_x = columns + inputs["keycentroid"].numpy()[..., 0::2]  # where each disk point votes
  dimmed = np.where(voted_x > 80, 0.4, 1.0).astype(np.float32)
  result = _run(grouper, {**inputs, "heatmap": inputs["heatmap"] * dimmed})
  assert full["num_people"] == result["num_people"] == 2
  _, which = _match(result["keypoints"][:2], scene["keypoints"])
  _, which_full = _match(full["keypoints"][:2], scene["keypoints"])
  dimmed_points = result["keypoints"][which, :, 2]
  full_points = full["keypoints"][which_full, :, 2]
  np.testing.assert_allclose(dimmed_points[0], full_points[0], rtol=1e-4)
  # Keypoint scores are the vote mass clipped to 1: below the clip, they scale with the heatmap.
  below = full_points[1] < 1.0
  assert below.sum() >= 8
  np.testing.assert_allclose(dimmed_points[1][below], 0.4 * full_points[1][below], rtol=1e-4)
  assert np.all(dimmed_points[1][~below] >= 0.4 - 1e-4)
  assert result["scores"][which[1]] < 0.45 * full["scores"][which_full[1]]
  assert np.ptp(full["scores"][:2]) > 0  # never a constant score
  np.testing.assert_allclose(result["scores"][:2], result["keypoints"][:2, :, 2].mean(axis=1),
                             rtol=1e-6)


@pytest.mark.parametrize("centroid_mode", ["dynamic", "static"])
def test_masks_of_separated_people_match_the_ground_truth(centroid_mode, grouper):
  scene = scenes.make_scene(COCO, SIZE, [(35.0, 8.0, 140.0), (85.0, 15.0, 120.0),
                                         (130.0, 10.0, 140.0)], np.random.default_rng(4))
  experiment = _experiment(centroid_mode)
  if centroid_mode == "static":
    grouper = Grouper(experiment, _grouping_config())
  result = _run(grouper, _targets(scene, experiment))
  assert result["num_people"] == 3
  _, which = _match(result["keypoints"][:3], scene["keypoints"])
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  for person, found in enumerate(which):
    assert _iou(result["masks"][found], truth[person]) > 0.9


def test_non_square_output_and_input_scale(grouper):
  # A 300 x 200 (H x W) image resized so that its long side fills the 161 input: scale < 1.
  height, width = 300, 200
  scale = (SIZE - 1) / (height - 1)
  scene = scenes.make_scene(COCO, SIZE, [(50.0, 10.0, 130.0)], np.random.default_rng(5))
  result = _run(grouper, _targets(scene), (height, width), scale)
  assert result["masks"].shape == (MAX_PEOPLE, height, width)
  assert result["num_people"] == 1
  error = np.abs(result["keypoints"][0, :, :2] - scene["keypoints"][0, :, :2] / scale).max()
  assert error < 0.5 / scale
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (height, width), scale)
  assert _iou(result["masks"][0], truth[0]) > 0.9


def _random_instance_maps(rng, grid=17, people=5):
  """IGO-smoothed instance maps `[people, grid, grid]` of random disjoint memberships."""
  labels = rng.integers(-1, people, (grid, grid))
  membership = (labels[None] == np.arange(people)[:, None, None]).astype(np.float32)
  return masks.instance_maps(tf.constant(membership), 0.5)


def test_output_masks_equal_per_person_resampling():
  maps = _random_instance_maps(np.random.default_rng(6))
  for output_size, scale in (((40, 70), 1.0), ((23, 91), 0.8), ((130, 50), 0.45), ((30, 31), 2.5)):
    found = masks.output_masks(masks.resampling_tables(maps), tf.constant(output_size),
                               tf.constant(scale), 4).numpy()
    np.testing.assert_array_equal(found, _reference_masks(maps.numpy(), output_size, scale))


def test_learned_person_probability_draws_the_mask_borders():
  rng = np.random.default_rng(8)
  maps = _random_instance_maps(rng)
  probability = rng.uniform(0.0, 1.0, (*maps.shape[1:], 1)).astype(np.float32)
  tables = masks.resampling_tables(maps)
  for output_size, scale in (((40, 70), 1.0), ((23, 91), 0.8), ((130, 50), 0.45)):
    found = masks.output_masks(tables, tf.constant(output_size), tf.constant(scale), 4,
                               tf.constant(probability), 0.5).numpy().astype(bool)
    resampled = _resampled(maps.numpy(), output_size, scale)
    person_probability = _resampled(probability[None, ..., 0], output_size, scale)[0]
    assert found.sum(axis=0).max() <= 1
    label = np.where(found.any(axis=0), found.argmax(axis=0), -1)
    owned = label >= 0
    # Every mask pixel is on the person probability and on enough of its own person's map ...
    assert np.all(person_probability[owned] > 0.5)
    assert np.all(np.take_along_axis(resampled, np.maximum(label, 0)[None], 0)[0][owned]
                  > masks.INSTANCE_FLOOR)
    # ... and where one person clearly leads on the probability, the pixel is that person's.
    ordered = np.sort(resampled, axis=0)
    clear = ((ordered[-1] - ordered[-2] > 0.2) & (ordered[-1] > masks.INSTANCE_FLOOR + 0.05)
             & (person_probability > 0.55))
    assert clear.mean() > 0.2
    np.testing.assert_array_equal(label[clear], resampled.argmax(axis=0)[clear])
    # Off the probability nobody is there, even inside a membership map above 0.5.
    assert not owned[person_probability < 0.5].any()
    assert (resampled.max(axis=0)[person_probability < 0.5] > 0.5).any()
    # Without the probability (perfect maps) the membership maps alone draw the masks.
    unchanged = masks.output_masks(tables, tf.constant(output_size), tf.constant(scale), 4,
                                   tf.constant(probability), 0.5, use_probability=False)
    np.testing.assert_array_equal(unchanged.numpy(), resampled > 0.5)


def test_fixed_output_shapes_and_types(grouper):
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 10.0, 120.0)])
  result = grouper(_targets(scene), (97, 33), 2.5)
  assert result["keypoints"].shape == (MAX_PEOPLE, COCO.num_keypoints, 3)
  assert result["keypoints"].dtype == tf.float32
  assert result["scores"].shape == (MAX_PEOPLE,)
  assert result["masks"].shape == (MAX_PEOPLE, 97, 33) and result["masks"].dtype == tf.uint8
  assert result["num_people"].shape == () and result["num_people"].dtype == tf.int32
  signature_shapes = [spec.shape.as_list() for spec in grouper.input_signature]
  assert signature_shapes[:5] == [[21, 21, 17], [21, 21, 34], [21, 21, 64], [41, 41, 1],
                                  [41, 41, 2]]


def test_offsets_pointing_outside_the_grid_do_not_crash(grouper):
  rng = np.random.default_rng(7)
  inputs = {spec.name: tf.constant(rng.uniform(-1e4, 1e4, spec.shape).astype(np.float32))
            for spec in grouper.input_signature[:5]}
  inputs["heatmap"] = tf.constant(rng.uniform(0, 1, inputs["heatmap"].shape), tf.float32)
  inputs["seg"] = tf.ones_like(inputs["seg"])
  result = _run(grouper, inputs, (50, 400), 0.1)
  assert np.all(np.isfinite(result["keypoints"])) and np.all(np.isfinite(result["scores"]))
  xy = result["keypoints"][..., :2]
  assert xy.min() >= 0 and xy[..., 0].max() <= 399 and xy[..., 1].max() <= 49


def test_keypoints_stay_on_the_output_image():
  # A 200 x 100 (W x H) image fills input rows 0 - 80 only; this person's legs reach row ~130, in
  # the padding below the image (as untrained heads may place keypoints anywhere).
  scale = (SIZE - 1) / (200 - 1)
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 30.0, 105.0)], np.random.default_rng(15))
  grouper = Grouper(_experiment(), _grouping_config(), jit_compile=False)
  result = _run(grouper, _targets(scene), (100, 200), scale)
  assert result["num_people"] == 1
  found, truth = result["keypoints"][0, :, :2], scene["keypoints"][0, :, :2] / scale
  inside = truth[:, 1] <= 99
  assert 0 < inside.sum() < COCO.num_keypoints
  np.testing.assert_allclose(found[inside], truth[inside], atol=0.5 / scale)
  np.testing.assert_allclose(found[~inside, 1], 99.0)  # clipped to the last row
  np.testing.assert_allclose(found[~inside, 0], truth[~inside, 0], atol=0.5 / scale)


def test_jit_and_eager_groupers_agree(grouper, eager_grouper):
  scene = scenes.make_scene(COCO, SIZE, [(40.0, 10.0, 120.0), (110.0, 20.0, 130.0)],
                            np.random.default_rng(8))
  inputs = _targets(scene)
  compiled = _run(grouper, inputs, (120, 161), 1.3)
  eager = _run(eager_grouper, inputs, (120, 161), 1.3)
  assert compiled["num_people"] == eager["num_people"] == 2
  np.testing.assert_allclose(compiled["keypoints"], eager["keypoints"], atol=1e-3)
  assert (compiled["masks"] != eager["masks"]).mean() < 1e-3


def test_bad_inputs_fail_clearly(grouper):
  inputs = _targets(scenes.make_scene(COCO, SIZE, []))
  with pytest.raises(tf.errors.InvalidArgumentError, match="not finite"):
    grouper({**inputs, "midrange": inputs["midrange"] + float("nan")}, (10, 10), 1.0)
  with pytest.raises(tf.errors.InvalidArgumentError, match="input_scale must be positive"):
    grouper(inputs, (10, 10), 0.0)
  with pytest.raises((TypeError, ValueError)):
    grouper({**inputs, "heatmap": inputs["heatmap"][:-1]}, (10, 10), 1.0)
  with pytest.raises(KeyError, match="seg"):
    grouper({key: value for key, value in inputs.items() if key != "seg"}, (10, 10), 1.0)


def test_model_outputs_to_grouping_inputs():
  rng = np.random.default_rng(9)
  shapes = {"heatmap_logits": (1, 3, 3, 17), "keycentroid": (1, 3, 3, 34),
            "midrange": (1, 3, 3, 64), "seg_logits": (1, 5, 5, 1), "mask_offset": (1, 5, 5, 2)}
  outputs = {key: rng.normal(size=shape) for key, shape in shapes.items()}
  inputs = model_outputs_to_grouping_inputs(outputs)
  assert sorted(inputs) == sorted(INPUT_KEYS)
  np.testing.assert_allclose(inputs["heatmap"], 1 / (1 + np.exp(-outputs["heatmap_logits"][0])),
                             rtol=1e-5)
  np.testing.assert_allclose(inputs["seg"], 1 / (1 + np.exp(-outputs["seg_logits"][0])), rtol=1e-5)
  np.testing.assert_allclose(inputs["midrange"], outputs["midrange"][0], rtol=1e-6)
  unbatched = model_outputs_to_grouping_inputs({k: v[0] for k, v in outputs.items()})
  np.testing.assert_allclose(unbatched["keycentroid"], inputs["keycentroid"])
  with pytest.raises(ValueError, match="one image"):
    model_outputs_to_grouping_inputs({k: np.concatenate([v, v]) for k, v in outputs.items()})


def test_splat_adds_every_vote_at_its_bilinear_corners():
  rng = np.random.default_rng(12)
  height, width, groups, stride = 5, 7, 3, 4.0
  points = rng.uniform(-10.0, 40.0, (200, 2)).astype(np.float32)  # some outside: dropped
  values = rng.uniform(0.0, 1.0, 200).astype(np.float32)
  types = rng.integers(0, groups, 200).astype(np.int32)
  found = sampling.splat(tf.constant(values), tf.constant(points), tf.constant(types), stride,
                         (height, width, groups)).numpy()
  expected = np.zeros((height, width, groups))
  inside = ((points[:, 0] >= 0) & (points[:, 0] <= stride * (width - 1))
            & (points[:, 1] >= 0) & (points[:, 1] <= stride * (height - 1)))
  assert 0 < inside.sum() < len(inside)
  values_inside = np.where(inside, values, 0.0)
  gx = np.clip(points[:, 0] / stride, 0, width - 1)
  gy = np.clip(points[:, 1] / stride, 0, height - 1)
  x0 = np.minimum(np.floor(gx), width - 2).astype(int)
  y0 = np.minimum(np.floor(gy), height - 2).astype(int)
  fx, fy = gx - x0, gy - y0
  for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                         (1, 1, fy * fx)):
    np.add.at(expected, (y0 + dy, x0 + dx, types), values_inside * weight)
  np.testing.assert_allclose(found, expected, atol=1e-5)


def test_a_chain_of_four_fragments_merges_into_the_first():
  # Fragment 1 merges into 0, 2 into 1 (it conflicts with 0 on type 0), 3 into 2 (it conflicts
  # with 0 on type 2 and with 1 on type 1): person 3's unique type 3 must reach person 0.
  size, stride, radius = 101, 4, 10.0
  centre = np.array([200.0, 200.0], np.float32)
  grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).astype(np.float32) * stride
  mask_offset = tf.constant(centre - grid)  # every embedding lands on the same identity
  seg = tf.ones([size, size, 1])
  placed = {0: [(0, 50, .9), (2, 60, .9)], 1: [(1, 100, .8)], 2: [(0, 150, .7)],
            3: [(1, 220, .6), (2, 250, .6), (3, 300, .6)]}
  keypoints = np.zeros((4, 5, 2), np.float32)
  scores = np.zeros((4, 5), np.float32)
  for person, points in placed.items():
    for kind, position, score in points:
      keypoints[person, kind] = position
      scores[person, kind] = score
  merged_keypoints, merged_scores, keep = merging.merge_fragments(
      tf.constant(keypoints), tf.constant(scores), tf.ones([4], tf.bool), seg, mask_offset,
      mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=radius)
  assert keep.numpy().tolist() == [True, False, False, False]
  np.testing.assert_allclose(merged_keypoints[0, 3].numpy(), [300.0, 300.0])
  assert merged_scores[0, 3].numpy() == pytest.approx(0.6)


def test_compiled_stages_need_no_input_values(grouper):
  """XLA compiles every stage from shapes alone, so a new image never recompiles it.

  A value-dependent size (tf.math.bincount's output length depends on its input's maximum) made
  XLA take the head outputs as compile-time constants: 1.2 - 4.7 s of compilation per new image.
  experimental_get_compiler_ir on TensorSpecs fails for such a stage.
  """
  inputs = [_targets(scenes.make_scene(COCO, SIZE, [(80.0, 10.0, 120.0)]))[key]
            for key in INPUT_KEYS]
  candidate_poses, keypoint_scores, seed_scores, overlaps, _, *voted = grouper._find_poses(*inputs)
  selected = poses.select_people(overlaps, seed_scores, MAX_PEOPLE, 0.01)
  people_args = [selected, candidate_poses, keypoint_scores, *voted, *inputs[2:]]
  maps = grouper._make_people(*people_args)[-3]
  for stage, args in ((grouper._find_poses, inputs),
                      (grouper._make_people, people_args),
                      (grouper._resampling_tables, [maps])):
    specs = [tf.TensorSpec.from_tensor(arg) for arg in args]
    assert "HloModule" in stage.experimental_get_compiler_ir(*specs)(stage="hlo")


def test_a_spurious_peak_does_not_repeat_a_person(eager_grouper, monkeypatch):
  """A second nose peak 20 px from the true one (as a half-trained KeyCentroid head makes) seeds a
  walk that repeats the person: suppressed as a duplicate, not decoded as a second person."""
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 30.0, 120.0)], np.random.default_rng(13))
  inputs = _targets(scene)
  nose = scene["keypoints"][0, COCO.keypoint_names.index("nose"), :2]
  keycentroid = inputs["keycentroid"].numpy()
  columns = np.arange(keycentroid.shape[1]) * 8.0
  # Disk points right of the nose (beyond the 4 cells the walk's refinement reads) vote 20 px right.
  right = (columns > nose[0] + 12.0)[None, :] & (inputs["heatmap"].numpy()[..., 0] > 0)
  keycentroid[..., 0] = np.where(right, nose[0] + 20.0 - columns[None, :], keycentroid[..., 0])
  keycentroid[..., 1] = np.where(right, nose[1] - np.arange(keycentroid.shape[0])[:, None] * 8.0,
                                 keycentroid[..., 1])
  inputs = {**inputs, "keycentroid": tf.constant(keycentroid)}
  # The spurious peak scores below the default peak threshold (0.1): the old default, 0.01, keeps
  # it a seed.
  low_threshold = Grouper(_experiment(), _grouping_config(peak_threshold=0.01), jit_compile=False)
  for grouper in (eager_grouper, low_threshold):
    result = _run(grouper, inputs)
    assert result["num_people"] == 1
    error, _ = _match(result["keypoints"][:1], scene["keypoints"])
    assert error[0] < 1.0
  monkeypatch.setattr(poses, "DUPLICATE_FRACTION", 2.0)  # the seed rule alone (DESIGN.md)
  # A nose PGO of 0.7 cells (0.175 x 32 px at stride 8) keeps the spurious peak a local maximum.
  spurious_config = _grouping_config(pgo_sigma_low=0.175, peak_threshold=0.01)
  repeated = _run(Grouper(_experiment(), spurious_config, jit_compile=False), inputs)
  assert repeated["num_people"] == 2


def test_person_without_keypoints_becomes_a_mask_only_person(grouper):
  scene = scenes.make_scene(COCO, SIZE, [(45.0, 10.0, 130.0), (120.0, 40.0, 100.0)],
                            np.random.default_rng(14))
  scene["keypoints"][1] = 0.0  # no labelled keypoint: its offsets point to its mask mean (SM_c)
  inputs = _targets(scene)
  # An isolated foreground point (16 px^2, below mask_only.MIN_AREA) is no person.
  seg = inputs["seg"].numpy()
  seg[38, 2] = 1.0
  inputs = {**inputs, "seg": tf.constant(seg)}
  result = _run(grouper, inputs)
  assert result["num_people"] == 2
  assert result["keypoints"][0, :, 2].min() > 0  # the keypoint person first
  assert not result["keypoints"][1].any()  # then the mask-only one: no keypoint, no score
  assert result["scores"][1] == pytest.approx(mask_only.SCORE_SCALE)  # seg probability 1
  assert 0 < result["scores"][1] < result["scores"][0]
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  assert _iou(result["masks"][1], truth[1]) > 0.9
  assert _iou(result["masks"][0], truth[0]) > 0.9
  assert not result["masks"][2:].any() and not result["scores"][2:].any()

  without = _run(Grouper(
      _experiment(), _grouping_config(mask_only_people=False), jit_compile=False), inputs)
  assert without["num_people"] == 1 and not without["masks"][1:].any()
  np.testing.assert_allclose(without["keypoints"][0], result["keypoints"][0], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_overlapping_person_with_hidden_keypoints_is_not_split(eager_grouper, seed):
  """Two people 17 - 19 px apart, the one behind with 4 hidden (unlabelled) keypoints, as in
  OCHuman. The walk used to follow the zero mid-range offset of a hidden keypoint onto the other
  person's disk: the person behind came out split or mixed with the one in front."""
  rng = np.random.default_rng(seed)
  scene = scenes.make_scene(COCO, SIZE, [(65.0, 12.0, 130.0), (65.0 + rng.uniform(8, 25), 16.0,
                                                                125.0)], rng)
  scene["keypoints"][0, rng.choice(COCO.num_keypoints, 4, replace=False)] = 0.0
  result = _run(eager_grouper, _targets(scene))
  assert result["num_people"] == 2
  error, which = _match(result["keypoints"][:2], scene["keypoints"])
  assert sorted(which.tolist()) == [0, 1] and np.all(error < 1.0)


def test_perfect_keypoint_scores_do_not_depend_on_the_sub_cell_position(eager_grouper):
  """A perfect keypoint scores about 1 wherever it lies in its grid cell (its vote mass), where
  the smoothed score map read at the keypoint gave 0.15 - 0.65."""
  person_scores = []
  for shift in (0.0, 2.0, 4.0, 5.5):  # input pixels; the pose grid's cell is 8
    scene = scenes.make_scene(COCO, SIZE, [(72.0 + shift, 12.0 + shift, 130.0)])
    result = _run(eager_grouper, _targets(scene))
    assert result["num_people"] == 1
    keypoint_scores = result["keypoints"][0, :, 2]
    assert keypoint_scores.min() >= 0.9 and keypoint_scores.max() <= 1.0
    person_scores.append(result["scores"][0])
  assert min(person_scores) >= 0.9 and np.ptp(person_scores) < 0.05


def _person_with_missed_legs():
  """One person whose lower legs' embeddings miss its centre by 1.5 sigma_j (phi = 0.32, so
  the membership leaves them): (scene, grouping inputs, the legs' bool mask-grid map)."""
  scene = scenes.make_scene(COCO, SIZE, [(70.0, 12.0, 130.0)], np.random.default_rng(12))
  inputs = _targets(scene)
  member = scene["instance_masks"][0].astype(bool)
  sigma = 0.5 * np.sqrt(member.sum() * 16.0)  # membership_sigma * sqrt(area), input pixels
  rows, cols = np.nonzero(member)
  legs = (rows >= np.percentile(rows, 85)) & (cols <= np.median(cols))
  assert legs.sum() * 16.0 >= 2 * mask_only.MIN_AREA
  offset = inputs["mask_offset"].numpy()
  offset[rows[legs], cols[legs], 0] += 1.5 * sigma
  blob = np.zeros_like(member)
  blob[rows[legs], cols[legs]] = True
  return scene, {**inputs, "mask_offset": tf.constant(offset)}, blob


def test_unclaimed_pixels_of_a_person_are_not_a_mask_only_speck(eager_grouper):
  """Pixels whose embeddings miss their person's centre by 1.5 sigma_j (phi = 0.32, unclaimed)
  still point at that person: they join it rather than becoming a mask-only "person"."""
  scene, inputs, _ = _person_with_missed_legs()
  result = _run(eager_grouper, inputs)
  assert result["num_people"] == 1
  assert result["keypoints"][0, :, 2].min() > 0
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  assert _iou(result["masks"][0], truth[0]) > 0.9


def test_where_every_slot_is_taken_a_missed_part_joins_its_person_and_a_far_blob_nobody():
  """With no slot free (`max_people=1`) the joins are taken point by point
  (`mask_only.joins_where_every_slot_is_taken`): pixels whose embeddings miss their person's
  centre by 1.5 sigma_j still join it; the mask of a person without keypoints, far from the
  keypoint person, joins nobody (with a free slot it is a mask-only person)."""
  one_slot = Grouper(_experiment(), GroupingConfig(max_people=1, peaks_per_type=8),
                     jit_compile=False)
  scene, inputs, blob = _person_with_missed_legs()
  result = _run(one_slot, inputs)
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  assert result["num_people"] == 1 and _iou(result["masks"][0], truth[0]) > 0.9
  missed = _reference_masks(blob[None].astype(np.float32), (SIZE, SIZE), 1.0)[0]
  assert result["masks"][0][missed].mean() > 0.9  # the missed part joined its person

  scene = scenes.make_scene(COCO, SIZE, [(45.0, 10.0, 130.0), (120.0, 40.0, 100.0)],
                            np.random.default_rng(14))
  scene["keypoints"][1] = 0.0  # no labelled keypoint: its offsets point to its mask mean (SM_c)
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  result = _run(one_slot, _targets(scene))
  assert result["num_people"] == 1 and result["keypoints"][0, :, 2].min() > 0
  assert _iou(result["masks"][0], truth[0]) > 0.9
  assert not (result["masks"][0].astype(bool) & truth[1]).any()


def test_smoothing_sigmas_are_in_units_of_32_input_pixels():
  """The paper's [0.1, 1] spans real smoothing: 0.4 - 4 pose cells at stride 8, 0.8 - 8 mask
  cells at stride 4 (in cells, 0.1 was the identity kernel [0, 1, 0])."""
  assert gaussian.sigma_in_cells(0.1, 8) == pytest.approx(0.4)
  assert gaussian.sigma_in_cells(1.0, 4) == pytest.approx(8.0)
  assert gaussian.sigma_in_cells(0.5, 16) == pytest.approx(1.0)
  centre = gaussian.gaussian_kernels_1d([gaussian.sigma_in_cells(0.1, 8)])
  assert centre[centre.shape[0] // 2, 0] < 0.95
  cells = gaussian.pgo_sigmas_in_cells(COCO.high_variance, 0.1, 0.7, 8)
  wrist, nose = COCO.keypoint_names.index("left_wrist"), COCO.keypoint_names.index("nose")
  assert (cells[wrist], cells[nose]) == pytest.approx((0.4, 2.8))
  with pytest.raises(ValueError, match=">= 0"):
    gaussian.sigma_in_cells(-0.1, 8)


def test_pgo_and_igo_sigmas_change_the_decoded_scores_and_masks():
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 30.0, 120.0)], np.random.default_rng(21))
  inputs = _targets(scene)
  outputs, seed_scores = {}, {}
  for sigma in (0.1, 1.0):
    config = _grouping_config(pgo_sigma_high=sigma, pgo_sigma_low=sigma, igo_sigma=sigma)
    grouper = Grouper(_experiment(), config, jit_compile=False)
    outputs[sigma] = _run(grouper, inputs)
    seed_scores[sigma] = grouper._find_poses(*(inputs[key] for key in INPUT_KEYS))[2].numpy()
  small, large = outputs[0.1], outputs[1.0]
  assert small["num_people"] >= 1 and large["num_people"] >= 1
  # A 4-cell PGO spreads each vote peak the seeds come from; an 8-cell IGO rounds the mask.
  assert seed_scores[1.0].max() < 0.5 * seed_scores[0.1].max()
  assert _iou(small["masks"][0] > 0, large["masks"][0] > 0) < 0.95


def test_decoding_without_keycentroid_takes_keypoints_from_heatmap_peaks():
  """Offsets of a model trained without KeyCentroid are noise: voting with them loses the people;
  heatmap peaks (PGO-smoothed disks) and the mid-range walk find them within a pose cell."""
  scene = scenes.make_scene(COCO, SIZE, [(80.0, 30.0, 120.0)], np.random.default_rng(22))
  inputs = _targets(scene)
  noise = np.random.default_rng(0).normal(0.0, 40.0, inputs["keycentroid"].shape)
  inputs = {**inputs, "keycentroid": tf.constant(noise, tf.float32)}
  without = _run(Grouper(
      _experiment(), _grouping_config(use_keycentroid=False), jit_compile=False), inputs)
  assert without["num_people"] >= 1
  error, _ = _match(without["keypoints"][:without["num_people"]], scene["keypoints"])
  assert error[0] <= 8.0 * np.sqrt(2.0)
  voted = _run(Grouper(_experiment(), _grouping_config(), jit_compile=False), inputs)
  voted_error, _ = _match(voted["keypoints"][:max(voted["num_people"], 1)], scene["keypoints"])
  assert voted_error[0] > 2.0 * error[0]



def _learned_like(inputs, rng, offset_noise=3.0):
  """Perfect targets made to look learned: KeyCentroid and mid-range offsets off by Gaussian noise
  of `offset_noise` input pixels per component, probabilities softened, the mask embeddings
  pointing only halfway to their centre (a half-trained head undershoots)."""
  def noisy(key):
    value = inputs[key].numpy()
    return tf.constant(value + rng.normal(0.0, offset_noise, value.shape).astype(np.float32))
  return {"heatmap": inputs["heatmap"] * 0.8 + 0.05, "keycentroid": noisy("keycentroid"),
          "midrange": noisy("midrange"), "seg": inputs["seg"] * 0.8 + 0.05,
          "mask_offset": inputs["mask_offset"] * 0.5}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_learned_like_maps_do_not_fragment_a_person(eager_grouper, seed):
  """On a trained network's maps the KeyCentroid refinements move every walked keypoint by a few
  pixels. The walk's support tests, calibrated on perfect maps, cut such a person into fragments
  (the quick-start model: 312 people for 36); scaled by the field's own inconsistency
  (`poses.refinement_noise`), they keep it whole."""
  rng = np.random.default_rng(seed)
  scene = scenes.make_scene(COCO, SIZE, [(75.0, 12.0, 130.0)], rng)
  inputs = _learned_like(_targets(scene), rng)
  result = _run(eager_grouper, inputs)
  assert result["num_people"] == 1
  keypoints = result["keypoints"][0]
  assert np.all(keypoints[:, 2] > 0)
  error = np.linalg.norm(keypoints[:, :2] - scene["keypoints"][0, :, :2], axis=-1)
  assert np.median(error) < 3.0 and error.max() < 10.0


def test_refinement_noise_is_zero_on_perfect_maps_and_tracks_offset_noise():
  scene = scenes.make_scene(COCO, SIZE, [(75.0, 12.0, 130.0)], np.random.default_rng(3))
  inputs = _targets(scene)
  truth = tf.constant(scene["keypoints"][0, :, :2])
  types = tf.range(COCO.num_keypoints)
  valid = tf.ones([COCO.num_keypoints], tf.bool)
  perfect = poses.refinement_noise(truth, types, valid, inputs["keycentroid"], 8)
  assert float(perfect) < 1e-3
  noisy = _learned_like(inputs, np.random.default_rng(3), offset_noise=2.0)["keycentroid"]
  # |N(0, 2)^2| has median 2 * sqrt(2 ln 2) = 2.35; bilinear reads average four cells' noise.
  assert 0.8 < float(poses.refinement_noise(truth, types, valid, noisy, 8)) < 3.0
  none_valid = poses.refinement_noise(truth, types, tf.zeros_like(valid), noisy, 8)
  assert float(none_valid) == 0.0


@pytest.mark.parametrize("seed", [202, 207])
def test_walks_between_close_people_stay_on_their_person(seed):
  """Two people 10 - 12 px apart: each keypoint's grid corners belong partly to the other
  person's disk of that type. A plain bilinear read mixed the two people's mid-range and
  KeyCentroid offsets (20 - 77 % of the keypoints walked from a person's own keypoints were
  placed within 1 px); reading only the corners whose KeyCentroid vote lands on the keypoint
  keeps every walk on its person."""
  rng = np.random.default_rng(seed)
  dx, dy = rng.uniform(6, 22), rng.uniform(-4, 10)
  scene = scenes.make_scene(COCO, SIZE, [(65.0, 12.0, 130.0), (65.0 + dx, 12.0 + dy, 125.0)],
                            rng)
  inputs = _targets(scene)
  orders = poses.breadth_first_edges(COCO)
  for person in scene["keypoints"]:
    seeds = tf.constant(person[:, :2], tf.float32)
    walked = poses.walk(seeds, tf.range(COCO.num_keypoints), inputs["keycentroid"],
                        inputs["midrange"], orders, 8, SIZE).poses.numpy()
    error = np.linalg.norm(walked - person[None, :, :2], axis=-1)
    assert error.max() < 1.0


def test_owned_reads_count_only_the_corners_that_vote_for_the_keypoint():
  # A 3 x 3 grid of stride 8; the point lies in the top-left cell. The left corners' votes land on
  # the point, the right ones' 12 px away (another person's keypoint of the same type).
  point = tf.constant([[3.0, 4.0]])
  owners = np.zeros([3, 3, 2], np.float32)
  offsets = np.zeros([3, 3, 2], np.float32)
  for row in range(3):
    for column in range(3):
      corner = np.array([8.0 * column, 8.0 * row])
      mine = column == 0
      owners[row, column] = (point.numpy()[0] if mine else point.numpy()[0] + [12.0, 0.0]) - corner
      offsets[row, column] = (np.array([40.0, 30.0]) if mine else np.array([60.0, 30.0])) - corner
  zero = tf.zeros([1], tf.int32)
  owned = sampling.sample_owned_targets(tf.constant(offsets), tf.constant(owners), point, zero,
                                        zero, 8, 1.0)
  np.testing.assert_allclose(owned.numpy(), [[40.0, 30.0]], atol=1e-3)
  plain = point + sampling.sample_groups(tf.constant(offsets), point, zero, 2, 8)
  assert plain.numpy()[0, 0] > 45.0  # a plain read mixes in the other person's target
  # With a tolerance far beyond the votes' spread, it is the plain bilinear read.
  wide = sampling.sample_owned_targets(tf.constant(offsets), tf.constant(owners), point, zero,
                                       zero, 8, 1e6)
  np.testing.assert_allclose(wide.numpy(), plain.numpy(), atol=1e-3)


def _embedding_field(size, stride, centres_by_region):
  """mask_offset `[size, size, 2]` whose embeddings point to `centre` in each `(x0, x1, centre)`
  column band, and an all-foreground seg."""
  grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).astype(np.float32) * stride
  offsets = np.zeros((size, size, 2), np.float32)
  for x0, x1, centre in centres_by_region:
    band = (grid[..., 0] >= x0) & (grid[..., 0] < x1)
    offsets[band] = np.asarray(centre, np.float32) - grid[band]
  return tf.ones([size, size, 1]), tf.constant(offsets)


def test_identity_tolerance_is_tight_on_perfect_maps_and_grows_with_noise():
  assert merging.identity_tolerance(0.0, 10.0).numpy() == pytest.approx(merging.IDENTITY_TOLERANCE)
  assert merging.identity_tolerance(0.5, 10.0).numpy() == pytest.approx(
      merging.IDENTITY_TOLERANCE + 0.5 * merging.TOLERANCE_NOISE)
  assert merging.identity_tolerance(2.0, 10.0).numpy() == pytest.approx(10.0)


def test_pieces_of_people_whose_centres_are_a_few_pixels_apart_do_not_merge():
  """A person standing behind another has its keypoint centre 4 px from the front person's: with
  the NMS radius (10 px) as the identity tolerance their pieces merged into one mixed person."""
  stride, radius = 4, 10.0
  front, back = (100.0, 100.0), (104.0, 100.0)
  seg, mask_offset = _embedding_field(60, stride, [(0, 100, front), (100, 240, back)])
  keypoints = np.zeros((2, 4, 2), np.float32)
  scores = np.zeros((2, 4), np.float32)
  keypoints[0, :2] = [(60.0, 80.0), (72.0, 120.0)]  # front person's pieces: x < 100
  keypoints[1, 2:] = [(140.0, 80.0), (152.0, 120.0)]  # back person's: x >= 100
  scores[0, :2] = scores[1, 2:] = 0.9
  _, _, keep = merging.merge_fragments(
      tf.constant(keypoints), tf.constant(scores), tf.ones([2], tf.bool), seg, mask_offset,
      mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=radius,
      tolerance=merging.identity_tolerance(0.0, radius))
  assert keep.numpy().tolist() == [True, True]


def test_a_piece_of_occluded_keypoints_completes_its_person():
  """Person 0 (identity 100, 100) lacks two keypoints whose pixels lie on an occluder's mask, so
  their embeddings point to the occluder (200, 100) and identities cannot place the piece (1) they
  form; with it, person 0's keypoint mean lands on its identity. Piece 2 (same types, elsewhere)
  completes nobody and stays."""
  stride, radius = 4, 10.0
  seg, mask_offset = _embedding_field(80, stride, [(0, 120, (100.0, 100.0)),
                                                   (120, 320, (200.0, 100.0))])
  keypoints = np.zeros((3, 4, 2), np.float32)
  scores = np.zeros((3, 4), np.float32)
  keypoints[0, :2] = [(60.0, 100.0), (80.0, 60.0)]
  keypoints[1, 2:] = [(130.0, 140.0), (130.0, 100.0)]  # 4 keypoints' mean: (100, 100)
  keypoints[2, 2:] = [(250.0, 140.0), (260.0, 100.0)]
  scores[0, :2] = scores[1, 2:] = scores[2, 2:] = 0.9
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([3], tf.bool), seg, mask_offset)
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=radius,
                  tolerance=merging.identity_tolerance(0.0, radius), exact=True)
  assert merging.merge_fragments(*inputs, **settings)[2].numpy().tolist() == [True] * 3
  unchanged = merging.complete_people(*inputs, **{**settings, "exact": False})
  assert unchanged[2].numpy().tolist() == [True] * 3
  np.testing.assert_array_equal(unchanged[0].numpy(), keypoints)
  np.testing.assert_array_equal(unchanged[1].numpy(), scores)
  completed, completed_scores, keep = merging.complete_people(*inputs, **settings)
  assert keep.numpy().tolist() == [True, True, False]
  np.testing.assert_allclose(completed[0].numpy(), keypoints[0] + keypoints[1])
  np.testing.assert_allclose(completed_scores[0].numpy(), [0.9] * 4)
  np.testing.assert_allclose(completed[1].numpy(), keypoints[2])


def test_pieces_hidden_behind_a_whole_person_merge_with_nothing():
  """Two one-keypoint pieces lie on the mask of a person decoded whole (its keypoint mean is its
  identity), so their embeddings point to it: they are keypoints of people behind it. Before,
  both merged into the whole person (types it lacks), adding two wrong keypoints."""
  stride, radius = 4, 10.0
  seg, mask_offset = _embedding_field(80, stride, [(0, 320, (100.0, 100.0))])
  keypoints = np.zeros((3, 5, 2), np.float32)
  scores = np.zeros((3, 5), np.float32)
  keypoints[0, :3] = [(80.0, 100.0), (120.0, 100.0), (100.0, 100.0)]  # mean (100, 100)
  keypoints[1, 3] = (90.0, 130.0)
  keypoints[2, 4] = (110.0, 70.0)
  scores[0, :3] = scores[1, 3] = scores[2, 4] = 0.9
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([3], tf.bool), seg, mask_offset)
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=radius,
                  tolerance=merging.identity_tolerance(0.0, radius))
  assert merging.merge_fragments(*inputs, **settings)[2].numpy().tolist() == [True, False, False]
  kept, kept_scores, keep = merging.merge_fragments(*inputs, exact=True, **settings)
  assert keep.numpy().tolist() == [True, True, True]
  np.testing.assert_array_equal(kept.numpy(), keypoints)
  np.testing.assert_array_equal(kept_scores.numpy(), scores)


def test_merging_and_completion_move_valid_people_first_when_nothing_merges():
  """An empty slot before valid people: neither step merges or completes anyone (the people are
  far apart and whole), yet both return the valid people first, the empty slot zeroed last."""
  stride, radius = 4, 10.0
  seg, mask_offset = _embedding_field(80, stride, [(0, 120, (60.0, 100.0)),
                                                   (120, 320, (200.0, 100.0))])
  keypoints = np.zeros((3, 2, 2), np.float32)
  keypoints[0] = [(10.0, 10.0), (20.0, 10.0)]  # an empty slot's leftovers
  keypoints[1] = [(50.0, 100.0), (70.0, 100.0)]  # mean (60, 100), its identity
  keypoints[2] = [(190.0, 100.0), (210.0, 100.0)]  # mean (200, 100)
  scores = np.full((3, 2), 0.9, np.float32)
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.constant([False, True, True]), seg,
            mask_offset)
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=radius,
                  tolerance=merging.identity_tolerance(0.0, radius), exact=True)
  for step in (merging.merge_fragments, merging.complete_people):
    moved, moved_scores, keep = step(*inputs, **settings)
    assert keep.numpy().tolist() == [True, True, False]
    np.testing.assert_array_equal(moved.numpy(), [keypoints[1], keypoints[2], np.zeros((2, 2))])
    np.testing.assert_array_equal(moved_scores.numpy(), [scores[1], scores[2], [0.0, 0.0]])


def test_embedding_noise_is_zero_on_perfect_maps_and_tracks_embedding_scatter():
  scene = scenes.make_scene(COCO, SIZE, [(35.0, 8.0, 140.0), (85.0, 15.0, 120.0)],
                            np.random.default_rng(4))
  inputs = _targets(scene)
  settings = dict(mask_stride=4, seg_threshold=0.5)
  assert merging.embedding_noise(inputs["seg"], inputs["mask_offset"], **settings).numpy() < 1e-4
  noisy = inputs["mask_offset"] + tf.random.stateless_normal(inputs["mask_offset"].shape, (1, 2),
                                                             stddev=3.0)
  noise = merging.embedding_noise(inputs["seg"], noisy, **settings).numpy()
  assert 2.0 < noise < 8.0  # the distance between two points scattered by 3 px: median ~4.9 px
  assert merging.embedding_noise(tf.zeros_like(inputs["seg"]), noisy, **settings).numpy() == 0.0


def test_a_fragment_gets_its_whole_person_mask(eager_grouper):
  """Unmerged pieces of a person split at its unlabelled nose and elbow: the piece's mask centre is
  where its keypoints' embeddings point, the person's centre, so the best-scoring piece gets the
  whole mask; the piece's keypoint mean (before) lies off the centre and took part of it."""
  scene, inputs, split = _split_at_nose_and_elbow()
  truth = _reference_masks(scene["instance_masks"].astype(np.float32), (SIZE, SIZE), 1.0)
  labelled = scene["keypoints"][0, :, 2] > 0
  pieces = [i for i in range(split["num_people"])
            if np.any(np.linalg.norm(split["keypoints"][i, :, :2] - scene["keypoints"][0, :, :2],
                                     axis=-1)[labelled & (split["keypoints"][i, :, 2] > 0)] < 1.0)]
  assert len(pieces) > 1
  best = max(pieces, key=lambda piece: split["scores"][piece])
  assert _iou(split["masks"][best], truth[0]) > 0.9
  assert all(not split["masks"][piece].any() for piece in pieces if piece != best)


def test_a_person_lacking_occluded_keypoints_gets_them_from_the_votes():
  """Person 0 (identity (100, 100), the mean of its 5 labelled keypoints) lacks types 3 and 4, on
  whole person 1's mask; no walk holds them, the voted keypoints do. Person 1's type 3 lies nearer
  to person 0's identity but person 1 holds it; a free type 3 and 4 farther away do not fit."""
  keypoints = np.zeros((2, 5, 2), np.float32)
  scores = np.zeros((2, 5), np.float32)
  keypoints[0, :3] = [(60.0, 100.0), (80.0, 60.0), (100.0, 150.0)]
  keypoints[1] = [(250.0, 100.0), (230.0, 60.0), (230.0, 140.0), (120.0, 100.0), (170.0, 100.0)]
  scores[0, :3], scores[1] = 0.9, 0.9
  voted = np.zeros((3, 5, 2), np.float32)
  voted_scores = np.zeros((3, 5), np.float32)
  voted[0], voted_scores[0] = keypoints[1], 0.9
  voted[1, 3:], voted_scores[1, 3:] = [(130.0, 100.0), (130.0, 90.0)], [0.8, 0.7]
  voted[2, 3:], voted_scores[2, 3:] = [(300.0, 300.0), (250.0, 250.0)], 0.95
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([2], tf.bool),
            tf.constant([[100.0, 100.0], [200.0, 100.0]]), tf.ones([2], tf.bool),
            tf.constant(voted), tf.constant(voted_scores))
  settings = dict(keypoint_threshold=0.05, tolerance=2.0)
  unchanged = claiming.complete_from_votes(*inputs, exact=False, **settings)
  np.testing.assert_array_equal(unchanged[1].numpy(), scores)
  completed, completed_scores = claiming.complete_from_votes(*inputs, exact=True, **settings)
  expected, expected_scores = keypoints.copy(), scores.copy()
  expected[0, 3:], expected_scores[0, 3:] = [(130.0, 100.0), (130.0, 90.0)], [0.8, 0.7]
  np.testing.assert_allclose(completed.numpy(), expected)
  np.testing.assert_allclose(completed_scores.numpy(), expected_scores)


def test_a_person_holding_a_wrong_keypoint_swaps_it_for_a_voted_one():
  """Person 0 (identity (100, 100), the mean of its 5 labelled keypoints) holds at type 3 the
  keypoint of someone hidden behind it (140, 120), which embeds onto its identity too, so no claim
  replaced it. Its own (130, 100) is among the voted keypoints; a type 3 elsewhere does not fit."""
  keypoints = np.array([[(60.0, 100.0), (80.0, 60.0), (100.0, 150.0), (140.0, 120.0),
                         (130.0, 90.0)]], np.float32)
  scores = np.full((1, 5), 0.9, np.float32)
  voted = np.zeros((3, 5, 2), np.float32)
  voted_scores = np.zeros((3, 5), np.float32)
  voted[:, 3] = [(140.0, 120.0), (130.0, 100.0), (300.0, 300.0)]
  voted_scores[:, 3] = [0.9, 0.8, 0.95]
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([1], tf.bool),
            tf.constant([[100.0, 100.0]]), tf.ones([1], tf.bool), tf.constant(voted),
            tf.constant(voted_scores))
  settings = dict(keypoint_threshold=0.05, tolerance=2.0)
  unchanged = claiming.swap_from_votes(*inputs, exact=False, **settings)
  np.testing.assert_array_equal(unchanged[0].numpy(), keypoints)
  swapped, swapped_scores = claiming.swap_from_votes(*inputs, exact=True, **settings)
  expected, expected_scores = keypoints.copy(), scores.copy()
  expected[0, 3], expected_scores[0, 3] = (130.0, 100.0), 0.8
  np.testing.assert_allclose(swapped.numpy(), expected)
  np.testing.assert_allclose(swapped_scores.numpy(), expected_scores)


def test_of_people_sharing_a_centre_the_best_scoring_takes_the_mask():
  """Pieces of one person share its identity up to float round-off, which differs between CPUs:
  the round-off once decided which piece took the mask. Person 0 scores lower and sits nearer."""
  stride = 4
  seg, mask_offset = _embedding_field(40, stride, [(0, 160, (80.0, 80.0))])
  centres = tf.constant([[80.0, 80.0], [80.0 + 1e-3, 80.0], [80.0, 80.0 + 1e-3]])
  scores = tf.constant([0.3, 0.6, 0.6])
  owners = masks.mask_owners(centres, scores, tf.constant([True, True, True]))
  assert owners.numpy().tolist() == [False, True, False]
  membership = masks.membership_maps(
      seg, mask_offset, centres, owners, mask_stride=stride, seg_threshold=0.5,
      membership_threshold=0.1, membership_sigma=0.5, refine_centres=False).numpy()
  assert membership[1].sum() == 40 * 40 and not membership[0].any() and not membership[2].any()
  # Unless the better piece does not exist, or the centres are apart.
  assert masks.mask_owners(centres, scores, tf.constant([True, False, False])).numpy().tolist() == [
      True, False, False]
  apart = masks.mask_owners(centres + tf.constant([[0.0, 0.0], [5.0, 0.0], [0.0, 9.0]]), scores,
                            tf.constant([True, True, True]))
  assert apart.numpy().tolist() == [True, True, True]


def test_mask_centres_follow_a_learned_fields_bias_off_the_keypoint_mean():
  """A learned field clusters each person's embeddings 80 px below its keypoints' mean: at
  membership sigma 57 px (800 points) no point reaches phi 0.5 around the keypoint mean, so both
  people lost their masks; the k-means step moves each centre onto its cluster."""
  stride, bias = 4, np.asarray([0.0, 80.0], np.float32)
  seg, mask_offset = _embedding_field(40, stride, [(0, 80, (40.0, 80.0) + bias),
                                                    (80, 160, (120.0, 80.0) + bias)])
  centres = tf.constant([[40.0, 80.0], [120.0, 80.0]])

  def members(refine):
    return masks.membership_maps(
        seg, mask_offset, centres, tf.constant([True, True]), mask_stride=stride,
        seg_threshold=0.5, membership_threshold=0.5, membership_sigma=0.5,
        refine_centres=refine).numpy()

  assert not members(False).any()
  refined = members(True)
  columns = np.arange(40) * stride
  np.testing.assert_array_equal(refined[0], np.broadcast_to(columns < 80, (40, 40)))
  np.testing.assert_array_equal(refined[1], np.broadcast_to(columns >= 80, (40, 40)))


def _reference_margins(membership, mask_offset, stride, sigma):
  """Per person, the mean over its points of max(phi_own - max phi_other, 0), in NumPy."""
  num_people, size, _ = membership.shape
  grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).astype(np.float64) * stride
  embeddings = (grid + mask_offset).reshape(-1, 2)
  member = membership.reshape(num_people, -1) > 0
  phi = np.zeros(member.shape)
  for j in range(num_people):
    if member[j].any():
      centre = embeddings[member[j]].mean(axis=0)
      variance = sigma ** 2 * member[j].sum() * stride ** 2
      phi[j] = np.exp(-((embeddings - centre) ** 2).sum(-1) / (2.0 * variance))
  margins = np.zeros(num_people)
  for j in range(num_people):
    if member[j].any():
      others = np.delete(phi, j, axis=0).max(axis=0) if num_people > 1 else 0.0
      margins[j] = np.maximum(phi[j] - others, 0.0)[member[j]].mean()
  return margins


def test_assignment_margins_match_their_definition():
  rng = np.random.default_rng(11)
  size, stride = 24, 4
  labels = rng.integers(-1, 4, (size, size))  # 4 people, -1: nobody; person 4 has no point
  membership = np.stack([labels == j for j in range(5)]).astype(np.float32)
  mask_offset = rng.normal(0.0, 30.0, (size, size, 2)).astype(np.float32)
  found = mask_ranking.assignment_margins(tf.constant(membership), tf.constant(mask_offset),
                                          mask_stride=stride, membership_sigma=0.5).numpy()
  np.testing.assert_allclose(found, _reference_margins(membership, mask_offset, stride, 0.5),
                             atol=1e-5)
  assert found[4] == 0.0 and np.all((found >= 0.0) & (found <= 1.0))


def test_masks_between_people_have_smaller_assignment_margins():
  """Two people 120 px apart whose embeddings land on their centres have margins near 1; when
  half of one person's points point at the other's centre (a mask taking its neighbour's
  points), that mask's margin falls well below its neighbour's."""
  stride = 4
  _, clean = _embedding_field(60, stride, [(0, 40, (20.0, 120.0)), (120, 160, (140.0, 120.0))])
  columns = np.arange(60) * stride
  membership = tf.constant(np.stack([np.broadcast_to(columns < 40, (60, 60)),
                                     np.broadcast_to((columns >= 120) & (columns < 160),
                                                     (60, 60))]).astype(np.float32))

  def margins(mask_offset):
    return mask_ranking.assignment_margins(membership, mask_offset, mask_stride=stride,
                                           membership_sigma=0.5).numpy()

  separated = margins(clean)
  assert np.all(separated > 0.9)
  _, mixed = _embedding_field(60, stride, [(0, 40, (20.0, 120.0)), (120, 140, (20.0, 120.0)),
                                           (140, 160, (140.0, 120.0))])
  mixed_margins = margins(mixed)
  assert mixed_margins[1] < 0.5 < mixed_margins[0]


def test_masks_ranked_by_margin_on_learned_maps_only():
  """The ranking changes the mask scores on learned maps (never raising them) and nothing else
  (up to float round-off: the two graphs differ); on perfect maps it changes nothing."""
  without = Grouper(_experiment(), _grouping_config(rank_masks_by_margin=False), jit_compile=False)
  ranked = Grouper(_experiment(), _grouping_config(), jit_compile=False)
  rng = np.random.default_rng(4)
  scene = scenes.make_scene(COCO, SIZE, [(50.0, 10.0, 110.0), (105.0, 14.0, 120.0)], rng)
  perfect = _targets(scene)
  for inputs, learned in ((perfect, False), (_learned_like(perfect, rng), True)):
    base, found = _run(without, inputs), _run(ranked, inputs)
    assert found["num_people"] == base["num_people"]
    for key in ("keypoints", "scores"):
      np.testing.assert_allclose(found[key], base[key], atol=1e-4)
    assert np.mean(found["masks"] != base["masks"]) < 1e-3
    people = int(base["num_people"])
    assert people >= 2
    if learned:
      assert np.all(found["mask_scores"][:people] <= base["mask_scores"][:people] + 1e-6)
      assert np.any(found["mask_scores"][:people] < base["mask_scores"][:people] - 1e-3)
    else:
      np.testing.assert_allclose(found["mask_scores"], base["mask_scores"], atol=1e-6)


def test_keypoints_at_their_mask_edge_agree_through_any_surrounding_grid_point():
  """Two of a piece's three keypoints lie at the edge of their person's mask, nearer to the grid
  points of the neighbour's (x >= 100): read at the nearest point only, the neighbour's centre won
  the majority and was the piece's identity."""
  stride = 4
  seg, mask_offset = _embedding_field(80, stride, [(0, 100, (70.0, 90.0)),
                                                   (100, 320, (150.0, 90.0))])
  keypoints = np.zeros((1, 3, 2), np.float32)
  keypoints[0] = [(98.5, 80.0), (98.5, 100.0), (60.0, 90.0)]
  identity, has_identity = merging.identities(
      tf.constant(keypoints), tf.fill([1, 3], 0.9), tf.ones([1], tf.bool), seg, mask_offset,
      mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=10.0,
      tolerance=2.0)
  assert has_identity.numpy().tolist() == [True]
  np.testing.assert_allclose(identity[0].numpy(), [70.0, 90.0], atol=1e-4)


def test_a_person_claims_the_keypoints_that_embed_onto_its_identity():
  """Person 0 (mask x < 100, centre (70, 90)) holds its neighbour's keypoint of type 2 (on the
  neighbour's mask, x >= 100) and person 1 lacks type 3; the candidates' pool holds person 0's
  own type 2 and person 1's type 3, each on its person's mask. Before, merging's choice stayed."""
  stride = 4
  seg, mask_offset = _embedding_field(80, stride, [(0, 100, (70.0, 90.0)),
                                                   (100, 320, (150.0, 90.0))])
  keypoints = np.zeros((2, 4, 2), np.float32)
  scores = np.zeros((2, 4), np.float32)
  keypoints[0, :3] = [(60.0, 80.0), (80.0, 100.0), (130.0, 100.0)]
  keypoints[1, :3] = [(140.0, 80.0), (160.0, 100.0), (130.0, 100.0)]
  scores[:, :3] = 0.9
  pool = np.concatenate([keypoints, np.zeros((1, 4, 2), np.float32)])
  pool_scores = np.concatenate([scores, np.zeros((1, 4), np.float32)])
  pool[2, 2], pool_scores[2, 2] = (76.0, 120.0), 0.8
  pool[2, 3], pool_scores[2, 3] = (120.0, 60.0), 0.7
  identity, has_identity = merging.identities(
      tf.constant(keypoints), tf.constant(scores), tf.ones([2], tf.bool), seg, mask_offset,
      mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=10.0, tolerance=2.0)
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([2], tf.bool), identity,
            has_identity, tf.constant(pool), tf.constant(pool_scores), seg, mask_offset)
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, tolerance=2.0)
  unchanged = claiming.claim_keypoints(*inputs, exact=False, **settings)
  np.testing.assert_array_equal(unchanged[0].numpy(), keypoints)
  claimed, claimed_scores = claiming.claim_keypoints(*inputs, exact=True, **settings)
  expected, expected_scores = keypoints.copy(), scores.copy()
  expected[0, 2], expected_scores[0, 2] = (76.0, 120.0), 0.8
  expected[1, 3], expected_scores[1, 3] = (120.0, 60.0), 0.7
  np.testing.assert_allclose(claimed.numpy(), expected)
  np.testing.assert_allclose(claimed_scores.numpy(), expected_scores)


def _wrist_scene():
  """Person 1 about 12 px right of person 0 (in front of it), its left elbow hidden: its left
  wrist has no labelled neighbour, and the score map holds one peak for both people's wrists."""
  rng = np.random.default_rng(0)
  dx, dy = rng.uniform(6, 16), rng.uniform(-4, 6)
  scene = scenes.make_scene(COCO, SIZE, [(65.0, 12.0, 130.0), (65.0 + dx, 12.0 + dy, 125.0)],
                            rng)
  scene["keypoints"][1, COCO.keypoint_names.index("left_elbow")] = 0.0
  return scene


def test_voted_keypoints_hold_every_labelled_keypoint():
  scene = _wrist_scene()
  inputs = _targets(scene)
  votes = voting.hough_score_maps(inputs["heatmap"], inputs["keycentroid"], 8, 32.0)
  voted = peaks.voted_keypoints(inputs["heatmap"], inputs["keycentroid"],
                                voting.window_mass(votes), 8, MAX_PEOPLE)
  points, mass = voted.points.numpy(), voted.mass.numpy()
  for person in scene["keypoints"]:
    for k in np.nonzero(person[:, 2] > 0)[0]:
      error = np.linalg.norm(points[k] - person[k, :2], axis=-1)
      assert error[mass[k] > 0].min() < 1e-3
  # And no other point: every voted point is a labelled keypoint of its type.
  for k in range(COCO.num_keypoints):
    labelled = scene["keypoints"][scene["keypoints"][:, k, 2] > 0, k, :2]
    errors = np.linalg.norm(points[k][mass[k] > 0][:, None] - labelled[None], axis=-1)
    assert errors.min(axis=1).max() < 1e-3


def test_a_keypoint_no_walk_reaches_is_claimed_from_the_votes(grouper):
  """Before, no candidate placed person 1's left wrist (no labelled neighbour to walk from, no
  peak of its own) and person 1 came out without it; it is now claimed by identity from the
  keypoints the KeyCentroid votes land on."""
  scene = _wrist_scene()
  out = _run(grouper, _targets(scene))
  found = out["keypoints"][:out["num_people"]]
  errors, _ = _match(np.where(found[..., 2:] > 0.05, found, np.inf), scene["keypoints"])
  assert errors.max() < 0.01


def _person_lacking_occluded_keypoints(num_candidates):
  """Person 0 with types 0 - 2 placed, its identity (100, 100) the mean of types 0 - 4, beside an
  occluder's mask (x >= 120); a pool of `num_candidates` walks whose first is the person's own.
  Returns keypoints, scores, identity, has_identity, pool, pool_scores."""
  stride = 4
  seg, mask_offset = _embedding_field(80, stride, [(0, 120, (100.0, 100.0)),
                                                   (120, 320, (200.0, 100.0))])
  keypoints = np.zeros((1, 5, 2), np.float32)
  scores = np.zeros((1, 5), np.float32)
  keypoints[0, :3] = [(60.0, 100.0), (80.0, 60.0), (100.0, 150.0)]
  scores[0, :3] = 0.9
  pool = np.zeros((num_candidates, 5, 2), np.float32)
  pool_scores = np.zeros((num_candidates, 5), np.float32)
  pool[0], pool_scores[0] = keypoints[0], scores[0]
  identity, has_identity = merging.identities(
      tf.constant(keypoints), tf.constant(scores), tf.ones([1], tf.bool), seg, mask_offset,
      mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=10.0, tolerance=2.0)
  return keypoints, scores, identity, has_identity, pool, pool_scores


def test_a_person_lacking_occluded_keypoints_gets_them_from_a_walk():
  """Person 0's identity (100, 100) is the mean of its 5 labelled keypoints; types 3 and 4 lie on
  an occluder's mask (x >= 120), so their embeddings point to the occluder and no walk of the
  person reached them. Candidate 1's walk placed them (and the person's type 0 again): with them
  the mean is the identity. Candidate 2's better-scoring type 3 elsewhere does not complete it.
  Before, the person stayed without them."""
  keypoints, scores, identity, has_identity, pool, pool_scores = (
      _person_lacking_occluded_keypoints(3))
  pool[1, [0, 3, 4]] = [(60.0, 100.0), (130.0, 100.0), (130.0, 90.0)]
  pool_scores[1, [0, 3, 4]] = [0.9, 0.8, 0.7]
  pool[2, 3], pool_scores[2, 3] = (250.0, 100.0), 0.95
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([1], tf.bool), identity,
            has_identity, tf.constant(pool), tf.constant(pool_scores))
  settings = dict(keypoint_threshold=0.05, tolerance=2.0)
  unchanged = claiming.complete_from_walks(*inputs, exact=False, **settings)
  np.testing.assert_array_equal(unchanged[1].numpy(), scores)
  completed, completed_scores = claiming.complete_from_walks(*inputs, exact=True, **settings)
  np.testing.assert_allclose(completed[0, 3:].numpy(), [(130.0, 100.0), (130.0, 90.0)])
  np.testing.assert_allclose(completed_scores.numpy(), [[0.9, 0.9, 0.9, 0.8, 0.7]])
  # Whole now: a second call adds nothing.
  again = claiming.complete_from_walks(completed, completed_scores, *inputs[2:], exact=True,
                                       **settings)
  np.testing.assert_allclose(again[1].numpy(), completed_scores.numpy())


def test_a_person_lacking_occluded_keypoints_gets_them_from_two_walks():
  """As above, but candidate 1 walked only type 3 and candidate 2 only type 4: no single walk
  completes the person, both together do (before: the person stayed without them). Candidate 3
  repeats type 3 elsewhere and is not taken."""
  keypoints, scores, identity, has_identity, pool, pool_scores = (
      _person_lacking_occluded_keypoints(4))
  pool[1, 3], pool_scores[1, 3] = (130.0, 100.0), 0.8
  pool[2, 4], pool_scores[2, 4] = (130.0, 90.0), 0.7
  pool[3, 3], pool_scores[3, 3] = (250.0, 100.0), 0.95
  completed, completed_scores = claiming.complete_from_walks(
      tf.constant(keypoints), tf.constant(scores), tf.ones([1], tf.bool), identity, has_identity,
      tf.constant(pool), tf.constant(pool_scores), keypoint_threshold=0.05, tolerance=2.0,
      exact=True)
  np.testing.assert_allclose(completed[0, 3:].numpy(), [(130.0, 100.0), (130.0, 90.0)])
  np.testing.assert_allclose(completed_scores.numpy(), [[0.9, 0.9, 0.9, 0.8, 0.7]])


def test_perfect_keypoints_score_about_one_where_another_disk_or_the_image_edge_takes_part():
  """A perfect keypoint's score counts only the disk points its own person owns (`scoring`): two
  people 8 - 25 px apart, whose same-type disks overlap, and a person cut by the image's left
  edge. Before, their keypoints scored 0.59 - 0.66 (the rest of a perfect disk's votes went to
  the other person, or came from beyond the image)."""
  grouper = Grouper(_experiment(), _grouping_config(), jit_compile=False)
  rng = np.random.default_rng(0)
  close = scenes.make_scene(COCO, SIZE, [(65.0, 12.0, 130.0),
                                         (65.0 + rng.uniform(8, 25), 16.0, 125.0)], rng)
  edge = scenes.make_scene(COCO, SIZE, [(2.0, 12.0, 130.0)])
  for scene in (close, edge):
    result = _run(grouper, _targets(scene))
    count = len(scene["keypoints"])
    assert result["num_people"] == count
    error, which = _match(result["keypoints"][:count], scene["keypoints"])
    assert np.all(error < 1.0)
    for person, truth in enumerate(which):
      labelled = scene["keypoints"][truth, :, 2] > 0
      assert result["keypoints"][person, labelled, 2].min() >= 0.9
      assert result["scores"][person] >= 0.9 * labelled.mean()


def test_pieces_of_a_person_score_below_a_whole_person_with_fewer_keypoints():
  """Unmerged pieces of a person split at its nose and elbow (their keypoint mean is off their
  identity) against a whole person with only its 5 head keypoints labelled: each piece scores
  below the whole person (`scoring.INCOMPLETE_FACTOR`); before, the 6-keypoint piece scored 6 / 17
  against 5 / 17."""
  scene = scenes.make_scene(COCO, SIZE, [(60.0, 8.0, 140.0), (125.0, 20.0, 120.0)],
                            np.random.default_rng(10))
  for name in ("nose", "left_elbow"):
    scene["keypoints"][0, COCO.keypoint_names.index(name)] = 0.0
  head = [COCO.keypoint_names.index(name)
          for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
  scene["keypoints"][1, [k for k in range(COCO.num_keypoints) if k not in head]] = 0.0
  split = _run(Grouper(_experiment(), _grouping_config(merge_fragments=False),
                       jit_compile=False), _targets(scene))
  count = int(split["num_people"])
  found = split["keypoints"][:count]
  confident = found[:, :, 2] > 0
  near = np.linalg.norm(found[:, None, :, :2] - scene["keypoints"][None, :, :, :2], axis=-1) < 1.0
  of_person = [np.all(near[:, j] | ~confident, axis=1) & confident.any(axis=1) for j in (0, 1)]
  whole = np.nonzero(of_person[1] & (confident.sum(axis=1) == len(head)))[0]
  pieces = np.nonzero(of_person[0])[0]
  assert len(whole) == 1 and len(pieces) > 1
  assert confident[pieces].sum(axis=1).max() > len(head)
  assert split["scores"][pieces].max() < split["scores"][whole[0]]
  np.testing.assert_allclose(split["scores"][pieces],
                             found[pieces, :, 2].mean(axis=1) * scoring.INCOMPLETE_FACTOR, rtol=1e-5)


def _skeleton_components(labelled, edges):
  """Per labelled keypoint type, the smallest type of its component in the skeleton restricted to
  the labelled types."""
  component = {k: k for k in np.nonzero(labelled)[0]}
  for _ in range(len(labelled)):
    for a, b in edges:
      if a in component and b in component:
        component[a] = component[b] = min(component[a], component[b])
  return component


def test_voted_keypoints_link_into_the_labelled_pieces_of_each_person():
  """Two overlapping people, each with unlabelled keypoints: linking the voted keypoints by the
  mid-range steps read at their own cells cuts them into exactly the connected parts of each
  person's labelled skeleton, never joining the two people."""
  scene = _wrist_scene()
  scene["keypoints"][0, [COCO.keypoint_names.index(name)
                         for name in ("left_shoulder", "right_hip")]] = 0.0
  inputs = _targets(scene)
  votes = voting.hough_score_maps(inputs["heatmap"], inputs["keycentroid"], 8, 32.0)
  voted = peaks.voted_keypoints(inputs["heatmap"], inputs["keycentroid"],
                                voting.window_mass(votes), 8, MAX_PEOPLE)
  points = tf.transpose(voted.points, [1, 0, 2])
  valid = tf.transpose(voted.mass > 0.0)
  edges = np.asarray(COCO.directed_edges, np.int32)
  links = pieces.voted_links(points, valid, inputs["midrange"], edges, 8)
  labels = pieces.piece_labels(links, edges, COCO.num_keypoints).numpy()
  points, valid = points.numpy(), valid.numpy()
  seen = {}
  for person, truth in enumerate(scene["keypoints"]):
    component = _skeleton_components(truth[:, 2] > 0, COCO.edges)
    for k, root in component.items():
      slot = np.argmin(np.where(valid[:, k], np.linalg.norm(points[:, k] - truth[k, :2], axis=-1),
                                np.inf))
      seen.setdefault(labels[slot, k], set()).add((person, root))
  # One label per (person, component), and each (person, component) under one label.
  assert all(len(owners) == 1 for owners in seen.values())
  expected = {(person, root) for person, truth in enumerate(scene["keypoints"])
              for root in set(_skeleton_components(truth[:, 2] > 0, COCO.edges).values())}
  assert sorted(owner for owners in seen.values() for owner in owners) == sorted(expected)
  assert len(expected) > 2  # the unlabelled keypoints did cut a person


def test_piece_labels_take_as_many_rounds_as_the_skeleton_is_wide():
  """The label propagation runs one round per edge of the skeleton's longest path (8 for COCO
  and CrowdPose: ankle to ankle), enough for a whole person's piece; a chain of 5 types needs 4."""
  def directed(edges):
    edges = np.asarray(edges, np.int32)
    return np.concatenate([edges, edges[:, ::-1]])

  assert pieces.skeleton_diameter(directed(COCO.edges), COCO.num_keypoints) == 8
  assert pieces.skeleton_diameter(directed(CROWDPOSE.edges), CROWDPOSE.num_keypoints) == 8
  chain = directed([(0, 1), (1, 2), (2, 3), (3, 4)])
  assert pieces.skeleton_diameter(chain, 5) == 4
  # One voted keypoint per type, linked along the chain: all 5 share the label of node 0 only
  # after 4 rounds (node 4 is 4 links from node 0).
  links = np.zeros((chain.shape[0], 1, 1), bool)
  links[:4] = True  # the forward edges
  labels = pieces.piece_labels(tf.constant(links), chain, 5).numpy()
  assert labels.tolist() == [[0, 0, 0, 0, 0]]


def test_a_person_is_rebuilt_from_the_pieces_that_bring_its_mean_onto_its_identity():
  """Person 0 (identity (100, 100)) holds its own piece A (types 0, 1, on its mask) and a wrong
  type 4 on the occluder's mask; its occluded piece B (types 2, 3) and the decoy piece C (same
  types, farther) are voted keypoints. A and B alone have their mean on the identity: the person
  gets exactly them, the wrong type 4 scoring 0 (3 types were added: more than one voted
  keypoint per type away from the identity, which `complete_from_votes` does not try)."""
  stride = 4
  seg, mask_offset = _embedding_field(80, stride, [(0, 120, (100.0, 100.0)),
                                                   (120, 320, (200.0, 100.0))])
  keypoints = np.zeros((1, 5, 2), np.float32)
  scores = np.zeros((1, 5), np.float32)
  keypoints[0, :2] = [(60.0, 100.0), (80.0, 60.0)]
  keypoints[0, 4] = (180.0, 80.0)
  scores[0, [0, 1, 4]] = 0.9
  voted = np.zeros((3, 5, 2), np.float32)
  voted_scores = np.zeros((3, 5), np.float32)
  labels = np.arange(15, dtype=np.int32).reshape(3, 5)
  voted[0, :2], voted_scores[0, :2], labels[0, :2] = keypoints[0, :2], 0.9, 0  # A
  voted[0, 2:4], voted_scores[0, 2:4], labels[0, 2:4] = [(130.0, 140.0), (130.0, 100.0)], 0.8, 2
  voted[1, 2:4], voted_scores[1, 2:4], labels[1, 2:4] = [(125.0, 130.0), (120.0, 90.0)], 0.95, 7
  voted[0, 4], voted_scores[0, 4] = keypoints[0, 4], 0.9  # someone else's, alone
  inputs = (tf.constant(keypoints), tf.constant(scores), tf.ones([1], tf.bool),
            tf.constant([[100.0, 100.0]]), tf.ones([1], tf.bool), tf.constant(voted),
            tf.constant(voted_scores), tf.constant(labels), seg, mask_offset)
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, tolerance=2.0)
  unchanged = pieces.complete_from_pieces(*inputs, exact=False, **settings)
  np.testing.assert_array_equal(unchanged[1].numpy(), scores)
  rebuilt, rebuilt_scores = pieces.complete_from_pieces(*inputs, exact=True, **settings)
  np.testing.assert_allclose(rebuilt[0, :4].numpy(), voted[0, :4])
  np.testing.assert_allclose(rebuilt_scores[0].numpy(), [0.9, 0.9, 0.8, 0.8, 0.0])


def test_three_overlapping_people_with_hidden_keypoints_are_decoded_whole(grouper):
  """Three people within 12 px of each other, each with 2 - 5 unlabelled keypoints (generated,
  seed 22): their walks stop at the hidden keypoints and the pieces mix. Before the pieces
  (`pieces.complete_from_pieces`), the three came out with errors of 20, 48 and 21 px."""
  rng = np.random.default_rng(22)
  x0 = rng.uniform(55, 75)
  people = [(x0 + rng.uniform(-12, 12), rng.uniform(5, 20), rng.uniform(115, 135))
            for _ in range(3)]
  scene = scenes.make_scene(COCO, SIZE, people, rng)
  for person in range(3):
    scene["keypoints"][person, rng.choice(COCO.num_keypoints, rng.integers(2, 6),
                                          replace=False)] = 0.0
  result = _run(grouper, _targets(scene))
  error, which = _match(result["keypoints"][:result["num_people"]], scene["keypoints"])
  assert len(set(which.tolist())) == 3 and np.all(error < 1.0)


def test_tied_mask_scores_rank_the_larger_mask_first_whatever_the_round_off():
  """Two perfect people's mask scores are 1 up to float round-off, which differs between XLA and
  eager code and ordered their masks (COCO sample oracle at 801: 0.911 eager, 0.913 with XLA)."""
  areas = tf.constant([100.0, 1600.0, 2000.0])
  for perfect in ([1.0, 1.0 - 1.2e-7], [1.0 - 1.2e-7, 1.0]):
    ranked = scoring.order_ties_by_area(tf.constant(perfect + [0.9]), areas).numpy()
    assert ranked[1] > ranked[0] > ranked[2]
    assert np.all((ranked >= 0.0) & (ranked <= 1.0))
    np.testing.assert_allclose(ranked, perfect + [0.9], atol=scoring.MASK_SCORE_STEP)


def test_identities_are_recomputed_only_for_changed_people():
  """`merging.identities_if_changed` passes the identities on when no value changed (a stand-in
  here, so that reuse shows) and computes them when one did."""
  stride = 4
  seg, mask_offset = _embedding_field(80, stride, [(0, 100, (70.0, 90.0)),
                                                   (100, 320, (150.0, 90.0))])
  keypoints = np.zeros((1, 3, 2), np.float32)
  keypoints[0] = [(60.0, 80.0), (80.0, 100.0), (60.0, 90.0)]
  people = (tf.constant(keypoints), tf.fill([1, 3], 0.9), tf.ones([1], tf.bool))
  settings = dict(mask_stride=stride, seg_threshold=0.5, keypoint_threshold=0.05, radius=10.0,
                  tolerance=2.0)
  stand_in = (tf.constant([[-1.0, -1.0]]), tf.constant([False]))
  same = merging.identities_if_changed(people, people, stand_in, seg, mask_offset, **settings)
  assert same[0].numpy().tolist() == [[-1.0, -1.0]] and same[1].numpy().tolist() == [False]
  moved = keypoints.copy()
  moved[0, 2] = (140.0, 90.0)  # now on the neighbour's mask: outvoted, the identity stays
  after = (tf.constant(moved),) + people[1:]
  identity, has_identity = merging.identities_if_changed(people, after, stand_in, seg,
                                                         mask_offset, **settings)
  expected = merging.identities(*after, seg, mask_offset, **settings)
  assert has_identity.numpy().tolist() == [True]
  np.testing.assert_array_equal(identity.numpy(), expected[0].numpy())
  np.testing.assert_allclose(identity[0].numpy(), [70.0, 90.0], atol=1e-4)


def test_mask_only_labels_from_the_valid_centres_alone_are_those_of_all_centres(monkeypatch):
  """The clusters labelled with the few valid centres gathered (`mask_only.CENTRE_ROWS`) give
  the people of the labels with all `N` centres; where every slot is taken the people come back
  as they are (their joins are in the memberships); the chained column maximum and minimum are
  the reductions' values."""
  num_people, num_types, grid = 6, 4, 32
  seg = np.zeros((grid, grid, 1), np.float32)
  grid_points = np.stack(np.meshgrid(np.arange(grid), np.arange(grid)), -1) * 4.0
  mask_offset = np.zeros((grid, grid, 2), np.float32)
  membership = np.zeros((num_people, grid, grid), np.float32)
  membership[0, 2:8, 2:8] = 1.0
  # Person 0's mask, a blob of its own beside it (joins it), two blobs of nobody's.
  for (top, left), centre in (((2, 2), (20.0, 20.0)), ((8, 2), (20.0, 22.0)),
                              ((14, 14), (70.0, 70.0)), ((22, 4), (30.0, 100.0))):
    seg[top:top + 6, left:left + 6] = 1.0
    mask_offset[top:top + 6, left:left + 6] = centre - grid_points[top:top + 6, left:left + 6]
  rng = np.random.default_rng(0)
  keypoints = tf.constant(rng.uniform(0.0, 120.0, (num_people, num_types, 3)).astype(np.float32))
  settings = dict(mask_stride=4, seg_threshold=0.5, membership_threshold=0.5,
                  membership_sigma=0.5, radius=10.0)
  results = []
  for rows in (4, 1):  # the valid centres gathered (3 <= 4), all 6 (3 > 1)
    monkeypatch.setattr(mask_only, "CENTRE_ROWS", rows)
    results.append(mask_only.add_mask_only_people(
        keypoints, tf.constant([0.8] * 6, tf.float32), tf.constant(membership),
        tf.constant([True] + [False] * 5), tf.constant(seg), tf.constant(mask_offset),
        **settings))
  for gathered, every in zip(*results):
    np.testing.assert_array_equal(gathered.numpy(), every.numpy())
  assert results[0].membership.numpy()[0].sum() == 72  # the blob beside person 0 joined it
  full = mask_only.add_mask_only_people(
      keypoints, tf.constant([0.8] * 6, tf.float32), tf.constant(membership),
      tf.constant([True] * 6), tf.constant(seg), tf.constant(mask_offset), **settings)
  np.testing.assert_array_equal(full.membership.numpy(), membership)
  np.testing.assert_array_equal(full.keypoints.numpy(), keypoints.numpy())
  values = tf.constant(rng.normal(size=(5, 7)).astype(np.float32))
  np.testing.assert_array_equal(masks.column_max(values).numpy(),
                                tf.reduce_max(values, axis=0, keepdims=True).numpy())
  np.testing.assert_array_equal(masks.column_min(values).numpy(),
                                tf.reduce_min(values, axis=0, keepdims=True).numpy())


def test_mask_only_step_returns_the_keypoint_people_when_no_point_is_left_over():
  """Where the keypoint people took every foreground point, the clustering is skipped (tf.cond):
  the people come back as they were, empty slots empty; one unclaimed blob of 8 x 8 mask points
  in the same scene becomes a mask-only person in the first empty slot."""
  num_people, num_types, grid = 3, 4, 24
  seg = np.zeros((grid, grid, 1), np.float32)
  seg[4:12, 4:12] = 1.0
  membership = np.zeros((num_people, grid, grid), np.float32)
  membership[0, 4:12, 4:12] = 1.0
  grid_points = np.stack(np.meshgrid(np.arange(grid), np.arange(grid)), -1) * 4.0
  mask_offset = np.zeros((grid, grid, 2), np.float32)
  mask_offset[4:12, 4:12] = (30.0, 30.0) - grid_points[4:12, 4:12]  # all embed onto (30, 30)
  rng = np.random.default_rng(0)
  keypoints = rng.uniform(0.0, 90.0, (num_people, num_types, 3)).astype(np.float32)
  scores = np.array([0.8, 0.0, 0.0], np.float32)
  valid = tf.constant([True, False, False])
  settings = dict(mask_stride=4, seg_threshold=0.5, membership_threshold=0.5,
                  membership_sigma=0.5, radius=10.0)
  people = mask_only.add_mask_only_people(
      tf.constant(keypoints), tf.constant(scores), tf.constant(membership), valid,
      tf.constant(seg), tf.constant(mask_offset), **settings)
  assert people.valid.numpy().tolist() == [True, False, False]
  np.testing.assert_array_equal(people.keypoints.numpy()[0], keypoints[0])
  assert not people.keypoints.numpy()[1:].any()
  np.testing.assert_array_equal(people.scores.numpy(), scores)
  np.testing.assert_array_equal(people.membership.numpy(), membership)

  seg[14:22, 14:22] = 1.0  # a second person's mask, claimed by no keypoint person
  mask_offset[14:22, 14:22] = (70.0, 70.0) - grid_points[14:22, 14:22]
  people = mask_only.add_mask_only_people(
      tf.constant(keypoints), tf.constant(scores), tf.constant(membership), valid,
      tf.constant(seg), tf.constant(mask_offset), **settings)
  assert people.valid.numpy().tolist() == [True, True, False]
  np.testing.assert_array_equal(people.membership.numpy()[0], membership[0])
  extra = people.membership.numpy()[1]
  assert extra.sum() == 64 and extra[14:22, 14:22].all()
  assert people.scores.numpy()[1] == pytest.approx(mask_only.SCORE_SCALE)
  assert not people.keypoints.numpy()[1].any()


def test_reductions_top_k_is_tf_top_k():
  """`reductions.top_k` gives `tf.math.top_k`'s values and indices, eager and under XLA, with
  ties (the lower index first) and rows of -inf (fewer finite values than k)."""
  rng = np.random.default_rng(0)
  values = rng.integers(0, 5, size=(64, 30)).astype(np.float32)
  values[values == 0] = -np.inf
  values[:8] = -np.inf
  values[8:12, 3:] = -np.inf
  values = tf.constant(values)
  expected = tf.math.top_k(values, k=4)
  for run in (reductions.top_k, tf.function(reductions.top_k, jit_compile=True,
                                            autograph=False)):
    top_values, top_indices = run(values, 4)
    np.testing.assert_array_equal(top_values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(top_indices.numpy(), expected.indices.numpy())
