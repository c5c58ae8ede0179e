"""Generated scenes for the grouping tests and benchmark: people on an empty canvas.

A scene is an augmented example (ARCHITECTURE.md section 2) built directly: every person is a
jittered standing pose (keypoints in input pixels, all labelled) with a mask made of capsules
along the kinematic tree plus a filled torso and head, rasterised on the mask grid. Later people
occlude earlier ones, so masks are disjoint like COCO's visible-part masks. Keypoint positions
come from names, so any `DatasetSpec` whose names are listed in `_POSE` works.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from kdc_tf.geometry import MASK_STRIDE, mask_grid_size
from kdc_tf.datasets import DatasetSpec

# A front-facing person of height 1: (x, y) relative to the top of the head, x to the image right.
_POSE = {
    "top_head": (0.0, 0.0), "nose": (0.0, 0.08), "neck": (0.0, 0.17),
    "left_eye": (0.025, 0.06), "right_eye": (-0.025, 0.06),
    "left_ear": (0.055, 0.07), "right_ear": (-0.055, 0.07),
    "left_shoulder": (0.11, 0.19), "right_shoulder": (-0.11, 0.19),
    "left_elbow": (0.15, 0.34), "right_elbow": (-0.15, 0.34),
    "left_wrist": (0.17, 0.48), "right_wrist": (-0.17, 0.48),
    "left_hip": (0.08, 0.52), "right_hip": (-0.08, 0.52),
    "left_knee": (0.09, 0.73), "right_knee": (-0.09, 0.73),
    "left_ankle": (0.09, 0.94), "right_ankle": (-0.09, 0.94),
}
_LIMB_RADIUS = 0.045  # of the person's height
_TORSO_RADIUS = 0.07
_HEAD_RADIUS = 0.07


def _segment_distance(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """Distance from points [Q, 2] to segments [S, 2]-[S, 2]: [Q, S]."""
  direction = ends - starts
  length2 = np.maximum(np.sum(direction ** 2, axis=-1), 1e-9)
  rel = points[:, None, :] - starts[None]
  t = np.clip(np.sum(rel * direction[None], axis=-1) / length2, 0.0, 1.0)
  nearest = starts[None] + t[..., None] * direction[None]
  return np.linalg.norm(points[:, None, :] - nearest, axis=-1)


def person_mask(keypoints: np.ndarray, height: float, spec: DatasetSpec,
                grid_points: np.ndarray) -> np.ndarray:
  """bool [Q] on `grid_points` [Q, 2]: limbs along `spec.edges`, a filled torso, a head."""
  index = {name: i for i, name in enumerate(spec.keypoint_names)}
  xy = keypoints[:, :2]
  starts = [xy[a] for a, _ in spec.edges]
  ends = [xy[b] for _, b in spec.edges]
  radii = [_LIMB_RADIUS * height] * len(spec.edges)
  torso = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
  if all(name in index for name in torso):
    ls, rs, lh, rh = (xy[index[name]] for name in torso)
    for a, b in ((ls, rs), (lh, rh), (ls, rh), (rs, lh), (ls, lh), (rs, rh)):
      starts.append(a)
      ends.append(b)
      radii.append(_TORSO_RADIUS * height)
  head = [index[n] for n in ("nose", "top_head") if n in index]
  for i in head:
    starts.append(xy[i])
    ends.append(xy[i])
    radii.append(_HEAD_RADIUS * height)
  distance = _segment_distance(grid_points, np.asarray(starts), np.asarray(ends))
  return np.any(distance <= np.asarray(radii)[None], axis=1)


def make_scene(spec: DatasetSpec, input_size: int, placements: Sequence[Tuple[float, float, float]],
               rng: Optional[np.random.Generator] = None, jitter: float = 0.02
               ) -> Dict[str, np.ndarray]:
  """An augmented example with one person per placement.

  Args:
    spec: keypoint layout.
    input_size: canvas size S (mask grid (S - 1) / 4 + 1).
    placements: `(x, y, height)` per person: top of the head at (x, y), height in input pixels.
    rng: jitters every keypoint by `jitter * height` (uniform) when given.

  Returns:
    `keypoints` float32 [P, K, 3] (v = 2; outside the canvas v = 0, x = y = 0),
    `instance_masks` uint8 [P, M, M], `crowd_mask` uint8 [M, M], `has_masks` True,
    `heights` float32 [P].
  """
  mask_grid = mask_grid_size(input_size)
  rows, cols = np.meshgrid(np.arange(mask_grid), np.arange(mask_grid), indexing="ij")
  grid_points = np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float64) * MASK_STRIDE
  template = np.asarray([_POSE[name] for name in spec.keypoint_names], np.float64)
  keypoints, masks = [], []
  for x, y, height in placements:
    xy = template * height + np.asarray([x, y])
    if rng is not None:
      xy += rng.uniform(-jitter, jitter, xy.shape) * height
    masks.append(person_mask(xy, height, spec, grid_points).reshape(mask_grid, mask_grid))
    inside = np.all((xy >= 0) & (xy <= input_size - 1), axis=-1)
    keypoints.append(np.where(inside[:, None], np.concatenate(
        [xy, np.full((len(xy), 1), 2.0)], axis=-1), 0.0))
  num_people = len(placements)
  visible = np.zeros((num_people, mask_grid, mask_grid), bool)
  covered = np.zeros((mask_grid, mask_grid), bool)
  for j in reversed(range(num_people)):  # later people in front
    visible[j] = masks[j] & ~covered
    covered |= masks[j]
  return {
      "keypoints": np.asarray(keypoints, np.float32).reshape(num_people, spec.num_keypoints, 3),
      "instance_masks": visible.astype(np.uint8),
      "crowd_mask": np.zeros((mask_grid, mask_grid), np.uint8),
      "has_masks": np.asarray(True),
      "heights": np.asarray([h for _, _, h in placements], np.float32),
  }


def random_placements(num_people: int, input_size: int, rng: np.random.Generator,
                      min_height: float = 80.0, max_height: float = 200.0
                      ) -> Sequence[Tuple[float, float, float]]:
  """Random `(x, y, height)` with the whole person on the canvas (people may overlap)."""
  heights = rng.uniform(min_height, min(max_height, input_size - 2.0), num_people)
  margin = 0.2 * heights
  xs = rng.uniform(margin, input_size - 1.0 - margin)
  ys = rng.uniform(0.0, input_size - 1.0 - heights)
  return list(zip(xs.tolist(), ys.tolist(), heights.tolist()))
