"""Reading images and video frames as uint8 RGB `[H, W, 3]`, the input every predictor takes.

Grayscale, BGRA and 16-bit files are converted; what cannot be converted raises
`UnreadableImageError` with the reason, so callers can count and log the skip.
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2",
                              ".pbm", ".pgm", ".ppm"))
VIDEO_EXTENSIONS = frozenset((".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"))


class UnreadableImageError(ValueError):
  """A file that should be an image but does not decode to something we can convert."""


def to_rgb_uint8(decoded: np.ndarray) -> np.ndarray:
  """An OpenCV-decoded image (gray, BGR or BGRA; 8 or 16 bit) -> uint8 RGB `[H, W, 3]`."""
  if decoded.dtype == np.uint16:
    decoded = (decoded >> 8).astype(np.uint8)
  if decoded.dtype != np.uint8:
    raise UnreadableImageError(f"unsupported pixel type: {decoded.dtype}")
  if decoded.ndim == 2 or (decoded.ndim == 3 and decoded.shape[2] == 1):
    return cv2.cvtColor(decoded.reshape(decoded.shape[:2]), cv2.COLOR_GRAY2RGB)
  if decoded.ndim == 3 and decoded.shape[2] == 3:
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
  if decoded.ndim == 3 and decoded.shape[2] == 4:
    return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
  raise UnreadableImageError(f"unsupported pixel layout: shape {decoded.shape}")


def read_image(path: pathlib.Path) -> np.ndarray:
  """Reads an image file as uint8 RGB `[H, W, 3]`; raises UnreadableImageError with the reason."""
  data = np.fromfile(str(path), dtype=np.uint8)
  if data.size == 0:
    raise UnreadableImageError("unreadable: empty file")
  decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
  if decoded is None:
    raise UnreadableImageError("unreadable: corrupt or unsupported image data")
  if decoded.size == 0:
    raise UnreadableImageError("unreadable: zero-size image")
  try:
    return to_rgb_uint8(decoded)
  except UnreadableImageError as e:
    raise UnreadableImageError(f"unreadable: {e}") from None


class VideoReader:
  """The frames of a video file as uint8 RGB arrays; use as a context manager."""

  def __init__(self, path: pathlib.Path):
    self._capture = cv2.VideoCapture(str(path))
    if not self._capture.isOpened():
      raise UnreadableImageError(f"{path}: cannot open the video")

  @property
  def fps(self) -> float:
    """Frames per second the file declares (25 when it declares none)."""
    return self._capture.get(cv2.CAP_PROP_FPS) or 25.0

  @property
  def frame_count(self) -> int:
    """Frames the file declares; 0 or less when unknown."""
    return int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))

  def __iter__(self) -> Iterator[np.ndarray]:
    while True:
      ok, frame = self._capture.read()
      if not ok:
        return
      yield to_rgb_uint8(frame)

  def close(self) -> None:
    self._capture.release()

  def __enter__(self) -> "VideoReader":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
