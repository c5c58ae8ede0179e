"""CrowdPose keypoint evaluation on pycocotools.

The official crowdposetools (and xtcocotools) need numpy < 2, so CrowdPose's protocol is
rebuilt here on pycocotools: its 14 keypoints and sigmas (`kdc_tf.datasets.CROWDPOSE`), OKS area
= `0.53 * w * h` of the ground-truth box (written into each annotation's `area`, which pycocotools
uses for OKS and for the area ranges), no masks, and AP also per crowd-index band, by evaluating
the images of each band on their own. The bands are crowdposetools' (`get_type_result(first=0.2,
second=0.8)`, also in xtcocotools and mmpose): easy < 0.2, medium < 0.8, hard >= 0.8.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from absl import logging
from pycocotools.coco import COCO

from kdc_tf.datasets import CROWDPOSE
from kdc_tf.evaluation.coco_evaluator import KEYPOINTS, EvaluationReport, check_results
from kdc_tf.evaluation.coco_evaluator import run_cocoeval
from kdc_tf.evaluation.results import Result

OKS_AREA_FACTOR = 0.53
# Crowd-index bands of an image, as crowdposetools: easy < 0.2 <= medium < 0.8 <= hard.
EASY_BELOW = 0.2
HARD_FROM = 0.8
BAND_NAMES = ("easy", "medium", "hard")


def set_crowdpose_areas(coco_gt: COCO) -> None:
  """Sets every annotation's `area` to 0.53 * its box area, in place (CrowdPose's OKS scale)."""
  for ann in coco_gt.dataset["annotations"]:
    _, _, width, height = ann["bbox"]
    ann["area"] = OKS_AREA_FACTOR * width * height


def band_of(crowd_index: float) -> str:
  """The crowd-index band name of an image (crowdposetools' `get_type_result(0.2, 0.8)`)."""
  if crowd_index < EASY_BELOW:
    return "easy"
  return "medium" if crowd_index < HARD_FROM else "hard"


def crowd_index_bands(coco_gt: COCO,
                      image_ids: Optional[Sequence[int]] = None) -> Dict[str, List[int]]:
  """Image ids per crowd-index band; images without `crowdIndex` are logged and left out."""
  image_ids = coco_gt.getImgIds() if image_ids is None else image_ids
  bands: Dict[str, List[int]] = {name: [] for name in BAND_NAMES}
  missing = 0
  for image in coco_gt.loadImgs(image_ids):
    if "crowdIndex" not in image:
      missing += 1
      continue
    bands[band_of(float(image["crowdIndex"]))].append(image["id"])
  if missing:
    logging.warning("%d images have no crowdIndex and are in no crowd-index band.", missing)
  return bands


def evaluate_crowdpose(coco_gt: COCO,
                       results: Sequence[Result],
                       image_ids: Optional[Sequence[int]] = None) -> EvaluationReport:
  """Keypoint AP over all images and per crowd-index band (`AP_easy`, `AP_medium`, `AP_hard`).

  `coco_gt` must have gone through `set_crowdpose_areas`. A band with no image reports -1.
  """
  sigmas = CROWDPOSE.oks_sigmas
  results = check_results(coco_gt, results, len(sigmas))
  stats, table = run_cocoeval(coco_gt, results, KEYPOINTS, sigmas, image_ids)
  band_lines = []
  for name, band_ids in crowd_index_bands(coco_gt, image_ids).items():
    if band_ids:
      band_ap = run_cocoeval(coco_gt, results, KEYPOINTS, sigmas, band_ids)[0]["AP"]
    else:
      logging.info("CrowdPose band %r has no image: its AP is undefined (-1).", name)
      band_ap = -1.0
    stats[f"AP_{name}"] = band_ap
    band_lines.append(f" Average Precision  (AP) @[ IoU=0.50:0.95 | crowd index={name:>6s} | "
                      f"images={len(band_ids):>5d} ] = {band_ap:0.3f}")
  return EvaluationReport(stats={KEYPOINTS: stats}, table=table + "\n".join(band_lines) + "\n")
