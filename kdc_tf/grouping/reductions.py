"""The index of the first minimum or maximum along an axis, as two plain reductions.

`tf.argmin` / `tf.argmax` compile in XLA's CPU backend to a variadic reduce (value and index
together), about 0.1 ms per call on the decoder's `[30, 833]` tables where a plain reduce costs a
fraction of that; the decoder's third stage ran nine of them on every image (docs/grouping.md,
'Speed, session 11'). The extreme value, then the smallest index that holds it, is the same index
for values without NaN (the grouping inputs are checked finite; infinities are fine): argmin and
argmax also return the first of equal extremes.
"""

from __future__ import annotations

import tensorflow as tf


def _first_index(hits: tf.Tensor, axis: int) -> tf.Tensor:
  size = hits.shape[axis]
  shape = [1] * hits.shape.rank
  shape[axis] = size
  index = tf.reshape(tf.range(size), shape)
  return tf.reduce_min(tf.where(hits, index, size), axis=axis)


def argmin(values: tf.Tensor, axis: int) -> tf.Tensor:
  """int32: as `tf.argmin(values, axis, output_type=tf.int32)` for values without NaN."""
  axis = axis % values.shape.rank
  return _first_index(values <= tf.reduce_min(values, axis=axis, keepdims=True), axis)


def argmax(values: tf.Tensor, axis: int) -> tf.Tensor:
  """int32: as `tf.argmax(values, axis, output_type=tf.int32)` for values without NaN."""
  axis = axis % values.shape.rank
  return _first_index(values >= tf.reduce_max(values, axis=axis, keepdims=True), axis)


def top_k(values: tf.Tensor, k: int):
  """As `tf.math.top_k(values, k)` (values and int32 indices `[..., k]`, largest first, the
  lower index first among equal values) for values without NaN, as `k` rounds of a maximum and
  the first index holding it among the entries not yet taken: for a small `k` over a short last
  axis, where XLA's CPU TopK (a custom call) cost 0.12 ms on `[510, 30]` with k = 4
  (docs/grouping.md, 'Speed, session 12')."""
  size = values.shape[-1]
  index = tf.range(size)
  taken = tf.zeros_like(values, tf.bool)
  best_values, best_indices = [], []
  for _ in range(k):
    best = tf.reduce_max(tf.where(taken, -float("inf"), values), axis=-1, keepdims=True)
    first = _first_index((values >= best) & ~taken, axis=-1)
    taken |= tf.equal(index, first[..., None])
    best_values.append(best[..., 0])
    best_indices.append(first)
  return tf.stack(best_values, axis=-1), tf.stack(best_indices, axis=-1)
