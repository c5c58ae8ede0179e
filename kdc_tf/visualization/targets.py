"""A picture of one example's training targets (ARCHITECTURE.md section 3), to check the encoder.

`save_target_panel` writes four tiles side by side, each the S x S input:
  1. heatmaps (max over keypoint types) over the image; keypoint ignore regions darkened;
  2. KeyCentroid offsets as arrows p -> p + offset inside the disks, one colour per keypoint type;
  3. the person mask coloured by instance id (overlaps white, segmentation-ignored regions dark);
  4. MaskCentroid offsets as arrows on the mask grid, one colour per instance.
"""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from kdc_tf.geometry import MASK_STRIDE
from kdc_tf.datasets import DatasetSpec
from kdc_tf.visualization.overlay import blend_masks, instance_colours

_ARROW_TILE_STEP = 2  # draw an arrow at every 2nd grid point: denser is unreadable
_TITLE_HEIGHT = 22


def _to_numpy(value) -> np.ndarray:
  return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _grid_to_image(values: np.ndarray, stride: int, size: int) -> np.ndarray:
  """Nearest grid point of every input pixel: [g, g, ...] -> [size, size, ...]."""
  index = np.minimum(np.rint(np.arange(size) / stride).astype(int), values.shape[0] - 1)
  return values[index][:, index]


def _heatmap_tile(image: np.ndarray, targets: Mapping[str, np.ndarray], stride: int) -> np.ndarray:
  size = image.shape[0]
  heat = _grid_to_image(targets["heatmap"].max(axis=-1), stride, size)
  colour = cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_INFERNO)[..., ::-1]
  tile = np.where(heat[..., None] > 0, 0.5 * image + 0.5 * colour, image)
  ignored = _grid_to_image(targets["keypoint_weight"][..., 0], stride, size) == 0
  tile[ignored] *= 0.35
  return tile.astype(np.uint8)


def _arrows(canvas: np.ndarray, starts: np.ndarray, offsets: np.ndarray,
            colours: np.ndarray) -> None:
  for (x, y), (dx, dy), colour in zip(starts, offsets, colours):
    cv2.arrowedLine(canvas, (int(round(x)), int(round(y))), (int(round(x + dx)), int(round(y + dy))),
                    tuple(int(c) for c in colour), 1, cv2.LINE_AA, tipLength=0.15)


def _keycentroid_tile(image: np.ndarray, targets: Mapping[str, np.ndarray], stride: int,
                      spec: DatasetSpec) -> np.ndarray:
  canvas = np.ascontiguousarray((0.6 * image).astype(np.uint8))
  heatmap = targets["heatmap"][::_ARROW_TILE_STEP, ::_ARROW_TILE_STEP]
  offsets = targets["keycentroid"][::_ARROW_TILE_STEP, ::_ARROW_TILE_STEP].reshape(
      heatmap.shape + (2,))
  rows, cols, types = np.nonzero(heatmap > 0)
  starts = np.stack([cols, rows], axis=-1) * stride * _ARROW_TILE_STEP
  _arrows(canvas, starts, offsets[rows, cols, types], instance_colours(spec.num_keypoints)[types])
  return canvas


def _instance_tile(image: np.ndarray, targets: Mapping[str, np.ndarray]) -> np.ndarray:
  size = image.shape[0]
  ids = _grid_to_image(targets["instance_ids"], MASK_STRIDE, size)
  num_instances = max(int(ids.max()), 0)
  masks = ids[None] == np.arange(1, num_instances + 1)[:, None, None]
  tile = blend_masks(image, masks, instance_colours(num_instances), alpha=0.6)
  tile[ids == -1] = 255
  ignored = _grid_to_image(targets["seg_weight"][..., 0], MASK_STRIDE, size) == 0
  tile[ignored] = (tile[ignored] * 0.35).astype(np.uint8)
  return tile


def _mask_offset_tile(image: np.ndarray, targets: Mapping[str, np.ndarray]) -> np.ndarray:
  canvas = np.ascontiguousarray((0.6 * image).astype(np.uint8))
  step = 2 * _ARROW_TILE_STEP
  ids = targets["instance_ids"][::step, ::step]
  offsets = targets["mask_offset"][::step, ::step]
  rows, cols = np.nonzero(ids > 0)
  starts = np.stack([cols, rows], axis=-1) * MASK_STRIDE * step
  colours = instance_colours(max(int(targets["instance_ids"].max()), 1))
  _arrows(canvas, starts, offsets[rows, cols], colours[ids[rows, cols] - 1])
  return canvas


def _titled(tile: np.ndarray, title: str) -> np.ndarray:
  bar = np.full((_TITLE_HEIGHT, tile.shape[1], 3), 255, np.uint8)
  cv2.putText(bar, title, (4, _TITLE_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
              cv2.LINE_AA)
  return np.concatenate([bar, tile], axis=0)


def target_panel(image, targets: Mapping, spec: DatasetSpec) -> np.ndarray:
  """The four tiles side by side as an RGB uint8 image [S + title, 4 S, 3].

  Args:
    image: the input image [S, S, 3], RGB, float in [0, 255] or uint8.
    targets: one example's targets (unbatched, numpy or tensors), ARCHITECTURE.md section 3.
    spec: the keypoint layout (number of types, for the arrow colours).
  """
  image = np.clip(_to_numpy(image), 0, 255).astype(np.float32)
  if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
    raise ValueError(f"image must be a square [S, S, 3] input, got {image.shape}")
  targets = {key: _to_numpy(value) for key, value in targets.items()}
  heatmap = targets["heatmap"]
  if heatmap.ndim != 3 or heatmap.shape[-1] != spec.num_keypoints:
    raise ValueError(f"heatmap must be [G, G, {spec.num_keypoints}] (unbatched) for "
                     f"{spec.name}, got {heatmap.shape}")
  stride = (image.shape[0] - 1) // (heatmap.shape[0] - 1)
  tiles = [
      _titled(_heatmap_tile(image, targets, stride), "heatmaps (max over types)"),
      _titled(_keycentroid_tile(image, targets, stride, spec), "KeyCentroid offsets"),
      _titled(_instance_tile(image.astype(np.uint8), targets), "instance ids (white: overlap)"),
      _titled(_mask_offset_tile(image, targets), "MaskCentroid offsets"),
  ]
  return np.concatenate(tiles, axis=1)


def save_target_panel(image, targets: Mapping, path: str, spec: DatasetSpec) -> np.ndarray:
  """Writes `target_panel(image, targets, spec)` as a PNG at `path`; returns the RGB panel."""
  panel = target_panel(image, targets, spec)
  if not cv2.imwrite(str(path), panel[..., ::-1]):
    raise OSError(f"could not write {path}")
  return panel
