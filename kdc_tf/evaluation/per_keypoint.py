"""Per-keypoint-type report: mean OKS term and mean predicted confidence of matched keypoints.

The paper's Fig. 7 plots per-keypoint confidence against the disk radius R; this report gives the
figures for any evaluation. Detections are matched to ground truth by pycocotools' own keypoint
matching (COCOeval.evaluate, area range 'all', up to 20 detections per image) at one OKS threshold
(0.5 by default). For every matched pair and every keypoint type the ground truth labels (v > 0):
the OKS term exp(-d^2 / (2 s^2 (2 sigma_j)^2)) exactly as COCOeval computes it (s^2 = the
ground truth's `area`, d the keypoint error), and the detection's keypoint score (the third value
of each result keypoint). Both are averaged per type.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kdc_tf.evaluation.coco_evaluator import KEYPOINTS, _captured_stdout, _detections_for
from kdc_tf.evaluation.coco_evaluator import _load_detections
from kdc_tf.evaluation.results import PERSON_CATEGORY_ID, Result


@dataclasses.dataclass
class PerKeypointReport:
  """Per keypoint type: matched keypoints `count`, mean `oks` term, mean `confidence`.

  Means are NaN for a type with no matched, labelled keypoint.
  """

  names: Sequence[str]
  count: np.ndarray  # int [K]
  oks: np.ndarray  # float [K]
  confidence: np.ndarray  # float [K]
  oks_threshold: float
  num_pairs: int

  def as_dict(self) -> Dict[str, Dict[str, float]]:
    return {name: {"count": int(c), "oks": float(o), "confidence": float(s)}
            for name, c, o, s in zip(self.names, self.count, self.oks, self.confidence)}

  @property
  def table(self) -> str:
    lines = [f"per keypoint type ({self.num_pairs} people matched at OKS >= "
             f"{self.oks_threshold:g}):",
             f"{'type':>16s} {'count':>6s} {'OKS term':>9s} {'confidence':>11s}"]
    for name, c, o, s in zip(self.names, self.count, self.oks, self.confidence):
      lines.append(f"{name:>16s} {int(c):6d} {o:9.3f} {s:11.3f}")
    return "\n".join(lines) + "\n"


def per_keypoint_report(coco_gt: COCO,
                        results: Sequence[Result],
                        oks_sigmas: Sequence[float],
                        keypoint_names: Sequence[str],
                        image_ids: Optional[Sequence[int]] = None,
                        oks_threshold: float = 0.5) -> PerKeypointReport:
  """The per-type OKS terms and confidences of the detections matched at `oks_threshold`."""
  sigmas = np.asarray(oks_sigmas, np.float64)
  if len(sigmas) != len(keypoint_names):
    raise ValueError(f"{len(sigmas)} OKS sigmas for {len(keypoint_names)} keypoint names")
  image_ids = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
  evaluated = set(image_ids)
  detections = [d for d in _detections_for(results, KEYPOINTS) if d["image_id"] in evaluated]
  coco_dt = _load_detections(coco_gt, detections)
  evaluator = COCOeval(coco_gt, coco_dt, KEYPOINTS)
  evaluator.params.catIds = [PERSON_CATEGORY_ID]
  evaluator.params.imgIds = image_ids
  evaluator.params.kpt_oks_sigmas = sigmas
  thresholds = np.asarray(evaluator.params.iouThrs)
  matches = np.flatnonzero(np.isclose(thresholds, oks_threshold))
  if not matches.size:
    raise ValueError(f"oks_threshold must be one of COCOeval's {thresholds.tolist()}")
  with _captured_stdout():
    evaluator.evaluate()

  num_types = len(sigmas)
  oks_sum, confidence_sum = np.zeros(num_types), np.zeros(num_types)
  count = np.zeros(num_types, np.int64)
  variances = (2.0 * sigmas) ** 2
  pairs = 0
  # evalImgs is ordered category, area range, image: the first len(image_ids) are area 'all'.
  for image_eval in evaluator.evalImgs[:len(image_ids)]:
    if image_eval is None:
      continue
    for dt_id, gt_id, ignored in zip(image_eval["dtIds"], image_eval["dtMatches"][matches[0]],
                                     image_eval["dtIgnore"][matches[0]]):
      if gt_id <= 0 or ignored:
        continue
      gt = coco_gt.anns[int(gt_id)]
      truth = np.asarray(gt["keypoints"], np.float64).reshape(-1, 3)
      found = np.asarray(coco_dt.anns[dt_id]["keypoints"], np.float64).reshape(-1, 3)
      labelled = truth[:, 2] > 0
      squared = np.sum((found[:, :2] - truth[:, :2]) ** 2, axis=-1)
      term = np.exp(-squared / variances / (gt["area"] + np.spacing(1)) / 2.0)
      oks_sum += np.where(labelled, term, 0.0)
      confidence_sum += np.where(labelled, found[:, 2], 0.0)
      count += labelled
      pairs += 1
  with np.errstate(invalid="ignore", divide="ignore"):
    return PerKeypointReport(tuple(keypoint_names), count, oks_sum / count,
                             confidence_sum / count, oks_threshold, pairs)

