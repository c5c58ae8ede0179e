"""Custom training loop of the KDC network under tf.distribute.

One `Trainer` builds (or restores, after a kill) the model, the Adam optimizer (with dynamic loss
scaling under float16 mixed precision) and the step counter in its model_dir, then runs
`config.train.total_steps` steps: per-replica losses normalised by the global batch
(`kdc_tf.losses.compute_losses`), checkpoints every `checkpoint_every` steps, TensorBoard scalars
for every loss term and image summaries, absl logging of progress and speed. A non-finite loss
stops training before anything is saved, and a checkpoint is written only if its weights are
finite and give a finite loss on the current batch (an absurd learning rate makes weights finite
but huge, and the next step NaN), so the last checkpoint is always a usable one. Non-finite
gradients stop training too (outside float16's loss scaling, which skips them by design): fused
ReLUs map NaN to 0, so a NaN input can leave the loss finite and the gradients not. Before the last
checkpoint, the weights become their exponential moving average if `train.ema_momentum` > 0, and
the moving statistics of the trained batch-norm layers are re-estimated with the final weights
(`train.batch_norm_reestimation_batches`, `kdc_tf.training.batch_norm`). On resume the
configured learning rate wins over the one stored with the optimizer, and the change is logged.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
import time
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kdc_tf.checkpoints import make_checkpoint
from kdc_tf.config import ExperimentConfig, TrainConfig, load_config, save_config
from kdc_tf.losses import LOSS_TERMS, compute_losses
from kdc_tf.modeling import build_kdc_model
from kdc_tf.training.batch_norm import reestimate_batch_norm
from kdc_tf.training.fused_adam import FusedAdam
from kdc_tf.training.precision import dtype_policy, with_loss_scaling
from kdc_tf.visualization.summaries import summary_images

_MAX_SUMMARY_IMAGES = 2
# The train step's count of replicas whose gradients were not all finite, beside the loss terms.
_NON_FINITE_GRADIENTS = "non_finite_gradients"


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf."""


def build_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
  """The training optimizer: Adam on fused kernels (`FusedAdam`), with the configured moving
  average of the weights, and loss scaling under float16."""
  optimizer = FusedAdam(learning_rate=train.learning_rate, use_ema=train.ema_momentum > 0,
                        ema_momentum=train.ema_momentum)
  return with_loss_scaling(optimizer, train.precision)


def create_strategy(name: str) -> tf.distribute.Strategy:
  """'mirrored': all local GPUs (the local CPU devices when there is none); 'multi_worker':
  MultiWorkerMirroredStrategy configured by TF_CONFIG (create it before any other TF op);
  'one_device': the first GPU, else the CPU.
  """
  if name == "multi_worker":  # First: listing devices would initialise TF's context.
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(
        gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
  raise ValueError(f"unknown strategy {name!r}; expected mirrored, multi_worker or one_device")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this is a non-chief worker of a multi-worker cluster."""
  resolver = strategy.cluster_resolver
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type == "chief":
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


class _Meter:
  """Losses and speed since its creation."""

  def __init__(self):
    self._start = time.perf_counter()
    self._losses = []

  def add(self, losses: Dict[str, float]) -> None:
    self._losses.append(losses)

  def steps_per_second(self) -> float:
    return len(self._losses) / max(time.perf_counter() - self._start, 1e-9)

  def mean_losses(self) -> Dict[str, float]:
    return {name: float(np.mean([l[name] for l in self._losses])) for name in self._losses[0]}


class Trainer:
  """Builds or restores the training state in `model_dir` and runs the loop.

  `dataset` yields `(image [B, S, S, 3] float32, targets dict)` batched by the GLOBAL batch size
  (`data_pipeline.input_pipeline.build_dataset`); it is repeated if finite.
  """

  def __init__(self, config: ExperimentConfig, model_dir: str,
               strategy: Optional[tf.distribute.Strategy] = None):
    if config.train.steps_per_epoch == 0:
      raise ValueError("train.steps_per_epoch is 0 (count the training records first, as "
                       "experiments.train does)")
    # Resolved before the model_dir check and save: a resumed run (whose weights come from the
    # checkpoint) keeps the batch-norm mode of its start.
    config = dataclasses.replace(config, model=config.model.with_batch_norm_resolved())
    self.config = config
    self.model_dir = model_dir
    self.strategy = strategy or create_strategy(config.train.strategy)
    replicas = self.strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
      raise ValueError(f"global batch size {config.train.batch_size} is not divisible by the "
                       f"{replicas} replicas")
    self.is_chief = is_chief(self.strategy)
    self._resuming = tf.train.latest_checkpoint(model_dir) is not None
    self._check_model_dir()
    if config.train.seed is not None:
      keras.utils.set_random_seed(config.train.seed)
    self._build()
    self._restore()

  def _check_model_dir(self) -> None:
    """Saves the config; refuses a model_dir whose checkpoints cannot be resumed with it.

    One change of geometry is resumable: a model trained on crops (`Geometry.test_input_size`
    set) going on at another input size, at its test scale or keeping it, the whole-image finish
    of `experiments.quickstart` (the network is fully convolutional, its variables do not depend
    on the input size).
    """
    if self._resuming:
      previous, current = load_config(self.model_dir), self.config
      previous_geometry = previous.geometry
      if previous_geometry.test_input_size is not None and current.geometry in (
          previous_geometry.with_input_size(previous_geometry.test_input_size),
          dataclasses.replace(previous_geometry, input_size=current.geometry.input_size)):
        logging.info("Continuing the crop-trained checkpoints of %s on %d x %d inputs",
                     self.model_dir, current.geometry.input_size, current.geometry.input_size)
        previous_geometry = current.geometry
      # The ImageNet weights path only matters for a fresh start.
      pairs = {"geometry": (previous_geometry, current.geometry),
               "model": (dataclasses.replace(previous.model, weights=None),
                         dataclasses.replace(current.model, weights=None)),
               "encoder": (previous.encoder, current.encoder),
               "precision": (previous.train.precision, current.train.precision)}
      for what, (before, now) in pairs.items():
        if before != now:
          raise ValueError(f"{self.model_dir} holds checkpoints of another {what} configuration "
                           f"({before} vs {now}); use a new --model_dir")
    if self.is_chief:
      save_config(self.config, self.model_dir)

  def _build(self) -> None:
    train = self.config.train
    with dtype_policy(train.precision), self.strategy.scope():
      model_config = self.config.model
      if self._resuming:  # Every weight comes from the checkpoint.
        model_config = dataclasses.replace(model_config, weights=None)
      self.model = build_kdc_model(model_config, self.config.geometry)
      optimizer = build_optimizer(train)
      # Built now so that restoring fills its slots instead of deferring them.
      optimizer.build(self.model.trainable_variables)
      self.optimizer = optimizer
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.checkpoint = make_checkpoint(self.model, self.optimizer, self.step)
    # Non-chief workers must take part in every save but their copy is not kept: a scratch folder,
    # removed when `run` ends.
    self._scratch_dir = None if self.is_chief else tempfile.mkdtemp(prefix="kdc_worker_ckpt_")
    directory = self._scratch_dir or self.model_dir
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=train.max_checkpoints)

  def _restore(self) -> None:
    # From model_dir on every worker (non-chief workers only write to a scratch directory).
    latest = tf.train.latest_checkpoint(self.model_dir)
    if latest is None:
      logging.info("No checkpoint in %s: starting from step 0", self.model_dir)
      return
    self.checkpoint.restore(latest).assert_existing_objects_matched()
    if not self._weights_are_finite():
      raise NonFiniteLossError(f"{latest} holds non-finite weights: resume from an earlier "
                               "checkpoint (delete the later ones) or use a new --model_dir")
    logging.info("Restored %s: resuming at step %d", latest, int(self.step.numpy()))
    self._apply_learning_rate()

  def input_seed(self) -> Optional[int]:
    """The input pipeline's seed: the configured one, plus the resumed step after a resume.

    A resumed run with the same seed replayed the batches of the first steps. The exact
    continuation would need the tf.data iterator in the checkpoint, which TF 2.21 cannot save for
    a distributed dataset (its DistributedIterator is not trackable); a seed offset by the step
    gives a fresh, reproducible order instead.
    """
    seed = self.config.train.seed
    return None if seed is None else seed + int(self.step.numpy())

  def _apply_learning_rate(self) -> None:
    """The configured learning rate wins over the one restored with the optimizer's state."""
    configured = self.config.train.learning_rate
    restored = float(self.optimizer.learning_rate.numpy())
    if not np.isclose(restored, configured, rtol=1e-6, atol=0.0):
      logging.warning("Learning rate: the checkpoint's optimizer had %g; the configured %g "
                      "applies from step %d (recorded in %s and TensorBoard)", restored,
                      configured, int(self.step.numpy()), self.model_dir)
      self.optimizer.learning_rate = configured

  def _weights_are_finite(self) -> bool:
    """Whether every model and optimizer variable is finite."""
    values = (np.asarray(v.numpy()) for v in
              list(self.model.variables) + list(self.optimizer.variables))
    return all(np.all(np.isfinite(a)) for a in values if np.issubdtype(a.dtype, np.floating))

  def _distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset as the strategy's replicas read it; one replica reads it as it is.

    Once a distributed dataset's iterator existed, every CPU train step faulted in ~800 MB of
    fresh pages and took 2.2x as long (docs/learning.md, 'The distributed dataset's page faults').
    """
    if self.strategy.num_replicas_in_sync == 1:
      return dataset
    return self.strategy.experimental_distribute_dataset(dataset)

  def _train_step_fn(self):
    model, optimizer, config = self.model, self.optimizer, self.config
    global_batch = config.train.batch_size
    # Loss scaling skips a step with non-finite gradients by design (and lowers the scale).
    count_non_finite = not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(images, targets):
      with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        losses = compute_losses(targets, outputs, config.loss, config.encoder, global_batch)
        scaled = optimizer.scale_loss(losses["total"])
      gradients = tape.gradient(scaled, model.trainable_variables)
      optimizer.apply(gradients, model.trainable_variables)
      non_finite = tf.constant(0.0)
      if count_non_finite:
        # A NaN or an infinity anywhere makes the sum of all gradients non-finite: one reduction
        # per variable instead of a per-element count (about 5 % of a quick-start step).
        total = tf.add_n([tf.reduce_sum(g) for g in gradients if g is not None])
        non_finite = 1.0 - tf.cast(tf.math.is_finite(total), tf.float32)
      return {**losses, _NON_FINITE_GRADIENTS: non_finite}

    def train_step(batch):
      per_replica = self.strategy.run(replica_step, args=batch)
      self.step.assign_add(1)
      return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
              for name, value in per_replica.items()}

    return train_step

  def _check_loss_fn(self):
    """The total loss of the current weights on a batch, without an update (checkpoint check)."""
    model, config = self.model, self.config

    def replica_loss(images, targets):
      outputs = model(images, training=False)
      return compute_losses(targets, outputs, config.loss, config.encoder,
                            config.train.batch_size)["total"]

    def check_loss(batch):
      per_replica = self.strategy.run(replica_loss, args=batch)
      return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return check_loss

  def _save(self, batch, step: int) -> None:
    """Saves a checkpoint if the weights are finite and give a finite loss; else stops."""
    loss = float(self._check_loss(batch))
    if not (np.isfinite(loss) and self._weights_are_finite()):
      raise NonFiniteLossError(
          f"the weights after step {step} are not usable (non-finite weights, or loss {loss} on "
          f"the current batch); training stopped without saving them. The last checkpoint with "
          f"finite weights is {self.manager.latest_checkpoint}")
    logging.info("Saved checkpoint %s", self.manager.save(checkpoint_number=step))

  def _write_images(self, batch, step: int) -> None:
    images, targets = batch
    local = self.strategy.experimental_local_results
    images = local(images)[0][:_MAX_SUMMARY_IMAGES]
    targets = {k: local(targets[k])[0][:_MAX_SUMMARY_IMAGES] for k in ("heatmap", "seg")}
    outputs = self._predict(images)
    tf.summary.image("prediction_vs_target", summary_images(images, targets, outputs),
                     step=step, max_outputs=_MAX_SUMMARY_IMAGES)

  def run(self, dataset: tf.data.Dataset) -> Dict[str, float]:
    """Trains up to `total_steps`; returns the last step's losses (and 'step')."""
    try:
      return self._run(dataset)
    finally:
      if self._scratch_dir is not None:
        shutil.rmtree(self._scratch_dir, ignore_errors=True)

  def _run(self, dataset: tf.data.Dataset) -> Dict[str, float]:
    train = self.config.train
    distributed = self._distribute(dataset.repeat())
    train_step = tf.function(self._train_step_fn(), input_signature=[distributed.element_spec])
    self._check_loss = tf.function(self._check_loss_fn(),
                                   input_signature=[distributed.element_spec])
    self._predict = tf.function(lambda images: self.model(images, training=False))
    writer = (tf.summary.create_file_writer(os.path.join(self.model_dir, "train"))
              if self.is_chief else tf.summary.create_noop_writer())
    step = int(self.step.numpy())
    if step >= train.total_steps:
      logging.info("Already at step %d of %d: nothing to train", step, train.total_steps)
      return {"step": float(step)}

    logging.info("Training from step %d to %d on %d replica(s), global batch %d, model_dir %s",
                 step, train.total_steps, self.strategy.num_replicas_in_sync, train.batch_size,
                 self.model_dir)
    logging.info("Building the input pipeline and compiling the training step (the first step "
                 "takes a while); then a progress line every %d steps", train.log_every)
    first_step_start = time.perf_counter()
    progress, interval = _Meter(), _Meter()
    iterator = iter(distributed)
    losses: Dict[str, float] = {}
    with writer.as_default():
      while step < train.total_steps:
        batch = next(iterator)
        losses = {k: float(v) for k, v in train_step(batch).items()}
        non_finite_gradients = losses.pop(_NON_FINITE_GRADIENTS)
        step += 1
        if first_step_start is not None:
          logging.info("First step done in %.1f s (input pipeline start-up and compilation)",
                       time.perf_counter() - first_step_start)
          first_step_start = None
          progress, interval = _Meter(), _Meter()  # Speeds exclude the compilation.
        if not np.isfinite(losses["total"]) or non_finite_gradients:
          raise NonFiniteLossError(
              f"loss became {losses['total']}"
              f"{' with non-finite gradients' if non_finite_gradients else ''} at step {step} "
              f"({losses}); training stopped, nothing saved "
              f"after it. The last checkpoint with finite weights is "
              f"{self.manager.latest_checkpoint}")
        progress.add(losses)
        interval.add(losses)
        last = step == train.total_steps
        if step % train.log_every == 0 or last:
          self._log_progress(step, losses, progress.steps_per_second())
          progress = _Meter()
        if step % train.summary_every == 0 or last:
          for name, value in interval.mean_losses().items():
            tf.summary.scalar(f"loss/{name}", value, step=step)
          tf.summary.scalar("steps_per_second", interval.steps_per_second(), step=step)
          tf.summary.scalar("learning_rate", float(self.optimizer.learning_rate.numpy()),
                            step=step)
          interval = _Meter()
        if last and train.ema_momentum:
          self.optimizer.finalize_variable_values(self.model.trainable_variables)
          logging.info("Weights set to their moving average (momentum %g)", train.ema_momentum)
        if last and train.batch_norm_reestimation_batches:
          reestimate_batch_norm(self.model, self.strategy, iterator,
                                train.batch_norm_reestimation_batches)
        if step % train.image_summary_every == 0 or last:
          self._write_images(batch, step)
        if step % train.checkpoint_every == 0 or last:
          self._save(batch, step)
    writer.flush()
    return {**losses, "step": float(step)}

  def _log_progress(self, step: int, losses: Dict[str, float], steps_per_second: float) -> None:
    total_steps = self.config.train.total_steps
    eta = (total_steps - step) / max(steps_per_second, 1e-9)
    terms = " ".join(f"{name} {losses[name]:.4f}" for name in LOSS_TERMS)
    logging.info("step %d/%d (%.1f%%) loss %.4f [%s] %.2f steps/s %.1f images/s eta %s", step,
                 total_steps, 100.0 * step / total_steps, losses["total"], terms,
                 steps_per_second, steps_per_second * self.config.train.batch_size,
                 datetime.timedelta(seconds=round(eta)))
