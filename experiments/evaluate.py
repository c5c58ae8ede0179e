r"""COCO-style evaluation (keypoint OKS AP, mask AP) of a results file or of a trained model.

Results file (no model needed):
  python -m experiments.evaluate --results=preds.json --annotations=person_keypoints_val2017.json \
      --dataset=coco

Trained model (a training model_dir / checkpoint, or an exported SavedModel), on the images of
the annotation file:
  python -m experiments.evaluate --checkpoint=/tmp/kdc_run --annotations=... --images=val2017/ \
      --dataset=coco --test_scale=401 --output=results.json

Prints the AP/AR tables and ends with `keypoints_AP=<x> segm_AP=<y>` (segm left out when the
dataset or the results have no masks). CrowdPose adds AP per crowd-index band; its protocol and
OCHuman's `area` convention are described in `kdc_tf.evaluation`.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from pycocotools.coco import COCO

from data_pipeline import annotations as annotation_reader
from kdc_tf import evaluation, export
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.progress import Progress
from kdc_tf.evaluation.results import Result
from kdc_tf.inference import Predictor

FLAGS = flags.FLAGS

PredictFn = Callable[[tf.Tensor], Dict[str, np.ndarray]]


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("results", None, "An existing COCO results JSON to evaluate (mode A).")
  flags.DEFINE_string("checkpoint", None, "Training model_dir or checkpoint to evaluate (mode B).")
  flags.DEFINE_string("saved_model", None, "Exported SavedModel directory to evaluate (mode B).")
  flags.DEFINE_string("annotations", None, "COCO-format ground-truth JSON.")
  flags.DEFINE_enum("dataset", "coco", ["coco", "crowdpose", "ochuman"], "Evaluation protocol.")
  flags.DEFINE_string("images", None, "Directory of the annotation file's images (mode B).")
  flags.DEFINE_integer("test_scale", 401, "Long side of the image at the model input (mode B); "
                       "(scale - 1) must be a multiple of the output stride, e.g. 401, 641, 801.")
  flags.DEFINE_integer("max_images", None, "Evaluate only the first N images (mode B).")
  flags.DEFINE_string("output", None, "Where to write the results JSON (required in mode B).")
  flags.DEFINE_bool("fail_on_bad_image", False, "Stop at a missing or corrupt image (mode B); "
                    "by default it is skipped, counted and left out of the evaluation.")
  flags.mark_flag_as_required("annotations")
  flags.register_multi_flags_validator(
      ["results", "checkpoint", "saved_model", "images", "output"], _valid_mode,
      message="give exactly one of --results, --checkpoint, --saved_model; a model also needs "
      "--images and --output")


def _valid_mode(values) -> bool:
  sources = [values[k] for k in ("results", "checkpoint", "saved_model") if values[k]]
  if len(sources) != 1:
    return False
  return bool(values["results"]) or bool(values["images"] and values["output"])


def _checkpoint_predictor(checkpoint: str, dataset: str, test_scale: int) -> PredictFn:
  """Predictor (resize, model, grouping in one graph) of a training model_dir."""
  predictor = Predictor.from_model_dir(checkpoint, input_size=test_scale)
  _check_keypoint_layout(predictor.spec.num_keypoints, dataset, checkpoint)
  return lambda image: {k: v.numpy() for k, v in predictor(image).items()}


def _saved_model_predictor(export_dir: str, dataset: str, test_scale: int) -> PredictFn:
  """The exported serving signature (uint8 image in, the grouping outputs out)."""
  metadata = export.load_metadata(export_dir)
  _check_keypoint_layout(len(metadata["keypoint_names"]), dataset, export_dir)
  if metadata["input_size"] != test_scale:
    logging.warning("%s was exported at test scale %d; --test_scale=%d does not apply to it.",
                    export_dir, metadata["input_size"], test_scale)
  serve = tf.saved_model.load(export_dir).signatures[export.SERVING_SIGNATURE]
  return lambda image: {k: v.numpy() for k, v in serve(image=image).items()}


def _check_keypoint_layout(num_keypoints: int, dataset: str, source: str) -> None:
  expected = get_dataset_spec(dataset).num_keypoints
  if num_keypoints != expected:
    raise ValueError(f"{source} predicts {num_keypoints} keypoints; --dataset={dataset} has "
                     f"{expected}")


def predict_dataset(predict: PredictFn, coco_gt: COCO, images_dir: str,
                    max_images: Optional[int] = None,
                    fail_on_bad_image: bool = False) -> Tuple[List[Result], List[int]]:
  """Runs the model on each annotated image; returns (results, evaluated image ids).

  A missing or corrupt image, or one whose size is not the annotated one, is skipped, counted and
  left out of the evaluation (`fail_on_bad_image`: an error naming it instead).
  """
  image_ids = sorted(coco_gt.getImgIds())[:max_images]
  results, evaluated = [], []
  skips = annotation_reader.SkipCounter()
  progress = Progress(len(image_ids), "predict")
  for info in coco_gt.loadImgs(image_ids):
    record = annotation_reader.ImageRecord(
        image_id=info["id"], image_path=os.path.join(images_dir, info["file_name"]),
        height=info["height"], width=info["width"], has_masks=False)
    try:
      image = annotation_reader.load_image(record)
    except annotation_reader.ImageError as e:
      if fail_on_bad_image:
        raise ValueError(f"image {info['id']}: {e}") from None
      logging.warning("Skipping image %d (not evaluated): %s", info["id"], e)
      skips.add(e.reason, str(e))
      continue
    outputs = predict(image)
    results += evaluation.grouping_to_results(info["id"], outputs["keypoints"], outputs["scores"],
                                              outputs["num_people"], outputs.get("masks"))
    evaluated.append(info["id"])
    progress.update()
  if skips.total():
    logging.warning("%d of %d images skipped and left out of the evaluation:\n%s",
                    skips.total(), len(image_ids), skips.summary())
  if not evaluated:
    raise ValueError(f"none of the {len(image_ids)} images in {images_dir} could be read")
  logging.info("Predicted %d people on %d images in %.1f s", len(results), len(evaluated),
               progress.elapsed_seconds)
  return results, evaluated


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  coco_gt = evaluation.load_ground_truth(FLAGS.annotations, FLAGS.dataset)
  if FLAGS.results:
    results, image_ids = evaluation.read_results(FLAGS.results), None
  else:
    if FLAGS.checkpoint:
      predict = _checkpoint_predictor(FLAGS.checkpoint, FLAGS.dataset, FLAGS.test_scale)
    else:
      predict = _saved_model_predictor(FLAGS.saved_model, FLAGS.dataset, FLAGS.test_scale)
    results, image_ids = predict_dataset(predict, coco_gt, FLAGS.images, FLAGS.max_images,
                                         FLAGS.fail_on_bad_image)
  if FLAGS.output:
    evaluation.write_results(FLAGS.output, results)
  report = evaluation.evaluate(results, coco_gt, FLAGS.dataset, image_ids)
  print(report.table, flush=True)
  print(report.summary_line(), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
