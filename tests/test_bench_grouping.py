"""The paired grouping benchmark (`bench_grouping --compare_tree`, `experiments.paired_grouping`).

This checkout is imported a second time under another name (the benchmark's way to load another
checkout); the pairing runs on stand-in groupers, since tracing two real groupers takes about
35 s even at 97 x 97 without XLA.
"""

import pathlib
import sys

import numpy as np
import tensorflow as tf

from experiments import paired_grouping
from kdc_tf.grouping import Grouper

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_another_tree_is_imported_under_another_name():
  other = paired_grouping.import_tree_package(str(ROOT), alias="kdc_tf_paired_test")
  assert other.grouping.Grouper is not Grouper
  decoder = sys.modules["kdc_tf_paired_test.grouping.decoder"]
  assert pathlib.Path(decoder.__file__).read_text().count("from kdc_tf_paired_test.grouping") > 0
  assert "kdc_tf.grouping" not in pathlib.Path(decoder.__file__).read_text()
  grouper = paired_grouping.build_grouper(other, 97, jit_compile=False)
  assert isinstance(grouper, other.grouping.Grouper)


class _StandIn:
  """Returns fixed outputs (a grouper's keys) and records the order of the calls."""

  def __init__(self, name, calls, masks_value=0):
    self.name, self.calls, self.masks_value = name, calls, masks_value

  def __call__(self, scene, output_size, input_scale):
    self.calls.append(self.name)
    count = int(scene["people"])
    return {"keypoints": tf.zeros([2, 17, 3]), "scores": tf.zeros([2]),
            "masks": tf.fill([2, *output_size], tf.constant(self.masks_value, tf.uint8)),
            "num_people": tf.constant(count)}


def test_the_calls_alternate_on_the_same_scenes_and_outputs_are_compared():
  calls = []
  this, same, different = (_StandIn("this", calls), _StandIn("same", calls),
                           _StandIn("different", calls, masks_value=1))
  scenes = [[{"people": tf.constant(count)} for _ in range(3)] for count in (1, 4)]
  timings = paired_grouping.time_pairs(this, same, scenes, (5, 5), warmup=1, rounds=2)
  assert [times.decoded for times in timings] == [1, 4]
  for times in timings:
    assert times.this_ms.shape == times.other_ms.shape == (4,)  # 2 timed scenes x 2 rounds
    assert times.same_outputs == times.scenes == 2
  timed = calls[4:]  # after the warm-up: 2 counts x 1 scene x 2 groupers
  firsts = timed[0::2]  # round 0: scene 0 of counts 1, 4, scene 1 of counts 1, 4; round 1
  # Who goes first alternates for each count, between scenes and between rounds.
  assert firsts == ["this", "same", "same", "this", "same", "this", "this", "same"]
  assert sorted(timed[0:2]) == ["same", "this"]
  figures = paired_grouping.summary(timings[0])
  assert set(figures) == {"this_ms", "other_ms", "diff_ms", "diff_pct"}
  assert np.isfinite(list(figures.values())).all()
  timings = paired_grouping.time_pairs(this, different, scenes, (5, 5), warmup=1, rounds=1)
  assert [times.same_outputs for times in timings] == [0, 0]
