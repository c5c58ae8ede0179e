"""Readers for COCO-format person keypoint datasets: COCO, CrowdPose and OCHuman.

Each reader returns one `ImageRecord` per image: its file, size, CrowdPose `crowdIndex`, the
non-crowd people (id, keypoints [K, 3], raw segmentation) and the ignore regions (iscrowd
segmentations). Masks are rasterised on demand with pycocotools (`rasterize_segmentation`), so
reading a large annotation file stays cheap. K comes from `kdc_tf.datasets.get_dataset_spec`.

Dataset differences:
  - COCO: polygons for people, RLE (usually uncompressed) for iscrowd regions.
  - CrowdPose: 14 keypoints, `crowdIndex` per image, no segmentation (`has_masks` false).
  - OCHuman (COCO-format files): compressed RLE; its `area` is the bbox area: `area` is never read.

Every reader goes through `kdc_tf.coco_format.clean_coco_dataset` (its docstring has the
policy for bad input; the evaluator reads ground truth through it too), and then:
  - for datasets without masks (CrowdPose) the bbox of a person with no labelled keypoint also
    joins the ignore regions: the target encoder ignores such people through their masks, which
    are absent;
  - an image whose file is missing is skipped; `load_image_bytes` (used by the TFRecord writer, or
    `verify_images=True` here) also skips images TF cannot decode or whose size is not the JSON's;
  - images with no (non-crowd) person are kept by this reader by default (evaluation reads every
    image); `keep_images_without_people=False` keeps the paper's COCOPersons training set
    (`select_images_with_people`: skipped images are counted). The TFRecord writer's default.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from pycocotools import mask as mask_utils
import tensorflow as tf

# SkipCounter, SkipReason and valid_rle are also read from here by the data pipeline's callers.
from kdc_tf.coco_format import (DATASETS_WITH_MASKS, Segmentation, SkipCounter,  # noqa: F401
                                SkipReason, bbox_polygon, clean_coco_dataset, valid_rle)
from kdc_tf.io_utils import load_json


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
  return _read_checked_image(record)[0]


def load_image(record: ImageRecord) -> tf.Tensor:
  """The decoded uint8 RGB image `[H, W, 3]`, checked like `load_image_bytes`."""
  return _read_checked_image(record)[1]


def _read_checked_image(record: ImageRecord) -> Tuple[bytes, tf.Tensor]:
  try:
    with open(record.image_path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise ImageError(SkipReason.MISSING_IMAGE, record.image_path) from None
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except tf.errors.OpError as e:
    raise ImageError(SkipReason.CORRUPT_IMAGE, f"{record.image_path}: {e.message}") from None
  if tuple(image.shape[:2]) != (record.height, record.width):
    raise ImageError(SkipReason.IMAGE_SIZE_MISMATCH,
                     f"{record.image_path}: {tuple(image.shape[:2])} vs annotated "
                     f"{(record.height, record.width)}")
  return data, image


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
  skips = SkipCounter()
  data = clean_coco_dataset(load_json(annotations_path), dataset, annotations_path, skips,
                            images_dir)
  has_masks = DATASETS_WITH_MASKS[dataset.lower()]
  records = {}
  for entry in data["images"]:
    crowd_index = entry.get("crowdIndex")
    records[entry["id"]] = ImageRecord(
        image_id=entry["id"], image_path=os.path.join(images_dir, entry["file_name"]),
        height=entry["height"], width=entry["width"], has_masks=has_masks,
        crowd_index=None if crowd_index is None else float(crowd_index))
  for ann in data["annotations"]:
    _add_annotation(records[ann["image_id"]], ann)
  kept = list(records.values())
  if not keep_images_without_people:
    kept = select_images_with_people(kept, skips)
  images = []
  for record in kept:
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


def select_images_with_people(records: Sequence[ImageRecord],
                              skips: SkipCounter) -> List[ImageRecord]:
  """The images with at least one non-crowd person: the paper's COCOPersons training set.

  About 46 % of COCO train2017's images have no person; the others' skips are counted.
  """
  kept = []
  for record in records:
    if record.people:
      kept.append(record)
    else:
      skips.add(SkipReason.NO_PEOPLE, f"image {record.image_id}")
  return kept


def read_coco(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """COCO person keypoints (17 keypoints, polygons and iscrowd RLE)."""
  return read_annotations(annotations_path, images_dir, "coco", **kwargs)


def read_crowdpose(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """CrowdPose (14 keypoints, crowdIndex per image, no segmentation)."""
  return read_annotations(annotations_path, images_dir, "crowdpose", **kwargs)


def read_ochuman(annotations_path: str, images_dir: str, **kwargs) -> AnnotationSet:
  """OCHuman COCO-format files (17 keypoints, compressed RLE; bbox-area `area`, unused)."""
  return read_annotations(annotations_path, images_dir, "ochuman", **kwargs)


def _add_annotation(record: ImageRecord, ann: dict) -> None:
  """Adds one cleaned annotation (`clean_coco_dataset`) to `record`: a person or an ignore
  region; for datasets without masks an unlabelled person's box is also ignored, since the target
  encoder ignores such people through their (absent) masks."""
  if ann["iscrowd"]:
    record.crowd_segmentations.append(ann["segmentation"])
    return
  keypoints = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
  if not record.has_masks and ann["num_keypoints"] == 0:
    record.crowd_segmentations.append(bbox_polygon(ann["bbox"]))
  record.people.append(PersonRecord(id=ann["id"], keypoints=keypoints,
                                    segmentation=ann.get("segmentation") if record.has_masks
                                    else None, num_keypoints=ann["num_keypoints"]))


