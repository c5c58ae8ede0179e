"""Forward time of the KDC model vs its trunk alone, and the training-step time.

  python -m experiments.bench_model [--depth=101 --input_size=401 --batch_sizes=1,4]

Random initialisation. The trunk, the full model and the heads alone (on the trunk's features) are
timed in turn, so that background load hits them alike, and the minimum over repeats is kept; the
heads-alone time cross-checks the model - trunk difference, which load easily blurs. The last line
is `model_over_trunk=<float>`: the full model's forward time over the trunk's, averaged over the
batch sizes. Goal: <= 1.10.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from experiments import common_flags
from kdc_tf.config import EncoderConfig, LossConfig
from kdc_tf.geometry import Geometry
from kdc_tf.losses import compute_losses
from kdc_tf.modeling import ModelConfig, build_heads, build_kdc_model, trunk_name
from kdc_tf.modeling.config import TRUNK_DEPTHS

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_enum("depth", "101", sorted(TRUNK_DEPTHS), "Trunk depth.")
  common_flags.define_geometry_flags(output_stride=True)
  flags.DEFINE_list("batch_sizes", ["1", "4"], "Forward batch sizes.")
  flags.DEFINE_integer("repeats", 3, "Timed forward passes per model and batch size.")
  flags.DEFINE_integer("train_batch_size", 4, "Training-step batch size.")
  flags.DEFINE_integer("train_steps", 2, "Timed training steps (0 = skip).")


def _elapsed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _fetch(outputs) -> None:
  """Waits for the results by copying them to numpy."""
  tf.nest.map_structure(lambda t: t.numpy(), outputs)


def _heads_model(config: ModelConfig, geometry: Geometry, trunk: keras.Model) -> keras.Model:
  """The same heads as build_kdc_model, on inputs shaped like the trunk's outputs."""
  features = {name: keras.Input(t.shape[1:], name=name) for name, t in trunk.output.items()}
  return keras.Model(features, build_heads(features, config, geometry), name="heads")


def random_targets(geometry: Geometry, batch: int, rng: np.random.Generator
                   ) -> Dict[str, tf.Tensor]:
  """Targets of the right shapes and ranges (ARCHITECTURE.md section 3), for timing only."""
  g, m = geometry.pose_grid_size, geometry.mask_grid_size
  k, e = geometry.spec.num_keypoints, geometry.spec.num_directed_edges

  def uniform(*shape, scale=1.0):
    return tf.constant(rng.uniform(0, scale, (batch,) + shape).astype(np.float32))

  ids = rng.integers(-1, 4, (batch, m, m)).astype(np.int32)
  return {
      "heatmap": tf.cast(uniform(g, g, k) > 0.95, tf.float32),
      "keypoint_weight": tf.ones((batch, g, g, 1)),
      "keycentroid": uniform(g, g, 2 * k, scale=geometry.disk_radius),
      "keycentroid_weight": uniform(g, g, k),
      "midrange": uniform(g, g, 2 * e, scale=100.0),
      "midrange_weight": uniform(g, g, e),
      "seg": tf.constant((ids != 0).astype(np.float32)[..., None]),
      "seg_weight": tf.ones((batch, m, m, 1)),
      "mask_offset": uniform(m, m, 2, scale=50.0),
      "mask_offset_weight": tf.constant((ids > 0).astype(np.float32)[..., None]),
      "instance_ids": tf.constant(ids),
  }


def main(argv: List[str]) -> None:
  del argv
  config = ModelConfig(depth=FLAGS.depth)
  geometry = Geometry(input_size=FLAGS.input_size, output_stride=int(FLAGS.output_stride))
  model = build_kdc_model(config, geometry)
  trunk = model.get_layer(trunk_name(config))
  size = geometry.input_size
  print(f"ResNet-{config.depth} output stride {geometry.output_stride}, input "
        f"{size}x{size}: trunk {trunk.count_params():,} parameters, "
        f"full model {model.count_params():,}; timings are noisy on a shared machine")
  heads_model = _heads_model(config, geometry, trunk)
  functions = {"trunk": tf.function(lambda x: trunk(x, training=False)),
               "model": tf.function(lambda x: model(x, training=False)),
               "heads": tf.function(lambda f: heads_model(f, training=False))}
  rng = np.random.default_rng(0)
  ratios = []
  for batch in (int(b) for b in FLAGS.batch_sizes):
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)),
                         tf.float32)
    inputs = {"trunk": images, "model": images, "heads": trunk(images, training=False)}
    for name, fn in functions.items():  # Trace and warm up.
      _fetch(fn(inputs[name]))
    times = {name: [] for name in functions}
    for _ in range(FLAGS.repeats):
      for name, fn in functions.items():
        times[name].append(_elapsed(lambda: _fetch(fn(inputs[name]))))
    per_image = {name: min(t) / batch for name, t in times.items()}
    ratios.append(per_image["model"] / per_image["trunk"])
    print(f"batch {batch}: forward per image (min of {FLAGS.repeats}) model "
          f"{per_image['model'] * 1e3:.1f} ms, trunk {per_image['trunk'] * 1e3:.1f} ms, heads "
          f"alone on the trunk's features {per_image['heads'] * 1e3:.1f} ms; model/trunk "
          f"{ratios[-1]:.3f}, (trunk + heads)/trunk "
          f"{1 + per_image['heads'] / per_image['trunk']:.3f}; medians model "
          f"{np.median(times['model']) / batch * 1e3:.1f}, trunk "
          f"{np.median(times['trunk']) / batch * 1e3:.1f}, heads "
          f"{np.median(times['heads']) / batch * 1e3:.1f} ms")

  if FLAGS.train_steps > 0:
    batch = FLAGS.train_batch_size
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)),
                         tf.float32)
    targets = random_targets(geometry, batch, rng)
    optimizer = keras.optimizers.Adam(1e-5)
    loss_config = LossConfig()

    @tf.function
    def train_step():
      with tf.GradientTape() as tape:
        losses = compute_losses(targets, model(images, training=True), loss_config,
                                EncoderConfig())
      gradients = tape.gradient(losses["total"], model.trainable_variables)
      optimizer.apply(gradients, model.trainable_variables)
      return losses["total"]

    train_step().numpy()  # Trace and warm up.
    step_times = [_elapsed(lambda: train_step().numpy()) for _ in range(FLAGS.train_steps)]
    print(f"training step, batch {batch}: {min(step_times):.2f} s (min of {len(step_times)}; "
          f"median {np.median(step_times):.2f} s), {min(step_times) / batch:.2f} s per image")
  print(f"model_over_trunk={float(np.mean(ratios)):.4f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
