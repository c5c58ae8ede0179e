"""Readers for COCO-format person keypoint datasets: COCO, CrowdPose and OCHuman.

Each reader returns one `ImageRecord` per image: its file, size, CrowdPose `crowdIndex`, the
non-crowd people (id, keypoints [K, 3], raw segmentation) and the ignore regions (iscrowd
segmentations). Masks are rasterised on demand with pycocotools (`rasterize_segmentation`), so
reading a large annotation file stays cheap. K comes from `kdc_tf.datasets.get_dataset_spec`.

Dataset differences:
  - COCO: polygons for people, RLE (usually uncompressed) for iscrowd regions.
  - CrowdPose: 14 keypoints, `crowdIndex` per image, no segmentation (`has_masks` false).
  - OCHuman (COCO-format files): compressed RLE; its `area` is the bbox area: `area` is never read.

Bad input is fixed or skipped, never passed on silently; every case is counted by reason in a
`SkipCounter` whose summary is logged:
  - a labelled keypoint outside the image (x, y not in [0, W - 1] x [0, H - 1], the same range the
    augmentation uses) is set unlabelled (v = x = y = 0) and counted; the person is kept;
  - a polygon part with < 3 points or zero area is dropped (pycocotools would read a 4-number
    polygon as a box) and counted; a person left with no usable segmentation is skipped;
  - a person with the wrong keypoint count, non-finite keypoints or v outside {0, 1, 2} is skipped;
  - a skipped person's region (its usable segmentation, else its bbox) joins the image's ignore
    regions, so the losses never learn a real person as background;
  - for datasets without masks (CrowdPose) the bbox of a person with no labelled keypoint also
    joins the ignore regions: the target encoder ignores such people through their masks, which
    are absent;
  - an image whose file is missing is skipped; `load_image_bytes` (used by the TFRecord writer, or
    `verify_images=True` here) also skips images TF cannot decode or whose size is not the JSON's;
  - images with no (non-crowd) person are kept as negatives by default, for their background signal
    (`keep_images_without_people=False` skips and counts them).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import math
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from pycocotools import mask as mask_utils
import tensorflow as tf

from kdc_tf.datasets import get_dataset_spec

# Raw COCO segmentation: a list of flat polygons [x0, y0, x1, y1, ...] or an RLE dict
# {"size": [h, w], "counts": list of ints (uncompressed) or str (compressed)}.
Segmentation = Any

_DATASETS_WITH_MASKS = {"coco": True, "ochuman": True, "crowdpose": False}


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
  MALFORMED_IMAGE_ENTRY = "image entry with a duplicate or invalid id, file_name, height or width"
  MISSING_IMAGE = "missing image file"
  CORRUPT_IMAGE = "image TF cannot decode"
  IMAGE_SIZE_MISMATCH = "image size differs from the annotation"
  NO_PEOPLE = "image without people (negatives not kept)"


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


@dataclasses.dataclass
class PersonRecord:
  """One non-crowd person. `segmentation` is cleaned raw COCO data, None without masks."""

  id: int
  keypoints: np.ndarray  # float32 [K, 3], (x, y, v); v = 0 means x = y = 0.
  segmentation: Optional[Segmentation]
  num_keypoints: int  # labelled keypoints (v > 0) after clean-up.


@dataclasses.dataclass
class ImageRecord:
  """One image and its people; masks are rasterised on demand."""

  image_id: int
  image_path: str
  height: int
  width: int
  has_masks: bool
  people: List[PersonRecord] = dataclasses.field(default_factory=list)
  # iscrowd regions plus the regions of skipped people: weigh 0 in the losses.
  crowd_segmentations: List[Segmentation] = dataclasses.field(default_factory=list)
  crowd_index: Optional[float] = None

  def instance_masks(self) -> np.ndarray:
    """uint8 [P, H, W] 0/1 person masks; zeros when the dataset has no masks."""
    masks = np.zeros((len(self.people), self.height, self.width), np.uint8)
    if self.has_masks:
      for i, person in enumerate(self.people):
        masks[i] = rasterize_segmentation(person.segmentation, self.height, self.width)
    return masks

  def crowd_mask(self) -> np.ndarray:
    """uint8 [H, W] 0/1 union of the ignore regions."""
    mask = np.zeros((self.height, self.width), np.uint8)
    for segmentation in self.crowd_segmentations:
      mask |= rasterize_segmentation(segmentation, self.height, self.width)
    return mask


@dataclasses.dataclass
class AnnotationSet:
  """What a reader returns: the kept images and the count of what it skipped or fixed."""

  dataset: str
  images: List[ImageRecord]
  skips: SkipCounter

  @property
  def num_people(self) -> int:
    return sum(len(image.people) for image in self.images)


class ImageError(Exception):
  """An image file that cannot be used; `reason` is the SkipReason to count."""

  def __init__(self, reason: SkipReason, detail: str):
    super().__init__(f"{reason.value}: {detail}")
    self.reason = reason


def rasterize_segmentation(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
  """uint8 [H, W] 0/1 mask of cleaned polygons, uncompressed or compressed RLE (pycocotools)."""
  if isinstance(segmentation, dict):
    if isinstance(segmentation["counts"], list):
      rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
      rle = segmentation
  else:
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  with warnings.catch_warnings():  # pycocotools 2.0.11 warns about numpy 2's copy keyword.
    warnings.simplefilter("ignore", DeprecationWarning)
    return mask_utils.decode(rle).astype(np.uint8)


def load_image_bytes(record: ImageRecord) -> bytes:
  """The encoded image file, checked to decode in TF at the annotated size; raises ImageError."""
  try:
    with open(record.image_path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise ImageError(SkipReason.MISSING_IMAGE, record.image_path) from None
  try:
    shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
  except tf.errors.OpError as e:
    raise ImageError(SkipReason.CORRUPT_IMAGE, f"{record.image_path}: {e.message}") from None
  if tuple(shape[:2]) != (record.height, record.width):
    raise ImageError(SkipReason.IMAGE_SIZE_MISMATCH,
                     f"{record.image_path}: {tuple(shape[:2])} vs annotated "
                     f"{(record.height, record.width)}")
  return data


def read_annotations(annotations_path: str, images_dir: str, dataset: str = "coco", *,
                     keep_images_without_people: bool = True,
                     verify_images: bool = False) -> AnnotationSet:
  """Reads a COCO-format person keypoint file ('coco', 'crowdpose' or 'ochuman').

  Args:
    annotations_path: the JSON file.
    images_dir: folder holding the images' `file_name`s.
    dataset: selects K (DatasetSpec) and whether segmentation is expected.
    keep_images_without_people: keep images with no non-crowd person as negatives.
    verify_images: also decode every image (slow on full datasets; the TFRecord writer decodes
      each image anyway and counts the failures itself).
  """
  spec = get_dataset_spec(dataset)
  has_masks = _DATASETS_WITH_MASKS[dataset.lower()]
  with open(annotations_path) as f:
    data = json.load(f)
  for key in ("images", "annotations"):
    if key not in data:
      raise ValueError(f"{annotations_path}: not a COCO-format file (no {key!r} list)")
  person_categories = _person_category_ids(data.get("categories"), annotations_path)
  skips = SkipCounter()
  records = {}
  for entry in data["images"]:
    record = _image_record(entry, images_dir, has_masks, skips)
    if record is not None and record.image_id in records:
      skips.add(SkipReason.MALFORMED_IMAGE_ENTRY, f"duplicate image id {record.image_id}")
    elif record is not None:
      records[record.image_id] = record
  known_image_ids = {entry.get("id") for entry in data["images"]}
  for ann in data["annotations"]:
    image_id = ann.get("image_id")
    if image_id not in known_image_ids:
      skips.add(SkipReason.UNKNOWN_IMAGE, f"annotation {ann.get('id')}")
      continue
    if person_categories is not None and ann.get("category_id") not in person_categories:
      skips.add(SkipReason.NOT_A_PERSON, f"annotation {ann.get('id')}")
      continue
    if image_id in records:  # Else the image itself was skipped and counted.
      _add_annotation(records[image_id], ann, spec.num_keypoints, skips)
  images = []
  for record in records.values():
    if not record.people and not keep_images_without_people:
      skips.add(SkipReason.NO_PEOPLE, f"image {record.image_id}")
      continue
    if verify_images:
      try:
        load_image_bytes(record)
      except ImageError as e:
        skips.add(e.reason, str(e))
        continue
    images.append(record)
  result = AnnotationSet(dataset=dataset, images=images, skips=skips)
  logging.info("%s: %d images, %d people (%s)", annotations_path, len(images), result.num_people,
               dataset)
  skips.log(annotations_path)
  return result


def read_coco(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """COCO person keypoints (17 keypoints, polygons and iscrowd RLE)."""
  return read_annotations(annotations_path, images_dir, "coco", **kwargs)


def read_crowdpose(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """CrowdPose (14 keypoints, crowdIndex per image, no segmentation)."""
  return read_annotations(annotations_path, images_dir, "crowdpose", **kwargs)


def read_ochuman(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """OCHuman COCO-format files (17 keypoints, compressed RLE; bbox-area `area`, unused)."""
  return read_annotations(annotations_path, images_dir, "ochuman", **kwargs)


def _person_category_ids(categories: Optional[Sequence[dict]], path: str) -> Optional[set]:
  """Ids of the 'person' categories; None (accept all) when the file lists no categories."""
  if not categories:
    return None
  ids = {c["id"] for c in categories if c.get("name") == "person"}
  if not ids:
    raise ValueError(f"{path}: no 'person' category among {[c.get('name') for c in categories]}")
  return ids


def _image_record(entry: dict, images_dir: str, has_masks: bool,
                  skips: SkipCounter) -> Optional[ImageRecord]:
  try:
    image_id, file_name = int(entry["id"]), str(entry["file_name"])
    height, width = int(entry["height"]), int(entry["width"])
  except (KeyError, TypeError, ValueError):
    skips.add(SkipReason.MALFORMED_IMAGE_ENTRY, str(entry)[:80])
    return None
  if height <= 0 or width <= 0:
    skips.add(SkipReason.MALFORMED_IMAGE_ENTRY, f"image {image_id}: size {height}x{width}")
    return None
  path = os.path.join(images_dir, file_name)
  if not os.path.isfile(path):
    skips.add(SkipReason.MISSING_IMAGE, path)
    return None
  crowd_index = entry.get("crowdIndex")
  return ImageRecord(image_id=image_id, image_path=path, height=height, width=width,
                     has_masks=has_masks,
                     crowd_index=None if crowd_index is None else float(crowd_index))


def _add_annotation(record: ImageRecord, ann: dict, num_keypoints: int,
                    skips: SkipCounter) -> None:
  """Adds one annotation to `record` as a person or an ignore region, counting any fix or skip."""
  name = f"annotation {ann.get('id')} of image {record.image_id}"
  h, w = record.height, record.width
  segmentation = None
  if record.has_masks or ann.get("iscrowd"):
    segmentation, degenerate_parts = _clean_segmentation(ann.get("segmentation"), h, w)
    if degenerate_parts:
      skips.add(SkipReason.DEGENERATE_POLYGON, name, degenerate_parts)
  if ann.get("iscrowd"):
    region = segmentation if segmentation is not None else _bbox_polygon(ann.get("bbox"))
    if segmentation is None:
      skips.add(SkipReason.BAD_CROWD_REGION, name)
    if region is not None:
      record.crowd_segmentations.append(region)
    return
  keypoints, problem = _clean_keypoints(ann.get("keypoints"), num_keypoints, h, w)
  if problem is None and record.has_masks and segmentation is None:
    problem = SkipReason.BAD_SEGMENTATION
  if problem is not None:
    skips.add(problem, name)
    region = segmentation if segmentation is not None else _bbox_polygon(ann.get("bbox"))
    if region is not None:
      record.crowd_segmentations.append(region)
    return
  outside = int(np.sum((keypoints[:, 2] == 0) & (np.asarray(ann["keypoints"])[2::3] > 0)))
  if outside:
    skips.add(SkipReason.KEYPOINT_OUTSIDE_IMAGE, name, outside)
  num_labelled = int(np.sum(keypoints[:, 2] > 0))
  if not record.has_masks and num_labelled == 0:
    region = _bbox_polygon(ann.get("bbox"))
    if region is not None:
      record.crowd_segmentations.append(region)
  record.people.append(PersonRecord(id=int(ann["id"]), keypoints=keypoints,
                                    segmentation=segmentation, num_keypoints=num_labelled))


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
    return (raw if _valid_rle(raw, height, width) else None), 0
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


def _valid_rle(rle: dict, height: int, width: int) -> bool:
  """Checks size and that the runs cover the image exactly (pycocotools does not check bounds)."""
  size, counts = rle.get("size"), rle.get("counts")
  if not isinstance(size, (list, tuple)) or [int(s) for s in size] != [height, width]:
    return False
  if isinstance(counts, list):
    runs = counts
  elif isinstance(counts, (str, bytes)):
    runs = _compressed_rle_runs(counts if isinstance(counts, str) else counts.decode("ascii"))
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


def _bbox_polygon(bbox: Any) -> Optional[List[List[float]]]:
  """A valid [x, y, w, h] box as a one-part polygon segmentation, else None."""
  try:
    x, y, w, h = (float(v) for v in bbox)
  except (TypeError, ValueError):
    return None
  if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
    return None
  return [[x, y, x + w, y, x + w, y + h, x, y + h]]
