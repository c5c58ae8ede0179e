"""PoseNet and SegNet heads on the trunk's features (ARCHITECTURE.md section 4).

Kept light (at most ~10% over the trunk, experiments/bench_model.py measures it): one shared 1x1
reduction of the stride-8 (or 16) features, PoseNet = one 3x3 conv then 1x1 outputs on the pose
grid, SegNet = a DeepLabv3+-style decoder (corner-aligned bilinear upsampling of the reduced
features to the stride-4 grid, concatenated with a 1x1 projection of the trunk's stride-4 features,
one 3x3 conv) then 1x1 outputs on the mask grid. Offsets are predicted in units of
`ModelConfig.offset_scale` (a constant, not the disk radius) and returned in input pixels; every
output is float32, also under mixed precision.
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf

from kdc_tf.geometry import MASK_STRIDE, Geometry
from kdc_tf.modeling.batch_norm import FusedBatchNormalization
from kdc_tf.modeling.config import ModelConfig

_BN_EPSILON = 1e-3


@keras.saving.register_keras_serializable(package="kdc_tf")
class AlignedUpsample(keras.layers.Layer):
  """Bilinear upsampling between corner-aligned grids: size n -> (n - 1) * factor + 1.

  Grid point i of the input sits on grid point factor * i of the output, as both grids put point i
  at input pixel stride * i (ARCHITECTURE.md), hence `align_corners=True`.
  """

  def __init__(self, factor: int, **kwargs):
    super().__init__(**kwargs)
    self.factor = factor

  def call(self, x):
    height, width = x.shape[1], x.shape[2]
    size = ((height - 1) * self.factor + 1, (width - 1) * self.factor + 1)
    resized = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=True,
                                        half_pixel_centers=False)
    return tf.cast(resized, x.dtype)

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    return (b, (h - 1) * self.factor + 1, (w - 1) * self.factor + 1, c)

  def get_config(self):
    return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kdc_tf")
class Scale(keras.layers.Layer):
  """Multiplies by a constant: offsets in units of `ModelConfig.offset_scale` -> input pixels."""

  def __init__(self, scale: float, **kwargs):
    super().__init__(**kwargs)
    self.scale = float(scale)

  def call(self, x):
    return x * self.scale

  def get_config(self):
    return {**super().get_config(), "scale": self.scale}


def _conv_bn_relu(x, filters: int, kernel_size: int, name: str, separable: bool = False):
  """Conv (depthwise-separable if `separable` and wider than 1x1), batch norm, ReLU."""
  conv = (keras.layers.SeparableConv2D if separable and kernel_size > 1 else keras.layers.Conv2D)
  x = conv(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)
  x = FusedBatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
  return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _output(x, channels: int, name: str, scale: float | None = None):
  """1x1 float32 output convolution, optionally scaled from offset units to input pixels.

  Offset outputs start at zero (a random init starts them ~30 px off everywhere).
  """
  raw_name = f"{name}_raw" if scale is not None else name
  initializer = "zeros" if scale is not None else "glorot_uniform"
  x = keras.layers.Conv2D(channels, 1, dtype="float32", kernel_initializer=initializer,
                          name=raw_name)(x)
  return x if scale is None else Scale(scale, dtype="float32", name=name)(x)


def neck(features, config: ModelConfig):
  """Shared 1x1 reduction of the trunk's last features."""
  return _conv_bn_relu(features, config.neck_width, 1, name="neck")


def pose_net(features, config: ModelConfig,
             geometry: Geometry) -> Dict[str, keras.KerasTensor]:
  """Heatmap logits [K], KeyCentroid [2K] and mid-range [2E] offsets on the pose grid.

  `features`: the neck's on a stride-8/16 pose grid, SegNet's decoder's on a stride-4 one.
  """
  spec = geometry.spec
  x = _conv_bn_relu(features, config.pose_head_width, 3, name="pose_head",
                    separable=config.separable_heads)
  return {
      "heatmap_logits": _output(x, spec.num_keypoints, "heatmap_logits"),
      "keycentroid": _output(x, 2 * spec.num_keypoints, "keycentroid", config.offset_scale),
      "midrange": _output(x, 2 * spec.num_directed_edges, "midrange", config.offset_scale),
  }


def decoder_features(neck_features, stride4_features, config: ModelConfig, trunk_stride: int):
  """SegNet's DeepLabv3+-style decoder: the neck upsampled to the stride-4 grid, fused with a 1x1
  projection of the trunk's stride-4 features by one 3x3 conv."""
  upsampled = AlignedUpsample(trunk_stride // MASK_STRIDE, name="decoder_upsample")(neck_features)
  low_level = _conv_bn_relu(stride4_features, config.low_level_width, 1, name="decoder_low_level")
  x = keras.layers.Concatenate(name="decoder_concat")([upsampled, low_level])
  return _conv_bn_relu(x, config.decoder_width, 3, name="decoder_fuse",
                       separable=config.separable_heads)


def seg_net(decoded_features, config: ModelConfig) -> Dict[str, keras.KerasTensor]:
  """Person-mask logit [1] and MaskCentroid offsets [2] on the stride-4 mask grid."""
  return {
      "seg_logits": _output(decoded_features, 1, "seg_logits"),
      "mask_offset": _output(decoded_features, 2, "mask_offset", config.offset_scale),
  }
