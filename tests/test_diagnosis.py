"""Substitution analysis: the all-GT row is the oracle, the model's row is below it."""

import csv
import os
import pathlib
import subprocess
import sys

import pytest

from data_pipeline.input_pipeline import build_dataset
from experiments import oracle_runner
from kdc_tf.config import ExperimentConfig, TrainConfig
from kdc_tf.evaluation import diagnosis
from kdc_tf.geometry import Geometry
from kdc_tf.modeling import ModelConfig
from kdc_tf.training import Trainer, create_strategy

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 129
MAX_IMAGES = 3


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory, small_embedded):
  """A tiny model trained 5 steps on the synthetic set, diagnosed by the binary."""
  model_dir = str(tmp_path_factory.mktemp("diagnose"))
  data = small_embedded
  config = ExperimentConfig(
      geometry=Geometry(input_size=SIZE), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=data["train"], batch_size=2, learning_rate=1e-3, epochs=1,
                        steps_per_epoch=5, seed=0, strategy="one_device"))
  Trainer(config, model_dir, create_strategy("one_device")).run(
      build_dataset(data["train"], config.geometry, config.encoder, config.augment, 2,
                    training=True, seed=0))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.diagnose", f"--model_dir={model_dir}",
       f"--max_images={MAX_IMAGES}", "--all_but_one", f"--annotations={data['annotations_val']}",
       f"--images={data['images_val']}"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(model_dir, "diagnosis.csv")) as f:
    rows = {row["replaced"]: row for row in csv.DictReader(f)}
  return dict(rows=rows, stdout=result.stdout, data=data, model_dir=model_dir)


def test_every_substitution_is_a_row_of_the_table(diagnosed):
  names = [s.name for s in diagnosis.substitutions(all_but_one=True)]
  assert list(diagnosed["rows"]) == names
  assert "| GT all (oracle) |" in diagnosed["stdout"]
  with open(os.path.join(diagnosed["model_dir"], "diagnosis.md")) as f:
    written = f.read()
  for name in ("model", "GT all (oracle)"):
    section = f"True people by overlap, {name}:"
    assert section in diagnosed["stdout"] and section in written
  assert written.count("| separate (0) |") == 2


def test_all_replaced_is_the_oracle_and_the_model_is_below_it(diagnosed):
  data = diagnosed["data"]
  reference = oracle_runner.run_oracle(data["annotations_val"], data["images_val"],
                                       Geometry(dataset="coco", input_size=SIZE),
                                       max_images=MAX_IMAGES).report.stats
  rows = diagnosed["rows"]
  everything, model = rows["GT all (oracle)"], rows["model"]
  assert float(everything["keypoints AP"]) == pytest.approx(reference["keypoints"]["AP"], abs=5e-4)
  assert float(everything["segm AP"]) == pytest.approx(reference["segm"]["AP"], abs=5e-4)
  assert float(everything["keypoints AP"]) > 0.5
  assert float(model["keypoints AP"]) <= float(everything["keypoints AP"])
  assert float(model["segm AP"]) <= float(everything["segm AP"])
