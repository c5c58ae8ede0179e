"""Runs a model over the images of an annotation file and collects its COCO results.

Shared by `experiments.evaluate` and `experiments.quickstart` (a library, not a binary). The
predictors are a trained model_dir (`Predictor`) or an exported SavedModel's serving signature;
images are read by `data_pipeline.annotations`, so a bad one is skipped and counted.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools.coco import COCO

from data_pipeline import annotations as annotation_reader
from kdc_tf import export
from kdc_tf.config import GroupingConfig
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.progress import Progress
from kdc_tf.evaluation.results import Result, grouping_to_results
from kdc_tf.inference import Predictor

# One image's prediction: uint8 RGB [H, W, 3] -> the serving outputs as numpy arrays.
PredictFn = Callable[[tf.Tensor], Dict[str, np.ndarray]]


def checkpoint_predict_fn(checkpoint: str, dataset: str, test_scale: Optional[int] = None,
                          grouping_config: Optional[GroupingConfig] = None,
                          flip: bool = False) -> PredictFn:
  """Predictor (resize, model, grouping in one graph) of a training model_dir; `flip`: flip
  test."""
  predictor = Predictor.from_model_dir(checkpoint, grouping_config, input_size=test_scale,
                                       flip=flip)
  check_keypoint_layout(predictor.spec.num_keypoints, dataset, checkpoint)
  return lambda image: {k: v.numpy() for k, v in predictor(image).items()}


def saved_model_predict_fn(export_dir: str, dataset: str,
                           test_scale: Optional[int] = None) -> PredictFn:
  """The exported serving signature (uint8 image in, the grouping outputs out)."""
  metadata = export.load_metadata(export_dir)
  check_keypoint_layout(len(metadata["keypoint_names"]), dataset, export_dir)
  logging.info("The SavedModel decodes with its exported grouping settings; the grouping flags "
               "apply to --checkpoint only.")
  if test_scale is not None and metadata["input_size"] != test_scale:
    logging.warning("%s was exported at test scale %d; --input_size=%d does not apply to it.",
                    export_dir, metadata["input_size"], test_scale)
  serve = tf.saved_model.load(export_dir).signatures[export.SERVING_SIGNATURE]
  return lambda image: {k: v.numpy() for k, v in serve(image=image).items()}


def check_keypoint_layout(num_keypoints: int, dataset: str, source: str) -> None:
  """Raises when a model's keypoint count is not the evaluation dataset's."""
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
    results += grouping_to_results(info["id"], outputs["keypoints"], outputs["scores"],
                                   outputs["num_people"], outputs.get("masks"),
                                   outputs.get("mask_scores"))
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
