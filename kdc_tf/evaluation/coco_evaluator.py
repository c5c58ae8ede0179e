"""pycocotools COCOeval for people: keypoint OKS AP and mask AP, person category only.

Keypoint and mask results are loaded separately: `COCO.loadRes` picks its branch from the first
result's fields, and with a `segmentation` present it would take each detection's `area` (which
COCOeval uses for the area ranges) from its mask instead of from its keypoints' extent, as the
standard keypoint evaluation does. Masks are ranked by a result's `mask_score` where it has one
(the grouping's mask ranking, `kdc_tf.grouping.scoring`), keypoints by its `score`.

pycocotools' keypoint evaluation scales OKS by each ground-truth `area` and also uses it for the
medium / large ranges. COCO stores the mask area there; OCHuman's COCO-format files store the
bbox area (so its OKS is more lenient and APm / APl split by box size); CrowdPose has none, and
`crowdpose_evaluator` sets it to `0.53 * w * h` of the box. Crowd annotations (`iscrowd`) and, for
keypoints, people with no labelled keypoint are ignored by COCOeval itself.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kdc_tf.evaluation.results import PERSON_CATEGORY_ID, Result, validate_results

KEYPOINTS = "keypoints"
SEGM = "segm"
# COCOeval.stats, in its summarize() order.
STAT_NAMES = {
    KEYPOINTS: ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
    SEGM: ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
           "ARl"),
}


@dataclasses.dataclass
class EvaluationReport:
  """Named COCOeval stats per iouType and the printed AP/AR table.

  `stats[iou_type][name]`, e.g. `stats['keypoints']['AP']`; -1 where pycocotools finds the
  figure undefined (no ground truth in the evaluated images or band).
  """

  stats: Dict[str, Dict[str, float]]
  table: str

  def summary_line(self) -> str:
    """`keypoints_AP=<x> segm_AP=<y>`, segm omitted when masks were not evaluated."""
    parts = [f"{iou_type}_AP={self.stats[iou_type]['AP']:.3f}"
             for iou_type in (KEYPOINTS, SEGM) if iou_type in self.stats]
    return " ".join(parts)


@contextlib.contextmanager
def _captured_stdout():
  """pycocotools prints; keep its chatter out of the binaries' output."""
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    yield buffer


def coco_from_dataset(dataset: dict) -> COCO:
  """A pycocotools COCO index of an in-memory COCO-format dataset, quietly."""
  coco = COCO()
  coco.dataset = dataset
  with _captured_stdout():
    coco.createIndex()
  return coco


def ground_truth_has_masks(coco_gt: COCO) -> bool:
  """Whether the person annotations carry segmentations (COCO, OCHuman: yes; CrowdPose: no)."""
  return any(ann.get("segmentation") for ann in coco_gt.loadAnns(
      coco_gt.getAnnIds(catIds=[PERSON_CATEGORY_ID])))


def check_results(coco_gt: COCO, results: Sequence[Result], num_keypoints: int) -> List[Result]:
  """The results COCOeval can score (`results.validate_results`); ValueError for unsound ones."""
  sizes = {image["id"]: (image["height"], image["width"]) for image in coco_gt.dataset["images"]}
  return validate_results(results, sizes, num_keypoints)


def _load_detections(coco_gt: COCO, detections: List[Result]) -> COCO:
  """COCO.loadRes, also for an empty list (which loadRes cannot take)."""
  if detections:
    with _captured_stdout():
      return coco_gt.loadRes(detections)
  coco_dt = COCO()
  coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                     "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                     "annotations": []}
  with _captured_stdout():
    coco_dt.createIndex()
  return coco_dt


def _detections_for(results: Iterable[Result], iou_type: str) -> List[Result]:
  """Copies of the results with only the fields of one iouType (see the module docstring); masks
  ranked by their `mask_score` where a result has one (`results`), else by `score`."""
  field = KEYPOINTS if iou_type == KEYPOINTS else "segmentation"
  score = "score" if iou_type == KEYPOINTS else "mask_score"
  return [{"image_id": r["image_id"], "category_id": PERSON_CATEGORY_ID,
           "score": r.get(score, r["score"]), field: r[field]} for r in results if field in r]


def _count_scorable_ground_truth(coco_gt: COCO, image_ids: Sequence[int], iou_type: str) -> int:
  anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids, catIds=[PERSON_CATEGORY_ID]))
  return sum(1 for a in anns if not a.get("iscrowd", 0) and
             (iou_type != KEYPOINTS or a.get("num_keypoints", 0) > 0))


def run_cocoeval(coco_gt: COCO,
                 results: Sequence[Result],
                 iou_type: str,
                 oks_sigmas: Sequence[float],
                 image_ids: Optional[Sequence[int]] = None) -> Tuple[Dict[str, float], str]:
  """Runs COCOeval for one iouType on the person category.

  Args:
    coco_gt: the ground truth (already adjusted for the dataset, e.g. CrowdPose areas).
    results: COCO results dicts; those without the iouType's field are left out.
    iou_type: 'keypoints' or 'segm'.
    oks_sigmas: per-keypoint OKS sigmas (`DatasetSpec.oks_sigmas`).
    image_ids: images to evaluate; all of the ground truth's by default.

  Returns:
    (stats by name, the printed summary table).
  """
  if iou_type not in STAT_NAMES:
    raise ValueError(f"iou_type must be one of {sorted(STAT_NAMES)}, got {iou_type!r}")
  image_ids = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
  evaluated = set(image_ids)
  detections = [d for d in _detections_for(results, iou_type) if d["image_id"] in evaluated]
  if not detections:
    logging.warning("%s: no detections in the %d evaluated images: every AP and AR is 0.",
                    iou_type, len(image_ids))
  if not _count_scorable_ground_truth(coco_gt, image_ids, iou_type):
    logging.warning("%s: no ground-truth person to score in the %d evaluated images: AP and AR "
                    "are undefined (pycocotools reports -1).", iou_type, len(image_ids))

  evaluator = COCOeval(coco_gt, _load_detections(coco_gt, detections), iou_type)
  evaluator.params.catIds = [PERSON_CATEGORY_ID]
  evaluator.params.imgIds = image_ids
  if iou_type == KEYPOINTS:
    evaluator.params.kpt_oks_sigmas = np.asarray(oks_sigmas, dtype=np.float64)
  with _captured_stdout():
    evaluator.evaluate()
    evaluator.accumulate()
  with _captured_stdout() as table:
    evaluator.summarize()
  stats = dict(zip(STAT_NAMES[iou_type], (float(s) for s in evaluator.stats)))
  header = (f"{iou_type}: {len(image_ids)} images, {len(detections)} detections, "
            f"{len(oks_sigmas) if iou_type == KEYPOINTS else 'mask'} "
            f"{'keypoints' if iou_type == KEYPOINTS else 'IoU'}\n")
  return stats, header + table.getvalue()


def evaluate_coco(coco_gt: COCO,
                  results: Sequence[Result],
                  oks_sigmas: Sequence[float],
                  image_ids: Optional[Sequence[int]] = None) -> EvaluationReport:
  """Keypoint AP, and mask AP when both the ground truth and the results have masks."""
  results = check_results(coco_gt, results, len(oks_sigmas))
  iou_types = [KEYPOINTS]
  if not ground_truth_has_masks(coco_gt):
    logging.info("The annotations have no segmentation: mask AP is not evaluated.")
  elif results and not any("segmentation" in r for r in results):
    logging.info("The results have no segmentation: mask AP is not evaluated.")
  else:
    iou_types.append(SEGM)
  stats, tables = {}, []
  for iou_type in iou_types:
    stats[iou_type], table = run_cocoeval(coco_gt, results, iou_type, oks_sigmas, image_ids)
    tables.append(table)
  return EvaluationReport(stats=stats, table="\n".join(tables))

