"""Training: the binary under MirroredStrategy on two CPUs, resume after a stop, NaN guard."""

import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from data_pipeline.input_pipeline import build_dataset
from experiments import train
from experiments.presets import whole_image_finish
from kdc_tf.checkpoints import restore_model
from kdc_tf.config import (ExperimentConfig, TrainConfig, apply_overrides, load_config,
                            save_config)
from kdc_tf.geometry import OFFSET_SCALE, Geometry
from kdc_tf.modeling import ModelConfig, trunk_name
from kdc_tf.training import NonFiniteLossError, Trainer, create_strategy
from kdc_tf.training import trainer as trainer_module
from kdc_tf.training.batch_norm import reestimate_batch_norm, trained_batch_norm_layers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 129

# Runs experiments.train's main with the CPU split into two logical devices, which must happen
# before TensorFlow initialises its devices: hence a subprocess.
_MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from absl import app
    from experiments import train
    train.define_flags()
    app.run(train.main, argv=["train"] + sys.argv[1:])
    """)


def _run(script, *args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _scalars(event_dir, tag):
  """{step: value} of a TF2 scalar summary."""
  values = {}
  for path in tf.io.gfile.glob(os.path.join(event_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def _config_from(*argv):
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values(["train", *argv])
  return train.config_from_flags(flag_values)


def test_train_defaults_are_the_papers():
  config = _config_from()
  assert config.geometry == Geometry(dataset="coco", input_size=401, output_stride=8,
                                     disk_radius=32.0)
  assert (config.model.depth, config.encoder.centroid_mode) == ("101", "dynamic")
  train_config = config.train
  assert (train_config.batch_size, train_config.learning_rate, train_config.epochs,
          train_config.strategy, train_config.train_pattern) == (4, 1e-5, 400, "mirrored", "")
  assert train_config.steps_per_epoch == 0  # counted from the training set
  augment = config.augment
  assert (augment.min_scale, augment.max_scale, augment.max_rotation_degrees,
          augment.flip_probability) == (0.7, 1.3, 30.0, 0.5)


def test_train_config_from_a_file_geometry_flags_and_overrides(tmp_path):
  path = tmp_path / "experiment.json"
  path.write_text('{"model": {"depth": "50"}, "loss": {"membership_sigma": 0.3}, '
                  '"geometry": {"disk_radius": 16}}')
  config = _config_from(f"--config={path}", "--input_size=193", "--output_stride=16",
                        "--override=model.depth=tiny", "--override=train.seed=3",
                        "--override=encoder.centroid_mode=static", "--train_pattern=x-*")
  assert config.geometry == Geometry(input_size=193, output_stride=16, disk_radius=16.0)
  assert (config.model.depth, config.loss.membership_sigma, config.train.seed) == ("tiny", 0.3, 3)
  assert (config.encoder.centroid_mode, config.train.train_pattern) == ("static", "x-*")
  with pytest.raises(ValueError, match="model.widht"):
    _config_from("--override=model.widht=3")


def test_tiny_model_trains_30_steps_on_two_mirrored_cpus_and_its_loss_falls(tmp_path, small_embedded):
  model_dir = tmp_path / "mirrored"
  overrides = ("model.depth=tiny", "train.epochs=1", "train.steps_per_epoch=30",
               "train.learning_rate=1e-3", "train.summary_every=5",
               "train.image_summary_every=30", "train.checkpoint_every=30", "train.seed=0")
  result = _run(_MIRRORED_SCRIPT, f"--model_dir={model_dir}", f"--input_size={SIZE}",
                f"--train_pattern={small_embedded['train']}",
                *(f"--override={override}" for override in overrides))
  assert "on 2 replica(s)" in result.stderr
  total = _scalars(str(model_dir / "train"), "loss/total")
  assert sorted(total) == [5, 10, 15, 20, 25, 30]
  assert all(np.isfinite(v) for v in total.values())
  assert total[30] < 0.8 * total[5], total
  for term in ("heatmap", "keycentroid", "midrange", "seg", "mask_offset", "membership"):
    assert len(_scalars(str(model_dir / "train"), f"loss/{term}")) == 6, term
  assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-30")
  assert load_config(str(model_dir)).train.steps_per_epoch == 30


def _variables(trainer):
  return ([v.numpy() for v in trainer.model.variables],
          [v.numpy() for v in trainer.optimizer.variables])


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, small_embedded):
  """3 steps, then a new Trainer on the same model_dir (as after a kill) that goes on to 6."""
  model_dir = str(tmp_path_factory.mktemp("resume"))
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=SIZE), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, learning_rate=1e-3, epochs=1, steps_per_epoch=3,
                        checkpoint_every=3, seed=0, strategy="one_device"))
  dataset = build_dataset(pattern, config.geometry, config.encoder, config.augment, 4,
                          training=True, seed=0)
  first = Trainer(config, model_dir, create_strategy("one_device"))
  first.run(dataset)
  first_state = _variables(first)
  longer = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
  second = Trainer(longer, model_dir, create_strategy("one_device"))
  restored = {"step": int(second.step.numpy()),
              "iterations": int(second.optimizer.iterations.numpy()),
              "state": _variables(second)}
  losses = second.run(dataset)
  return dict(model_dir=model_dir, config=longer, dataset=dataset, first_state=first_state,
              restored=restored, second=second, losses=losses)


def test_resume_restores_step_model_and_optimizer_state(resumed_run):
  restored = resumed_run["restored"]
  assert restored["step"] == 3 and restored["iterations"] == 3
  for expected, actual in zip(resumed_run["first_state"], restored["state"]):
    assert len(expected) == len(actual) > 0
    for a, b in zip(expected, actual):
      np.testing.assert_array_equal(a, b)


def test_resumed_training_continues_to_the_new_end(resumed_run):
  second = resumed_run["second"]
  assert resumed_run["losses"]["step"] == 6
  assert int(second.optimizer.iterations.numpy()) == 6
  assert tf.train.latest_checkpoint(resumed_run["model_dir"]).endswith("ckpt-6")


def test_restore_model_rebuilds_the_trained_network_from_model_dir(resumed_run):
  second = resumed_run["second"]
  model, config = restore_model(resumed_run["model_dir"])
  # The configuration as trained: the batch-norm default resolved (random init: not frozen).
  assert config == second.config and config.model.freeze_batch_norm is False
  assert config == dataclasses.replace(resumed_run["config"], model=dataclasses.replace(
      resumed_run["config"].model, freeze_batch_norm=False))
  image = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
  expected = second.model(image, training=False)
  for name, value in model(image, training=False).items():
    np.testing.assert_allclose(value.numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-5)
  larger, larger_config = restore_model(resumed_run["model_dir"] + "/ckpt-6", input_size=161)
  assert larger.output["seg_logits"].shape[1:3] == (41, 41)
  assert larger_config.geometry.input_size == 161


def test_a_model_trained_on_crops_is_restored_at_its_test_input_size(resumed_run, tmp_path):
  with pytest.raises(ValueError, match="multiple of"):
    Geometry(input_size=SIZE, test_input_size=160)
  config = resumed_run["second"].config
  cropped = dataclasses.replace(
      config, geometry=dataclasses.replace(config.geometry, test_input_size=161))
  model_dir = str(tmp_path)
  save_config(cropped, model_dir)
  checkpoint = tf.train.latest_checkpoint(resumed_run["model_dir"])
  for path in tf.io.gfile.glob(checkpoint + ".*"):
    tf.io.gfile.copy(path, os.path.join(model_dir, os.path.basename(path)))
  with open(os.path.join(model_dir, "checkpoint"), "w") as f:  # the state file, at the copy
    f.write(f'model_checkpoint_path: "{os.path.basename(checkpoint)}"\n')
  model, restored = restore_model(model_dir)
  assert model.output["seg_logits"].shape[1:3] == (41, 41)
  assert restored.geometry.input_size == 161 and restored.geometry.test_input_size is None
  assert load_config(model_dir) == cropped  # the field survives the JSON
  model, restored = restore_model(model_dir, input_size=SIZE)  # an explicit scale wins
  assert model.output["seg_logits"].shape[1:3] == ((SIZE - 1) // 4 + 1,) * 2


def test_a_run_on_crops_goes_on_on_whole_images_at_its_test_scale(tmp_path, small_embedded):
  """The quick start's finish: the checkpoints of 65 x 65 crops resume on whole images at 97."""
  pattern = small_embedded["train"]
  crops = ExperimentConfig(
      geometry=Geometry(input_size=65, test_input_size=97), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, learning_rate=1e-3, epochs=1, steps_per_epoch=2,
                        checkpoint_every=2, seed=0, strategy="one_device"))
  finish = whole_image_finish(crops, steps=2)
  assert (finish.geometry.input_size, finish.geometry.test_input_size) == (97, None)
  assert (finish.augment.min_scale, finish.augment.max_scale) == (1.0, 1.0)
  assert finish.train.total_steps == 4
  model_dir = str(tmp_path)
  for config in (crops, finish):
    trainer = Trainer(config, model_dir, create_strategy("one_device"))
    losses = trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment,
                                       2, training=True, seed=0))
  assert losses["step"] == 4 and int(trainer.optimizer.iterations.numpy()) == 4
  assert load_config(model_dir).geometry == finish.geometry
  model, _ = restore_model(model_dir)
  assert model.output["seg_logits"].shape[1:3] == (25, 25)  # built at 97
  other = dataclasses.replace(finish, geometry=finish.geometry.with_input_size(129))
  with pytest.raises(ValueError, match="another geometry configuration"):
    Trainer(other, model_dir, create_strategy("one_device"))
  with pytest.raises(ValueError, match="needs a run on crops"):
    whole_image_finish(finish, steps=2)


def test_a_finish_below_the_test_scale_keeps_it(tmp_path, small_embedded):
  """The quick start's finish trains at 289 and tests at 321: the finish's geometry keeps the
  test scale, resumes the crops' checkpoints, and the restored model is built at the test scale."""
  pattern = small_embedded["train"]
  crops = ExperimentConfig(
      geometry=Geometry(input_size=65, test_input_size=129), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, learning_rate=1e-3, epochs=1, steps_per_epoch=1,
                        checkpoint_every=1, seed=0, strategy="one_device"))
  finish = whole_image_finish(crops, steps=1, input_size=97)
  assert (finish.geometry.input_size, finish.geometry.test_input_size) == (97, 129)
  model_dir = str(tmp_path)
  for config in (crops, finish):
    trainer = Trainer(config, model_dir, create_strategy("one_device"))
    losses = trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment,
                                       2, training=True, seed=0))
  assert losses["step"] == 2
  assert load_config(model_dir).geometry == finish.geometry
  model, restored = restore_model(model_dir)
  assert restored.geometry.input_size == 129
  assert model.output["seg_logits"].shape[1:3] == (33, 33)
  other = dataclasses.replace(finish, model=ModelConfig(depth="small"))
  with pytest.raises(ValueError, match="another model configuration"):
    Trainer(other, model_dir, create_strategy("one_device"))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(resumed_run):
  config = resumed_run["config"]
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
  trainer = Trainer(config, resumed_run["model_dir"], create_strategy("one_device"))
  poisoned = resumed_run["dataset"].map(lambda image, targets: (image * np.nan, targets))
  with pytest.raises(NonFiniteLossError, match="step 7"):
    trainer.run(poisoned)
  assert tf.train.latest_checkpoint(resumed_run["model_dir"]).endswith("ckpt-6")


def test_non_finite_gradients_of_a_finite_loss_stop_training(resumed_run, monkeypatch):
  """A loss term of value 0 whose gradient is NaN: the step's gradient check stops the run."""
  original = trainer_module.compute_losses

  @tf.custom_gradient
  def zero_with_nan_gradient(x):
    return tf.zeros([]), lambda upstream: tf.fill(tf.shape(x), np.nan) * upstream

  def poisoned_losses(targets, outputs, *args, **kwargs):
    losses = dict(original(targets, outputs, *args, **kwargs))
    losses["total"] += zero_with_nan_gradient(outputs["seg_logits"])
    return losses

  monkeypatch.setattr(trainer_module, "compute_losses", poisoned_losses)
  config = resumed_run["config"]
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
  trainer = Trainer(config, resumed_run["model_dir"], create_strategy("one_device"))
  with pytest.raises(NonFiniteLossError, match=r"loss became \S+ with non-finite gradients at "
                                               r"step 7"):
    trainer.run(resumed_run["dataset"])
  assert tf.train.latest_checkpoint(resumed_run["model_dir"]).endswith("ckpt-6")


def test_a_model_dir_of_another_architecture_is_refused(resumed_run):
  config = resumed_run["config"]
  other = dataclasses.replace(config, model=dataclasses.replace(config.model, neck_width=64))
  with pytest.raises(ValueError, match="another model configuration"):
    Trainer(other, resumed_run["model_dir"], create_strategy("one_device"))
  mixed = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                precision="mixed_bfloat16"))
  with pytest.raises(ValueError, match="another precision configuration"):
    Trainer(mixed, resumed_run["model_dir"], create_strategy("one_device"))


def test_model_dirs_from_before_the_offset_scale_keep_their_disk_radius_scale():
  """Configs written before `ModelConfig.offset_scale` existed scaled offsets by R: kept so."""
  values = ExperimentConfig(geometry=Geometry(input_size=129, disk_radius=8.0),
                            model=ModelConfig(depth="tiny")).to_dict()
  assert values["model"]["offset_scale"] == OFFSET_SCALE
  assert ExperimentConfig.from_dict(values).model.offset_scale == OFFSET_SCALE
  del values["model"]["offset_scale"]
  assert ExperimentConfig.from_dict(values).model.offset_scale == 8.0


def test_absurd_learning_rate_on_resume_applies_and_never_saves_diverged_weights(resumed_run):
  """A resume at lr 1e30: the new rate applies (it used to be silently replaced by the
  checkpoint's), the diverged weights are never saved, and the stop names the last checkpoint
  with finite weights, which restores to a model with a finite output."""
  model_dir, config = resumed_run["model_dir"], resumed_run["config"]
  absurd = dataclasses.replace(config, train=dataclasses.replace(
      config.train, learning_rate=1e30, epochs=3, checkpoint_every=1))
  trainer = Trainer(absurd, model_dir, create_strategy("one_device"))
  assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(1e30)
  assert load_config(model_dir).train.learning_rate == 1e30
  with pytest.raises(NonFiniteLossError, match=r"last checkpoint with finite weights is \S*ckpt-6"):
    trainer.run(resumed_run["dataset"])
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-6")
  model, _ = restore_model(model_dir)
  assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)
  images, _ = next(iter(resumed_run["dataset"]))
  for value in model(images, training=False).values():
    assert np.all(np.isfinite(value.numpy()))


def test_a_non_chief_worker_removes_its_scratch_checkpoints(resumed_run, monkeypatch):
  from kdc_tf.training import trainer as trainer_module
  monkeypatch.setattr(trainer_module, "is_chief", lambda strategy: False)
  worker = Trainer(resumed_run["config"], resumed_run["model_dir"],
                   create_strategy("one_device"))
  scratch = worker.manager.directory
  assert os.path.isdir(scratch) and scratch != resumed_run["model_dir"]
  worker.run(resumed_run["dataset"])
  assert not os.path.exists(scratch)


def test_a_resumed_run_does_not_replay_the_first_batches(resumed_run):
  """The input seed moves with the resumed step (same seed at step 0 replayed batches 1, 2, ...)."""
  resumed = Trainer(resumed_run["config"], resumed_run["model_dir"],
                    create_strategy("one_device"))
  assert int(resumed.step.numpy()) > 0
  assert resumed.input_seed() == resumed_run["config"].train.seed + int(resumed.step.numpy())


def _trunk_bn_statistics(trainer):
  trunk = trainer.model.get_layer(trunk_name(trainer.config.model))
  return [w.numpy() for layer in trunk.layers
          if isinstance(layer, keras.layers.BatchNormalization)
          for w in (layer.moving_mean, layer.moving_variance)]


def test_frozen_trunk_batch_norm_statistics_do_not_move_during_training(tmp_path, monkeypatch, small_embedded):
  # Nor in the re-estimation after the last step, which only the heads' batch norm goes through.
  calls = []

  def spy(model, strategy, batches, num_batches):
    calls.append((num_batches, len(trained_batch_norm_layers(model))))
    return reestimate_batch_norm(model, strategy, batches, num_batches)

  monkeypatch.setattr(trainer_module, "reestimate_batch_norm", spy)
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=65), model=ModelConfig(depth="tiny", freeze_batch_norm=True),
      train=TrainConfig(train_pattern=pattern, batch_size=2, learning_rate=1e-3, epochs=1,
                        steps_per_epoch=2, seed=0, strategy="one_device",
                        batch_norm_reestimation_batches=3))
  trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
  before = _trunk_bn_statistics(trainer)
  trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment, 2,
                            training=True, seed=0))
  after = _trunk_bn_statistics(trainer)
  assert len(before) > 0
  assert len(calls) == 1 and calls[0][0] == 3 and calls[0][1] > 0  # The heads' layers.
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)


def test_a_single_replica_trains_on_the_dataset_without_distributing_it(tmp_path, monkeypatch, small_embedded):
  # A distributed dataset's iterator made every later CPU step fault in ~800 MB of fresh pages
  # (docs/learning.md); with one replica the trainer reads the dataset directly. Two replicas
  # still distribute it (the mirrored test above).
  def refuse(self, dataset, options=None):
    raise AssertionError("a single replica distributed its dataset")

  monkeypatch.setattr(tf.distribute.OneDeviceStrategy, "experimental_distribute_dataset", refuse)
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=65), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, batch_size=2, learning_rate=1e-3, epochs=1,
                        steps_per_epoch=2, seed=0, strategy="one_device",
                        batch_norm_reestimation_batches=1))
  trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
  losses = trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment, 2,
                                     training=True, seed=0))
  assert losses["step"] == 2 and np.isfinite(losses["total"])
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")


def test_trained_trunk_batch_norm_statistics_move_during_training(resumed_run):
  # The same statistics, not frozen (random initialisation's default): every one has moved
  # from its initial value (mean 0, variance 1) in 6 steps.
  statistics = _trunk_bn_statistics(resumed_run["second"])
  assert len(statistics) > 0
  initial = [np.zeros_like(s) if i % 2 == 0 else np.ones_like(s) for i, s in enumerate(statistics)]
  assert all(not np.array_equal(s, s0) for s, s0 in zip(statistics, initial))


def test_batch_norm_is_frozen_by_default_with_imagenet_weights_only():
  resolved = lambda **kw: ModelConfig(**kw).with_batch_norm_resolved().freeze_batch_norm
  assert resolved(weights="resnet101_notop.h5") is True
  assert resolved() is False
  assert resolved(weights="resnet101_notop.h5", freeze_batch_norm=False) is False
  # Set through --override after the rest of the configuration: still resolved from the weights.
  overridden = apply_overrides(ExperimentConfig(), ["model.weights=resnet101_notop.h5"])
  assert overridden.model.with_batch_norm_resolved().freeze_batch_norm is True
  resumed = dataclasses.replace(ModelConfig(weights="w.h5").with_batch_norm_resolved(),
                                weights=None)
  assert resumed.with_batch_norm_resolved().freeze_batch_norm is True


def test_reestimated_batch_norm_statistics_make_inference_match_training_mode(tmp_path, small_embedded):
  # One batch, re-estimated on it: the moving statistics become its statistics under the final
  # weights, so the inference-mode network is the training-mode one; frozen layers keep theirs.
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=65), model=ModelConfig(depth="tiny", freeze_batch_norm=True),
      train=TrainConfig(train_pattern=pattern, batch_size=2, epochs=1, steps_per_epoch=1,
                        seed=0, strategy="one_device"))
  trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
  batch = next(iter(build_dataset(pattern, config.geometry, config.encoder, config.augment, 2,
                                  training=True, seed=0)))
  frozen = _trunk_bn_statistics(trainer)
  layers = trained_batch_norm_layers(trainer.model)
  assert layers and all(layer.momentum == 0.99 for layer in layers)
  images = batch[0]
  training_mode = trainer.model(images, training=True)  # Moves the statistics by 1 %.
  differs = lambda: max(float(np.max(np.abs(trainer.model(images, training=False)[k] - v)))
                        for k, v in training_mode.items())
  assert differs() > 1e-2
  repeated = iter([batch] * 3)
  assert reestimate_batch_norm(trainer.model, trainer.strategy, repeated, 3) == len(layers)
  assert differs() < 1e-3
  assert all(layer.momentum == 0.99 for layer in layers)
  for a, b in zip(frozen, _trunk_bn_statistics(trainer)):
    np.testing.assert_array_equal(a, b)



def test_ema_weights_replace_the_trained_ones_after_the_last_step(tmp_path, monkeypatch, small_embedded):
  """With `ema_momentum` m the final weights are a_N, a_1 = w_1, a_t = m a_(t-1) + (1 - m) w_t,
  from the weights w_t after each step (checkpoints 1 .. N-1 and the weights just before the
  swap)."""
  momentum, steps = 0.6, 3
  before_swap = []
  original = keras.optimizers.Adam.finalize_variable_values

  def spy(optimizer, variables):
    before_swap.append([np.array(v.numpy()) for v in variables])
    return original(optimizer, variables)

  monkeypatch.setattr(keras.optimizers.Adam, "finalize_variable_values", spy)
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=65), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, batch_size=2, learning_rate=1e-2, epochs=1,
                        steps_per_epoch=steps, seed=0, strategy="one_device", checkpoint_every=1,
                        max_checkpoints=steps, batch_norm_reestimation_batches=0,
                        ema_momentum=momentum))
  trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
  trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment, 2,
                            training=True, seed=0))
  assert len(before_swap) == 1
  names = [v.path for v in trainer.model.trainable_variables]
  trajectory = []
  for step in range(1, steps):
    model, _ = restore_model(str(tmp_path / f"ckpt-{step}"))
    by_name = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    trajectory.append([by_name[name] for name in names])
  trajectory.append(before_swap[0])
  average = trajectory[0]
  for weights in trajectory[1:]:
    average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
  final = [np.array(v.numpy()) for v in trainer.model.trainable_variables]
  moved = 0
  for a, f, last in zip(average, final, trajectory[-1]):
    np.testing.assert_allclose(f, a, rtol=1e-5, atol=1e-7)
    moved += not np.allclose(f, last)
  assert moved > 0  # The average is not the last weights.


def test_ema_momentum_must_be_below_one():
  with pytest.raises(ValueError, match="ema_momentum"):
    TrainConfig(ema_momentum=1.0)


def test_bfloat16_training_keeps_float32_weights_and_restores_for_float32_inference(tmp_path, small_embedded):
  """mixed_bfloat16: bfloat16 compute, float32 weights, no loss scaling; the global policy is
  left as it was, and the checkpoint restores into a float32 model with finite outputs."""
  pattern = small_embedded["train"]
  config = ExperimentConfig(
      geometry=Geometry(input_size=65), model=ModelConfig(depth="tiny"),
      train=TrainConfig(train_pattern=pattern, batch_size=2, learning_rate=1e-3, epochs=1,
                        steps_per_epoch=2, seed=0, strategy="one_device",
                        batch_norm_reestimation_batches=1, precision="mixed_bfloat16"))
  trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
  assert keras.config.dtype_policy().name == "float32"
  assert trainer.model.get_layer("neck_conv").compute_dtype == "bfloat16"
  assert all(v.dtype == "float32" for v in trainer.model.trainable_variables)
  assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
  losses = trainer.run(build_dataset(pattern, config.geometry, config.encoder, config.augment,
                                     2, training=True, seed=0))
  assert np.isfinite(losses["total"])
  model, restored = restore_model(str(tmp_path))
  assert restored.train.precision == "mixed_bfloat16"
  assert model.get_layer("neck_conv").compute_dtype == "float32"
  outputs = model(np.zeros((1, 65, 65, 3), np.float32))
  assert all(np.isfinite(value.numpy()).all() for value in outputs.values())
