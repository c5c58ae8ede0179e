"""Adam and its weights' moving average on TF's fused kernels: Keras 3's Adam, fewer operations.

Keras 3's Adam updates each variable with about twenty generic operations and its moving average
with eight more; on the quick start's 140 small variables that was about an eighth of a CPU
training step (docs/learning.md, 'A fused optimizer and a cheaper input pipeline'). `FusedAdam`
computes the same update with one `ResourceApplyAdam` per variable (the same formula:
bias-corrected step size, epsilon outside the square root) and the moving average with one
`ResourceApplyGradientDescent` (`average -= (1 - momentum) * (average - variable)`). It keeps
Adam's variables, so checkpoints are interchangeable with `keras.optimizers.Adam`'s. Where the
fused kernels do not apply (another backend, AMSGrad, sparse gradients, a strategy that mirrors
variables across replicas, variables that are not float32) it is Keras' Adam.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


def _resource(variable) -> tf.Variable:
  """The tf.Variable behind a Keras variable."""
  return variable.value if isinstance(variable, keras.Variable) else variable


def _single_copy_strategy() -> bool:
  """Whether variables have one copy (no strategy, or one device): their handles are theirs."""
  strategy = tf.distribute.get_strategy()
  return (not tf.distribute.has_strategy()
          or isinstance(strategy, tf.distribute.OneDeviceStrategy))


@keras.saving.register_keras_serializable(package="kdc_tf")
class FusedAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` computed by TF's fused Adam and moving-average kernels."""

  def _fusable(self, grads: Sequence, variables: Sequence) -> bool:
    return (keras.backend.backend() == "tensorflow" and not self.amsgrad
            and _single_copy_strategy()
            and all(isinstance(g, tf.Tensor) for g in grads)
            and all(_resource(v).dtype == tf.float32 for v in variables))

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    if not self._fusable(grads, trainable_variables):
      return super()._backend_update_step(grads, trainable_variables, learning_rate)
    beta_1, beta_2 = tf.constant(self.beta_1, tf.float32), tf.constant(self.beta_2, tf.float32)
    local_step = tf.cast(self.iterations + 1, tf.float32)
    shared = dict(beta1_power=tf.pow(beta_1, local_step), beta2_power=tf.pow(beta_2, local_step),
                  lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                  epsilon=tf.constant(self.epsilon, tf.float32))
    for grad, variable in zip(grads, trainable_variables):
      index = self._get_variable_index(variable)
      tf.raw_ops.ResourceApplyAdam(
          var=_resource(variable).handle, m=_resource(self._momentums[index]).handle,
          v=_resource(self._velocities[index]).handle, grad=tf.cast(grad, tf.float32), **shared)

  def _update_model_variables_moving_average(self, trainable_variables):
    if not (self.use_ema and self._fusable([], trainable_variables)):
      return super()._update_model_variables_moving_average(trainable_variables)
    # Keras' rule: the average starts as the variable (momentum 0 at the first step).
    momentum = tf.cast(tf.not_equal(self.iterations, 0), tf.float32) * self.ema_momentum
    rate = 1.0 - momentum
    for variable, average in zip(trainable_variables, self._model_variables_moving_average):
      if average is None:
        continue
      average = _resource(average)
      tf.raw_ops.ResourceApplyGradientDescent(
          var=average.handle, alpha=rate, delta=average - _resource(variable))
