"""The grouping module: head outputs -> people with keypoints, scores and instance masks.

See ../shared/DESIGN.md 'Decoding' and ARCHITECTURE.md section 5.
"""

from kdc_tf.grouping.decoder import INPUT_KEYS, Grouper, model_outputs_to_grouping_inputs

__all__ = ["INPUT_KEYS", "Grouper", "model_outputs_to_grouping_inputs"]
