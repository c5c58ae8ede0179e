"""One entry point per dataset: load its ground truth the way its protocol needs, evaluate."""

from __future__ import annotations

from typing import Optional, Sequence

from pycocotools.coco import COCO

from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.coco_evaluator import EvaluationReport, evaluate_coco
from kdc_tf.evaluation.crowdpose_evaluator import evaluate_crowdpose
from kdc_tf.evaluation.ground_truth import load_ground_truth  # noqa: F401 (re-exported)
from kdc_tf.evaluation.results import Result


def evaluate(results: Sequence[Result],
             coco_gt: COCO,
             dataset: str,
             image_ids: Optional[Sequence[int]] = None) -> EvaluationReport:
  """Evaluates results against `load_ground_truth(..., dataset)` on `image_ids` (default all)."""
  if dataset.lower() == "crowdpose":
    return evaluate_crowdpose(coco_gt, results, image_ids)
  return evaluate_coco(coco_gt, results, get_dataset_spec(dataset).oks_sigmas, image_ids)
