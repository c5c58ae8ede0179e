"""The KDC network: dilated ResNet trunk, PoseNet and SegNet heads (ARCHITECTURE.md section 4)."""

from kdc_tf.modeling.config import ModelConfig
from kdc_tf.modeling.kdc_model import OUTPUT_NAMES, build_heads, build_kdc_model, trunk_name
from kdc_tf.modeling.trunk import build_trunk, load_imagenet_weights

__all__ = ["ModelConfig", "OUTPUT_NAMES", "build_heads", "build_kdc_model", "build_trunk",
           "load_imagenet_weights", "trunk_name"]
