"""The checked reading of COCO-format person keypoint files, shared by training and evaluation.

`clean_coco_dataset` is the one path every reader takes: the TFRecord writer
(`data_pipeline.annotations.read_annotations`) and the evaluator / oracle
(`kdc_tf.evaluation.ground_truth`) keep exactly the same people. It lives in kdc_tf so that
evaluation does not import the data pipeline. Bad input is fixed or skipped, never passed on
silently; every case is counted by reason in a `SkipCounter` whose summary is logged:
  - a duplicate image id keeps the file's first entry (pycocotools would keep the last); a
    duplicate annotation id keeps the first annotation; an annotation without an integer id or
    image_id is skipped; a missing 'images' or 'annotations' list is an error naming the file;
  - a person without a `keypoints` field is read as unlabelled; a missing or invalid `bbox` or
    `area` is derived from the segmentation (else the labelled keypoints);
  - a labelled keypoint outside the image (x, y not in [0, W - 1] x [0, H - 1], the same range the
    augmentation uses) is set unlabelled (v = x = y = 0) and counted; the person is kept;
  - a polygon part with < 3 points or zero area is dropped (pycocotools would read a 4-number
    polygon as a box) and counted; a person left with no usable segmentation is skipped;
  - a person with the wrong keypoint count, non-finite keypoints or v outside {0, 1, 2} is skipped
    (when every person has the wrong count, the file is refused: wrong --dataset);
  - an RLE whose size is not the image's, or whose runs do not cover it exactly, is unusable;
  - a skipped person's region (its usable segmentation, else its bbox) joins the image's ignore
    regions, so the losses never learn a real person as background.
"""

from __future__ import annotations

import collections
import enum
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from pycocotools import mask as mask_utils

from kdc_tf.datasets import get_dataset_spec
from kdc_tf.io_utils import load_json

PERSON_CATEGORY_ID = 1

# Raw COCO segmentation: a list of flat polygons [x0, y0, x1, y1, ...] or an RLE dict
# {"size": [h, w], "counts": list of ints (uncompressed) or str (compressed)}.
Segmentation = Any

DATASETS_WITH_MASKS = {"coco": True, "ochuman": True, "crowdpose": False}


class SkipReason(str, enum.Enum):
  """Why an image, a person or a part of an annotation was skipped or fixed."""

  UNKNOWN_IMAGE = "annotation of an unknown image id"
  NOT_A_PERSON = "annotation of a non-person category"
  WRONG_KEYPOINT_COUNT = "person with the wrong keypoint count (skipped, region ignored)"
  INVALID_KEYPOINTS = "person with non-finite keypoints or v not in {0,1,2} (skipped, ignored)"
  KEYPOINT_OUTSIDE_IMAGE = "labelled keypoint outside the image (set unlabelled)"
  DEGENERATE_POLYGON = "polygon part with < 3 points or zero area (dropped)"
  BAD_SEGMENTATION = "person without a usable segmentation (skipped, region ignored)"
  BAD_CROWD_REGION = "crowd region without a usable segmentation (bbox used if valid)"
  MALFORMED_IMAGE_ENTRY = "image entry with an invalid id, file_name, height or width"
  DUPLICATE_IMAGE_ID = "image entry with the id of an earlier entry (the first entry kept)"
  MALFORMED_ANNOTATION = "annotation without an integer id or image_id"
  DUPLICATE_ANNOTATION_ID = "annotation with the id of an earlier annotation (skipped)"
  NO_KEYPOINTS_FIELD = "person without a keypoints field (read as unlabelled)"
  NO_EXTENT = "annotation with no usable bbox, segmentation or labelled keypoint (skipped)"
  MISSING_IMAGE = "missing image file"
  CORRUPT_IMAGE = "image TF cannot decode"
  IMAGE_SIZE_MISMATCH = "image size differs from the annotation"
  NO_PEOPLE = "image without people (not in COCOPersons; negatives not kept)"


class SkipCounter:
  """Counts skipped or fixed items by reason, keeping a few examples of each for the log."""

  def __init__(self, max_examples: int = 3):
    self.counts: collections.Counter = collections.Counter()
    self.examples: Dict[SkipReason, List[str]] = collections.defaultdict(list)
    self._max_examples = max_examples

  def add(self, reason: SkipReason, example: str = "", count: int = 1) -> None:
    self.counts[reason] += count
    if example and len(self.examples[reason]) < self._max_examples:
      self.examples[reason].append(example)

  def __getitem__(self, reason: SkipReason) -> int:
    return self.counts[reason]

  def total(self) -> int:
    return sum(self.counts.values())

  def as_dict(self) -> Dict[str, int]:
    return {reason.name: n for reason, n in sorted(self.counts.items())}

  def summary(self) -> str:
    if not self.counts:
      return "nothing skipped"
    lines = []
    for reason, n in self.counts.most_common():
      examples = "; ".join(self.examples.get(reason, []))
      lines.append(f"{n:8d}  {reason.value}" + (f"  (e.g. {examples})" if examples else ""))
    return "\n".join(lines)

  def log(self, what: str) -> None:
    logging.info("%s: %d skipped or fixed\n%s", what, self.total(), self.summary())


def clean_coco_dataset(data: Any, dataset: str, source: str, skips: SkipCounter,
                       images_dir: Optional[str] = None) -> Dict[str, Any]:
  """The part of a COCO-format file every reader keeps, with the module's policy applied.

  Returns `{"images", "annotations", "categories"}` in COCO form: image entries as given (first
  entry of a duplicate id; with `images_dir`, only those whose file exists); annotations are
  copies with category 1, cleaned keypoints and `num_keypoints`, cleaned segmentation (dropped for
  datasets without masks), a valid `bbox` and `area`; an unusable person becomes an `iscrowd`
  ignore region. The TFRecord writer and the evaluator both read ground truth through here.
  """
  if not isinstance(data, dict):
    raise ValueError(f"{source}: not a COCO-format file (a JSON object with 'images' and "
                     f"'annotations' lists), got a JSON {type(data).__name__}")
  for key in ("images", "annotations"):
    if not isinstance(data.get(key), list):
      raise ValueError(f"{source}: not a COCO-format file (no {key!r} list)")
  spec = get_dataset_spec(dataset)
  has_masks = DATASETS_WITH_MASKS[dataset.lower()]
  person_categories = _person_category_ids(data.get("categories"), source)
  images: Dict[int, dict] = {}
  known_image_ids = set()
  for entry in data["images"]:
    image = _clean_image_entry(entry, skips)
    if image is None:
      continue
    known_image_ids.add(image["id"])
    if image["id"] in images:
      skips.add(SkipReason.DUPLICATE_IMAGE_ID, f"image {image['id']} (first entry kept)")
    elif images_dir is not None and not os.path.isfile(
        os.path.join(images_dir, image["file_name"])):
      skips.add(SkipReason.MISSING_IMAGE, os.path.join(images_dir, image["file_name"]))
    else:
      images[image["id"]] = image
  annotations, annotation_ids = [], set()
  num_people = num_wrong_count = 0
  for ann in data["annotations"]:
    try:
      ann_id, image_id = _as_int(ann["id"]), _as_int(ann["image_id"])
    except (KeyError, TypeError, ValueError):
      skips.add(SkipReason.MALFORMED_ANNOTATION, str(ann)[:80])
      continue
    if image_id not in known_image_ids:
      skips.add(SkipReason.UNKNOWN_IMAGE, f"annotation {ann_id}")
      continue
    if person_categories is not None and ann.get("category_id") not in person_categories:
      skips.add(SkipReason.NOT_A_PERSON, f"annotation {ann_id}")
      continue
    if ann_id in annotation_ids:
      skips.add(SkipReason.DUPLICATE_ANNOTATION_ID, f"annotation {ann_id} (first kept)")
      continue
    annotation_ids.add(ann_id)
    if image_id not in images:  # The image itself was skipped and counted.
      continue
    if not ann.get("iscrowd"):
      num_people += 1
      num_wrong_count += _has_wrong_keypoint_count(ann, spec.num_keypoints)
    cleaned = _clean_annotation(dict(ann, id=ann_id, image_id=image_id), images[image_id],
                                spec.num_keypoints, has_masks, skips)
    if cleaned is not None:
      annotations.append(cleaned)
  if num_wrong_count and num_wrong_count == num_people:
    raise ValueError(f"{source}: every person has a keypoint count other than {dataset}'s "
                     f"{spec.num_keypoints} keypoints; wrong --dataset?")
  category = {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person",
              "keypoints": list(spec.keypoint_names)}
  return {"images": list(images.values()), "annotations": annotations, "categories": [category]}


def image_ids_by_file_name(annotations_path: str) -> Dict[str, int]:
  """`{file name: image id}` of an annotation file's images (base names), so that predictions on
  its photos carry its ids; a base name listed twice with different ids is an error."""
  data = load_json(annotations_path)
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise ValueError(f"{annotations_path}: not a COCO-format file (no 'images' list)")
  skips = SkipCounter()
  ids: Dict[str, int] = {}
  for entry in data["images"]:
    image = _clean_image_entry(entry, skips)
    if image is None:
      continue
    name = os.path.basename(image["file_name"])
    if ids.setdefault(name, image["id"]) != image["id"]:
      raise ValueError(f"{annotations_path}: file name {name} has ids {ids[name]} and "
                       f"{image['id']}")
  if skips.total():
    skips.log(annotations_path)
  return ids


def _as_int(value: Any) -> int:
  """An integer id (ints, or floats / strings holding one); raises TypeError or ValueError."""
  if isinstance(value, bool):
    raise TypeError("a boolean is not an id")
  number = float(value) if isinstance(value, str) else value
  if isinstance(number, float) and not number.is_integer():
    raise ValueError(f"{value!r} is not an integer id")
  return int(number)


def _person_category_ids(categories: Optional[Sequence[dict]], path: str) -> Optional[set]:
  """Ids of the 'person' categories; None (accept all) when the file lists no categories."""
  if not categories:
    return None
  ids = {c.get("id") for c in categories if isinstance(c, dict) and c.get("name") == "person"}
  if not ids:
    raise ValueError(f"{path}: no 'person' category among "
                     f"{[c.get('name') for c in categories if isinstance(c, dict)]}")
  return ids


def _clean_image_entry(entry: Any, skips: SkipCounter) -> Optional[dict]:
  """A copy of an image entry with int id, height, width and a str file_name; else None."""
  try:
    image_id, file_name = _as_int(entry["id"]), str(entry["file_name"])
    height, width = _as_int(entry["height"]), _as_int(entry["width"])
  except (KeyError, TypeError, ValueError):
    skips.add(SkipReason.MALFORMED_IMAGE_ENTRY, str(entry)[:80])
    return None
  if height <= 0 or width <= 0:
    skips.add(SkipReason.MALFORMED_IMAGE_ENTRY, f"image {image_id}: size {height}x{width}")
    return None
  return dict(entry, id=image_id, file_name=file_name, height=height, width=width)


def _has_wrong_keypoint_count(ann: dict, num_keypoints: int) -> bool:
  raw = ann.get("keypoints")
  return isinstance(raw, list) and len(raw) != 3 * num_keypoints


def _clean_annotation(ann: dict, image: dict, num_keypoints: int, has_masks: bool,
                      skips: SkipCounter) -> Optional[dict]:
  """The annotation as kept (a person or an ignore region), or None; counts every fix or skip."""
  name = f"annotation {ann['id']} of image {image['id']}"
  h, w = image["height"], image["width"]
  ann["category_id"] = PERSON_CATEGORY_ID
  segmentation = None
  if has_masks or ann.get("iscrowd"):
    segmentation, degenerate_parts = _clean_segmentation(ann.get("segmentation"), h, w)
    if degenerate_parts:
      skips.add(SkipReason.DEGENERATE_POLYGON, name, degenerate_parts)
  if ann.get("iscrowd"):
    region = segmentation if segmentation is not None else bbox_polygon(ann.get("bbox"))
    if segmentation is None:
      skips.add(SkipReason.BAD_CROWD_REGION, name)
    return None if region is None else _as_ignore_region(ann, region, num_keypoints, h, w, skips)
  if ann.get("keypoints") is None:
    skips.add(SkipReason.NO_KEYPOINTS_FIELD, name)
    ann["keypoints"] = [0] * (3 * num_keypoints)
  keypoints, problem = _clean_keypoints(ann["keypoints"], num_keypoints, h, w)
  if problem is None and has_masks and segmentation is None:
    problem = SkipReason.BAD_SEGMENTATION
  if problem is not None:
    skips.add(problem, name)
    region = segmentation if segmentation is not None else bbox_polygon(ann.get("bbox"))
    return None if region is None else _as_ignore_region(ann, region, num_keypoints, h, w, skips)
  outside = int(np.sum((keypoints[:, 2] == 0) & (np.asarray(ann["keypoints"])[2::3] > 0)))
  if outside:
    skips.add(SkipReason.KEYPOINT_OUTSIDE_IMAGE, name, outside)
  ann["iscrowd"] = 0
  ann["keypoints"] = [float(v) if i % 3 < 2 else int(v)
                      for i, v in enumerate(keypoints.reshape(-1))]
  ann["num_keypoints"] = int(np.sum(keypoints[:, 2] > 0))
  if segmentation is None:
    ann.pop("segmentation", None)
  else:
    ann["segmentation"] = segmentation
  if not _fix_bbox_and_area(ann, keypoints, h, w):
    skips.add(SkipReason.NO_EXTENT, name)
    return None
  return ann


def _as_ignore_region(ann: dict, region: Segmentation, num_keypoints: int, height: int,
                      width: int, skips: SkipCounter) -> Optional[dict]:
  """`ann` as an iscrowd region covering `region` (evaluation and losses ignore it)."""
  ann.update(iscrowd=1, segmentation=region, keypoints=[0] * (3 * num_keypoints),
             num_keypoints=0)
  if not _fix_bbox_and_area(ann, np.zeros((0, 3)), height, width):
    skips.add(SkipReason.NO_EXTENT, f"annotation {ann['id']} of image {ann['image_id']}")
    return None
  return ann


def _fix_bbox_and_area(ann: dict, keypoints: np.ndarray, height: int, width: int) -> bool:
  """Fills a missing or invalid `bbox` / `area` from the segmentation, else the labelled keypoints
  (COCOeval reads both); False if the person has no extent at all. A valid `area` is kept as is:
  it is the dataset's OKS scale (OCHuman stores the bbox area there)."""
  segmentation = ann.get("segmentation")
  rle = None
  if not _valid_box(ann.get("bbox")):
    if segmentation is not None:
      rle = _to_rle(segmentation, height, width)
      ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    else:
      labelled = keypoints[keypoints[:, 2] > 0, :2]
      if not len(labelled):
        return False
      x0, y0 = labelled.min(axis=0)
      x1, y1 = labelled.max(axis=0)
      ann["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
  else:
    ann["bbox"] = [float(v) for v in ann["bbox"]]
  area = ann.get("area")
  if (isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area)
      or area < 0):
    if segmentation is not None:
      rle = rle if rle is not None else _to_rle(segmentation, height, width)
      ann["area"] = float(mask_utils.area(rle))
    else:
      ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
  return True


def _valid_box(bbox: Any) -> bool:
  try:
    values = [float(v) for v in bbox]
  except (TypeError, ValueError):
    return False
  return len(values) == 4 and all(math.isfinite(v) for v in values) and min(values[2:]) >= 0


def _to_rle(segmentation: Segmentation, height: int, width: int) -> dict:
  if isinstance(segmentation, dict):
    if isinstance(segmentation["counts"], list):
      return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))


def _clean_keypoints(raw: Any, num_keypoints: int, height: int,
                     width: int) -> Tuple[np.ndarray, Optional[SkipReason]]:
  """float32 [K, 3] with outside-image keypoints unlabelled; or why the person is unusable."""
  try:
    values = np.asarray(raw, np.float64)
  except (TypeError, ValueError):
    return np.zeros((0, 3), np.float32), SkipReason.INVALID_KEYPOINTS
  if values.ndim != 1 or values.size != 3 * num_keypoints:
    return np.zeros((0, 3), np.float32), SkipReason.WRONG_KEYPOINT_COUNT
  keypoints = values.reshape(num_keypoints, 3)
  if not np.all(np.isfinite(keypoints)) or not np.all(np.isin(keypoints[:, 2], (0, 1, 2))):
    return np.zeros((0, 3), np.float32), SkipReason.INVALID_KEYPOINTS
  x, y = keypoints[:, 0], keypoints[:, 1]
  inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
  keypoints[~inside, 2] = 0
  keypoints[keypoints[:, 2] == 0] = 0
  return keypoints.astype(np.float32), None


def _clean_segmentation(raw: Any, height: int, width: int) -> Tuple[Optional[Segmentation], int]:
  """(usable segmentation or None, number of degenerate polygon parts dropped)."""
  if isinstance(raw, dict):
    return (raw if valid_rle(raw, height, width) else None), 0
  if not isinstance(raw, list):
    return None, 0
  polygons, degenerate = [], 0
  for part in raw:
    if _valid_polygon(part):
      polygons.append([float(v) for v in part])
    else:
      degenerate += 1
  return (polygons or None), degenerate


def _valid_polygon(part: Any) -> bool:
  try:
    xy = np.asarray(part, np.float64)
  except (TypeError, ValueError):
    return False
  if xy.ndim != 1 or xy.size < 6 or xy.size % 2 or not np.all(np.isfinite(xy)):
    return False
  x, y = xy[0::2], xy[1::2]
  return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0


def valid_rle(rle: dict, height: int, width: int) -> bool:
  """Checks size and that the runs cover the image exactly (pycocotools does not check bounds)."""
  size, counts = rle.get("size"), rle.get("counts")
  if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
    return False
  if isinstance(counts, list):
    runs = counts
  elif isinstance(counts, (str, bytes)):
    runs = _compressed_rle_runs(counts if isinstance(counts, str) else
                                counts.decode("ascii", errors="replace"))
    if runs is None:
      return False
  else:
    return False
  return all(isinstance(r, int) and r >= 0 for r in runs) and sum(runs) == height * width


def _compressed_rle_runs(counts: str) -> Optional[List[int]]:
  """Run lengths of a pycocotools compressed RLE string (its LEB128-like code), None if invalid."""
  runs: List[int] = []
  p = 0
  while p < len(counts):
    x, k, more = 0, 0, True
    while more:
      if p >= len(counts):
        return None
      c = ord(counts[p]) - 48
      if not 0 <= c < 64:
        return None
      x |= (c & 0x1F) << (5 * k)
      more = bool(c & 0x20)
      p += 1
      k += 1
      if not more and c & 0x10:
        x |= -1 << (5 * k)
    if len(runs) > 2:
      x += runs[-2]
    runs.append(x)
  return runs


def bbox_polygon(bbox: Any) -> Optional[List[List[float]]]:
  """A valid [x, y, w, h] box as a one-part polygon segmentation, else None."""
  try:
    x, y, w, h = (float(v) for v in bbox)
  except (TypeError, ValueError):
    return None
  if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
    return None
  return [[x, y, x + w, y, x + w, y + h, x, y + h]]
