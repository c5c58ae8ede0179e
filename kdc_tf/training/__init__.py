"""Training of the KDC network: the distributed loop (configuration: `kdc_tf.config`;
checkpoints and `restore_model`: `kdc_tf.checkpoints`)."""

from kdc_tf.training.batch_norm import reestimate_batch_norm, trained_batch_norm_layers
from kdc_tf.training.trainer import NonFiniteLossError, Trainer, create_strategy

__all__ = ["NonFiniteLossError", "Trainer", "create_strategy", "reestimate_batch_norm",
           "trained_batch_norm_layers"]
