"""experiments.ablate: the ablation grid around one base, its tables, and one tiny end-to-end run."""

import csv
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import ablation_grid, oracle_runner
from experiments.presets import quickstart_config
from kdc_tf.config import GroupingConfig
from kdc_tf.datasets import COCO

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = quickstart_config("train-*.tfrecord", steps=10, learning_rate=1e-3, seed=0)  # R = 16


def test_training_ablations_reuse_the_base_model_and_differ_only_in_their_setting():
  radii = ablation_grid.ablation_runs("disk_radius", BASE, [0.1])
  assert [r.model_name for r in radii] == ["disk_radius_8", "base", "disk_radius_32"]
  for run in radii:
    assert run.experiment.model == BASE.model  # R alone changes: not the offset scale
    assert run.experiment.geometry.disk_radius == run.hparams["disk_radius"]
  centroid = ablation_grid.ablation_runs("centroid", BASE, [0.1])
  assert [r.model_name for r in centroid] == ["centroid_static", "base"]
  keycentroid = ablation_grid.ablation_runs("keycentroid", BASE, [0.1])
  assert [r.model_name for r in keycentroid] == ["base", "base", "keycentroid_off"]
  assert [r.hparams["use_keycentroid"] for r in keycentroid] == [True, False, False]
  assert keycentroid[2].experiment.loss.keycentroid == 0.0


def test_decode_only_ablations_share_the_base_checkpoint():
  pgo = ablation_grid.ablation_runs("pgo_sigma", BASE, [0.1, 1.0])
  assert {r.model_name for r in pgo} == {"base"}
  assert [(r.hparams["pgo_sigma_high"], r.hparams["pgo_sigma_low"]) for r in pgo] == [
      (0.1, 0.175), (1.0, 0.175), (0.1, 0.1), (0.1, 1.0)]
  igo = ablation_grid.ablation_runs("igo_sigma", BASE, [0.5])
  assert igo[0].hparams["igo_sigma"] == 0.5 and igo[0].model_name == "base"


def test_tables_have_a_row_per_setting_and_per_type_means():
  per_keypoint = {name: {"count": 1, "oks": 0.5, "confidence": 0.25}
                  for name in COCO.keypoint_names}
  per_keypoint["nose"] = {"count": 0, "oks": np.nan, "confidence": np.nan}
  rows = [{"ablation": "igo_sigma", "setting": f"{s:g}", "model": "base",
           "hparams": {"igo_sigma": s}, "keypoints": {"AP": 0.1 * i, "APm": -1.0},
           "segm_AP": 0.2, "oracle": {"keypoints_AP": 0.9, "segm_AP": None},
           "per_keypoint": per_keypoint} for i, s in enumerate((0.1, 1.0))]
  markdown = ablation_grid.markdown_table("igo_sigma", rows)
  assert "| 1 | base | 0.100 | - | - | - | - | 0.200 | 0.900 | - |" in markdown
  assert "| 0.1 | - | 0.50 / 0.25 |" in markdown
  flat = ablation_grid.csv_rows(rows)
  assert flat[1]["keypoints_AP"] == 0.1 and flat[1]["confidence_left_wrist"] == 0.25


def test_ablate_binary_trains_evaluates_and_writes_tables(tmp_path, small_embedded):
  completed = subprocess.run(
      [sys.executable, "-m", "experiments.ablate", "--ablations=igo_sigma", "--sigmas=0.1,1.0",
       "--steps=1", "--max_images=1", f"--work_dir={tmp_path}",
       f"--train_pattern={small_embedded['train']}",
       f"--val_annotations={small_embedded['annotations_val']}",
       f"--val_images={small_embedded['images_val']}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert "#### IGO sigma" in completed.stdout
  with open(tmp_path / "ablations.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["setting"], r["igo_sigma"], r["model"]) for r in rows] == [
      ("0.1", "0.1", "base"), ("1", "1.0", "base")]
  assert (tmp_path / "ablations.md").read_text() in completed.stdout
  assert list((tmp_path / "models" / "base").glob("ckpt-1.index"))
  assert len(list((tmp_path / "hparams").rglob("events.out.tfevents.*"))) == 3
  # The oracle column: the ground truth decoded at the row's geometry with its IGO sigma.
  oracle = oracle_runner.run_oracle(small_embedded["annotations_val"], small_embedded["images_val"], BASE.geometry,
                                    GroupingConfig(igo_sigma=0.1), max_images=1).report.stats
  assert float(rows[0]["oracle_keypoints_AP"]) == pytest.approx(oracle["keypoints"]["AP"])
  assert float(rows[0]["oracle_segm_AP"]) == pytest.approx(oracle["segm"]["AP"])
  assert rows[1]["oracle_keypoints_AP"]
