"""How well the decoded people cover the true ones, by how much each true person overlaps another.

AP pools every person; this report splits the true people (non-crowd) into bands of MaxIoU, the
largest IoU of a person's box with another true person's box in the same image (Pose2Seg's measure
of occlusion; its OCHuman benchmark averages 0.67): separate (0), partly overlapping (below
`HEAVY_OVERLAP`) and heavily overlapping. Per band: how many people, the share found by some
detection of their image with OKS >= 0.5 (people with labelled keypoints) and the mean best OKS,
the share with a mask of IoU >= 0.5 and the mean best mask IoU. "Best" is over all detections of
the image whatever their score, so these are recall-type figures: a band that AP loses in shows
here as a low share, a loss in the ranking does not.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from kdc_tf.evaluation.results import Result

HEAVY_OVERLAP = 0.5
FOUND = 0.5  # OKS or mask IoU at which a true person counts as found (COCO's AP50 threshold)
BANDS = ("separate", "partly overlapping", "heavily overlapping")
_COLUMNS = ("true people (MaxIoU)", "people", "found by keypoints (OKS >= 0.5)", "mean best OKS",
            "found by masks (IoU >= 0.5)", "mean best mask IoU")
_RANGES = {BANDS[0]: "0", BANDS[1]: f"below {HEAVY_OVERLAP}", BANDS[2]: f">= {HEAVY_OVERLAP}"}


@dataclasses.dataclass
class BandRow:
  """One band's people and how well the detections cover them (NaN where nothing to measure)."""

  band: str
  people: int
  keypoint_people: int
  keypoints_found: float
  mean_best_oks: float
  mask_people: int
  masks_found: float
  mean_best_mask_iou: float


def max_box_ious(boxes: np.ndarray) -> np.ndarray:
  """`[N]`: per box `(x, y, w, h)` the largest IoU with another of the boxes (0 alone)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if len(boxes) < 2:
    return np.zeros(len(boxes))
  ious = np.asarray(mask_utils.iou(boxes.tolist(), boxes.tolist(), [0] * len(boxes)))
  np.fill_diagonal(ious, 0.0)
  return ious.max(axis=1)


def band_of(max_iou: float) -> str:
  """The band (`BANDS`) of a person whose box's largest IoU with another's is `max_iou`."""
  if max_iou <= 0.0:
    return BANDS[0]
  return BANDS[1] if max_iou < HEAVY_OVERLAP else BANDS[2]


def object_keypoint_similarity(truth: np.ndarray, area: float, detections: np.ndarray,
                               sigmas: Sequence[float]) -> np.ndarray:
  """`[D]` OKS of detections `[D, K, 3]` with one true person `[K, 3]`, as COCOeval computes it
  for a person with labelled keypoints (s^2 = the annotation's `area`)."""
  labelled = truth[:, 2] > 0
  variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
  squared = np.sum((detections[..., :2] - truth[:, :2]) ** 2, axis=-1)  # [D, K]
  terms = np.exp(-squared / variances / (area + np.spacing(1)) / 2.0)
  return terms[:, labelled].sum(axis=1) / labelled.sum()


def _mean(values: List[float]) -> float:
  return float(np.mean(values)) if values else float("nan")


def _share(values: List[float]) -> float:
  return float(np.mean(np.asarray(values) >= FOUND)) if values else float("nan")


def overlap_report(results: Sequence[Result], coco_gt: COCO, image_ids: Sequence[int],
                   oks_sigmas: Sequence[float]) -> List[BandRow]:
  """Per MaxIoU band: the true people of `image_ids` and their best OKS and mask IoU."""
  by_image: Dict[int, List[Result]] = {}
  for result in results:
    by_image.setdefault(result["image_id"], []).append(result)
  oks: Dict[str, List[float]] = {band: [] for band in BANDS}
  ious: Dict[str, List[float]] = {band: [] for band in BANDS}
  people = {band: 0 for band in BANDS}
  num_keypoints = len(oks_sigmas)
  for image_id in image_ids:
    truths = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
              if not a.get("iscrowd", 0)]
    if not truths:
      continue
    detections = by_image.get(image_id, [])
    poses = np.array([d["keypoints"] for d in detections if "keypoints" in d],
                     np.float64).reshape(-1, num_keypoints, 3)
    masks = [d["segmentation"] for d in detections if "segmentation" in d]
    max_ious = max_box_ious([a["bbox"] for a in truths])
    for truth, max_iou in zip(truths, max_ious):
      band = band_of(float(max_iou))
      people[band] += 1
      keypoints = np.asarray(truth.get("keypoints", []), np.float64).reshape(-1, 3)
      if len(keypoints) == num_keypoints and np.any(keypoints[:, 2] > 0):
        best = object_keypoint_similarity(keypoints, truth["area"], poses, oks_sigmas)
        oks[band].append(float(best.max()) if len(best) else 0.0)
      if truth.get("segmentation"):
        overlaps = mask_utils.iou(masks, [coco_gt.annToRLE(truth)], [0]) if masks else []
        ious[band].append(float(np.max(overlaps)) if len(overlaps) else 0.0)
  return [BandRow(band=band, people=people[band], keypoint_people=len(oks[band]),
                  keypoints_found=_share(oks[band]), mean_best_oks=_mean(oks[band]),
                  mask_people=len(ious[band]), masks_found=_share(ious[band]),
                  mean_best_mask_iou=_mean(ious[band]))
          for band in BANDS]


def _figure(value: float) -> str:
  return "-" if np.isnan(value) else f"{value:.3f}"


def to_markdown(rows: Sequence[BandRow]) -> str:
  """The report as a Markdown table, one line per band."""
  lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
  for row in rows:
    cells = [f"{row.band} ({_RANGES[row.band]})", str(row.people), _figure(row.keypoints_found),
             _figure(row.mean_best_oks), _figure(row.masks_found), _figure(row.mean_best_mask_iou)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
