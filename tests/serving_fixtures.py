"""A tiny trained-model directory and its SavedModel export, built once per test session.

Shared by tests/test_export.py and tests/test_predict.py (import the `tiny_export` fixture). The
model is the 'tiny' trunk at 129x129, randomly initialised with a fixed seed (person-mask bias
raised) and checkpointed in a model_dir like experiments/train.py writes; the export goes through
the experiments.export binary, so the fixture also exercises `Predictor.from_model_dir` and the
export flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib

import keras
import pytest
from absl import flags
from absl.testing import flagsaver

from kdc_tf.checkpoints import make_checkpoint
from kdc_tf.config import ExperimentConfig, GroupingConfig, save_config
from kdc_tf.geometry import Geometry
from kdc_tf.modeling import ModelConfig, build_kdc_model

INPUT_SIZE = 129
# Few output slots keep the full-resolution masks of the large-image test small.
MAX_PEOPLE = 6
SEG_LOGIT_BIAS = 3.0


@dataclasses.dataclass(frozen=True)
class TinyExport:
  model_dir: pathlib.Path
  export_dir: pathlib.Path
  model: keras.Model
  experiment: ExperimentConfig
  grouping_config: GroupingConfig
  # What experiments.export printed.
  printed: str


_CACHE = {}


def define_binary_flags() -> None:
  """Defines the export and predict binaries' flags once per process, so that tests can run
  their main() in-process (flag values set with flagsaver)."""
  from experiments import export, predict

  if "export_dir" not in flags.FLAGS:
    export.define_flags()
  if "saved_model" not in flags.FLAGS:
    predict.define_flags()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def build_tiny_export(root: pathlib.Path) -> TinyExport:
  from experiments import export

  keras.utils.set_random_seed(0)
  experiment = ExperimentConfig(geometry=Geometry(input_size=INPUT_SIZE),
                                model=ModelConfig(depth="tiny"))
  model = build_kdc_model(experiment.model, experiment.geometry)
  # A random person-mask head says "person" about half the time, so few pixels pass the 0.5
  # thresholds; a raised logit bias makes the masks non-empty, so that comparing them means
  # something.
  seg_output = model.get_layer("seg_logits")
  kernel, bias = seg_output.get_weights()
  seg_output.set_weights([kernel, bias + SEG_LOGIT_BIAS])
  model_dir, export_dir = root / "model_dir", root / "export"
  save_config(experiment, str(model_dir))
  make_checkpoint(model).save(str(model_dir / "ckpt"))

  define_binary_flags()
  stdout = io.StringIO()
  # The untrained model's score maps peak below the decoder's default threshold (0.1): 0.01 keeps
  # people to check.
  with flagsaver.flagsaver(model_dir=str(model_dir), export_dir=str(export_dir),
                           max_people=MAX_PEOPLE, peak_threshold=0.01), \
      contextlib.redirect_stdout(stdout):
    export.main(["export"])
  return TinyExport(model_dir, export_dir, model, experiment,
                    GroupingConfig(max_people=MAX_PEOPLE, peak_threshold=0.01), stdout.getvalue())


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> TinyExport:
  """The session's one tiny model_dir and export (shared by every module that imports this)."""
  if "export" not in _CACHE:
    _CACHE["export"] = build_tiny_export(tmp_path_factory.mktemp("tiny_export"))
  return _CACHE["export"]
