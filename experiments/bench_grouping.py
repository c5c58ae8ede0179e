r"""Times the grouping module on perfect targets of generated scenes.

  python -m experiments.bench_grouping [--image_size=401] [--num_people=1,5,10,20,40] [--repeats=50]

For each number of people: a scene of that many generated people (kdc_tf.grouping.scenes) on an
image_size canvas, encoded by data_pipeline.targets.encode_targets, decoded by `Grouper` at output
size image_size x image_size (input_scale 1) after a warm-up, the scenes taking turns; prints the
median and best milliseconds per image and the people decoded. The last line is
`grouping_ms_per_image=<median>` for 20 people (or the largest count below 20 when 20 is not
benchmarked).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline.targets import encode_targets
from kdc_tf.config import EncoderConfig, GroupingConfig
from kdc_tf.grouping import INPUT_KEYS, Grouper, scenes

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 401, "Square input size S ((S - 1) % 8 == 0).")
_NUM_PEOPLE = flags.DEFINE_list("num_people", ["1", "5", "10", "20", "40"],
                                "People per generated scene.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed calls per scene.")
_JIT = flags.DEFINE_bool("jit_compile", True, "XLA-compile the grouping stages.")
_SEED = flags.DEFINE_integer("seed", 0, "Scene generator seed.")

_REPORTED_PEOPLE = 20


def _scene_inputs(num_people: int, encoder: EncoderConfig, rng: np.random.Generator):
  """Grouping inputs (perfect targets) of a scene; people shrink as the crowd grows."""
  size = encoder.input_size
  max_height = float(np.clip(1.6 * size / np.sqrt(max(num_people, 1)), 60.0, 200.0))
  placements = scenes.random_placements(num_people, size, rng, 0.6 * max_height, max_height)
  scene = scenes.make_scene(encoder.spec, size, placements, rng)
  augmented = {key: tf.constant(scene[key])
               for key in ("keypoints", "instance_masks", "crowd_mask", "has_masks")}
  targets = encode_targets(augmented, encoder)
  return {key: targets[key] for key in INPUT_KEYS}


def _time_round_robin(grouper: Grouper, scenes_inputs, output_size, repeats: int):
  """Per scene: (median ms, best ms, people found). Scenes take turns in every repeat, so that the
  load of a shared machine spreads evenly over them. Outputs are fetched to numpy."""
  found = []
  for inputs in scenes_inputs:  # warm-up (XLA compilation on the first call)
    for _ in range(3):
      result = grouper(inputs, output_size, 1.0)
    found.append(int(result["num_people"]))
  durations = np.zeros((repeats, len(scenes_inputs)))
  for repeat in range(repeats):
    for i, inputs in enumerate(scenes_inputs):
      start = time.perf_counter()
      grouper(inputs, output_size, 1.0)["masks"].numpy()
      durations[repeat, i] = time.perf_counter() - start
  return [(1e3 * np.median(d), 1e3 * np.min(d), n) for d, n in zip(durations.T, found)]


def main(argv):
  del argv
  encoder = EncoderConfig(input_size=_IMAGE_SIZE.value)
  grouper = Grouper.from_encoder_config(encoder, GroupingConfig(), jit_compile=_JIT.value)
  rng = np.random.default_rng(_SEED.value)
  output_size = (encoder.input_size, encoder.input_size)
  counts = sorted({int(n) for n in _NUM_PEOPLE.value})
  logging.info("grouping benchmark: %dx%d, jit_compile=%s, %d repeats", *output_size, _JIT.value,
               _REPEATS.value)
  reported = None
  timings = _time_round_robin(grouper, [_scene_inputs(count, encoder, rng) for count in counts],
                              output_size, _REPEATS.value)
  for count, (median, best, found) in zip(counts, timings):
    print(f"people={count:3d} decoded={found:3d} median_ms={median:7.2f} best_ms={best:7.2f}",
          flush=True)
    if count <= _REPORTED_PEOPLE:
      reported = median
  if reported is None:
    raise app.UsageError(f"--num_people needs a count <= {_REPORTED_PEOPLE} for the summary line")
  print(f"grouping_ms_per_image={reported:.3f}")


if __name__ == "__main__":
  app.run(main)
