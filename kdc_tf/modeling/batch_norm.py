"""Batch normalisation on TF's fused kernel: Keras 3's layer, computed in one op.

Keras 3's `BatchNormalization` builds the batch moments and the normalisation from generic ops, and
their gradients op by op: on the quick start's network that was 40 % of a training step's CPU time
(docs/learning.md, 'A cheaper step'). `FusedBatchNormalization` keeps the layer's weights,
arguments, momentum update and inference formula, and computes NHWC inputs with
`FusedBatchNormV3` (forward and gradient one kernel each, oneDNN on CPUs, cuDNN on GPUs). Other
cases (masks, renorm, another axis or rank) fall back to Keras' computation.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# FusedBatchNormV3 rejects a smaller epsilon (cuDNN's minimum).
_MIN_FUSED_EPSILON = 1.001e-5
_FUSED_INPUT_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


@keras.saving.register_keras_serializable(package="kdc_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` over the channels of NHWC inputs, on the fused kernel."""

  def _fusable(self, inputs, mask) -> bool:
    return (mask is None and not self.renorm and self.center and self.scale
            and len(inputs.shape) == 4 and self.axis in (-1, 3)
            and self.epsilon >= _MIN_FUSED_EPSILON)

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    # As Keras: statistics in float32 whatever the compute dtype (bfloat16 / float16 overflow).
    # The fused kernels take half-precision inputs with float32 statistics and parameters
    # themselves: no cast around them.
    x = inputs if inputs.dtype in _FUSED_INPUT_DTYPES else tf.cast(inputs, tf.float32)
    gamma = tf.cast(self.gamma, tf.float32)
    beta = tf.cast(self.beta, tf.float32)
    if training and self.trainable:
      outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
      # The kernel returns the sample variance; Keras' moving statistics follow the population
      # variance, the one the batch was normalised with.
      count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
      variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
      self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
      self.moving_variance.assign(
          self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    else:
      outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
          data_format="NHWC", is_training=False)
    return tf.cast(outputs, self.compute_dtype)
