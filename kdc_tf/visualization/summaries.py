"""TensorBoard image summaries of training: predictions beside their targets, in one graph."""

from __future__ import annotations

from typing import Dict

import tensorflow as tf


def _overlay(images: tf.Tensor, heat: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Input image dimmed, keypoint-disk probability in red, person-mask probability in green."""
  size = tf.shape(images)[1:3]
  heat = tf.image.resize(heat, size)
  mask = tf.image.resize(mask, size)
  colours = tf.concat([heat, mask, tf.zeros_like(heat)], axis=-1)
  return tf.clip_by_value(0.6 * images / 255.0 + 0.4 * colours, 0.0, 1.0)


def summary_images(images: tf.Tensor, targets: Dict[str, tf.Tensor],
                   outputs: Dict[str, tf.Tensor]) -> tf.Tensor:
  """[N, S, 2S, 3] in [0, 1]: prediction (left) beside target (right), max over keypoint types."""
  predicted = _overlay(
      images, tf.reduce_max(tf.sigmoid(outputs["heatmap_logits"]), axis=-1, keepdims=True),
      tf.sigmoid(outputs["seg_logits"]))
  target = _overlay(images, tf.reduce_max(targets["heatmap"], axis=-1, keepdims=True),
                    targets["seg"])
  return tf.concat([predicted, target], axis=2)
