"""FusedBatchNormalization computes what keras.layers.BatchNormalization does, on one kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdc_tf.modeling.batch_norm import FusedBatchNormalization
from kdc_tf.training.precision import dtype_policy


def _twin_layers(epsilon: float, shape):
  """A Keras batch norm and a fused one with the same (non-trivial) weights and statistics."""
  reference, fused = keras.layers.BatchNormalization(epsilon=epsilon), FusedBatchNormalization(
      epsilon=epsilon)
  reference.build(shape)
  fused.build(shape)
  rng = np.random.default_rng(0)
  for a, b in zip(reference.weights, fused.weights):
    value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
    a.assign(value)
    b.assign(value)
  return reference, fused


def _relative(a, b) -> float:
  a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
  return float(tf.reduce_max(tf.abs(a - b)) / (tf.reduce_max(tf.abs(a)) + 1e-12))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("epsilon", [1e-3, 1.001e-5])
def test_fused_batch_norm_matches_keras_in_training_and_inference(policy, epsilon):
  shape = (4, 9, 11, 16)
  with dtype_policy(policy):
    reference, fused = _twin_layers(epsilon, shape)
  inputs = tf.cast(tf.random.stateless_normal(shape, [1, 2], 3.0, 2.0), reference.compute_dtype)
  upstream = tf.random.stateless_normal(shape, [3, 4])
  results = []
  for layer in (reference, fused):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      outputs = layer(inputs, training=True)
      loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
    gradients = tape.gradient(loss, [inputs] + layer.trainable_weights)
    results.append((outputs, gradients, layer.moving_mean, layer.moving_variance,
                    layer(inputs, training=False)))
  (ref_out, ref_grads, ref_mean, ref_var, ref_inf), (out, grads, mean, var, inf) = results
  assert out.dtype == ref_out.dtype
  tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-5  # bfloat16 keeps 8 bits
  assert _relative(ref_out, out) < tolerance
  assert _relative(ref_inf, inf) < tolerance
  for a, b in zip(ref_grads, grads):
    assert _relative(a, b) < 1e-5 if policy == "float32" else _relative(a, b) < 1e-2
  # The moving statistics follow the population variance, as Keras'.
  assert _relative(ref_mean, mean) < 1e-6 and _relative(ref_var, var) < 1e-6
  assert not np.allclose(mean.numpy(), 1.0, atol=1e-3)  # they moved from their initial values


def test_frozen_fused_batch_norm_uses_and_keeps_its_moving_statistics():
  shape = (2, 5, 5, 8)
  reference, fused = _twin_layers(1e-3, shape)
  fused.trainable = False
  before = fused.moving_mean.numpy().copy()
  inputs = tf.random.stateless_normal(shape, [5, 6], 3.0, 2.0)
  assert _relative(reference(inputs, training=False), fused(inputs, training=True)) < 1e-5
  np.testing.assert_array_equal(fused.moving_mean.numpy(), before)
