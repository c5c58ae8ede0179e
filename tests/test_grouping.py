"""Tests of kdc_tf.grouping: perfect targets from the encoder must decode back to the people."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.targets import encode_targets
from kdc_tf.config import EncoderConfig, GroupingConfig
from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.grouping import (INPUT_KEYS, Grouper, gaussian, masks, model_outputs_to_grouping_inputs,
                             poses, scenes, voting)

SIZE = 161  # pose grid 21 x 21, mask grid 41 x 41
MAX_PEOPLE = 6


def _encoder(centroid_mode="dynamic"):
  return EncoderConfig(input_size=SIZE, centroid_mode=centroid_mode)


def _grouping_config(**overrides):
  return GroupingConfig(max_people=MAX_PEOPLE, peaks_per_type=8, **overrides)


@pytest.fixture(scope="module")
def grouper():
  return Grouper.from_encoder_config(_encoder(), _grouping_config())


@pytest.fixture(scope="module")
def eager_grouper():
  return Grouper.from_encoder_config(_encoder(), _grouping_config(), jit_compile=False)


def _targets(scene, encoder=None):
  augmented = {key: tf.constant(scene[key])
               for key in ("keypoints", "instance_masks", "crowd_mask", "has_masks")}
  targets = encode_targets(augmented, encoder or _encoder())
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
  grid = maps.shape[-1]

  def axis(size):
    coords = np.clip(np.arange(size) * input_scale / 4.0, 0.0, grid - 1.0)
    lower = np.minimum(np.floor(coords), grid - 2).astype(int)
    return lower, coords - lower

  (y0, wy), (x0, wx) = axis(output_size[0]), axis(output_size[1])
  wy, wx = wy[:, None], wx[None, :]
  top = maps[:, y0][:, :, x0] * (1 - wx) + maps[:, y0][:, :, x0 + 1] * wx
  bottom = maps[:, y0 + 1][:, :, x0] * (1 - wx) + maps[:, y0 + 1][:, :, x0 + 1] * wx
  return top * (1 - wy) + bottom * wy > 0.5


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


def test_single_person_keypoints_recovered_exactly(grouper):
  scene = scenes.make_scene(COCO, SIZE, [(75.0, 12.0, 130.0)], np.random.default_rng(1))
  result = _run(grouper, _targets(scene))
  assert result["num_people"] == 1
  error, _ = _match(result["keypoints"][:1], scene["keypoints"])
  assert error[0] < 0.5
  assert result["scores"][0] > 0 and np.all(result["scores"][1:] == 0)
  assert np.all(result["keypoints"][1:] == 0) and not result["masks"][1:].any()


@pytest.mark.parametrize("dataset, stride", [("crowdpose", 8), ("coco", 16)])
def test_other_layouts_and_strides_recover_keypoints(dataset, stride):
  encoder = EncoderConfig(dataset=dataset, input_size=SIZE, output_stride=stride)
  scene = scenes.make_scene(encoder.spec, SIZE, [(75.0, 12.0, 130.0)], np.random.default_rng(11))
  grouper = Grouper.from_encoder_config(encoder, _grouping_config(), jit_compile=False)
  result = _run(grouper, _targets(scene, encoder))
  assert result["num_people"] == 1
  assert result["keypoints"].shape == (MAX_PEOPLE, encoder.spec.num_keypoints, 3)
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


def test_people_split_at_unlabelled_keypoints_are_merged_back(grouper):
  # Without an elbow the walk cannot reach the wrist (40 px beyond the shoulder, out of the wrist's
  # disk): the wrist seeds a fragment. Without a nose the two sides only meet where their disks do.
  scene = scenes.make_scene(COCO, SIZE, [(60.0, 8.0, 140.0), (125.0, 20.0, 120.0)],
                            np.random.default_rng(10))
  for name in ("nose", "left_elbow"):
    scene["keypoints"][0, COCO.keypoint_names.index(name)] = 0.0
  inputs = _targets(scene)
  split = _run(Grouper.from_encoder_config(_encoder(), _grouping_config(merge_fragments=False),
                                           jit_compile=False), inputs)
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
  full = _run(grouper, inputs)
  # The same people, the right one less confident: same keypoints, its score scaled by 0.4.
  columns = np.arange(inputs["heatmap"].shape[1])[None, :, None] * 8.0
  voted_x = columns + inputs["keycentroid"].numpy()[..., 0::2]  # where each disk point votes
  dimmed = np.where(voted_x > 80, 0.4, 1.0).astype(np.float32)
  result = _run(grouper, {**inputs, "heatmap": inputs["heatmap"] * dimmed})
  assert full["num_people"] == result["num_people"] == 2
  _, which = _match(result["keypoints"][:2], scene["keypoints"])
  _, which_full = _match(full["keypoints"][:2], scene["keypoints"])
  left, right = result["scores"][which], full["scores"][which_full]
  np.testing.assert_allclose(left / right, [1.0, 0.4], rtol=1e-4)
  assert np.ptp(full["scores"][:2]) > 0  # never a constant score
  np.testing.assert_allclose(result["scores"][:2], result["keypoints"][:2, :, 2].mean(axis=1),
                             rtol=1e-6)


@pytest.mark.parametrize("centroid_mode", ["dynamic", "static"])
def test_masks_of_separated_people_match_the_ground_truth(centroid_mode, grouper):
  scene = scenes.make_scene(COCO, SIZE, [(35.0, 8.0, 140.0), (85.0, 15.0, 120.0),
                                         (130.0, 10.0, 140.0)], np.random.default_rng(4))
  encoder = _encoder(centroid_mode)
  if centroid_mode == "static":
    grouper = Grouper.from_encoder_config(encoder, _grouping_config(centroid_mode="static"))
  result = _run(grouper, _targets(scene, encoder))
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


def test_output_masks_equal_per_person_resampling():
  rng = np.random.default_rng(6)
  grid, people = 17, 5
  labels = rng.integers(-1, people, (grid, grid))
  membership = (labels[None] == np.arange(people)[:, None, None]).astype(np.float32)
  maps = masks.instance_maps(tf.constant(membership), 0.5)
  for output_size, scale in (((40, 70), 1.0), ((23, 91), 0.8), ((130, 50), 0.45), ((30, 31), 2.5)):
    found = masks.output_masks(masks.resampling_tables(maps), tf.constant(output_size),
                               tf.constant(scale), 4).numpy()
    np.testing.assert_array_equal(found, _reference_masks(maps.numpy(), output_size, scale))


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
  assert xy.min() >= 0 and xy.max() <= (SIZE - 1) / 0.1


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
