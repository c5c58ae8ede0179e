"""Per-channel Gaussian smoothing: PGO on keypoint score maps, IGO on instance maps (DESIGN.md).

Units. The papers give PGO and IGO sigmas in [0.1, 1] without a unit; in grid cells the small
values do nothing (the kernel at 0.1 cells is [0, 1, 0]). A configured sigma (`GroupingConfig`
`pgo_sigma_high`, `pgo_sigma_low`, `igo_sigma`) is in units of `SIGMA_UNIT` = 32 input pixels,
the paper's disk radius R: the disk is the length over which a keypoint's evidence is spread (its
votes come from a disk of radius R), and PGO acts on per-type score maps before any person
exists, so no person scale is available there (the OKS-sigma alternative needs one). The unit is
fixed rather than the model's own R so that the R = 8/16/32 ablation changes the disks alone.
`sigma_in_cells` is the one conversion the decoder uses. [0.1, 1] spans 3.2 - 32 px:

| sigma | PGO cells, stride 8 (taps) | PGO cells, stride 16 | IGO cells, stride 4 (taps) |
| --- | --- | --- | --- |
| 0.1 | 0.4 (5: centre 0.92, neighbours 0.04) | 0.2 | 0.8 (7) |
| 0.3 | 1.2 (9) | 0.6 | 2.4 (17) |
| 0.5 | 2.0 (13) | 1.0 | 4.0 (25) |
| 1.0 | 4.0 (25) | 2.0 | 8.0 (49) |

Sigmas are converted to grid cells for the kernels below. The kernel is the sampled Gaussian on integer offsets up to
`ceil(3 * sigma)`, normalised to sum 1, applied separably (rows then columns) as depthwise
convolutions with zero padding. A sigma of 0 is the identity.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

# Input pixels per unit of a configured PGO / IGO sigma (the paper's disk radius, module docstring).
SIGMA_UNIT = 32.0


def sigma_in_cells(sigma: float, stride: int) -> float:
  """A configured PGO / IGO sigma (units of `SIGMA_UNIT` input pixels) in cells of a grid."""
  if sigma < 0:
    raise ValueError(f"Gaussian sigmas must be >= 0, got {sigma}")
  return sigma * SIGMA_UNIT / stride


def pgo_sigmas_in_cells(high_variance: Sequence[bool], sigma_high: float, sigma_low: float,
                        stride: int) -> Tuple[float, ...]:
  """Per keypoint type, the PGO sigma of its group (`DatasetSpec.high_variance`) in pose cells."""
  return tuple(sigma_in_cells(sigma_high if high else sigma_low, stride)
               for high in high_variance)


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


def mean_peak_heights(kernels_1d: np.ndarray, positions: int = 16) -> np.ndarray:
  """float32 `[C]`: the peak each channel's 2-D kernel makes of a unit mass splatted bilinearly,
  averaged over the mass's position in its cell. Separable: the square of the 1-D mean peak."""
  fractions = (np.arange(positions, dtype=np.float64) + 0.5) / positions  # [U]
  taps = np.pad(kernels_1d.astype(np.float64), [[1, 1], [0, 0]])  # zero beyond the kernel
  # 1-D: mass 1 - u on grid point 0, u on grid point 1, smoothed: [U, taps + 1, C].
  smoothed = ((1.0 - fractions)[:, None, None] * taps[None, 1:]
              + fractions[:, None, None] * taps[None, :-1])
  return np.square(smoothed.max(axis=1).mean(axis=0)).astype(np.float32)


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
