"""A small synthetic COCO-format person dataset: the embedded default dataset.

Everything (training, evaluation, the oracle) runs on a fresh machine without a download: this
module draws articulated stick people (limb quadrilaterals extended past the joints, a torso, a
neck and an elliptic head) on a textured, cluttered background and writes the images with a COCO
person-keypoints JSON, in the layout of the real datasets, so the same readers and writer apply.

What the annotations promise (the reader's conventions, annotations.py):
  - the 17 COCO keypoints are the joints of the drawing: each lies inside its limb's polygon, at
    least half a limb width from the polygon's end; left/right follow the person's facing (a person
    facing the camera has its left side on the image's right; a back view mirrors it, and its nose
    and eyes are unlabelled);
  - segmentation is the visible region, as polygons: the drawn parts when the person is neither
    occluded nor cut by the border, else the outer contours of what is visible (occluders drawn
    later are in front); the image is painted from these annotated masks, so pixels and masks agree;
  - v = 2 where the joint's pixel is in the person's annotated mask, v = 1 where it is covered
    (occluded by someone in front), v = 0 (x = y = 0) outside [0, W - 1] x [0, H - 1];
  - `area` and `bbox` come from pycocotools on the annotated polygons, `num_keypoints` counts v > 0;
  - crowds of tiny unannotated people are one iscrowd region each, as uncompressed RLE (as COCO).
Generation is deterministic for a seed (one numpy Generator per image, seeded by (seed, index)).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import cv2
import numpy as np
from pycocotools import mask as mask_utils

from kdc_tf.datasets import COCO

# (H, W) of generated images: uniform between these corners unless a fixed size is given.
DEFAULT_SIZE_RANGE = ((320, 320), (480, 400))
DEFAULT_ROOT = pathlib.Path(__file__).resolve().parents[1] / "work_dirs" / "embedded"
_EMBEDDED_VERSION = 2
# Validation image ids start here, whatever the training split's size, so the validation images
# stay the same when the training split grows (ids seed the images: train and val never share one).
EMBEDDED_VAL_FIRST_ID = 100_001
_LOG_EVERY = 500

# Body proportions as fractions of the person's height (pelvis at the origin, y down).
_TORSO, _NECK = 0.30, 0.10
_SHOULDER_HALF, _HIP_HALF = 0.11, 0.07
_HEAD_RADII = (0.065, 0.08)  # (across, along the body)
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.16, 0.14, 0.23, 0.22
_WIDTHS = {"upper_arm": 0.055, "forearm": 0.045, "thigh": 0.075, "shin": 0.06, "neck": 0.05}
_MIN_VISIBLE_AREA = 250  # pixels; smaller people are not drawn.
_KP = {name: i for i, name in enumerate(COCO.keypoint_names)}
_EYE_RGB, _NOSE_RGB = (20.0, 20.0, 20.0), (120.0, 40.0, 40.0)


@dataclasses.dataclass
class _Figure:
  """One drawn person in image pixels: joints [17, 2] and coloured part polygons."""

  joints: np.ndarray
  parts: List[Tuple[np.ndarray, np.ndarray]]  # (polygon [n, 2], RGB colour)
  front_facing: bool


def _rotate(points, angle: float) -> np.ndarray:
  """Rotates (x, y) points (y down) by `angle` radians about the origin."""
  c, s = np.cos(angle), np.sin(angle)
  return np.asarray(points, np.float64) @ np.array([[c, s], [-s, c]])


def _direction(angle: float) -> np.ndarray:
  """Unit vector `angle` radians from straight down, positive angles towards +x."""
  return np.array([np.sin(angle), np.cos(angle)])


def _capsule_quad(a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
  """Quadrilateral of `width` around segment a-b, extended by width / 2 past both joints."""
  d = b - a
  length = float(np.hypot(*d))
  d = d / length if length > 1e-6 else np.array([0.0, 1.0])
  n = np.array([-d[1], d[0]]) * width / 2
  a, b = a - d * width / 2, b + d * width / 2
  return np.stack([a + n, b + n, b - n, a - n])


def _ellipse(centre: np.ndarray, radii: Tuple[float, float], angle: float) -> np.ndarray:
  t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
  return _rotate(np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1), angle) + centre


def _sample_figure(rng: np.random.Generator, height: float, pelvis: Sequence[float],
                   rotation: float) -> _Figure:
  """A random pose `height` pixels tall, pelvis at `pelvis`, the body rotated by `rotation`."""
  front = bool(rng.random() < 0.8)
  left = 1.0 if front else -1.0  # Image-x side of the person's left.
  canon = np.zeros((len(COCO.keypoint_names), 2))  # Upright, height 1, pelvis at the origin.
  neck = np.array([0.0, -_TORSO])
  head = neck + np.array([rng.normal(0, 0.01), -_NECK])
  tilt = rng.normal(0, 0.15)
  face = {"nose": (0.0, 0.012)}
  for side, sign in (("left", left), ("right", -left)):
    face[f"{side}_eye"] = (sign * 0.026, -0.018)
    face[f"{side}_ear"] = (sign * 0.055, 0.0)
    shoulder = neck + np.array([sign * _SHOULDER_HALF, 0.0])
    arm = sign * rng.uniform(-0.3, 2.6)
    elbow = shoulder + _direction(arm) * _UPPER_ARM * rng.uniform(0.75, 1.0)
    wrist = elbow + _direction(arm + rng.uniform(-2.0, 2.0)) * _FOREARM * rng.uniform(0.75, 1.0)
    hip = np.array([sign * _HIP_HALF, 0.0])
    leg = sign * rng.uniform(-0.25, 0.7)
    knee = hip + _direction(leg) * _THIGH * rng.uniform(0.75, 1.0)
    ankle = knee + _direction(leg + rng.uniform(-0.6, 0.6)) * _SHIN * rng.uniform(0.75, 1.0)
    for name, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                        ("hip", hip), ("knee", knee), ("ankle", ankle)):
      canon[_KP[f"{side}_{name}"]] = point
  for name, offset in face.items():
    canon[_KP[name]] = head + _rotate(offset, tilt)
  # The upper body bends about the pelvis.
  upper = [i for i, n in enumerate(COCO.keypoint_names) if not n.endswith(("hip", "knee", "ankle"))]
  bend = rng.normal(0, 0.15)
  canon[upper] = _rotate(canon[upper], bend)
  neck, head = _rotate(neck, bend), _rotate(head, bend)

  def to_image(points) -> np.ndarray:
    return _rotate(np.asarray(points) * height, rotation) + np.asarray(pelvis, np.float64)

  joints = to_image(canon)
  skin = rng.uniform([150, 90, 60], [255, 210, 180])
  shirt, trousers = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  width = {name: w * height for name, w in _WIDTHS.items()}

  def j(name: str) -> np.ndarray:
    return joints[_KP[name]]

  parts = [(np.stack([j("left_shoulder"), j("right_shoulder"), j("right_hip"), j("left_hip")]),
            shirt)]
  for side in ("left", "right"):
    parts += [(_capsule_quad(j(f"{side}_hip"), j(f"{side}_knee"), width["thigh"]), trousers),
              (_capsule_quad(j(f"{side}_knee"), j(f"{side}_ankle"), width["shin"]), trousers)]
  for side in ("left", "right"):
    parts += [(_capsule_quad(j(f"{side}_shoulder"), j(f"{side}_elbow"), width["upper_arm"]), shirt),
              (_capsule_quad(j(f"{side}_elbow"), j(f"{side}_wrist"), width["forearm"]), skin)]
  parts.append((_capsule_quad(to_image(neck), to_image(head), width["neck"]), skin))
  radii = (_HEAD_RADII[0] * height, _HEAD_RADII[1] * height)
  parts.append((_ellipse(to_image(head), radii, rotation + bend + tilt), skin))
  return _Figure(joints=joints, parts=parts, front_facing=front)


def _polygons_mask(polygons: List[List[float]], height: int, width: int) -> np.ndarray:
  """bool [H, W] union of flat polygons, rasterised by pycocotools as the readers do."""
  rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
  with warnings.catch_warnings():  # pycocotools 2.0.11 warns about numpy 2's copy keyword.
    warnings.simplefilter("ignore", DeprecationWarning)
    return mask_utils.decode(rle).astype(bool)


def _flat_polygon(points: np.ndarray) -> List[float]:
  return [round(float(v), 2) for v in np.asarray(points).reshape(-1)]


def _visible_polygons(visible: np.ndarray) -> List[List[float]]:
  """Outer contours of a bool mask as flat polygons that pycocotools rasterises back to it.

  pycocotools fills a pixel when its centre is inside the polygon, so contours through the pixel
  centres would drop the boundary pixels. Tracing the mask upsampled twice puts the outline a
  quarter pixel outside the boundary pixels' centres (IoU > 0.99 with the mask on average).
  """
  twice = cv2.resize(visible.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
  contours, _ = cv2.findContours(twice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  contours = [cv2.approxPolyDP(c, 0.5, True) for c in contours]
  return [_flat_polygon((c.reshape(-1, 2) + 0.5) / 2) for c in contours
          if len(c) >= 3 and cv2.contourArea(c) > 0]


def _uncompressed_rle(mask: np.ndarray) -> Dict[str, list]:
  """COCO's uncompressed RLE (column-major runs, starting with a run of zeros)."""
  flat = mask.reshape(-1, order="F").astype(np.int8)
  bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
  runs = np.diff(bounds).tolist()
  return {"size": list(mask.shape), "counts": ([0] + runs) if flat[0] else runs}


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """float32 [H, W, 3] RGB: a colour, smooth and fine noise, and clutter (boxes, discs, bars)."""
  image = np.empty((height, width, 3), np.float32)
  image[:] = rng.uniform(30, 225, 3)
  image += cv2.resize(rng.normal(0, 35, (3, 3, 3)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
  image += cv2.resize(rng.normal(0, 15, (height // 8, width // 8, 3)).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_LINEAR)
  for _ in range(rng.integers(2, 9)):
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
    size = int(rng.uniform(8, 0.3 * min(height, width)))
    kind = rng.integers(3)
    if kind == 0:
      cv2.rectangle(image, (x, y), (x + size, y + int(rng.uniform(0.3, 2) * size)), colour, -1)
    elif kind == 1:
      cv2.circle(image, (x, y), size // 2, colour, -1)
    else:
      end = (int(x + size * rng.normal()), int(y + size * rng.normal()))
      cv2.line(image, (x, y), end, colour, int(rng.uniform(3, 12)))
  return image


def _paint(image: np.ndarray, figure: _Figure, mask: np.ndarray) -> None:
  """Paints `figure` part by part (with eyes and nose when facing the camera) inside `mask`."""
  layer = np.empty_like(image)
  layer[:] = figure.parts[0][1]
  for polygon, colour in figure.parts:
    cv2.fillPoly(layer, [np.round(polygon * 16).astype(np.int32)], tuple(float(c) for c in colour),
                 cv2.LINE_8, shift=4)
  if figure.front_facing:
    radius = max(1, int(round(0.2 * np.hypot(*(figure.joints[_KP["left_eye"]] -
                                                figure.joints[_KP["right_eye"]])))))
    for name, colour in (("left_eye", _EYE_RGB), ("right_eye", _EYE_RGB), ("nose", _NOSE_RGB)):
      centre = tuple(int(round(c)) for c in figure.joints[_KP[name]])
      cv2.circle(layer, centre, radius, colour, -1)
  image[mask] = layer[mask]


def _keypoints(figure: _Figure, owned: np.ndarray) -> np.ndarray:
  """[17, 3] (x, y, v): v = 2 on the person's own visible pixels, 1 covered, 0 outside."""
  height, width = owned.shape
  xy = np.round(figure.joints, 2)
  inside = ((xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) &
            (xy[:, 1] <= height - 1))
  if not figure.front_facing:
    inside[[_KP["nose"], _KP["left_eye"], _KP["right_eye"]]] = False
  cols = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
  rows = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
  v = np.where(owned[rows, cols], 2, 1) * inside
  return np.concatenate([xy * inside[:, None], v[:, None]], axis=1)


def _sample_scene(rng: np.random.Generator, height: int,
                  width: int) -> Tuple[List[_Figure], List[List[_Figure]]]:
  """People back to front (some overlapping, some cut by the border) and crowds of tiny people."""
  figures: List[_Figure] = []
  pelvises: List[np.ndarray] = []
  for _ in range(rng.choice(5, p=[0.06, 0.3, 0.3, 0.2, 0.14])):
    tall = rng.uniform(0.35, 0.9) * height
    if pelvises and rng.random() < 0.4:  # Overlap someone already placed.
      neighbour = pelvises[rng.integers(len(pelvises))]
      pelvis = neighbour + rng.uniform(-0.35, 0.35, 2) * [tall, 0.2 * tall]
    else:
      pelvis = rng.uniform([0.05 * width, 0.35 * height], [0.95 * width, 0.8 * height])
    rotation = rng.normal(0, 0.12) if rng.random() < 0.85 else rng.uniform(-1.6, 1.6)
    figures.append(_sample_figure(rng, tall, pelvis, rotation))
    pelvises.append(pelvis)
  crowds = []
  if rng.random() < 0.3:
    centre = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.6 * height])
    crowds.append([
        _sample_figure(rng, rng.uniform(22, 45), centre + rng.uniform([-60, -12], [60, 12]),
                       rng.normal(0, 0.1))
        for _ in range(rng.integers(4, 9))])
  return figures, crowds


def _render(rng: np.random.Generator, height: int, width: int):
  """(RGB uint8 image, people [(polygons, mask, keypoints)], crowd masks), people back to front."""
  figures, crowds = _sample_scene(rng, height, width)
  occluded = np.zeros((height, width), bool)
  people = []
  for figure in reversed(figures):  # Front to back: each person is hidden by those in front.
    polygons_raw = [_flat_polygon(p) for p, _ in figure.parts]
    full = _polygons_mask(polygons_raw, height, width)
    visible = full & ~occluded
    if visible.sum() < _MIN_VISIBLE_AREA:
      continue
    inside = all(np.all((p >= 0) & (p <= [width - 1, height - 1])) for p, _ in figure.parts)
    whole = inside and not (full & occluded).any()
    polygons = polygons_raw if whole else _visible_polygons(visible)
    if not polygons:
      continue
    mask = _polygons_mask(polygons, height, width)
    if mask.sum() < _MIN_VISIBLE_AREA:
      continue
    people.append((figure, polygons, mask, _keypoints(figure, mask & ~occluded)))
    occluded |= mask
  people.reverse()

  image = _background(rng, height, width)
  crowd_masks = []
  for crowd in crowds:
    masks = [_polygons_mask([_flat_polygon(p) for p, _ in figure.parts], height, width) & ~occluded
             for figure in crowd]
    region = np.any(masks, axis=0)
    if region.sum() < _MIN_VISIBLE_AREA:
      continue
    for figure, mask in zip(crowd, masks):
      _paint(image, figure, mask)
    crowd_masks.append(region)
    occluded |= region
  for figure, _, mask, _ in people:
    _paint(image, figure, mask)
  image += rng.normal(0, 4, image.shape).astype(np.float32)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return image, [(polygons, mask, kps) for _, polygons, mask, kps in people], crowd_masks


def _person_category() -> dict:
  return {"id": 1, "name": "person", "supercategory": "person",
          "keypoints": list(COCO.keypoint_names),
          "skeleton": [[a + 1, b + 1] for a, b in COCO.edges]}


def _annotation(ann_id: int, image_id: int, mask: np.ndarray, segmentation, keypoints,
                iscrowd: int) -> dict:
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {
      "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
      "segmentation": segmentation,
      "area": float(mask_utils.area(rle)),
      "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
      "num_keypoints": int(np.sum(keypoints[:, 2] > 0)),
      "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v)
                    for i, v in enumerate(keypoints.reshape(-1))],
  }


def generate_synthetic_coco(output_dir: str, num_images: int = 64,
                            image_size: Optional[Tuple[int, int]] = None, seed: int = 0, *,
                            first_image_id: int = 1, image_format: str = "jpg") -> str:
  """Writes `output_dir/images/*.{jpg,png}` and `output_dir/annotations.json` (returned).

  Args:
    output_dir: created if missing.
    num_images: images to draw.
    image_size: fixed (H, W); None draws each size uniformly within DEFAULT_SIZE_RANGE.
    seed: image `i` is drawn from numpy's Generator seeded by (seed, image id): deterministic.
    first_image_id: ids run from here (distinct ids give distinct images for the same seed).
    image_format: 'jpg' (quality 92) or 'png'.
  """
  if image_format not in ("jpg", "png"):
    raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
  images_dir = os.path.join(output_dir, "images")
  os.makedirs(images_dir, exist_ok=True)
  images, annotations = [], []
  for image_id in range(first_image_id, first_image_id + num_images):
    rng = np.random.default_rng([seed, image_id])
    if image_size is None:
      (h0, w0), (h1, w1) = DEFAULT_SIZE_RANGE
      height, width = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
    else:
      height, width = image_size
    image, people, crowd_masks = _render(rng, height, width)
    file_name = f"{image_id:06d}.{image_format}"
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format == "jpg" else []
    if not cv2.imwrite(os.path.join(images_dir, file_name), image[..., ::-1], params):
      raise OSError(f"could not write {os.path.join(images_dir, file_name)}")
    images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    if len(images) % _LOG_EVERY == 0:
      logging.info("synthetic COCO: drew %d of %d images", len(images), num_images)
    for polygons, mask, keypoints in people:
      annotations.append(_annotation(len(annotations) + 1, image_id, mask, polygons, keypoints, 0))
    for mask in crowd_masks:
      annotations.append(_annotation(len(annotations) + 1, image_id, mask, _uncompressed_rle(mask),
                                     np.zeros((len(COCO.keypoint_names), 3)), 1))
  path = os.path.join(output_dir, "annotations.json")
  with open(path, "w") as f:
    json.dump({"info": {"description": f"kdc-tf synthetic stick people, seed {seed}"},
               "licenses": [], "images": images, "annotations": annotations,
               "categories": [_person_category()]}, f)
  logging.info("synthetic COCO: %d images, %d annotations in %s", len(images), len(annotations),
               output_dir)
  return path


def _embedded_paths(root: pathlib.Path) -> Dict[str, str]:
  return {
      "train": str(root / "tfrecords" / "train-*.tfrecord"),
      "val": str(root / "tfrecords" / "val-*.tfrecord"),
      "annotations_train": str(root / "train" / "annotations.json"),
      "images_train": str(root / "train" / "images"),
      "annotations_val": str(root / "val" / "annotations.json"),
      "images_val": str(root / "val" / "images"),
  }


def _build_embedded(directory: pathlib.Path, params: dict) -> None:
  # Imported here: tfrecord_writer pulls in TensorFlow, which the generator alone does not need.
  from data_pipeline.tfrecord_writer import write_tfrecords

  splits = (("train", params["num_train"], 1, params["num_train_shards"]),
            ("val", params["num_val"], EMBEDDED_VAL_FIRST_ID, 1))
  for split, num_images, first_id, shards in splits:
    json_path = generate_synthetic_coco(str(directory / split), num_images, seed=params["seed"],
                                        first_image_id=first_id)
    # A generated image can end up with no usable person (all cut off or crowd); it stays as a
    # negative, so the split holds every generated image whatever the COCOPersons default.
    summary = write_tfrecords(json_path, str(directory / split / "images"),
                              str(directory / "tfrecords" / split), shards, "coco",
                              keep_images_without_people=True)
    if summary.num_images != num_images:
      raise RuntimeError(f"embedded {split} split: wrote {summary.num_images} of {num_images} "
                         f"images:\n{summary.skips.summary()}")
  (directory / "COMPLETE.json").write_text(json.dumps(params, sort_keys=True))


def ensure_embedded_dataset(root: Optional[str] = None, *, num_train: int = 2048,
                            num_val: int = 200, seed: int = 0,
                            num_train_shards: int = 2) -> Dict[str, str]:
  """The embedded synthetic dataset (JSON, images, TFRecords), generated only if missing.

  Returns a dict of paths: `train` and `val` (TFRecord glob patterns), `annotations_train`,
  `images_train`, `annotations_val`, `images_val`. Train images have ids 1..num_train, val images
  ids from `EMBEDDED_VAL_FIRST_ID` (distinct images). 2048 training images, not 64: the quick start
  sees each about 3.5 times instead of 112 (docs/learning.md); 200 validation images make its AP a
  less noisy figure than 16 did. Building it takes about a minute on two cores. The
  dataset is built in a temporary folder and renamed into place, so concurrent callers (tests run
  by several people at once) never see a partial dataset; a build with other parameters or an
  older generator version is replaced.
  """
  if not 0 < num_train < EMBEDDED_VAL_FIRST_ID:
    raise ValueError(f"num_train must be in [1, {EMBEDDED_VAL_FIRST_ID - 1}], got {num_train}")
  root_path = pathlib.Path(root) if root is not None else DEFAULT_ROOT
  params = {"version": _EMBEDDED_VERSION, "num_train": num_train, "num_val": num_val,
            "seed": seed, "num_train_shards": num_train_shards}
  if _is_built(root_path, params):
    return _embedded_paths(root_path)
  root_path.parent.mkdir(parents=True, exist_ok=True)
  build = pathlib.Path(tempfile.mkdtemp(prefix=root_path.name + ".building-", dir=root_path.parent))
  try:
    logging.info("generating the embedded synthetic dataset in %s", root_path)
    _build_embedded(build, params)
    if not _is_built(root_path, params):  # Else another process finished first: use its copy.
      shutil.rmtree(root_path, ignore_errors=True)
      try:
        os.rename(build, root_path)
      except OSError:
        if not _is_built(root_path, params):
          raise
  finally:
    shutil.rmtree(build, ignore_errors=True)
  return _embedded_paths(root_path)


def _is_built(root: pathlib.Path, params: dict) -> bool:
  """Whether `root` holds a complete build with these parameters (its marker is written last)."""
  try:
    return json.loads((root / "COMPLETE.json").read_text()) == params
  except (OSError, ValueError):
    return False
