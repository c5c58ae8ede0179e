"""Training of the KDC network: experiment configuration, checkpoints, the distributed loop."""

from kdc_tf.training.checkpointing import make_checkpoint, resolve_checkpoint, restore_model
from kdc_tf.training.experiment import (ExperimentConfig, TrainConfig, load_config,
                                        save_config)
from kdc_tf.training.trainer import NonFiniteLossError, Trainer, create_strategy

__all__ = ["ExperimentConfig", "NonFiniteLossError", "TrainConfig", "Trainer", "create_strategy",
           "load_config", "make_checkpoint", "resolve_checkpoint", "restore_model", "save_config"]
