"""The KDC network: dilated ResNet trunk + PoseNet + SegNet as one Keras functional model."""

from __future__ import annotations

from typing import Dict

import keras

from kdc_tf.geometry import MASK_STRIDE, Geometry
from kdc_tf.modeling import heads
from kdc_tf.modeling.config import ModelConfig
from kdc_tf.modeling.trunk import build_trunk, trunk_stride

OUTPUT_NAMES = ("heatmap_logits", "keycentroid", "midrange", "seg_logits", "mask_offset")


def build_kdc_model(config: ModelConfig, geometry: Geometry) -> keras.Model:
  """image float32 [B, S, S, 3] RGB in [0, 255] -> dict of ARCHITECTURE.md section 4 outputs.

  `geometry` fixes S, the output stride and the keypoint layout.

  The trunk is the nested model `model.get_layer(trunk_name(config))`. Layers follow the global
  Keras dtype policy (set 'mixed_float16' before building for mixed precision); outputs are
  float32 either way.
  """
  trunk = build_trunk(config, geometry)
  image = keras.Input((geometry.input_size, geometry.input_size, 3), name="image")
  outputs = build_heads(trunk(image), config, geometry)
  return keras.Model(image, outputs, name="kdc")


def build_heads(features: Dict[str, keras.KerasTensor], config: ModelConfig,
                geometry: Geometry) -> Dict[str, keras.KerasTensor]:
  """PoseNet and SegNet on the trunk's named features: the outputs of OUTPUT_NAMES, in order."""
  neck_features = heads.neck(features["features"], config)
  decoded = heads.decoder_features(neck_features, features["stride4"], config,
                                   trunk_stride(config, geometry))
  if geometry.output_stride == MASK_STRIDE:
    pose_features = decoded
  elif geometry.output_stride == trunk_stride(config, geometry):
    pose_features = neck_features
  else:
    raise ValueError(f"A pose grid at stride {geometry.output_stride} needs a trunk at that "
                     f"stride or a stride-{MASK_STRIDE} pose grid")
  outputs = {**heads.pose_net(pose_features, config, geometry),
             **heads.seg_net(decoded, config)}
  return {name: outputs[name] for name in OUTPUT_NAMES}

def trunk_name(config: ModelConfig) -> str:
  return f"resnet{config.depth}"
