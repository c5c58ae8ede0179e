"""Per-channel Gaussian smoothing: PGO on keypoint score maps, IGO on instance maps (DESIGN.md).

Sigmas are in grid cells. The kernel is the sampled Gaussian on integer offsets up to
`ceil(3 * sigma)`, normalised to sum 1, applied separably (rows then columns) as depthwise
convolutions with zero padding. A sigma of 0 is the identity.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf


def gaussian_kernels_1d(sigmas: Sequence[float]) -> np.ndarray:
  """float32 `[2r + 1, C]`: one normalised 1-D Gaussian per channel on a common radius r."""
  sigmas = np.asarray(sigmas, np.float64)
  if np.any(sigmas < 0):
    raise ValueError(f"Gaussian sigmas must be >= 0, got {sigmas.tolist()}")
  radius = max(1, math.ceil(3.0 * float(sigmas.max(initial=0.0))))
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)[:, None]
  safe = np.where(sigmas > 0, sigmas, 1.0)[None, :]
  kernels = np.where(sigmas[None, :] > 0, np.exp(-0.5 * (offsets / safe) ** 2),
                     (offsets == 0).astype(np.float64))
  return (kernels / kernels.sum(axis=0, keepdims=True)).astype(np.float32)


def smooth(maps: tf.Tensor, kernels_1d: np.ndarray, axes: Sequence[int] = (0, 1)) -> tf.Tensor:
  """Separable Gaussian smoothing of a rank-3 tensor along its two spatial `axes`.

  `kernels_1d` is `gaussian_kernels_1d(...)`, `[taps, C]`: one kernel per channel of the last
  axis (PGO, `[H, W, K]` maps), or `[taps, 1]`: one kernel for all (IGO, `[N, M, M]` maps).
  Written as a sum of shifted, weighted copies rather than a depthwise convolution: XLA fuses it
  into one pass, where its CPU depthwise convolution is ~10x slower.
  """
  taps = kernels_1d.shape[0]
  radius = taps // 2
  for axis in axes:
    padding = [[0, 0]] * 3
    padding[axis] = [radius, radius]
    padded = tf.pad(maps, padding)
    begin = [0, 0, 0]
    copies = []
    for t in range(taps):
      begin[axis] = t
      copies.append(tf.constant(kernels_1d[t]) * tf.slice(padded, begin, maps.shape))
    maps = tf.add_n(copies)
  return maps
