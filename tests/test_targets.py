"""The KDC target encoder on the real COCO / CrowdPose samples (ARCHITECTURE.md section 3)."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import augmentation
from data_pipeline.targets import encode_targets
from kdc_tf.config import AugmentConfig, EncoderConfig
from kdc_tf.geometry import Geometry
from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.visualization.targets import save_target_panel
from tests.sample_examples import load_decoded_examples

SIZE = 161  # pose grid 21 x 21 (stride 8), mask grid 41 x 41; x -> 160 - x maps grids to grids.
GEOMETRY = Geometry(input_size=SIZE, output_stride=8)
STRIDE = GEOMETRY.output_stride


def _numpy(targets):
  return {key: value.numpy() for key, value in targets.items()}


@pytest.fixture(scope="module")
def coco_examples(coco_sample_dir):
  return load_decoded_examples(coco_sample_dir, "test_coco.json", COCO.num_keypoints)


@pytest.fixture(scope="module")
def coco_inputs(coco_examples):
  """Augmented examples: the 4 images resized-and-padded, then the 4 randomly augmented."""
  resized = [augmentation.resize_and_pad_example(e, SIZE) for e in coco_examples]
  augmented = [augmentation.augment(e, AugmentConfig(), SIZE, COCO, tf.constant([3, i]))
               for i, e in enumerate(coco_examples)]
  return resized + augmented


@pytest.fixture(scope="module")
def coco_targets(coco_inputs):
  return [_numpy(encode_targets(a, GEOMETRY)) for a in coco_inputs]


def _grid(size, stride):
  ys, xs = np.mgrid[0:size, 0:size] * stride
  return np.stack([xs, ys], axis=-1).astype(np.float64)


def test_shapes_and_dtypes(coco_targets):
  g, m, k, e = 21, 41, COCO.num_keypoints, COCO.num_directed_edges
  expected = {
      "heatmap": (g, g, k), "keypoint_weight": (g, g, 1), "keycentroid": (g, g, 2 * k),
      "keycentroid_weight": (g, g, k), "midrange": (g, g, 2 * e), "midrange_weight": (g, g, e),
      "seg": (m, m, 1), "seg_weight": (m, m, 1), "mask_offset": (m, m, 2),
      "mask_offset_weight": (m, m, 1), "instance_ids": (m, m)}
  for targets in coco_targets:
    assert {key: value.shape for key, value in targets.items()} == expected
    assert targets["instance_ids"].dtype == np.int32
    assert all(v.dtype == np.float32 for key, v in targets.items() if key != "instance_ids")


def test_heatmap_is_the_union_of_disks(coco_inputs, coco_targets):
  points = _grid(21, STRIDE)
  for augmented, targets in zip(coco_inputs, coco_targets):
    keypoints = augmented["keypoints"].numpy()
    expected = np.zeros((21, 21, COCO.num_keypoints), np.float32)
    for person in keypoints:
      for k, (x, y, v) in enumerate(person):
        if v > 0:
          inside = np.hypot(points[..., 0] - x, points[..., 1] - y) <= GEOMETRY.disk_radius
          expected[..., k] = np.maximum(expected[..., k], inside)
    np.testing.assert_array_equal(targets["heatmap"], expected)


def _nearest_owner(keypoints, k, point):
  """The person whose labelled keypoint of type k is nearest to the grid point."""
  distances = np.hypot(keypoints[:, k, 0] - point[0], keypoints[:, k, 1] - point[1])
  return int(np.argmin(np.where(keypoints[:, k, 2] > 0, distances, np.inf)))


def test_keycentroid_and_midrange_land_on_the_keypoints(coco_inputs, coco_targets):
  """At the grid point nearest each labelled keypoint: heatmap 1, KeyCentroid lands on it, and the
  mid-range offsets land on its labelled neighbours along the kinematic tree."""
  checked = own = 0
  for augmented, targets in zip(coco_inputs, coco_targets):
    keypoints = augmented["keypoints"].numpy().astype(np.float64)
    for j, k in zip(*np.nonzero(keypoints[..., 2] > 0)):
      r, c = (int(np.round(v / STRIDE)) for v in keypoints[j, k, 1::-1])
      point = np.array([STRIDE * c, STRIDE * r], np.float64)
      owner = _nearest_owner(keypoints, k, point)
      own += owner == j
      assert targets["heatmap"][r, c, k] == 1
      landing = point + targets["keycentroid"][r, c, 2 * k:2 * k + 2]
      np.testing.assert_allclose(landing, keypoints[owner, k, :2], atol=1e-3)
      assert targets["keycentroid_weight"][r, c, k] == targets["keypoint_weight"][r, c, 0]
      for e, (source, target) in enumerate(COCO.directed_edges):
        if source != k:
          continue
        if keypoints[owner, target, 2] > 0:
          landing = point + targets["midrange"][r, c, 2 * e:2 * e + 2]
          np.testing.assert_allclose(landing, keypoints[owner, target, :2], atol=1e-3)
          assert targets["midrange_weight"][r, c, e] == targets["keypoint_weight"][r, c, 0]
        else:
          assert targets["midrange_weight"][r, c, e] == 0
      checked += 1
  assert checked > 200
  assert own >= 0.97 * checked  # the nearest grid point is almost always owned by the keypoint


def test_offsets_vanish_outside_disks(coco_targets):
  for targets in coco_targets:
    outside = np.repeat(targets["heatmap"] == 0, 2, axis=-1)
    assert np.all(targets["keycentroid"][outside] == 0)
    assert np.all(targets["keycentroid_weight"] <= targets["heatmap"])


def _flip_augmented(augmented):
  """Mirror x -> (S - 1) - x of an augmented example; types swap left/right."""
  keypoints = augmented["keypoints"].numpy()[:, list(COCO.flip_permutation)]
  labelled = keypoints[..., 2] > 0
  keypoints[..., 0] = np.where(labelled, SIZE - 1 - keypoints[..., 0], 0.0)
  flipped = dict(augmented)
  flipped["image"] = augmented["image"][:, ::-1]
  flipped["keypoints"] = tf.constant(keypoints)
  flipped["instance_masks"] = augmented["instance_masks"][:, :, ::-1]
  flipped["crowd_mask"] = augmented["crowd_mask"][:, ::-1]
  return flipped


def _flip_targets(targets, spec):
  """The same mirror applied to targets: columns reversed, types/edges swapped, x offsets negated."""
  perm = list(spec.flip_permutation)
  edge_index = {edge: e for e, edge in enumerate(spec.directed_edges)}
  edge_perm = [edge_index[(perm[a], perm[b])] for a, b in spec.directed_edges]

  def offsets(values, channel_perm):
    pairs = values[:, ::-1].reshape(values.shape[0], values.shape[1], -1, 2)[:, :, channel_perm]
    return (pairs * np.array([-1.0, 1.0], np.float32)).reshape(values.shape)

  flipped = {key: value[:, ::-1] for key, value in targets.items()}
  for key in ("heatmap", "keycentroid_weight"):
    flipped[key] = flipped[key][..., perm]
  flipped["midrange_weight"] = flipped["midrange_weight"][..., edge_perm]
  flipped["keycentroid"] = offsets(targets["keycentroid"], perm)
  flipped["midrange"] = offsets(targets["midrange"], edge_perm)
  flipped["mask_offset"] = offsets(targets["mask_offset"], [0])
  return flipped


def test_flip_then_encode_equals_encode_then_flip(coco_inputs, coco_targets):
  for augmented, targets in zip(coco_inputs, coco_targets):
    encoded_flipped = _numpy(encode_targets(_flip_augmented(augmented), GEOMETRY))
    flipped_encoded = _flip_targets(targets, COCO)
    for key, value in flipped_encoded.items():
      np.testing.assert_allclose(encoded_flipped[key], value, atol=1e-3, err_msg=key)


def test_people_without_keypoints_are_ignored_by_keypoint_losses(coco_examples):
  """000000040083 has a small person without keypoints (bbox centre ~(280, 161)): zoom on it."""
  zoom = tf.constant([[1.5, 0.0, 80.0 - 1.5 * 280.5], [0.0, 1.5, 80.0 - 1.5 * 160.6], [0, 0, 1]])
  augmented = augmentation.warp_example(coco_examples[1], zoom, SIZE)
  targets = _numpy(encode_targets(augmented, GEOMETRY))
  keypoints = augmented["keypoints"].numpy()
  unlabelled = ~np.any(keypoints[..., 2] > 0, axis=1)
  no_keypoints = list(augmented["person_ids"].numpy()).index(1202706)
  assert unlabelled[no_keypoints] and not unlabelled.all()
  pose_masks = augmented["instance_masks"].numpy()[:, ::2, ::2]
  ignored = np.any(pose_masks[unlabelled] > 0, axis=0)
  assert pose_masks[no_keypoints].sum() >= 10
  np.testing.assert_array_equal(targets["keypoint_weight"][..., 0], 1.0 - ignored)
  assert np.all(targets["keycentroid_weight"][ignored] == 0)
  assert np.all(targets["midrange_weight"][ignored] == 0)
  # Still a person for the segmentation losses.
  masks = augmented["instance_masks"].numpy()
  assert np.all(targets["seg"][..., 0][masks[no_keypoints] > 0] == 1)
  assert np.all(targets["seg_weight"] == 1)


def test_crowd_regions_weigh_zero(coco_inputs):
  """Turn one person of 000000197388 into a crowd region: every weight there is 0."""
  augmented = dict(coco_inputs[3])
  crowd = augmented["instance_masks"][0]
  augmented["crowd_mask"] = crowd
  augmented["keypoints"] = augmented["keypoints"][1:]
  augmented["instance_masks"] = augmented["instance_masks"][1:]
  targets = _numpy(encode_targets(augmented, GEOMETRY))
  crowd = crowd.numpy() > 0
  assert crowd.sum() > 20
  assert np.all(targets["seg_weight"][crowd] == 0)
  assert np.all(targets["mask_offset_weight"][crowd] == 0)
  assert np.all(targets["seg_weight"][~crowd] == 1)
  pose_crowd = crowd[::2, ::2]
  assert np.all(targets["keypoint_weight"][pose_crowd] == 0)
  assert np.all(targets["keycentroid_weight"][pose_crowd] == 0)
  assert np.all(targets["midrange_weight"][pose_crowd] == 0)


def _empty_example(has_masks=True, num_keypoints=COCO.num_keypoints, size=SIZE):
  grid = (size - 1) // 4 + 1
  return {
      "image": tf.zeros([size, size, 3]),
      "keypoints": tf.zeros([0, num_keypoints, 3]),
      "instance_masks": tf.zeros([0, grid, grid], tf.uint8),
      "crowd_mask": tf.zeros([grid, grid], tf.uint8),
      "has_masks": tf.constant(has_masks),
  }


def test_an_image_without_people_encodes_to_zeros():
  targets = _numpy(encode_targets(_empty_example(), GEOMETRY))
  for key in ("heatmap", "keycentroid", "keycentroid_weight", "midrange", "midrange_weight", "seg",
              "mask_offset", "mask_offset_weight", "instance_ids"):
    assert np.all(targets[key] == 0), key
  assert np.all(targets["keypoint_weight"] == 1)
  assert np.all(targets["seg_weight"] == 1)


def test_encoder_traces_once_for_a_variable_number_of_people(coco_inputs):
  signature = {
      "keypoints": tf.TensorSpec([None, COCO.num_keypoints, 3], tf.float32),
      "instance_masks": tf.TensorSpec([None, 41, 41], tf.uint8),
      "crowd_mask": tf.TensorSpec([41, 41], tf.uint8),
      "has_masks": tf.TensorSpec([], tf.bool),
  }
  encode = tf.function(lambda a: encode_targets(a, GEOMETRY), input_signature=[signature])
  for augmented in (_empty_example(), coco_inputs[0], coco_inputs[2]):
    graph = _numpy(encode({key: augmented[key] for key in signature}))
    eager = _numpy(encode_targets(augmented, GEOMETRY))
    for key in eager:
      np.testing.assert_allclose(graph[key], eager[key], atol=1e-4, err_msg=key)
  assert encode.experimental_get_tracing_count() == 1


def test_crowdpose_sample(crowdpose_sample_dir):
  config = Geometry(dataset="crowdpose", input_size=SIZE)
  examples = load_decoded_examples(crowdpose_sample_dir, "test_crowdpose.json",
                                   CROWDPOSE.num_keypoints)
  for example in examples:
    augmented = augmentation.resize_and_pad_example(example, SIZE)
    targets = _numpy(encode_targets(augmented, config))
    assert targets["heatmap"].shape == (21, 21, 14)
    assert targets["keycentroid"].shape == (21, 21, 28)
    assert targets["midrange"].shape == (21, 21, 52) and CROWDPOSE.num_directed_edges == 26
    assert targets["heatmap"].sum() > 0
    assert np.all(targets["seg_weight"] == 0)
    assert np.all(targets["mask_offset_weight"] == 0)
  with pytest.raises(ValueError, match="keypoints must be"):
    encode_targets(augmented, GEOMETRY)  # 14 CrowdPose keypoints against the COCO spec


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_mask_centroids(coco_inputs, mode):
  config = EncoderConfig(centroid_mode=mode)
  points = _grid(41, 4)
  for augmented in coco_inputs[:4]:
    targets = _numpy(encode_targets(augmented, GEOMETRY, config))
    masks = augmented["instance_masks"].numpy() > 0
    keypoints = augmented["keypoints"].numpy()
    count = masks.sum(axis=0)
    expected_ids = np.where(count == 0, 0, np.where(count > 1, -1, np.argmax(masks, 0) + 1))
    np.testing.assert_array_equal(targets["instance_ids"], expected_ids)
    np.testing.assert_array_equal(targets["mask_offset_weight"][..., 0], count == 1)
    for j, mask in enumerate(masks):
      exclusive = mask & (count == 1)
      if not exclusive.any():
        continue
      labelled = keypoints[j, :, 2] > 0
      if mode == "dynamic" and labelled.any():
        centroid = keypoints[j, labelled, :2].mean(axis=0)
      else:
        centroid = points[mask].mean(axis=0)
      landing = points[exclusive] + targets["mask_offset"][exclusive]
      np.testing.assert_allclose(landing, np.broadcast_to(centroid, landing.shape), atol=1e-2)
    assert np.all(targets["mask_offset"][count != 1] == 0)


def test_max_people_drops_and_ignores_the_rest(coco_inputs):
  augmented = coco_inputs[3]  # 000000197388: 5 people
  targets = _numpy(encode_targets(augmented, GEOMETRY, EncoderConfig(max_people=1)))
  masks = augmented["instance_masks"].numpy() > 0
  dropped = np.any(masks[1:], axis=0) & ~masks[0]
  kept_alone = _numpy(encode_targets(
      {**augmented, "keypoints": augmented["keypoints"][:1],
       "instance_masks": augmented["instance_masks"][:1]}, GEOMETRY))
  np.testing.assert_array_equal(targets["heatmap"], kept_alone["heatmap"])
  assert np.all(targets["seg_weight"][..., 0][np.any(masks[1:], axis=0)] == 0)
  assert np.all(targets["seg"][..., 0][dropped] == 0)
  assert np.all(targets["keypoint_weight"][..., 0][np.any(masks[1:], axis=0)[::2, ::2]] == 0)


def test_stride_16_grid_is_the_stride_8_grid_subsampled(coco_inputs, coco_targets):
  config = Geometry(input_size=SIZE, output_stride=16)
  for augmented, targets in zip(coco_inputs[:4], coco_targets[:4]):
    coarse = _numpy(encode_targets(augmented, config))
    assert coarse["heatmap"].shape == (11, 11, COCO.num_keypoints)
    for key in ("heatmap", "keypoint_weight", "keycentroid", "midrange", "midrange_weight"):
      np.testing.assert_allclose(coarse[key], targets[key][::2, ::2], atol=1e-4, err_msg=key)


def test_target_panel_is_written(coco_inputs, coco_targets, tmp_path):
  path = tmp_path / "panel.png"
  panel = save_target_panel(coco_inputs[4]["image"], coco_targets[4], str(path), COCO)
  assert path.stat().st_size > 0
  assert panel.shape[1] == 4 * SIZE and panel.shape[0] > SIZE and panel.dtype == np.uint8
  image = coco_inputs[4]["image"].numpy().astype(np.uint8)
  heat_tile = panel[-SIZE:, :SIZE]
  nearest = np.rint(np.arange(SIZE) / STRIDE).astype(int)  # each pixel's nearest grid point
  disks = (coco_targets[4]["heatmap"].max(-1) > 0)[nearest][:, nearest]
  assert disks.sum() > 100
  assert np.mean(np.any(heat_tile[disks] != image[disks], axis=-1)) > 0.9  # disks drawn over it
  with pytest.raises(ValueError, match="heatmap must be"):
    save_target_panel(coco_inputs[4]["image"], coco_targets[4], str(path), CROWDPOSE)
