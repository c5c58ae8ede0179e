"""Training-step time of the quick-start recipe against variants of it, in one sitting.

  python -m experiments.bench_train_step --variant=model.separable_heads=false [--variant=...]
  python -m experiments.bench_train_step --variant=train.precision=mixed_bfloat16

Each configuration (the quick start's, then one per --variant, a comma-separated list of
`section.field=value` overrides) gets its own model and Adam; all run the real losses on one fixed
batch of the embedded synthetic training set (built if missing). Rounds alternate between the
configurations, so that background load hits them alike; the median over rounds is kept. Prints
one line per configuration with its milliseconds per step, its ratio to the quick start's and the
process's system CPU time and minor page faults per step (a step that faults in fresh memory
shows here: docs/learning.md, 'Page faults of a distributed dataset'), and ends with
`quickstart_step_ms=<float>`.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Dict, Sequence

import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic
from data_pipeline.input_pipeline import build_dataset
from experiments.presets import quickstart_config
from kdc_tf.config import ExperimentConfig, apply_overrides
from kdc_tf.losses import compute_losses
from kdc_tf.modeling import build_kdc_model
from kdc_tf.training.precision import dtype_policy
from kdc_tf.training.trainer import build_optimizer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_multi_string("variant", [], "Comma-separated overrides of one variant.")
  flags.DEFINE_integer("rounds", 5, "Timed rounds per configuration.", lower_bound=1)
  flags.DEFINE_integer("steps_per_round", 10, "Steps per round.", lower_bound=1)


def _train_step(config: ExperimentConfig):
  """A compiled step (forward, real losses, backward, the trainer's optimizer) of a fresh model,
  built in the config's training precision (bfloat16 and float32 steps compare:
  `train.precision=...`; the moving average's cost: `train.ema_momentum=0`)."""
  with dtype_policy(config.train.precision):
    model = build_kdc_model(config.model, config.geometry)
  optimizer = build_optimizer(config.train)

  @tf.function
  def step(images, targets):
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      loss = compute_losses(targets, outputs, config.loss, config.encoder)["total"]
      scaled = optimizer.scale_loss(loss)
    optimizer.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
    return loss

  return step


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  pattern = synthetic.ensure_embedded_dataset()["train"]
  base = quickstart_config(pattern)
  configs: Dict[str, ExperimentConfig] = {"quickstart": base}
  for variant in FLAGS.variant:
    configs[variant] = apply_overrides(base, variant.split(","))
    if configs[variant].geometry != base.geometry:
      raise app.UsageError(f"variant {variant!r} changes the geometry; every configuration "
                           "trains on the same batch")
  images, targets = next(iter(build_dataset(pattern, base.geometry, base.encoder, base.augment,
                                            base.train.batch_size, training=True, seed=0)))
  steps = {name: _train_step(config) for name, config in configs.items()}
  for name, step in steps.items():
    logging.info("Compiling %s", name)
    step(images, targets).numpy()
  times = {name: [] for name in steps}
  system_ms = {name: [] for name in steps}
  faults = {name: [] for name in steps}
  for round_index in range(FLAGS.rounds):
    for name, step in steps.items():
      before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
      for _ in range(FLAGS.steps_per_round):
        step(images, targets).numpy()
      elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
      times[name].append(1000.0 * elapsed / FLAGS.steps_per_round)
      system_ms[name].append(1000.0 * (after.ru_stime - before.ru_stime) / FLAGS.steps_per_round)
      faults[name].append((after.ru_minflt - before.ru_minflt) / FLAGS.steps_per_round)
    logging.info("Round %d of %d done", round_index + 1, FLAGS.rounds)
  reference = statistics.median(times["quickstart"])
  for name, values in times.items():
    median = statistics.median(values)
    print(f"{name}: {median:.0f} ms per step (batch {base.train.batch_size}), "
          f"{median / reference:.2f} x the quick start's; system CPU "
          f"{statistics.median(system_ms[name]):.0f} ms and "
          f"{statistics.median(faults[name]):.0f} minor page faults per step", flush=True)
  print(f"quickstart_step_ms={reference:.1f}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
