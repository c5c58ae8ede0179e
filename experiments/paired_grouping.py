"""Paired timing of two checkouts' grouping in one process (`bench_grouping --compare_tree`).

On a shared machine, separate benchmark processes swing by up to 2x with the load; the difference
between two versions of the decoder is only measurable in one process, on the same scenes, with
the calls of the two alternating. `import_tree_package` imports another checkout's `kdc_tf` under
another package name (a copy whose `kdc_tf` imports are renamed), so that its `Grouper` and this
tree's run side by side; `time_pairs` times both on the same scenes, alternating which goes first.
"""

from __future__ import annotations

import atexit
import importlib
import os
import re
import shutil
import sys
import tempfile
import time
import types
from typing import Dict, List, Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

# `import kdc_tf...` / `from kdc_tf... import` at the start of a line (also indented imports).
_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)kdc_tf\b", re.MULTILINE)
OUTPUT_KEYS = ("keypoints", "scores", "masks", "num_people")


def import_tree_package(tree: str, alias: str = "kdc_tf_compare") -> types.ModuleType:
  """The `kdc_tf` package of the checkout at `tree`, imported as `alias`.

  The package is copied into a temporary directory (removed at exit) as `alias`, with every import
  of `kdc_tf` renamed, so that it shares no module with this process's `kdc_tf`.
  """
  source = os.path.join(os.path.abspath(tree), "kdc_tf")
  if not os.path.isfile(os.path.join(source, "__init__.py")):
    raise ValueError(f"{tree} has no kdc_tf package")
  if alias in sys.modules:
    raise ValueError(f"a package {alias} is imported already")
  root = tempfile.mkdtemp(prefix="kdc_compare_")
  atexit.register(shutil.rmtree, root, True)
  target = os.path.join(root, alias)
  shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
  for directory, _, files in os.walk(target):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as handle:
          text = handle.read()
        with open(path, "w", encoding="utf-8") as handle:
          handle.write(_IMPORT.sub(lambda match: match.group(1) + alias, text))
  sys.path.insert(0, root)
  try:
    package = importlib.import_module(alias)
    for module in ("config", "geometry", "grouping"):
      importlib.import_module(f"{alias}.{module}")
  finally:
    sys.path.remove(root)
  return package


def build_grouper(package: types.ModuleType, input_size: int, jit_compile: bool):
  """`package.grouping.Grouper` with default settings for a square `input_size` input."""
  experiment = package.config.ExperimentConfig(
      geometry=package.geometry.Geometry(input_size=input_size))
  return package.grouping.Grouper(experiment, package.config.GroupingConfig(),
                                  jit_compile=jit_compile)


class PairedTimes(NamedTuple):
  """One people count's paired calls."""

  this_ms: np.ndarray  # float [pairs]: this tree's call
  other_ms: np.ndarray  # float [pairs]: the other tree's call on the same scene
  same_outputs: int  # scenes whose outputs (OUTPUT_KEYS) the two trees give identically
  scenes: int
  decoded: int  # people this tree decoded in the last scene


def _decode(grouper, scene: Mapping[str, tf.Tensor], output_size) -> Dict[str, np.ndarray]:
  result = grouper(scene, output_size, 1.0)
  return {key: result[key].numpy() for key in OUTPUT_KEYS}


def _same(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> bool:
  return all(first[key].shape == second[key].shape and np.array_equal(first[key], second[key])
             for key in OUTPUT_KEYS)


def time_pairs(this_grouper, other_grouper, scenes: Sequence[Sequence[Mapping[str, tf.Tensor]]],
               output_size, warmup: int, rounds: int) -> List[PairedTimes]:
  """Per people count, both groupers timed on the same scenes, calls alternating.

  Args:
    scenes: per count, the scenes (grouping inputs); the first `warmup` of each are decoded by
      both untimed (tracing, compilation), the others timed, each once per round.
    rounds: passes over the timed scenes; for each count, the grouper that goes first
      alternates from one scene to the next and between rounds (and between counts).
  Every call's outputs are fetched to numpy inside its timing. Outputs are compared on the first
  round.
  """
  for per_count in scenes:
    for scene in per_count[:warmup]:
      _decode(this_grouper, scene, output_size)
      _decode(other_grouper, scene, output_size)
  timed = [per_count[warmup:] for per_count in scenes]
  this_ms = [[] for _ in scenes]
  other_ms = [[] for _ in scenes]
  same = [0] * len(scenes)
  decoded = [0] * len(scenes)
  for round_index in range(rounds):
    for scene_index in range(max(len(per_count) for per_count in timed)):
      for i, per_count in enumerate(timed):  # the counts take turns, as in bench_grouping
        if scene_index >= len(per_count):
          continue
        scene = per_count[scene_index]
        order = ((this_grouper, this_ms[i]), (other_grouper, other_ms[i]))
        # Per count, not one turn over all calls: with an even number of counts that gave each
        # count the same grouper first in every call.
        if (round_index + scene_index + i) % 2:
          order = order[::-1]
        outputs = []
        for grouper, times in order:
          start = time.perf_counter()
          outputs.append(_decode(grouper, scene, output_size))
          times.append(1e3 * (time.perf_counter() - start))
        if round_index == 0:
          same[i] += int(_same(*outputs))
        this_outputs = outputs[0] if order[0][0] is this_grouper else outputs[1]
        decoded[i] = int(this_outputs["num_people"])
  return [PairedTimes(np.asarray(a), np.asarray(b), s, len(t), d)
          for a, b, s, t, d in zip(this_ms, other_ms, same, timed, decoded)]


def summary(times: PairedTimes) -> Dict[str, float]:
  """Medians of both trees' calls, and the median of the paired differences (this - other) in ms
  and in % of the other tree's median."""
  this_median = float(np.median(times.this_ms))
  other_median = float(np.median(times.other_ms))
  difference = float(np.median(times.this_ms - times.other_ms))
  return {"this_ms": this_median, "other_ms": other_median, "diff_ms": difference,
          "diff_pct": 100.0 * difference / other_median}
