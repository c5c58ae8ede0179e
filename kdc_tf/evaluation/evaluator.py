"""One entry point per dataset: load its ground truth the way its protocol needs, evaluate."""

from __future__ import annotations

from typing import Optional, Sequence

from absl import logging
from pycocotools.coco import COCO

from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.coco_evaluator import EvaluationReport, evaluate_coco, load_coco
from kdc_tf.evaluation.crowdpose_evaluator import evaluate_crowdpose, set_crowdpose_areas
from kdc_tf.evaluation.results import Result


def load_ground_truth(annotations: str, dataset: str) -> COCO:
  """Loads a COCO-format annotation file, adjusted for the dataset's protocol."""
  spec = get_dataset_spec(dataset)
  coco_gt = load_coco(annotations)
  if not coco_gt.getImgIds():
    raise ValueError(f"{annotations}: no images in the annotation file")
  unlabelled = 0
  for ann in coco_gt.dataset["annotations"]:
    if "keypoints" not in ann:  # pose-less annotations: people with no labelled keypoint
      ann["keypoints"] = [0] * (3 * spec.num_keypoints)
      ann["num_keypoints"] = 0
      unlabelled += 1
    if len(ann["keypoints"]) != 3 * spec.num_keypoints:
      raise ValueError(f"{annotations}: annotation {ann.get('id')} has {len(ann['keypoints'])} "
                       f"keypoint values, but {dataset} has {spec.num_keypoints} keypoints; "
                       "wrong --dataset?")
    ann.setdefault("num_keypoints", sum(1 for v in ann["keypoints"][2::3] if v > 0))
  if unlabelled:
    logging.warning("%d annotations have no keypoints field: treated as unlabelled people.",
                    unlabelled)
  if dataset.lower() == "crowdpose":
    set_crowdpose_areas(coco_gt)
  elif dataset.lower() == "ochuman":
    logging.info("OCHuman: ground-truth 'area' is the bbox area, so OKS and APm/APl use it.")
  logging.info("Loaded %s ground truth (%d keypoints): %d images, %d annotations", dataset,
               spec.num_keypoints, len(coco_gt.getImgIds()), len(coco_gt.getAnnIds()))
  return coco_gt


def evaluate(results: Sequence[Result],
             coco_gt: COCO,
             dataset: str,
             image_ids: Optional[Sequence[int]] = None) -> EvaluationReport:
  """Evaluates results against `load_ground_truth(..., dataset)` on `image_ids` (default all)."""
  if dataset.lower() == "crowdpose":
    return evaluate_crowdpose(coco_gt, results, image_ids)
  return evaluate_coco(coco_gt, results, get_dataset_spec(dataset).oks_sigmas, image_ids)
