"""The KDC network: dilated trunk geometry, keras.applications compatibility, heads, dtypes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.geometry import OFFSET_SCALE, Geometry
from kdc_tf.modeling import ModelConfig, build_kdc_model, build_trunk, trunk_name
from kdc_tf.modeling.heads import AlignedUpsample
from kdc_tf.modeling.trunk import CaffePreprocess, load_imagenet_weights


def _weighted_layers(model):
  return {layer.name: [tuple(w.shape) for w in layer.weights]
          for layer in model.layers if layer.weights}


def _conv_macs(model, names):
  """Multiply-accumulates of the named Conv2D layers for one image."""
  total = 0
  for name in names:
    layer = model.get_layer(name)
    _, h, w, c_out = layer.output.shape
    total += h * w * c_out * int(np.prod(layer.kernel.shape[:3]))
  return total


@pytest.fixture(scope="module")
def resnet101_401():
  """ResNet-101 KDC model at 401 x 401, output stride 8, built symbolically (no forward pass)."""
  return build_kdc_model(ModelConfig(depth="101"), Geometry(input_size=401, output_stride=8))


def test_resnet101_output_stride_8_gives_51_pose_and_101_mask_grids(resnet101_401):
  trunk = resnet101_401.get_layer("resnet101")
  assert tuple(trunk.output["features"].shape) == (None, 51, 51, 2048)
  assert tuple(trunk.output["stride4"].shape) == (None, 101, 101, 256)
  k, e = COCO.num_keypoints, COCO.num_directed_edges
  expected = {"heatmap_logits": (51, 51, k), "keycentroid": (51, 51, 2 * k),
              "midrange": (51, 51, 2 * e), "seg_logits": (101, 101, 1),
              "mask_offset": (101, 101, 2)}
  assert {name: tuple(t.shape[1:]) for name, t in resnet101_401.output.items()} == expected
  # conv4 and conv5 trade stride for dilation 2 and 4 (DeepLab), keeping keras' kernel shapes.
  assert trunk.get_layer("conv4_block23_2_conv").dilation_rate == (2, 2)
  assert trunk.get_layer("conv5_block3_2_conv").dilation_rate == (4, 4)
  assert trunk.get_layer("conv5_block1_1_conv").strides == (1, 1)


def test_heads_cost_at_most_ten_percent_of_the_resnet101_trunk(resnet101_401):
  trunk = resnet101_401.get_layer("resnet101")
  trunk_convs = [l.name for l in trunk.layers if isinstance(l, keras.layers.Conv2D)]
  head_convs = [l.name for l in resnet101_401.layers if isinstance(l, keras.layers.Conv2D)]
  ratio = _conv_macs(resnet101_401, head_convs) / _conv_macs(trunk, trunk_convs)
  assert 0 < ratio <= 0.10


@pytest.mark.parametrize("size,stride,pose,mask", [(129, 8, 17, 33), (161, 16, 11, 41),
                                                    (401, 16, 26, 101)])
def test_grids_are_corner_aligned_sizes(size, stride, pose, mask):
  model = build_kdc_model(ModelConfig(depth="tiny"),
                          Geometry(input_size=size, output_stride=stride))
  assert model.output["heatmap_logits"].shape[1:3] == (pose, pose)
  assert model.output["seg_logits"].shape[1:3] == (mask, mask)


@pytest.mark.parametrize("trunk_stride,trunk_grid", [(None, 25), (8, 25), (16, 13)])
def test_a_stride_4_pose_grid_runs_posenet_on_the_decoder_features(trunk_stride, trunk_grid):
  model = build_kdc_model(ModelConfig(depth="tiny", trunk_stride=trunk_stride),
                          Geometry(input_size=193, output_stride=4))
  trunk = model.get_layer("resnettiny")
  assert trunk.output["features"].shape[1:3] == (trunk_grid, trunk_grid)
  for name in ("heatmap_logits", "keycentroid", "midrange", "seg_logits", "mask_offset"):
    assert model.output[name].shape[1:3] == (49, 49), name
  # PoseNet reads SegNet's fused stride-4 features, not the neck's.
  assert model.get_layer("pose_head_conv").input.shape[1:] == (49, 49, 128)


def test_separable_heads_replace_only_the_heads_3x3_convolutions():
  geometry = Geometry(input_size=97, output_stride=4)
  dense = build_kdc_model(ModelConfig(depth="tiny", trunk_stride=16), geometry)
  separable = build_kdc_model(ModelConfig(depth="tiny", trunk_stride=16, separable_heads=True),
                              geometry)
  for name in ("pose_head_conv", "decoder_fuse_conv"):
    assert isinstance(separable.get_layer(name), keras.layers.SeparableConv2D), name
    assert type(dense.get_layer(name)) is keras.layers.Conv2D, name
    assert separable.get_layer(name).count_params() < dense.get_layer(name).count_params() / 4
  assert type(separable.get_layer("neck_conv")) is keras.layers.Conv2D
  for name, output in dense.output.items():
    assert separable.output[name].shape == output.shape, name


def test_a_trunk_finer_than_the_pose_grid_or_between_grids_is_refused():
  with pytest.raises(ValueError, match="trunk_stride"):
    ModelConfig(trunk_stride=4)
  with pytest.raises(ValueError, match="finer than the pose grid"):
    build_kdc_model(ModelConfig(depth="tiny", trunk_stride=8),
                    Geometry(input_size=129, output_stride=16))
  with pytest.raises(ValueError, match="stride-4 pose grid"):
    build_kdc_model(ModelConfig(depth="tiny", trunk_stride=16),
                    Geometry(input_size=129, output_stride=8))


@pytest.mark.parametrize("stride", [8, 16])
def test_grid_point_i_sits_at_input_pixel_stride_times_i(stride):
  """The input region that feeds a feature point is centred on its pixel (corner alignment)."""
  trunk = build_trunk(ModelConfig(depth="tiny"), Geometry(input_size=161, output_stride=stride))
  image = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, 161, 161, 3)), dtype=tf.float32)
  for key, point_stride in (("stride4", 4), ("features", stride)):
    r = c = 80 // point_stride  # The centre pixel: the support is not clipped by the borders.
    with tf.GradientTape() as tape:
      value = tf.reduce_sum(trunk(image, training=False)[key][0, r, c])
    support = np.abs(tape.gradient(value, image).numpy()[0]).sum(-1) > 0
    rows, cols = np.nonzero(support)
    assert 0 < rows.min() and rows.max() < 160 and 0 < cols.min() and cols.max() < 160, key
    assert ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2) == (
        point_stride * r, point_stride * c), key


def test_input_size_off_the_grid_is_rejected():
  with pytest.raises(ValueError, match="corner-aligned"):
    Geometry(input_size=400)


def test_aligned_upsample_keeps_grid_points_and_interpolates_between():
  x = tf.random.uniform((1, 5, 4, 3))
  up = AlignedUpsample(2)(x).numpy()
  assert up.shape == (1, 9, 7, 3)
  np.testing.assert_allclose(up[:, ::2, ::2], x.numpy(), rtol=1e-6)
  np.testing.assert_allclose(up[:, 1::2, ::2], (x[:, :-1] + x[:, 1:]).numpy() / 2, rtol=1e-5)


def test_caffe_preprocessing_is_bgr_minus_imagenet_mean():
  rgb = np.array([[[[255.0, 10.0, 0.0]]]], np.float32)
  out = CaffePreprocess()(rgb).numpy()
  expected = keras.applications.resnet.preprocess_input(rgb.copy())
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_crowdpose_heads_follow_its_spec():
  model = build_kdc_model(ModelConfig(depth="tiny"), Geometry(input_size=129, dataset="crowdpose"))
  assert model.output["heatmap_logits"].shape[-1] == CROWDPOSE.num_keypoints
  assert model.output["midrange"].shape[-1] == 2 * CROWDPOSE.num_directed_edges


@pytest.mark.parametrize("disk_radius", [8.0, 32.0])
def test_offsets_are_head_output_times_offset_scale_whatever_the_disk_radius(disk_radius):
  model = build_kdc_model(ModelConfig(depth="tiny"),
                          Geometry(input_size=129, disk_radius=disk_radius))
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, (1, 129, 129, 3)).astype(np.float32)
  for name in ("keycentroid", "midrange", "mask_offset"):
    layer = model.get_layer(f"{name}_raw")
    # Offset outputs start at zero: give them weights so that the scale shows.
    layer.set_weights([rng.normal(0.0, 0.1, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    raw = keras.Model(model.input, layer.output)(image).numpy()
    assert np.abs(raw).max() > 0.01
    np.testing.assert_allclose(model(image)[name], OFFSET_SCALE * raw, rtol=1e-5, atol=1e-4)


def test_offsets_start_at_zero_and_the_heatmap_does_not():
  model = build_kdc_model(ModelConfig(depth="tiny"), Geometry(input_size=129))
  image = np.random.default_rng(0).uniform(0, 255, (1, 129, 129, 3)).astype(np.float32)
  outputs = model(image)
  for name in ("keycentroid", "midrange", "mask_offset"):
    assert not np.any(outputs[name].numpy()), name
  assert np.abs(outputs["heatmap_logits"].numpy()).max() > 0.01


@pytest.mark.parametrize("policy, compute_dtype", [("mixed_float16", "float16"),
                                                   ("mixed_bfloat16", "bfloat16")])
def test_outputs_are_float32_under_mixed_precision(policy, compute_dtype):
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    model = build_kdc_model(ModelConfig(depth="tiny"), Geometry(input_size=129))
  finally:
    keras.config.set_dtype_policy(previous)
  assert model.get_layer("neck_conv").compute_dtype == compute_dtype
  outputs = model(np.zeros((1, 129, 129, 3), np.float32))
  for name, value in outputs.items():
    assert value.dtype == tf.float32, name
    assert np.isfinite(value.numpy()).all(), name


def test_freeze_batch_norm_leaves_only_convolutions_trainable():
  frozen = build_trunk(ModelConfig(depth="tiny", freeze_batch_norm=True), Geometry(input_size=129))
  trained = build_trunk(ModelConfig(depth="tiny"), Geometry(input_size=129))
  bn = [l for l in frozen.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert bn and not any(l.trainable for l in bn)
  assert len(frozen.trainable_weights) == len(trained.trainable_weights) - 2 * len(bn)


def test_missing_weights_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    build_trunk(ModelConfig(depth="tiny", weights=str(tmp_path / "no.h5")),
                Geometry(input_size=129))


@pytest.fixture(scope="module")
def keras_resnet50_h5(tmp_path_factory):
  """A keras.applications ResNet-50 (random weights) saved as a legacy .h5 file."""
  reference = keras.applications.ResNet50(weights=None, include_top=False,
                                          input_shape=(65, 65, 3))
  path = str(tmp_path_factory.mktemp("weights") / "resnet50_notop.h5")
  reference.save(path)
  return reference, path


# Keras' legacy .h5 writer trips a numpy 2 deprecation inside Keras itself.
_KERAS_H5_NUMPY_WARNING = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@_KERAS_H5_NUMPY_WARNING
def test_keras_applications_weights_load_by_name(keras_resnet50_h5):
  reference, path = keras_resnet50_h5
  trunk = build_trunk(ModelConfig(depth="50", weights=path), Geometry(input_size=65))
  assert _weighted_layers(trunk) == _weighted_layers(reference)
  for name in ("conv1_conv", "conv4_block6_2_conv", "conv5_block3_3_bn"):
    for ours, theirs in zip(trunk.get_layer(name).weights, reference.get_layer(name).weights):
      np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  # Same network up to stride 4 (after that ours is dilated): our preprocessing included.
  image = np.random.default_rng(1).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
  theirs = keras.Model(reference.input, reference.get_layer("conv3_block4_out").output)(
      keras.applications.resnet.preprocess_input(image.copy()))
  ours = keras.Model(trunk.input, trunk.get_layer("conv3_block4_out").output)(image)
  np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)


@_KERAS_H5_NUMPY_WARNING
def test_weights_of_another_depth_are_refused(keras_resnet50_h5):
  _, path = keras_resnet50_h5
  trunk = build_trunk(ModelConfig(depth="101"), Geometry(input_size=65))
  with pytest.raises(ValueError, match="wrong depth"):
    load_imagenet_weights(trunk, path)


def test_trunk_name_is_the_nested_model():
  config = ModelConfig(depth="tiny")
  model = build_kdc_model(config, Geometry(input_size=129))
  assert model.get_layer(trunk_name(config)).name == "resnettiny"


@pytest.mark.parametrize("output_stride,trunk_stride", [(8, None), (4, 16)])
def test_the_model_benchmarks_heads_alone_match_the_models_outputs(output_stride, trunk_stride):
  from experiments.bench_model import _heads_model
  config = ModelConfig(depth="tiny", trunk_stride=trunk_stride)
  model = build_kdc_model(config, Geometry(input_size=129, output_stride=output_stride))
  heads_model = _heads_model(config, Geometry(input_size=129, output_stride=output_stride),
                             model.get_layer(trunk_name(config)))
  shapes = {name: tuple(t.shape) for name, t in model.output.items()}
  assert {name: tuple(t.shape) for name, t in heads_model.output.items()} == shapes
