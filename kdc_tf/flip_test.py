"""Flip test: the network's maps of an image averaged with those of its mirror image.

The mirror image's maps are mapped back to the image's frame: columns reversed, left / right
keypoint types (and the directed edges between them) swapped, x offsets negated. The model input
is corner-aligned (grid point c at input pixel stride * c, and S - 1 a multiple of every stride),
so column c of the mirror image's grids is exactly column G - 1 - c of the image's. Averaging
halves the variance of a network's independent errors; on perfect maps it changes nothing.
"""

from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from kdc_tf.datasets import DatasetSpec

# Multiplies the (x, y) of every offset vector when the image is mirrored.
_MIRROR_X = (-1.0, 1.0)


def mirrored_edge_permutation(spec: DatasetSpec) -> tuple:
  """New directed edge e takes the mirror image's edge `result[e]` (mid-range channels)."""
  types = spec.flip_permutation
  edges = list(spec.directed_edges)
  try:
    return tuple(edges.index((types[a], types[b])) for a, b in edges)
  except ValueError as error:
    raise ValueError(f"{spec.name}: the kinematic tree is not left/right symmetric, so the mid-"
                     "range maps of a mirror image cannot be mapped back") from error


def _mirrored_vectors(field: tf.Tensor, channel_order) -> tf.Tensor:
  """`[H, W, 2C]` (x, y) pairs: columns reversed, pairs reordered, x negated."""
  height, width, channels = field.shape
  pairs = tf.reshape(field[:, ::-1], [height, width, channels // 2, 2])
  pairs = tf.gather(pairs, list(channel_order), axis=2) * tf.constant(_MIRROR_X)
  return tf.reshape(pairs, [height, width, channels])


def mirror_back(inputs: Mapping[str, tf.Tensor], spec: DatasetSpec) -> Dict[str, tf.Tensor]:
  """The grouping inputs (one image, `grouping.INPUT_KEYS`) of a mirror image, in the image's
  frame."""
  return {
      "heatmap": tf.gather(inputs["heatmap"][:, ::-1], list(spec.flip_permutation), axis=2),
      "keycentroid": _mirrored_vectors(inputs["keycentroid"], spec.flip_permutation),
      "midrange": _mirrored_vectors(inputs["midrange"], mirrored_edge_permutation(spec)),
      "seg": inputs["seg"][:, ::-1],
      "mask_offset": _mirrored_vectors(inputs["mask_offset"], (0,)),
  }


def average_with_mirror(inputs: Mapping[str, tf.Tensor], mirror_inputs: Mapping[str, tf.Tensor],
                        spec: DatasetSpec) -> Dict[str, tf.Tensor]:
  """The mean of an image's grouping inputs and its mirror image's, mapped back."""
  mirrored = mirror_back(mirror_inputs, spec)
  return {key: 0.5 * (inputs[key] + mirrored[key]) for key in mirrored}
