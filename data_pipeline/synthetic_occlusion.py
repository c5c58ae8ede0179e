"""OCHuman-like occlusion scenes: every person overlaps another with bbox IoU >= 0.5.

OCHuman (the benchmark behind KDC's occlusion claim) keeps only people who overlap another person
with bounding-box IoU >= 0.5. This module draws such scenes with the stick figures of
`data_pipeline.synthetic` and writes them in COCO format (OCHuman's conventions), so the oracle
runs them through its normal path (reader -> TFRecord example -> encoder -> grouping ->
pycocotools):

  - 2 to `MAX_PEOPLE` people in groups; each person after a group's first is placed against a
    person already in the group in one of three ways: in front of / behind them at the same place
    (`front_back`), hugging side by side (`side_by_side`), or a step behind, slightly smaller and
    higher in the image (`behind`); a placement is redrawn until its full-figure bbox IoU with
    that person is >= `MIN_IOU`;
  - people are drawn back to front; segmentation is the visible region, as compressed RLE (as
    OCHuman stores it);
  - keypoints: v = 2 on the person's own visible pixels; a keypoint hidden by someone in front is
    unlabelled (v = 0, x = y = 0) as in OCHuman, except with probability `OCCLUDED_LABELLED`
    where it is labelled but occluded (v = 1); keypoints outside the image and the face of people
    seen from the back are unlabelled;
  - `bbox` and `area` from pycocotools on the visible mask; a person whose visible area falls
    below `MIN_VISIBLE_AREA` pixels or who has fewer than `MIN_KEYPOINTS` labelled keypoints, or a
    scene in which someone no longer overlaps anyone with IoU >= `MIN_IOU` (visible-mask bboxes),
    is redrawn.
Images are the plain textured backgrounds of `synthetic` with the figures painted in (the oracle
never looks at them). Deterministic for a seed: image i is drawn from numpy's Generator seeded by
(seed, i).
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np
from absl import logging
from pycocotools import mask as mask_utils

from data_pipeline import synthetic

MIN_PEOPLE, MAX_PEOPLE = 2, 6
MIN_IOU = 0.5
OCCLUDED_LABELLED = 0.25
MIN_VISIBLE_AREA = 400
MIN_KEYPOINTS = 3
PLACEMENTS = ("front_back", "side_by_side", "behind")
# (H, W) of the images: uniform between these corners.
SIZE_RANGE = ((360, 360), (560, 640))
_MAX_TRIES = 200


def _bbox(points: np.ndarray) -> np.ndarray:
  """[x0, y0, x1, y1] of points [n, 2]."""
  return np.concatenate([points.min(axis=0), points.max(axis=0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two [x0, y0, x1, y1] boxes."""
  inter = np.maximum(0.0, np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])).prod()
  union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
  return float(inter / max(union, 1e-9))


def _figure_box(figure: synthetic._Figure) -> np.ndarray:
  return _bbox(np.concatenate([p for p, _ in figure.parts]))


def _place(rng: np.random.Generator, anchor: Tuple[np.ndarray, float], kind: str
           ) -> Tuple[np.ndarray, float]:
  """(pelvis, height) of a person placed against `anchor` = (pelvis, height)."""
  pelvis, height = anchor
  if kind == "front_back":
    tall = height * rng.uniform(0.85, 1.15)
    shift = rng.uniform([-0.15, -0.06], [0.15, 0.06]) * height
  elif kind == "side_by_side":
    tall = height * rng.uniform(0.9, 1.1)
    shift = np.array([rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.25), rng.uniform(-0.04, 0.04)])
    shift = shift * height
  else:  # behind: a step back, smaller and higher
    tall = height * rng.uniform(0.8, 0.95)
    shift = np.array([rng.uniform(-0.15, 0.15), -rng.uniform(0.03, 0.12)]) * height
  return pelvis + shift, tall


def _sample_people(rng: np.random.Generator, height: int, width: int
                   ) -> List[synthetic._Figure]:
  """Figures back to front, each overlapping one placed before it in its group (bbox IoU)."""
  count = int(rng.integers(MIN_PEOPLE, MAX_PEOPLE + 1))
  groups = [count] if count < 4 else ([count // 2, count - count // 2] if rng.random() < 0.5
                                   else [count])
  figures = []
  for group_index, size in enumerate(groups):
    tall = rng.uniform(0.45, 0.8) * height
    x_range = (0.2 * width, 0.8 * width) if len(groups) == 1 else (
        (0.15 + 0.5 * group_index) * width, (0.35 + 0.5 * group_index) * width)
    anchors = [(rng.uniform([x_range[0], 0.45 * height], [x_range[1], 0.65 * height]), tall)]
    group = [synthetic._sample_figure(rng, tall, anchors[0][0], rng.normal(0, 0.08))]
    while len(group) < size:
      for _ in range(_MAX_TRIES):
        index = int(rng.integers(len(group)))
        pelvis, tall = _place(rng, anchors[index], PLACEMENTS[int(rng.integers(len(PLACEMENTS)))])
        figure = synthetic._sample_figure(rng, tall, pelvis, rng.normal(0, 0.08))
        if box_iou(_figure_box(figure), _figure_box(group[index])) >= MIN_IOU:
          break
      else:
        raise RuntimeError("could not place an overlapping person")  # not reached in practice
      group.append(figure)
      anchors.append((pelvis, tall))
    figures += group
  order = rng.permutation(len(figures))  # drawing order: back to front
  return [figures[i] for i in order]


def _keypoints(rng: np.random.Generator, figure: synthetic._Figure, visible: np.ndarray,
               covered: np.ndarray) -> np.ndarray:
  """[17, 3]: v = 2 visible, v = 1 (with probability OCCLUDED_LABELLED) or 0 when covered."""
  keypoints = synthetic._keypoints(figure, visible)
  height, width = visible.shape
  cols = np.clip(np.round(keypoints[:, 0]).astype(int), 0, width - 1)
  rows = np.clip(np.round(keypoints[:, 1]).astype(int), 0, height - 1)
  hidden = (keypoints[:, 2] == 1) & covered[rows, cols]
  keep_hidden = rng.random(len(keypoints)) < OCCLUDED_LABELLED
  drop = hidden & ~keep_hidden
  keypoints[drop] = 0.0
  return keypoints


def _render(rng: np.random.Generator, height: int, width: int):
  """(RGB uint8 image, [(visible mask, keypoints [17, 3])]) or None if the scene must be redrawn."""
  figures = _sample_people(rng, height, width)
  covered = np.zeros((height, width), bool)
  people = []
  for figure in reversed(figures):  # front to back
    full = synthetic._polygons_mask([synthetic._flat_polygon(p) for p, _ in figure.parts],
                                    height, width)
    visible = full & ~covered
    keypoints = _keypoints(rng, figure, visible, covered)
    if visible.sum() < MIN_VISIBLE_AREA or np.sum(keypoints[:, 2] > 0) < MIN_KEYPOINTS:
      return None
    people.append((figure, visible, keypoints))
    covered |= full
  people.reverse()
  boxes = [np.asarray(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(
      v.astype(np.uint8))))) for _, v, _ in people]
  boxes = [np.concatenate([b[:2], b[:2] + b[2:]]) for b in boxes]
  for i, box in enumerate(boxes):
    if max(box_iou(box, other) for j, other in enumerate(boxes) if j != i) < MIN_IOU:
      return None
  image = synthetic._background(rng, height, width)
  for figure, visible, _ in people:
    synthetic._paint(image, figure, visible)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return image, [(visible, keypoints) for _, visible, keypoints in people]


def _rle(mask: np.ndarray) -> dict:
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def generate_occlusion_coco(output_dir: str, num_images: int = 100, seed: int = 0,
                            image_format: str = "png") -> str:
  """Writes `output_dir/images/*` and `output_dir/annotations.json` (returned): COCO format.

  Args:
    output_dir: created if missing.
    num_images: scenes to draw (ids 1..num_images).
    seed: scene i is drawn from numpy's Generator seeded by (seed, i): deterministic.
    image_format: 'png' or 'jpg'.
  """
  if image_format not in ("jpg", "png"):
    raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
  images_dir = os.path.join(output_dir, "images")
  os.makedirs(images_dir, exist_ok=True)
  images, annotations = [], []
  for image_id in range(1, num_images + 1):
    rng = np.random.default_rng([seed, image_id])
    (h0, w0), (h1, w1) = SIZE_RANGE
    height, width = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
    rendered: Optional[tuple] = None
    while rendered is None:
      rendered = _render(rng, height, width)
    image, people = rendered
    file_name = f"{image_id:06d}.{image_format}"
    if not cv2.imwrite(os.path.join(images_dir, file_name), image[..., ::-1]):
      raise OSError(f"could not write {os.path.join(images_dir, file_name)}")
    images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    for visible, keypoints in people:
      annotation = synthetic._annotation(len(annotations) + 1, image_id, visible, _rle(visible),
                                         keypoints, 0)
      annotations.append(annotation)
  path = os.path.join(output_dir, "annotations.json")
  with open(path, "w") as f:
    json.dump({"info": {"description": f"kdc-tf synthetic occlusion scenes, seed {seed}"},
               "licenses": [], "images": images, "annotations": annotations,
               "categories": [synthetic._person_category()]}, f)
  logging.info("occlusion scenes: %d images, %d people in %s", len(images), len(annotations),
               output_dir)
  return path
