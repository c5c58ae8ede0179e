r"""Serving latency of the exported SavedModel against the bare model forward pass.

  python -m experiments.bench_serving --depth=101 --repeats=5

Builds a randomly initialised KDC model (seeded), exports it with grouping inside to a temporary
directory, loads it back and times, on the same 401x401 image:
  * serving: the `serving_default` signature on the uint8 image (resize, model, grouping);
  * model: the Keras model alone, as a tf.function, on the already-resized float32
    [1, 401, 401, 3] input.
Calls alternate between the two so that load from other processes hits both alike; each figure is
the median over --repeats calls after --warmup calls. The last line is exactly
`serving_over_model=<float>` (goal: <= 1.15). On a shared machine, rerun before trusting a
difference of a few percent.
"""

import statistics
import tempfile
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from experiments import common_flags
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.export import SERVING_SIGNATURE, export_saved_model
from kdc_tf.geometry import Geometry, resize_and_pad_image
from kdc_tf.inference import Predictor
from kdc_tf.modeling import ModelConfig, build_kdc_model
from kdc_tf.modeling.config import TRUNK_DEPTHS

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_enum("depth", "101", sorted(TRUNK_DEPTHS), "ResNet trunk depth.")
  common_flags.define_geometry_flags()  # --input_size: the model input and test image size
  flags.DEFINE_string("image", None,
                      "Optional image file to time on (resized to input_size); default: a seeded "
                      "random image.")
  flags.DEFINE_integer("repeats", 5, "Timed calls of each path.")
  flags.DEFINE_integer("warmup", 2, "Untimed calls of each path first.")
  flags.DEFINE_integer("seed", 0, "Seed of the random weights and image.")


def _test_image(size: int, seed: int) -> np.ndarray:
  if FLAGS.image:
    image = cv2.imread(FLAGS.image, cv2.IMREAD_COLOR)
    if image is None:
      raise app.UsageError(f"--image={FLAGS.image} is not a readable image")
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size),
                      interpolation=cv2.INTER_AREA)
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("ERROR")
  keras.utils.set_random_seed(FLAGS.seed)
  size = FLAGS.input_size
  experiment = ExperimentConfig(geometry=Geometry(input_size=size),
                                model=ModelConfig(depth=FLAGS.depth))
  model = build_kdc_model(experiment.model, experiment.geometry)
  predictor = Predictor(model, experiment, GroupingConfig())

  image = tf.constant(_test_image(size, FLAGS.seed))
  resized = resize_and_pad_image(image, size)[0][tf.newaxis]
  forward = tf.function(lambda x: model(x, training=False))

  with tempfile.TemporaryDirectory() as export_dir:
    export_saved_model(predictor, export_dir)
    serve = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]

  def run_serving():
    outputs = serve(image=image)
    return outputs["num_people"].numpy()

  def run_model():
    return [value.numpy() for value in forward(resized).values()]

  for _ in range(FLAGS.warmup):
    run_serving()
    run_model()
  serving_times, model_times = [], []
  for _ in range(FLAGS.repeats):
    serving_times.append(_seconds(run_serving))
    model_times.append(_seconds(run_model))

  serving, bare = statistics.median(serving_times), statistics.median(model_times)
  print(f"depth={FLAGS.depth} image={size}x{size} people_decoded={int(run_serving())} "
        f"repeats={FLAGS.repeats} threads(intra/inter)="
        f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
        f"{tf.config.threading.get_inter_op_parallelism_threads()}")
  print(f"model_forward_ms median={1e3 * bare:.1f} all="
        f"{[round(1e3 * t, 1) for t in model_times]}")
  print(f"serving_ms median={1e3 * serving:.1f} all="
        f"{[round(1e3 * t, 1) for t in serving_times]}")
  print(f"serving_over_model={serving / bare:.4f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
