"""Grouping outputs -> COCO results dicts, and the results JSON file.

One results dict per decoded person (ARCHITECTURE.md section 6): `image_id`, `category_id` 1,
`keypoints` as the flat `[x1, y1, s1, x2, ...]` list COCO expects (the third value of each
keypoint, a visibility flag in ground truth, carries the keypoint score: COCOeval ignores it in
detections), `score` the person score, and, when masks are given, `segmentation` as a compressed
RLE whose `counts` are a str so that the dict is JSON-serialisable, with `mask_score` (the
grouping's mask ranking, `kdc_tf.grouping.scoring`) when mask scores are given: the evaluation
ranks masks by it (`coco_evaluator`), keypoints by `score`.

A person whose keypoint scores are all 0 has no pose (the grouping's mask-only people,
`kdc_tf.grouping.mask_only`): its result has no `keypoints` field, so that the evaluation scores it
for masks only (`coco_evaluator` gives each iouType the results that carry its field) and it cannot
be a keypoint false positive; without masks it gives no result at all.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from pycocotools import mask as mask_utils

from kdc_tf.coco_format import valid_rle
from kdc_tf.io_utils import atomic_write_json, load_json

PERSON_CATEGORY_ID = 1

Result = Dict[str, Any]


def encode_masks(masks: np.ndarray) -> List[Dict[str, Any]]:
  """Encodes 0/1 masks `[N, H, W]` as compressed RLEs with str counts (JSON-ready)."""
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
  if masks.shape[0] == 0:
    return []
  # pycocotools wants a Fortran-ordered uint8 [H, W, N] array.
  rles = mask_utils.encode(np.asfortranarray((masks > 0).astype(np.uint8).transpose(1, 2, 0)))
  for rle in rles:
    rle["counts"] = rle["counts"].decode("ascii")
  return rles


def decode_segmentation(rle: Dict[str, Any]) -> np.ndarray:
  """Decodes one results `segmentation` (str or bytes counts) to a uint8 `[H, W]` mask."""
  counts = rle["counts"]
  rle = {"size": list(rle["size"]),
         "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  return mask_utils.decode(rle)


def grouping_to_results(image_id: int,
                        keypoints: np.ndarray,
                        scores: np.ndarray,
                        num_people: int,
                        masks: Optional[np.ndarray] = None,
                        mask_scores: Optional[np.ndarray] = None) -> List[Result]:
  """Converts one image's grouping output (ARCHITECTURE.md section 5) to COCO results dicts.

  Args:
    image_id: the dataset image id.
    keypoints: `[N, K, 3]` `(x, y, score)` in original-image pixels.
    scores: `[N]` person scores (the mean keypoint score; never a constant).
    num_people: valid slots, which come first.
    masks: optional `[N, H, W]` 0/1 masks at the original image size; None for pose-only results.
    mask_scores: optional `[N]` mask scores, written as `mask_score` beside each segmentation.

  Returns:
    Results dicts in slot order: one per valid person, except people with no keypoint score above
    0 (mask-only people), which give a `segmentation`-only result when `masks` is given and none
    otherwise.
  """
  keypoints = np.asarray(keypoints, dtype=np.float64)
  scores = np.asarray(scores, dtype=np.float64)
  num_people = int(num_people)
  if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
    raise ValueError(f"keypoints must be [N, K, 3], got shape {keypoints.shape}")
  if scores.shape != keypoints.shape[:1]:
    raise ValueError(f"scores shape {scores.shape} does not match keypoints {keypoints.shape}")
  if not 0 <= num_people <= keypoints.shape[0]:
    raise ValueError(f"num_people {num_people} outside [0, {keypoints.shape[0]}]")
  if not np.all(np.isfinite(keypoints[:num_people])) or not np.all(
      np.isfinite(scores[:num_people])):
    raise ValueError(f"image {image_id}: non-finite keypoints or scores in the grouping output")

  segmentations = None
  if masks is not None:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] != keypoints.shape[0]:
      raise ValueError(f"masks must be [N, H, W] with N = {keypoints.shape[0]}, "
                       f"got shape {masks.shape}")
    segmentations = encode_masks(masks[:num_people])
  if mask_scores is not None:
    mask_scores = np.asarray(mask_scores, dtype=np.float64)
    if mask_scores.shape != scores.shape or not np.all(np.isfinite(mask_scores[:num_people])):
      raise ValueError(f"image {image_id}: mask_scores must be finite and shaped as scores "
                       f"{scores.shape}, got {mask_scores.shape}")

  has_pose = np.any(keypoints[:num_people, :, 2] > 0, axis=1)
  results = []
  for j in range(num_people):
    if not has_pose[j] and segmentations is None:
      continue
    result = {"image_id": int(image_id), "category_id": PERSON_CATEGORY_ID}
    if has_pose[j]:
      result["keypoints"] = [round(float(v), 3) for v in keypoints[j].reshape(-1)]
    result["score"] = float(scores[j])
    if segmentations is not None:
      result["segmentation"] = segmentations[j]
      if mask_scores is not None:
        result["mask_score"] = float(mask_scores[j])
    results.append(result)
  return results


def write_results(path: str, results: Sequence[Result]) -> None:
  """Writes results dicts as the COCO results JSON list, atomically (never a partial file)."""
  atomic_write_json(path, list(results))
  logging.info("Wrote %d results to %s", len(results), path)


def read_results(path: str) -> List[Result]:
  """Reads a COCO results JSON file, checking that it is a list of detections."""
  results = load_json(path)
  if not isinstance(results, list):
    raise ValueError(f"{path}: a COCO results file is a JSON list of detections, "
                     f"got {type(results).__name__}")
  for i, result in enumerate(results):
    if not isinstance(result, dict) or "image_id" not in result or "score" not in result:
      raise ValueError(f"{path}: entry {i} is not a detection with image_id and score")
  return results


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _entry_problem(result: Any, image_sizes: Mapping[int, Tuple[int, int]],
                   num_keypoints: int) -> Optional[str]:
  """Why COCOeval would reject or mis-score one results entry; None if it is sound."""
  if not isinstance(result, dict):
    return f"is a {type(result).__name__}, not a detection dict"
  image_id = result.get("image_id")
  if not isinstance(image_id, numbers.Integral) or isinstance(image_id, bool):
    return f"has image_id {image_id!r}, not an integer"
  if image_id not in image_sizes:
    return f"has image_id {image_id}, which is not in the annotations (wrong --annotations file?)"
  category = result.get("category_id", PERSON_CATEGORY_ID)
  if category != PERSON_CATEGORY_ID:
    return (f"has category_id {category!r}; only people (category {PERSON_CATEGORY_ID}) are "
            "evaluated")
  score = result.get("score")
  if not _is_real(score) or not math.isfinite(score):
    return f"has score {score!r}, not a finite number"
  if "mask_score" in result:
    mask_score = result["mask_score"]
    if not _is_real(mask_score) or not math.isfinite(mask_score):
      return f"has mask_score {mask_score!r}, not a finite number"
  if "keypoints" in result:
    keypoints = result["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
      count = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
      return f"has {count} keypoint values; expected a list of 3 * {num_keypoints}"
    if not all(_is_real(v) and math.isfinite(v) for v in keypoints):
      return "has non-finite or non-numeric keypoint values"
  if "segmentation" in result:
    rle, (height, width) = result["segmentation"], image_sizes[image_id]
    if not isinstance(rle, dict) or not valid_rle(rle, height, width):
      size = rle.get("size") if isinstance(rle, dict) else type(rle).__name__
      return (f"has a segmentation that is not a valid RLE of its image's size "
              f"[{height}, {width}] (size {size})")
  return None


def validate_results(results: Sequence[Any], image_sizes: Mapping[int, Tuple[int, int]],
                     num_keypoints: int) -> List[Result]:
  """The results COCOeval can score; raises ValueError naming the first unsound entry.

  Non-finite numbers, non-numeric scores, wrong keypoint counts, unknown image ids and RLEs whose
  size or runs do not match the image are errors (pycocotools would score them, e.g. a NaN
  keypoint as a perfect match, or crash). An entry with neither `keypoints` nor `segmentation`
  cannot be scored at all: it is left out, counted and logged.

  Args:
    results: COCO results dicts.
    image_sizes: `{image_id: (height, width)}` of the ground truth.
    num_keypoints: K of the dataset.
  """
  kept, unscorable = [], []
  for i, result in enumerate(results):
    problem = _entry_problem(result, image_sizes, num_keypoints)
    if problem is not None:
      raise ValueError(f"results entry {i} {problem}: {str(result)[:120]}")
    if "keypoints" in result or "segmentation" in result:
      kept.append(result)
    else:
      unscorable.append(i)
  if unscorable:
    logging.warning("%d results entries have neither keypoints nor segmentation and are left out "
                    "(entries %s%s)", len(unscorable), unscorable[:5],
                    " ..." if len(unscorable) > 5 else "")
  return kept
