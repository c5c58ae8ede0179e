"""Keypoint candidates: local maxima of the score maps (DESIGN.md 'Decoding' 2)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class Candidates(NamedTuple):
  """`C = K * per_type` candidates, type-major; invalid slots have score 0."""

  cells: tf.Tensor  # int32 [C] flat pose-grid cell r * W + c
  types: tf.Tensor  # int32 [C]
  scores: tf.Tensor  # float32 [C]
  valid: tf.Tensor  # bool [C]


def find_candidates(score_maps: tf.Tensor, threshold: float, per_type: int,
                    window: int = 3) -> Candidates:
  """Local maxima (`window` x `window` max-pool equality) above `threshold`, the best `per_type`
  of each type.

  Args:
    score_maps: float32 `[H, W, K]`.
    threshold: a peak must score strictly above it.
    per_type: candidates kept per type (capped at H * W).
    window: odd side of the neighbourhood a peak is the maximum of, in cells.
  """
  height, width, num_types = score_maps.shape
  per_type = min(per_type, height * width)
  pooled = tf.nn.max_pool2d(score_maps[None], window, 1, "SAME")[0]
  is_peak = (score_maps >= pooled) & (score_maps > threshold)
  peak_scores = tf.where(is_peak, score_maps, 0.0)
  by_type = tf.transpose(tf.reshape(peak_scores, [height * width, num_types]))  # [K, H*W]
  scores, cells = tf.math.top_k(by_type, k=per_type, sorted=False)
  types = tf.broadcast_to(tf.range(num_types)[:, None], [num_types, per_type])
  scores = tf.reshape(scores, [-1])
  return Candidates(cells=tf.reshape(cells, [-1]), types=tf.reshape(types, [-1]), scores=scores,
                    valid=scores > threshold)
