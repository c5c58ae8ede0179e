r"""The paper's ablations from one base configuration: train, evaluate, tabulate.

  python -m experiments.ablate [--ablations=centroid,disk_radius,keycentroid,pgo_sigma,igo_sigma] \
      [--work_dir=work_dirs/ablate] [--steps=N] [--oracle]

Ablations (`experiments.ablation_grid`): centroid (SM_c / DM_c), disk_radius (R = 8 / 16 / 32),
keycentroid (trained and decoded with it; trained with it and decoded without; trained with
--keycentroid_weight=0 and decoded without), pgo_sigma (each keypoint group over --sigmas) and
igo_sigma (over --sigmas). Training ablations get one model_dir each under <work_dir>/models and
resume there if interrupted; decode-only ablations (the sigmas, KeyCentroid at decode) reuse the
base model's checkpoint (`--base_model_dir` names an already trained one). Every row is evaluated
on the validation images (keypoint and mask AP, per-keypoint-type OKS term and confidence) and,
with --oracle, also through the oracle (ground truth as perfect head outputs, same decoder).

Default: the embedded synthetic data and the quick start's configuration
(`experiments.presets.quickstart_config`) trained for --steps, so the whole grid runs on a CPU.
Real data: --train_pattern, --val_annotations, --val_images, --dataset; the paper's budget:
--preset=paper (ResNet-101, 401 x 401, R = 32, batch 4, Adam 1e-5; --steps total steps,
--weights).

Writes <work_dir>/ablations.md (Markdown tables laid out like the paper's), ablations.csv and
TensorBoard HParams under <work_dir>/hparams (`tensorboard --logdir <work_dir>/hparams`, HPARAMS
tab), and prints the Markdown.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf
from absl import app, flags, logging
from tensorboard.plugins.hparams import api as hparams_api

from data_pipeline import synthetic
from data_pipeline.input_pipeline import build_dataset
from experiments import ablation_grid, common_flags, oracle_runner
from experiments.evaluation_runner import predict_dataset
from experiments.presets import QUICKSTART_LEARNING_RATE, QUICKSTART_STEPS, quickstart_config
from kdc_tf import evaluation
from kdc_tf.config import ExperimentConfig, GroupingConfig, TrainConfig, load_config
from kdc_tf.evaluation.coco_evaluator import KEYPOINTS, SEGM
from kdc_tf.evaluation.per_keypoint import per_keypoint_report
from kdc_tf.inference import Predictor
from kdc_tf.geometry import Geometry
from kdc_tf.modeling.config import ModelConfig
from kdc_tf.training import Trainer, create_strategy
from kdc_tf.training.precision import fastest_precision

FLAGS = flags.FLAGS

_METRICS = ("keypoints_AP", "segm_AP", "oracle_keypoints_AP", "oracle_segm_AP")


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_list("ablations", list(ablation_grid.ABLATIONS),
                    f"Ablations to run, among {ablation_grid.ABLATIONS}.")
  flags.DEFINE_string("work_dir", "work_dirs/ablate", "Models, tables and HParams logs go here.")
  flags.DEFINE_enum("preset", "quickstart", ["quickstart", "paper"],
                    "Base configuration: the quick start's (experiments.presets) or the "
                    "paper's (ResNet-101, 401 px, R = 32, batch 4, Adam 1e-5).")
  flags.DEFINE_integer("steps", QUICKSTART_STEPS, "Training steps of every trained model (the "
                       "budget); default: the quick start's.", lower_bound=1)
  flags.DEFINE_float("learning_rate", None, "Adam learning rate; default: the preset's.")
  flags.DEFINE_string("weights", None, "ImageNet weights .h5 for --preset=paper.")
  flags.DEFINE_integer("seed", 0, "Seed of initialisation and input order.")
  flags.DEFINE_string("base_model_dir", None, "An already trained base model_dir: its "
                      "configuration is the base and decode-only rows use its checkpoint.")
  flags.DEFINE_list("sigmas", ["0.1", "0.3", "0.5", "1.0"], "PGO / IGO sigmas swept.")
  flags.DEFINE_bool("oracle", True, "Also decode the ground truth (perfect head outputs) with "
                    "each row's decoder settings.")
  flags.DEFINE_string("train_pattern", None, "Training TFRecords; default: the embedded data.")
  flags.DEFINE_string("val_annotations", None, "Validation annotations; default: embedded.")
  flags.DEFINE_string("val_images", None, "Validation images directory; default: embedded.")
  common_flags.define_dataset_flag()
  flags.DEFINE_integer("max_images", None, "Evaluate only the first N validation images.")


def base_config(train_pattern: str) -> ExperimentConfig:
  """The base experiment of --preset with the budget flags."""
  if FLAGS.base_model_dir:
    return load_config(FLAGS.base_model_dir)
  if FLAGS.preset == "quickstart":
    config = quickstart_config(train_pattern, FLAGS.steps,
                               FLAGS.learning_rate or QUICKSTART_LEARNING_RATE, FLAGS.seed,
                               fastest_precision())
    return dataclasses.replace(
        config, geometry=dataclasses.replace(config.geometry, dataset=FLAGS.dataset))
  steps = FLAGS.steps
  return ExperimentConfig(
      geometry=Geometry(dataset=FLAGS.dataset), model=ModelConfig(weights=FLAGS.weights),
      train=TrainConfig(train_pattern=train_pattern, learning_rate=FLAGS.learning_rate or 1e-5,
                        epochs=1, steps_per_epoch=steps, checkpoint_every=max(steps // 10, 1),
                        strategy="mirrored", seed=FLAGS.seed))


def train_model(config: ExperimentConfig, model_dir: str) -> None:
  """Trains (or resumes) one model to its budget."""
  trainer = Trainer(config, model_dir, create_strategy(config.train.strategy))
  trainer.run(build_dataset(config.train.train_pattern, config.geometry, config.encoder,
                            config.augment, config.train.batch_size, training=True,
                            seed=config.train.seed, deterministic=True))


def measure(run: ablation_grid.Run, model_dir: str, coco_gt, val_images: str,
            val_annotations: str) -> Dict[str, Any]:
  """Evaluates one row: the model's figures and per-keypoint report, optionally the oracle's."""
  grouping_config = dataclasses.replace(GroupingConfig(), **run.decoding)
  predictor = Predictor.from_model_dir(model_dir, grouping_config)
  results, image_ids = predict_dataset(lambda image: predictor.predict_numpy(image), coco_gt,
                                       val_images, FLAGS.max_images)
  report = evaluation.evaluate(results, coco_gt, FLAGS.dataset, image_ids)
  spec = run.experiment.geometry.spec
  per_type = per_keypoint_report(coco_gt, results, spec.oks_sigmas, spec.keypoint_names,
                                 image_ids)
  row = {"ablation": run.ablation, "setting": run.setting, "model": run.model_name,
         "hparams": run.hparams, "keypoints": report.stats[KEYPOINTS],
         "segm_AP": report.stats.get(SEGM, {}).get("AP"), "per_keypoint": per_type.as_dict()}
  if FLAGS.oracle:
    if run.experiment.encoder.centroid_mode != "dynamic":
      logging.info("The oracle encodes DM_c targets: no oracle figures for %s", run.setting)
    else:
      row["oracle"] = run_oracle(run, val_annotations, val_images)
  return row


def run_oracle(run: ablation_grid.Run, val_annotations: str,
               val_images: str) -> Dict[str, Optional[float]]:
  """The oracle (`experiments.oracle_runner`) at the row's geometry with its decoder settings."""
  geometry = dataclasses.replace(run.experiment.geometry, dataset=FLAGS.dataset)
  decoding = run.hparams
  grouping_config = dataclasses.replace(
      GroupingConfig(), pgo_sigma_high=decoding["pgo_sigma_high"],
      pgo_sigma_low=decoding["pgo_sigma_low"], igo_sigma=decoding["igo_sigma"],
      use_keycentroid=decoding["use_keycentroid"])
  stats = oracle_runner.run_oracle(val_annotations, val_images, geometry, grouping_config,
                                   FLAGS.max_images).report.stats
  return {"keypoints_AP": stats[KEYPOINTS]["AP"],
          "segm_AP": stats[SEGM]["AP"] if SEGM in stats else None}


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")


def write_hparams(rows: Sequence[Dict[str, Any]], log_dir: str) -> None:
  """One TensorBoard run per row with its hparams and metrics (HParams dashboard)."""
  for row in rows:
    run_dir = os.path.join(log_dir, row["ablation"], _slug(row["setting"]))
    with tf.summary.create_file_writer(run_dir).as_default():
      hparams_api.hparams(row["hparams"], trial_id=f"{row['ablation']}/{row['setting']}")
      values = {"keypoints_AP": row["keypoints"]["AP"], "segm_AP": row.get("segm_AP"),
                "oracle_keypoints_AP": (row.get("oracle") or {}).get("keypoints_AP"),
                "oracle_segm_AP": (row.get("oracle") or {}).get("segm_AP")}
      for name, value in values.items():
        if value is not None:
          tf.summary.scalar(name, value, step=0)
  with tf.summary.create_file_writer(log_dir).as_default():
    hparams_api.hparams_config(
        hparams=[hparams_api.HParam(name) for name in rows[0]["hparams"]] if rows else [],
        metrics=[hparams_api.Metric(name, display_name=name) for name in _METRICS])


def write_tables(rows: Sequence[Dict[str, Any]], work_dir: str) -> str:
  """Writes ablations.md and ablations.csv; returns the Markdown."""
  sections = []
  for name in dict.fromkeys(row["ablation"] for row in rows):
    sections.append(ablation_grid.markdown_table(name, [r for r in rows if r["ablation"] == name]))
  markdown = "\n".join(sections)
  with open(os.path.join(work_dir, "ablations.md"), "w") as f:
    f.write(markdown)
  flat = ablation_grid.csv_rows(rows)
  with open(os.path.join(work_dir, "ablations.csv"), "w", newline="") as f:
    fieldnames: List[str] = list(dict.fromkeys(key for row in flat for key in row))
    writer = csv.DictWriter(f, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(flat)
  return markdown


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.ablations) - set(ablation_grid.ABLATIONS))
  if unknown:
    raise app.UsageError(f"unknown ablations {unknown}; expected {ablation_grid.ABLATIONS}")
  if FLAGS.train_pattern and not (FLAGS.val_annotations and FLAGS.val_images):
    raise app.UsageError("real data needs --train_pattern, --val_annotations and --val_images")
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  if FLAGS.train_pattern:
    train_pattern, val_annotations, val_images = (FLAGS.train_pattern, FLAGS.val_annotations,
                                                  FLAGS.val_images)
  else:
    data = synthetic.ensure_embedded_dataset()
    train_pattern, val_annotations, val_images = (data["train"], data["annotations_val"],
                                                  data["images_val"])
  base = base_config(train_pattern)
  sigmas = [float(s) for s in FLAGS.sigmas]
  runs = [run for name in FLAGS.ablations
          for run in ablation_grid.ablation_runs(name, base, sigmas)]

  model_dirs = {}
  for run in runs:
    if run.model_name in model_dirs:
      continue
    if run.model_name == "base" and FLAGS.base_model_dir:
      model_dirs["base"] = FLAGS.base_model_dir
      continue
    model_dir = os.path.join(FLAGS.work_dir, "models", run.model_name)
    logging.info("Training %s (%d steps) in %s", run.model_name,
                 run.experiment.train.total_steps, model_dir)
    train_model(run.experiment, model_dir)
    model_dirs[run.model_name] = model_dir

  coco_gt = evaluation.load_ground_truth(val_annotations, FLAGS.dataset)
  rows = []
  for run in runs:
    logging.info("Evaluating %s: %s", run.ablation, run.setting)
    rows.append(measure(run, model_dirs[run.model_name], coco_gt, val_images, val_annotations))
  write_hparams(rows, os.path.join(FLAGS.work_dir, "hparams"))
  markdown = write_tables(rows, FLAGS.work_dir)
  print(markdown, flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
