r"""FLOPs of the KDC network per image, counted by TensorFlow's profiler.

  python -m experiments.count_flops --depth=101 --input_size=401

Traces the model's forward pass for one image (batch 1, training mode) and counts its floating
point operations with `tf.compat.v1.profiler` (`float_operation`: 2 per multiply-accumulate of
every Conv2D, MatMul, BiasAdd, ... with a registered count). The profiler registers no count for
the backward convolutions (Conv2DBackpropInput / Conv2DBackpropFilter), so the training figure is
the usual 3 x forward: each forward convolution has two backward ones of the same cost (gradient
of its input and of its weights). Ends with `training_gflops_per_image=<x>`.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from absl import app, flags

from experiments import common_flags
from kdc_tf.modeling import ModelConfig, build_kdc_model, trunk_name
from kdc_tf.modeling.config import TRUNK_DEPTHS

FLAGS = flags.FLAGS
# Forward + gradient of the inputs + gradient of the weights, each the forward's cost.
TRAINING_OVER_FORWARD = 3


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_enum("depth", "101", sorted(TRUNK_DEPTHS), "ResNet trunk depth.")
  common_flags.define_geometry_flags(output_stride=True)


def forward_flops(model: tf.keras.Model, input_size: int) -> int:
  """Floating point operations of one forward pass of `model` on one image (TF's profiler)."""
  forward = tf.function(lambda image: model(image, training=True))
  graph = forward.get_concrete_function(
      tf.TensorSpec([1, input_size, input_size, 3], tf.float32)).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = ModelConfig(depth=FLAGS.depth)
  geometry = common_flags.geometry_from_flags()
  model = build_kdc_model(config, geometry)
  total = forward_flops(model, geometry.input_size)
  trunk = forward_flops(model.get_layer(trunk_name(config)), geometry.input_size)
  print(f"ResNet-{FLAGS.depth} KDC at {geometry.input_size} x {geometry.input_size}, output stride "
        f"{geometry.output_stride}: forward {total / 1e9:.1f} GFLOPs (trunk {trunk / 1e9:.1f}, "
        f"heads {(total - trunk) / 1e9:.1f}); training {TRAINING_OVER_FORWARD} x forward",
        flush=True)
  print(f"training_gflops_per_image={TRAINING_OVER_FORWARD * total / 1e9:.1f}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
