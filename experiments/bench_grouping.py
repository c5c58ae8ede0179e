r"""Times the grouping module on perfect targets of generated scenes, every call on a new scene.

  python -m experiments.bench_grouping [--input_size=401] [--num_people=1,5,10,20,40] \
      [--repeats=20] [--jit_compile] [--compare_tree=/path/to/other/checkout [--rounds=2]]

For each number of people, `--repeats` different scenes of that many generated people
(kdc_tf.synthetic.scenes) on an input_size canvas, encoded by data_pipeline.targets.encode_targets
and decoded by `Grouper` at output size input_size x input_size (input_scale 1). Every timed call
decodes a scene the grouper has never seen, after a warm-up on other scenes: a graph that
recompiles for new input values (XLA caches compilations by the values of inputs it needs as
compile-time constants) pays that compilation inside the timing, where the repeated decoding of a
few scenes would hide it. The counts take turns in every round, so that the load of a shared
machine spreads evenly over them.

Prints, per count, the median, mean and worst milliseconds per image and the people decoded in
the last scene; the last line is `grouping_ms_per_image=<median>` for 20 people (or the largest
count below 20 when 20 is not benchmarked).

With `--compare_tree`, a paired comparison in one process (`experiments.paired_grouping`): the
other checkout's `Grouper` is built beside this tree's, both decode the same scenes, calls
alternating, `--rounds` passes over them. Per count it prints both medians, the median of the
paired differences (this tree minus the other, ms and % of the other's median) and on how many
scenes the outputs (keypoints, scores, masks) are identical; the last line is
`paired_diff_pct=<%>` for 20 people (or the largest count below 20).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline.targets import encode_targets
from experiments import common_flags, paired_grouping
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.geometry import Geometry
from kdc_tf.grouping import INPUT_KEYS, Grouper
from kdc_tf.synthetic import scenes

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  common_flags.define_geometry_flags()
  flags.DEFINE_list("num_people", ["1", "5", "10", "20", "40"], "People per generated scene.")
  flags.DEFINE_integer("repeats", 20, "Timed calls per count, each on a new scene.")
  flags.DEFINE_integer("warmup", 2, "Untimed calls per count first, on other scenes.")
  flags.DEFINE_bool("jit_compile", True, "XLA-compile the grouping stages.")
  flags.DEFINE_integer("seed", 0, "Scene generator seed.")
  flags.DEFINE_string("compare_tree", None, "Another checkout (its root directory): time its "
                      "grouping against this tree's in one process, calls alternating.")
  flags.DEFINE_integer("rounds", 1, "With --compare_tree: passes over the timed scenes.")

_REPORTED_PEOPLE = 20


def scene_inputs(num_people: int, geometry: Geometry, rng: np.random.Generator):
  """Grouping inputs (perfect targets) of a new scene; people shrink as the crowd grows."""
  size = geometry.input_size
  max_height = float(np.clip(1.6 * size / np.sqrt(max(num_people, 1)), 60.0, 200.0))
  placements = scenes.random_placements(num_people, size, rng, 0.6 * max_height, max_height)
  scene = scenes.make_scene(geometry.spec, size, placements, rng)
  augmented = {key: tf.constant(scene[key])
               for key in ("keypoints", "instance_masks", "crowd_mask", "has_masks")}
  targets = encode_targets(augmented, geometry)
  return {key: targets[key] for key in INPUT_KEYS}


def time_new_scenes(grouper: Grouper, geometry: Geometry, counts, repeats: int, warmup: int,
                    rng: np.random.Generator):
  """Per count: (milliseconds of each timed call `[repeats]`, people decoded in the last one).

  Scenes are generated before the timing; each is decoded once (outputs fetched to numpy)."""
  output_size = (geometry.input_size, geometry.input_size)
  inputs = [[scene_inputs(count, geometry, rng) for _ in range(warmup + repeats)]
            for count in counts]
  for per_count in inputs:  # warm-up: tracing and compilation on scenes that are not timed
    for scene in per_count[:warmup]:
      grouper(scene, output_size, 1.0)["masks"].numpy()
  durations = np.zeros((len(counts), repeats))
  found = [0] * len(counts)
  for repeat in range(repeats):
    for i, per_count in enumerate(inputs):
      start = time.perf_counter()
      result = grouper(per_count[warmup + repeat], output_size, 1.0)
      result["masks"].numpy()
      durations[i, repeat] = time.perf_counter() - start
      found[i] = int(result["num_people"])
  return [(1e3 * d, n) for d, n in zip(durations, found)]


def compare(counts, geometry: Geometry) -> float:
  """The paired comparison with --compare_tree; returns the reported count's difference in %."""
  other = paired_grouping.import_tree_package(FLAGS.compare_tree)
  this_grouper = Grouper(ExperimentConfig(geometry=geometry), GroupingConfig(),
                         jit_compile=FLAGS.jit_compile)
  other_grouper = paired_grouping.build_grouper(other, geometry.input_size, FLAGS.jit_compile)
  logging.info("paired grouping benchmark: this tree against %s, %dx%d, jit_compile=%s, "
               "%d scenes per count, %d rounds", FLAGS.compare_tree, geometry.input_size,
               geometry.input_size, FLAGS.jit_compile, FLAGS.repeats, FLAGS.rounds)
  rng = np.random.default_rng(FLAGS.seed)
  scenes = [[scene_inputs(count, geometry, rng) for _ in range(FLAGS.warmup + FLAGS.repeats)]
            for count in counts]
  timings = paired_grouping.time_pairs(this_grouper, other_grouper, scenes,
                                       (geometry.input_size, geometry.input_size),
                                       FLAGS.warmup, FLAGS.rounds)
  reported = None
  for count, times in zip(counts, timings):
    figures = paired_grouping.summary(times)
    print(f"people={count:3d} pairs={len(times.this_ms):3d} this_ms={figures['this_ms']:7.2f} "
          f"other_ms={figures['other_ms']:7.2f} diff_ms={figures['diff_ms']:+7.2f} "
          f"diff_pct={figures['diff_pct']:+6.1f} same_outputs={times.same_outputs}/{times.scenes} "
          f"decoded={times.decoded:3d}", flush=True)
    if count <= _REPORTED_PEOPLE:
      reported = figures["diff_pct"]
  return reported


def main(argv):
  del argv
  experiment = ExperimentConfig(geometry=Geometry(input_size=FLAGS.input_size))
  geometry = experiment.geometry
  counts = sorted({int(n) for n in FLAGS.num_people})
  if not any(count <= _REPORTED_PEOPLE for count in counts):
    raise app.UsageError(f"--num_people needs a count <= {_REPORTED_PEOPLE} for the summary line")
  if FLAGS.repeats < 1 or FLAGS.warmup < 1:
    raise app.UsageError("--repeats and --warmup must be >= 1")
  if FLAGS.compare_tree:
    if FLAGS.rounds < 1:
      raise app.UsageError("--rounds must be >= 1")
    print(f"paired_diff_pct={compare(counts, geometry):.1f}")
    return
  grouper = Grouper(experiment, GroupingConfig(), jit_compile=FLAGS.jit_compile)
  logging.info("grouping benchmark: %dx%d, jit_compile=%s, %d new scenes per count",
               geometry.input_size, geometry.input_size, FLAGS.jit_compile, FLAGS.repeats)
  timings = time_new_scenes(grouper, geometry, counts, FLAGS.repeats, FLAGS.warmup,
                            np.random.default_rng(FLAGS.seed))
  reported = None
  for count, (milliseconds, found) in zip(counts, timings):
    print(f"people={count:3d} decoded={found:3d} median_ms={np.median(milliseconds):7.2f} "
          f"mean_ms={np.mean(milliseconds):7.2f} worst_ms={np.max(milliseconds):7.2f}", flush=True)
    if count <= _REPORTED_PEOPLE:
      reported = float(np.median(milliseconds))
  print(f"grouping_ms_per_image={reported:.3f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
