"""Flip test: a mirror image's maps, mapped back, are the image's; the Predictor averages them."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.targets import encode_targets
from kdc_tf import flip_test, grouping
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.geometry import Geometry, resize_and_pad_image
from kdc_tf.inference import Predictor
from kdc_tf.modeling import ModelConfig, build_kdc_model
from kdc_tf.synthetic import scenes

SIZE = 161


def _targets(scene, geometry):
  augmented = {key: tf.constant(scene[key])
               for key in ("keypoints", "instance_masks", "crowd_mask", "has_masks")}
  targets = encode_targets(augmented, geometry)
  return {key: targets[key].numpy() for key in grouping.INPUT_KEYS}


def _mirror_scene(scene, spec):
  keypoints = scene["keypoints"][:, list(spec.flip_permutation)].copy()
  labelled = keypoints[..., 2] > 0
  keypoints[..., 0] = np.where(labelled, SIZE - 1 - keypoints[..., 0], 0.0)
  return {**scene, "keypoints": keypoints,
          "instance_masks": np.ascontiguousarray(scene["instance_masks"][:, :, ::-1]),
          "crowd_mask": np.ascontiguousarray(scene["crowd_mask"][:, ::-1])}


@pytest.mark.parametrize("spec,output_stride", [(COCO, 8), (COCO, 4), (CROWDPOSE, 8)])
def test_the_mirror_scenes_targets_mapped_back_are_the_scenes(spec, output_stride):
  """Targets stand for perfect maps: the encoder on the mirror scene, mapped back, must give the
  encoder on the scene (types swapped left / right, mid-range edges with them, x negated)."""
  geometry = Geometry(dataset=spec.name, input_size=SIZE, output_stride=output_stride)
  scene = scenes.make_scene(spec, SIZE, [(40.0, 10.0, 120.0), (118.0, 20.0, 110.0)],
                            np.random.default_rng(1))
  expected = _targets(scene, geometry)
  mirrored = flip_test.mirror_back(
      {key: tf.constant(value) for key, value in _targets(_mirror_scene(scene, spec),
                                                          geometry).items()}, spec)
  for key, value in expected.items():
    np.testing.assert_allclose(mirrored[key].numpy(), value, atol=1e-3, err_msg=key)
  # Left and right differ in the scene, so a map that forgot to swap them would fail above.
  left, right = spec.keypoint_names.index("left_wrist"), spec.keypoint_names.index("right_wrist")
  assert np.any(expected["heatmap"][..., left] != expected["heatmap"][..., right])


def test_every_edge_has_a_mirror_edge():
  for spec in (COCO, CROWDPOSE):
    permutation = flip_test.mirrored_edge_permutation(spec)
    assert sorted(permutation) == list(range(spec.num_directed_edges))
    assert permutation != tuple(range(spec.num_directed_edges))


def test_the_flip_predictor_decodes_the_average_of_the_image_and_mirror_maps():
  experiment = ExperimentConfig(geometry=Geometry(input_size=65, disk_radius=8.0),
                                model=ModelConfig(depth="tiny"))
  model = build_kdc_model(experiment.model, experiment.geometry)
  config = GroupingConfig(max_people=4, peak_threshold=0.0)
  image = tf.constant(np.random.default_rng(0).integers(0, 256, (50, 65, 3)), tf.uint8)
  predictor = Predictor(model, experiment, config, flip=True)
  flipped = predictor(image)

  resized, scale = resize_and_pad_image(image, 65)
  image_maps, mirror_maps = (grouping.model_outputs_to_grouping_inputs(
      model(batch[tf.newaxis], training=False)) for batch in (resized, resized[:, ::-1]))
  averaged = flip_test.average_with_mirror(image_maps, mirror_maps, COCO)
  # A random network is not mirror-symmetric: the average is not the image's maps.
  assert not np.allclose(averaged["heatmap"], image_maps["heatmap"], atol=1e-3)
  expected = predictor.grouper(averaged, output_size=(50, 65), input_scale=scale)
  assert int(flipped["num_people"]) > 0
  for key in ("keypoints", "scores"):
    np.testing.assert_allclose(flipped[key].numpy(), expected[key].numpy(), atol=1e-4)
