"""Re-estimation of batch-norm moving statistics for the final weights.

During training a batch-norm layer's moving mean and variance follow its batch statistics with
momentum 0.99: they average the last ~100 steps' statistics, computed with the weights of those
steps. After a short training (or one whose weights still move fast) they lag the weights, and the
inference-mode network, which uses them, is far from the trained one (docs/learning.md: 200 steps
from random initialisation gave a training loss of 0.23 with batch statistics but 3.99 with the
moving ones, and AP 0). Re-estimating them on a few batches with the final weights, as SWA and
PyTorch's `update_bn` do, gives the statistics of the network that was trained. Frozen layers
(`trainable` False, e.g. the trunk's ImageNet statistics under `freeze_batch_norm`) are left alone.
"""

from __future__ import annotations

from typing import Iterator, List

import keras
import numpy as np
import tensorflow as tf
from absl import logging


def trained_batch_norm_layers(model: keras.Model) -> List[keras.layers.BatchNormalization]:
  """The batch-norm layers of `model` (nested models included) whose statistics training moves."""
  return [layer for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def reestimate_batch_norm(model: keras.Model, strategy: tf.distribute.Strategy,
                          batches: Iterator, num_batches: int) -> int:
  """Sets each trained batch-norm layer's moving statistics to the mean, over `num_batches`
  batches of `batches`, of its batch statistics under the current weights.

  `batches` yields what the training step takes: `(images, targets)`, distributed by `strategy`
  when it has several replicas (per-replica statistics are averaged as in training). No weight
  other than the moving statistics changes. Returns the number of layers re-estimated (0: nothing
  to do, no batch is read).
  """
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}")
  layers = trained_batch_norm_layers(model)
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  statistics = [(layer.moving_mean, layer.moving_variance) for layer in layers]
  sums = [[np.zeros(v.shape, np.float64) for v in pair] for pair in statistics]
  try:
    for layer in layers:  # A training-mode call now writes the batch's statistics.
      layer.momentum = 0.0
    forward = tf.function(lambda batch: strategy.run(
        lambda images, targets: model(images, training=True), args=batch))
    for _ in range(num_batches):
      forward(next(batches))
      for total, pair in zip(sums, statistics):
        for accumulated, variable in zip(total, pair):
          accumulated += variable.numpy()
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  for total, pair in zip(sums, statistics):
    for accumulated, variable in zip(total, pair):
      variable.assign((accumulated / num_batches).astype(variable.dtype))
  logging.info("Re-estimated the moving statistics of %d batch-norm layers on %d batches",
               len(layers), num_batches)
  return len(layers)
