"""Outputs are written atomically, and two runs into one output folder never mix (issue 12)."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kdc_tf import prediction
from kdc_tf.config import ExperimentConfig, load_config, save_config
from kdc_tf.datasets import COCO
from kdc_tf.evaluation import read_results, write_results
from kdc_tf.io_utils import OutputDirBusyError, exclusive_output_dir


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
  path = str(tmp_path / "results.json")
  good = [{"image_id": 1, "category_id": 1, "score": 0.5, "keypoints": [0.0] * 51}]
  write_results(path, good)
  with pytest.raises(TypeError):  # json fails on the second entry, after the first was encoded
    write_results(path, good + [{"image_id": 2, "score": object()}])
  assert read_results(path) == good
  assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_config_write_is_atomic(tmp_path, monkeypatch):
  save_config(ExperimentConfig(), str(tmp_path))
  before = (tmp_path / "experiment_config.json").read_text()

  def crash(*args):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError, match="disk full"):
    save_config(ExperimentConfig(), str(tmp_path))
  assert (tmp_path / "experiment_config.json").read_text() == before
  assert load_config(str(tmp_path)) == ExperimentConfig()
  assert sorted(os.listdir(tmp_path)) == ["experiment_config.json"]


def _no_people(image):
  h, w = image.shape[:2]
  return {"keypoints": np.zeros((2, 17, 3), np.float32), "scores": np.zeros(2, np.float32),
          "masks": np.zeros((2, h, w), np.uint8), "num_people": np.int32(0)}


def test_a_second_predict_run_into_the_same_folder_is_refused(tmp_path):
  images = tmp_path / "in"
  images.mkdir()
  cv2.imwrite(str(images / "7.png"), np.zeros((20, 30, 3), np.uint8))
  out = str(tmp_path / "out")
  with exclusive_output_dir(out):  # the first run, still writing
    with pytest.raises(OutputDirBusyError, match="in use by another run"):
      prediction.run(_no_people, COCO, str(images), out)
  summary = prediction.run(_no_people, COCO, str(images), out)  # free again
  assert summary.processed == 1
  assert json.loads((tmp_path / "out" / "image_ids.json").read_text()) == {"7.png": 7}


def test_a_truncated_config_is_an_error_naming_it(tmp_path):
  path = save_config(ExperimentConfig(), str(tmp_path))
  with open(path, "r+") as f:
    f.truncate(100)
  with pytest.raises(ValueError, match=r"experiment_config\.json: not valid JSON"):
    load_config(str(tmp_path))


def test_predict_takes_image_ids_from_an_annotation_file(tmp_path):
  images = tmp_path / "in"
  images.mkdir()
  for name in ("street.png", "extra.png"):
    cv2.imwrite(str(images / name), np.zeros((20, 30, 3), np.uint8))
  annotations = tmp_path / "gt.json"
  annotations.write_text(json.dumps({"images": [
      {"id": 42, "file_name": "val/street.png", "height": 20, "width": 30}], "annotations": []}))
  summary = prediction.run(_no_people, COCO, str(images), str(tmp_path / "out"),
                        annotations=str(annotations))
  assert summary.processed == 1 and summary.skipped == {"not in --annotations": [
      str(images / "extra.png")]}
  assert json.loads((tmp_path / "out" / "image_ids.json").read_text()) == {"street.png": 42}


def test_evaluate_test_scale_defaults_to_the_models_own_size():
  """No hidden 401: without --test_scale a model is evaluated at its own size."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--helpfull"], cwd=repo,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  block = result.stdout.split("  --input_size:")[1].split("(an integer)")[0]
  assert "(default:" not in block  # before: (default: '401')
