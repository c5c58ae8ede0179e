"""The KDC network: dilated ResNet trunk + PoseNet + SegNet as one Keras functional model."""

from __future__ import annotations

import keras

from kdc_tf.geometry import Geometry
from kdc_tf.modeling import heads
from kdc_tf.modeling.config import ModelConfig
from kdc_tf.modeling.trunk import build_trunk

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
  features = trunk(image)
  neck_features = heads.neck(features["features"], config)
  outputs = {**heads.pose_net(neck_features, config, geometry),
             **heads.seg_net(neck_features, features["stride4"], config, geometry)}
  return keras.Model(image, {name: outputs[name] for name in OUTPUT_NAMES}, name="kdc")


def trunk_name(config: ModelConfig) -> str:
  return f"resnet{config.depth}"
