"""Dilated ResNet v1 trunk (keras.applications architecture and layer names, DeepLab strides).

The layers and their names are those of `keras.applications.ResNet50/101/152` so that a LOCAL
ImageNet weights file of keras.applications loads by name. The last stages trade stride for
dilation (reference: tensorflow/models official/vision/modeling/backbones/resnet_deeplab.py): at
output stride 8, conv4 runs at dilation 2 and conv5 at dilation 4; at 16, conv5 at dilation 2.
Strided layers are keras.applications' explicit-pad + valid convolutions and 1x1 stride-2
convolutions, so an input of size S gives grids of size (S - 1) / s + 1 whose point i sits at input
pixel s * i (corner-aligned, ARCHITECTURE.md): 401 -> 201 -> 101 (stride 4) -> 51 (stride 8).
"""

from __future__ import annotations

import os
from typing import Dict

import h5py
import keras
from absl import logging

from kdc_tf.geometry import Geometry
from kdc_tf.modeling.batch_norm import FusedBatchNormalization
from kdc_tf.modeling.config import TRUNK_DEPTHS, ModelConfig

# keras.applications ResNet v1 conventions.
_BN_EPSILON = 1.001e-5
_EXPANSION = 4
# ImageNet BGR channel means ("caffe" preprocessing, keras.applications.resnet.preprocess_input).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
MIN_TRUNK_STRIDE = 8


@keras.saving.register_keras_serializable(package="kdc_tf")
class CaffePreprocess(keras.layers.Layer):
  """RGB in [0, 255] -> BGR minus the ImageNet mean, as keras.applications ResNet expects."""

  def call(self, images):
    # A reversed strided slice copies element by element on CPU: 6x the time of ReverseV2.
    bgr = keras.ops.flip(images, axis=-1)
    return bgr - keras.ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=bgr.dtype)


def _bottleneck(x, filters: int, stride: int, dilation: int, conv_shortcut: bool, name: str):
  """keras.applications `residual_block_v1`, with a dilation rate on the 3x3 convolution."""
  if conv_shortcut:
    shortcut = keras.layers.Conv2D(_EXPANSION * filters, 1, strides=stride,
                                   name=f"{name}_0_conv")(x)
    shortcut = FusedBatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_0_bn")(shortcut)
  else:
    shortcut = x
  x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
  x = FusedBatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_1_bn")(x)
  x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
  x = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation,
                          name=f"{name}_2_conv")(x)
  x = FusedBatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_2_bn")(x)
  x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
  x = keras.layers.Conv2D(_EXPANSION * filters, 1, name=f"{name}_3_conv")(x)
  x = FusedBatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_3_bn")(x)
  x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
  return keras.layers.Activation("relu", name=f"{name}_out")(x)


def trunk_stride(config: ModelConfig, geometry: Geometry) -> int:
  """`config.trunk_stride`, by default the pose grid's stride, or 8 for a stride-4 pose grid
  (a trunk dilated from stride 4 would cost ~4x)."""
  if config.trunk_stride is not None:
    if config.trunk_stride < geometry.output_stride:
      raise ValueError(f"trunk_stride {config.trunk_stride} is finer than the pose grid's "
                       f"output_stride {geometry.output_stride}")
    return config.trunk_stride
  return max(geometry.output_stride, MIN_TRUNK_STRIDE)


def _stage_strides(output_stride: int):
  """(stride, dilation) of conv2..conv5 for the requested output stride."""
  stages, current_stride, dilation = [], 4, 1
  for nominal_stride in (1, 2, 2, 2):
    if current_stride * nominal_stride > output_stride:
      dilation *= nominal_stride
      stages.append((1, dilation))
    else:
      current_stride *= nominal_stride
      stages.append((nominal_stride, dilation))
  return stages


def build_trunk(config: ModelConfig, geometry: Geometry) -> keras.Model:
  """ResNet v1 trunk: image float32 [B, S, S, 3] RGB in [0, 255] -> named features.

  Outputs `stride4` (conv2 output, [B, (S-1)/4+1, ., 256*w]) for the SegNet decoder and
  `features` (conv5 output at `trunk_stride(config, geometry)`, [B, G, G, 2048*w]).
  """
  blocks, width = TRUNK_DEPTHS[config.depth]
  size = geometry.input_size
  inputs = keras.Input((size, size, 3), name="image")
  x = CaffePreprocess(name="preprocess", dtype="float32")(inputs)
  x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
  x = keras.layers.Conv2D(width, 7, strides=2, name="conv1_conv")(x)
  x = FusedBatchNormalization(epsilon=_BN_EPSILON, name="conv1_bn")(x)
  x = keras.layers.Activation("relu", name="conv1_relu")(x)
  x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

  stride4 = None
  for stage, (num_blocks, (stride, dilation)) in enumerate(
      zip(blocks, _stage_strides(trunk_stride(config, geometry)))):
    filters = width * 2**stage
    for block in range(num_blocks):
      x = _bottleneck(x, filters, stride=stride if block == 0 else 1, dilation=dilation,
                      conv_shortcut=block == 0, name=f"conv{stage + 2}_block{block + 1}")
    if stage == 0:
      stride4 = x

  trunk = keras.Model(inputs, {"stride4": stride4, "features": x}, name=f"resnet{config.depth}")
  if config.weights:
    load_imagenet_weights(trunk, config.weights)
  if config.with_batch_norm_resolved().freeze_batch_norm:
    for layer in trunk.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
  return trunk


def _h5_layer_names(path: str) -> Dict[str, None]:
  with h5py.File(path, "r") as f:
    group = f if "layer_names" in f.attrs else f.get("model_weights")
    if group is None or "layer_names" not in group.attrs:
      raise ValueError(f"{path} is not a keras.applications (legacy HDF5) weights file")
    return {n.decode("utf8") if hasattr(n, "decode") else str(n): None
            for n in group.attrs["layer_names"]}


def load_imagenet_weights(trunk: keras.Model, path: str) -> None:
  """Loads a local keras.applications ResNet weights .h5 into `trunk` by layer name.

  Never downloads. Every trunk layer with weights must be in the file (so that, e.g., ResNet-50
  weights cannot silently half-initialise a ResNet-101); shapes must match.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"ImageNet weights file {path!r} not found. Pass the path of a local keras.applications "
        "file such as resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5 (nothing is "
        "downloaded), or no weights for random initialisation.")
  in_file = _h5_layer_names(path)
  missing = [layer.name for layer in trunk.layers if layer.weights and layer.name not in in_file]
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} layers of {trunk.name} (e.g. {missing[:3]}): "
                     "wrong depth or not a keras.applications ResNet v1 file")
  trunk.load_weights(path, by_name=True)
  logging.info("Loaded ImageNet weights into %s from %s", trunk.name, path)
