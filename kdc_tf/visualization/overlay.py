"""Prediction overlays: coloured instance masks, skeletons, keypoints and person scores.

Takes one image's decoded people (ARCHITECTURE.md section 5, in the image's own pixels) and draws
them with OpenCV. Masks are blended in one vectorised pass; only the skeleton lines, which are few,
are drawn person by person. The skeleton is the dataset's kinematic tree (`DatasetSpec.edges`).
"""

from __future__ import annotations

import colorsys
from typing import Optional

import cv2
import numpy as np

from kdc_tf.datasets import COCO, DatasetSpec


def instance_colours(num_instances: int) -> np.ndarray:
  """Distinct, deterministic RGB colours `[num_instances, 3]` uint8 (golden-ratio hue steps)."""
  hues = (np.arange(num_instances) * 0.618033988749895) % 1.0
  rgb = np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float64)
  return np.round(255.0 * rgb.reshape(-1, 3)).astype(np.uint8)


def blend_masks(image: np.ndarray, masks: np.ndarray, colours: np.ndarray,
                alpha: float = 0.5) -> np.ndarray:
  """Tints each instance's pixels with its colour; where instances overlap the first one wins.

  Args:
    image: uint8 `[H, W, 3]`.
    masks: `[N, H, W]`, nonzero = inside.
    colours: uint8 `[N, 3]`, in the image's channel order.
    alpha: weight of the colour.

  Returns:
    A new uint8 `[H, W, 3]` image.
  """
  if masks.shape[0] == 0:
    return image.copy()
  if masks.shape[1:] != image.shape[:2]:
    raise ValueError(f"masks {masks.shape} do not match image {image.shape}")
  inside = masks > 0
  owner = np.argmax(inside, axis=0)
  covered = inside.any(axis=0)
  tinted = (1.0 - alpha) * image + alpha * colours[owner].astype(np.float32)
  return np.where(covered[..., None], np.round(tinted), image).astype(np.uint8)


def draw_predictions(image: np.ndarray,
                     keypoints: np.ndarray,
                     scores: np.ndarray,
                     masks: Optional[np.ndarray] = None,
                     num_people: Optional[int] = None,
                     spec: DatasetSpec = COCO,
                     keypoint_threshold: float = 0.1,
                     mask_alpha: float = 0.5) -> np.ndarray:
  """Draws decoded people on an image.

  Args:
    image: uint8 `[H, W, 3]` (RGB or BGR: colours follow the same order).
    keypoints: `[N, K, 3]` `(x, y, score)` in the image's pixels.
    scores: `[N]` person scores.
    masks: optional `[N, H, W]` 0/1 instance masks.
    num_people: valid slots (they come first); all N when None.
    spec: the keypoint layout whose kinematic tree is drawn.
    keypoint_threshold: keypoints (and the limbs between them) scoring below this are not drawn.
    mask_alpha: opacity of the mask tint.

  Returns:
    A new uint8 `[H, W, 3]` image.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  keypoints = np.asarray(keypoints, dtype=np.float32)
  if keypoints.ndim != 3 or keypoints.shape[1:] != (spec.num_keypoints, 3):
    raise ValueError(f"keypoints must be [N, {spec.num_keypoints}, 3] for {spec.name}, "
                     f"got {keypoints.shape}")
  n = keypoints.shape[0] if num_people is None else int(num_people)
  keypoints, scores = keypoints[:n], np.asarray(scores)[:n]
  colours = instance_colours(n)

  canvas = image if masks is None else blend_masks(image, np.asarray(masks)[:n], colours,
                                                   mask_alpha)
  canvas = np.ascontiguousarray(canvas).copy()
  thickness = max(1, round(min(image.shape[:2]) / 300))
  for j in range(n):
    colour = tuple(int(c) for c in colours[j])
    points = np.round(keypoints[j, :, :2]).astype(np.int32)
    visible = keypoints[j, :, 2] >= keypoint_threshold
    for a, b in spec.edges:
      if visible[a] and visible[b]:
        # A dark outline keeps the limb visible on its own mask's tint.
        cv2.line(canvas, tuple(points[a]), tuple(points[b]), (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.line(canvas, tuple(points[a]), tuple(points[b]), colour, thickness, cv2.LINE_AA)
    for k in np.flatnonzero(visible):
      cv2.circle(canvas, tuple(points[k]), thickness + 2, colour, -1, cv2.LINE_AA)
      cv2.circle(canvas, tuple(points[k]), thickness + 2, (255, 255, 255), 1, cv2.LINE_AA)
    if visible.any():
      x, y = points[visible].min(axis=0)
      _put_label(canvas, f"{float(scores[j]):.2f}", (int(x), int(y)), colour, thickness)
  return canvas


def _put_label(canvas: np.ndarray, text: str, corner: tuple, colour: tuple,
               thickness: int) -> None:
  """Writes `text` on a filled box just above `corner` (kept inside the image)."""
  font_scale = 0.4 * thickness
  (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
  x = int(np.clip(corner[0], 0, max(0, canvas.shape[1] - w)))
  y = int(np.clip(corner[1] - 4, h + baseline, max(h + baseline, canvas.shape[0] - 1)))
  cv2.rectangle(canvas, (x, y - h - baseline), (x + w, y), colour, -1)
  cv2.putText(canvas, text, (x, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
              (0, 0, 0), thickness, cv2.LINE_AA)
