"""Squared distances between 2-D points, without a reduction over the coordinate axis.

A sum of squares over the size-2 coordinate axis (`tf.reduce_sum(..., axis=-1)`) is a reduce,
and XLA's CPU fusion ends a fusion at each reduce: the decoder's stages compiled one kernel per
distance table. The sum of the two squared coordinate differences is the same number (a sum of
two terms has one rounding) in an elementwise op that fuses with its producers and consumers
(docs/grouping.md, 'Speed, session 10').
"""

from __future__ import annotations

import tensorflow as tf


def squared_norm(vectors: tf.Tensor) -> tf.Tensor:
  """float32 `[...]`: the squared length of each `(x, y)` vector `[..., 2]`."""
  return tf.square(vectors[..., 0]) + tf.square(vectors[..., 1])


def squared_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """float32: the squared distance between points `a` and `b` (`[..., 2]`, broadcast)."""
  return squared_norm(a - b)
