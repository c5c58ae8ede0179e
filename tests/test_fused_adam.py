"""FusedAdam computes Keras' Adam and moving average, and shares its checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdc_tf.training.fused_adam import FusedAdam


def _model() -> keras.Model:
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                           keras.layers.Dense(3)])


def _train(optimizer: keras.optimizers.Optimizer, steps: int, model=None) -> keras.Model:
  model = model or _model()
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(32, 8)), tf.float32)
  y = tf.constant(rng.normal(size=(32, 3)), tf.float32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(model(x) - y))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

  for _ in range(steps):
    step()
  return model


def _state(model: keras.Model, optimizer: keras.optimizers.Optimizer):
  return ([v.numpy() for v in model.trainable_variables]
          + [v.numpy() for v in optimizer.variables])


@pytest.mark.parametrize("use_ema", [False, True])
def test_fused_adam_follows_keras_adam(use_ema):
  states = []
  for optimizer_class in (keras.optimizers.Adam, FusedAdam):
    optimizer = optimizer_class(learning_rate=1e-2, use_ema=use_ema, ema_momentum=0.9)
    model = _train(optimizer, steps=40)
    states.append(_state(model, optimizer))
  keras_state, fused_state = states
  assert len(keras_state) == len(fused_state)
  moved = _state(_model(), keras.optimizers.Adam(learning_rate=1e-2, use_ema=use_ema))
  assert any(np.max(np.abs(a - b)) > 1e-2 for a, b in zip(keras_state, moved))
  for keras_value, fused_value in zip(keras_state, fused_state):
    np.testing.assert_allclose(fused_value, keras_value, rtol=1e-4, atol=2e-5)


def test_fused_adam_resumes_a_keras_adam_checkpoint(tmp_path):
  model = _model()
  keras_adam = keras.optimizers.Adam(learning_rate=1e-2, use_ema=True, ema_momentum=0.9)
  _train(keras_adam, steps=10, model=model)
  path = tf.train.Checkpoint(model=model, optimizer=keras_adam).save(str(tmp_path / "ckpt"))
  continued = _state(_train(keras_adam, steps=10, model=model), keras_adam)

  resumed_model = _model()
  fused = FusedAdam(learning_rate=1e-2, use_ema=True, ema_momentum=0.9)
  fused.build(resumed_model.trainable_variables)
  tf.train.Checkpoint(model=resumed_model, optimizer=fused).restore(path).assert_consumed()
  assert int(fused.iterations.numpy()) == 10
  resumed = _state(_train(fused, steps=10, model=resumed_model), fused)
  for keras_value, fused_value in zip(continued, resumed):
    np.testing.assert_allclose(fused_value, keras_value, rtol=1e-4, atol=2e-5)
