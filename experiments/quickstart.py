r"""The whole tool chain on the embedded synthetic dataset, in a few minutes on a CPU.

  python -m experiments.quickstart [--work_dir=work_dirs/quickstart] [--steps=N]

1. Generates the embedded synthetic COCO-format dataset and its TFRecords (once; no download).
2. Saves a PNG of one training example with its KDC targets (heatmaps, KeyCentroid arrows,
   instances, MaskCentroid arrows).
3. Trains a small KDC network (`experiments.presets.quickstart_config`: 'small' trunk at stride
   16, light separable heads, PoseNet on the stride-4 decoder, batch 4 of 193 x 193 crops of the
   images scaled to 289 x 289, then the last --finish_steps on whole images at 289
   (`presets.whole_image_finish`), the weights' moving average at the end; bfloat16 where the
   hardware has it natively) with the real trainer; rerunning resumes from the checkpoint.
   TensorBoard logs go to <work_dir>/model.
4. Evaluates it on the synthetic validation split with the in-graph predictor at its test scale,
   321 x 321 (with the flip test unless --noflip_test), and pycocotools, and saves prediction
   overlays.

The paper's setup (ResNet-101, 401 x 401, Adam 1e-5, 400 epochs) is `experiments.train`'s default;
this run trades it for speed (a small trunk, light heads, a larger learning rate) so that it shows
learning on two CPU cores. Ends with `keypoints_AP=<x> segm_AP=<y>` on the synthetic validation images.
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic
from data_pipeline.input_pipeline import build_dataset
from experiments.evaluation_runner import predict_dataset
from experiments.presets import (QUICKSTART_FINISH_STEPS, QUICKSTART_IMAGE_SIZE,
                                 QUICKSTART_LEARNING_RATE, QUICKSTART_STEPS, quickstart_config,
                                 whole_image_finish)
from kdc_tf import evaluation
from kdc_tf.config import CONFIG_FILENAME, PRECISIONS, ExperimentConfig, load_config
from kdc_tf.inference import Predictor
from kdc_tf.training import Trainer, create_strategy
from kdc_tf.training.precision import fastest_precision
from kdc_tf.visualization.overlay import draw_predictions
from kdc_tf.visualization.targets import save_target_panel

FLAGS = flags.FLAGS

_NUM_OVERLAYS = 4


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("work_dir", "work_dirs/quickstart", "Where the model, logs and PNGs go.")
  flags.DEFINE_integer("steps", QUICKSTART_STEPS, "Training steps (batch 4), the finish "
                       "included.", lower_bound=1)
  flags.DEFINE_integer("finish_steps", QUICKSTART_FINISH_STEPS, "The last steps train on whole "
                       "images (at 289) instead of crops; 0: crops throughout.",
                       lower_bound=0)
  flags.DEFINE_float("learning_rate", QUICKSTART_LEARNING_RATE, "Adam learning rate (the "
                     "paper's 1e-5 is for ResNet-101 over 400 COCO epochs).")
  flags.DEFINE_integer("seed", 0, "Seed of initialisation and input order.")
  flags.DEFINE_enum("precision", "auto", ("auto",) + PRECISIONS, "Training precision; auto: "
                    "mixed_bfloat16 where the hardware has native bfloat16 arithmetic "
                    "(kdc_tf/training/precision.py), else float32.")
  flags.DEFINE_bool("flip_test", True, "Evaluate on the maps of each image averaged with its "
                    "mirror image's (kdc_tf/flip_test.py); false: one forward pass.")


def save_example_targets(pattern: str, config: ExperimentConfig, path: str) -> None:
  """Writes the target panel of the first training example (no augmentation)."""
  images, targets = next(iter(build_dataset(pattern, config.geometry, config.encoder, None,
                                            batch_size=1, training=False)))
  save_target_panel(images[0].numpy(), {k: v[0].numpy() for k, v in targets.items()}, path,
                    config.geometry.spec)
  logging.info("Wrote the targets of one training example to %s", path)


def save_overlays(predictor: Predictor, image_paths: Sequence[str], output_dir: str) -> None:
  """Draws the decoded people on a few validation images."""
  for path in image_paths:
    bgr = cv2.imread(path)
    outputs = predictor.predict_numpy(bgr[..., ::-1].copy())
    overlay = draw_predictions(bgr, outputs["keypoints"], outputs["scores"], outputs["masks"],
                               int(outputs["num_people"]), predictor.spec)
    target = os.path.join(output_dir, "pred_" + os.path.basename(path).rsplit(".", 1)[0] + ".png")
    cv2.imwrite(target, overlay)
  logging.info("Wrote %d prediction overlays to %s", len(image_paths), output_dir)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  work_dir = FLAGS.work_dir
  os.makedirs(work_dir, exist_ok=True)
  data = synthetic.ensure_embedded_dataset()
  if FLAGS.finish_steps >= FLAGS.steps:
    raise app.UsageError(f"--finish_steps={FLAGS.finish_steps} must be below "
                         f"--steps={FLAGS.steps}")
  precision = fastest_precision() if FLAGS.precision == "auto" else FLAGS.precision
  config = quickstart_config(data["train"], FLAGS.steps - FLAGS.finish_steps,
                             FLAGS.learning_rate, FLAGS.seed, precision)
  save_example_targets(data["train"], config, os.path.join(work_dir, "targets.png"))

  model_dir = os.path.join(work_dir, "model")
  stages = [(config, config.train.seed)]
  if FLAGS.finish_steps:
    finish = whole_image_finish(config, FLAGS.finish_steps, QUICKSTART_IMAGE_SIZE)
    if os.path.exists(os.path.join(model_dir, CONFIG_FILENAME)) and (
        load_config(model_dir).geometry == finish.geometry):
      stages = []  # Resumed after the crops' stage had ended.
    stages.append((finish, config.train.seed + 1))
  for stage, seed in stages:
    trainer = Trainer(stage, model_dir, create_strategy(stage.train.strategy))
    trainer.run(build_dataset(data["train"], stage.geometry, stage.encoder, stage.augment,
                              stage.train.batch_size, training=True, seed=seed,
                              deterministic=True))

  predictor = Predictor.from_model_dir(model_dir, flip=FLAGS.flip_test)
  logging.info("Evaluating on the synthetic validation split%s",
               " with the flip test" if FLAGS.flip_test else "")
  coco_gt = evaluation.load_ground_truth(data["annotations_val"], "coco")
  results, image_ids = predict_dataset(lambda image: predictor.predict_numpy(image), coco_gt,
                                       data["images_val"])
  evaluation.write_results(os.path.join(work_dir, "val_results.json"), results)
  report = evaluation.evaluate(results, coco_gt, "coco", image_ids)
  image_paths = [os.path.join(data["images_val"], info["file_name"])
                 for info in coco_gt.loadImgs(image_ids[:_NUM_OVERLAYS])]
  save_overlays(predictor, image_paths, work_dir)
  logging.info("TensorBoard: tensorboard --logdir %s", model_dir)
  print(report.table, flush=True)
  print(report.summary_line(), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
