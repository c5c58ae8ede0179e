"""SavedModel export of the whole inference graph (resize, model, grouping) for TF Serving."""

from kdc_tf.export.saved_model import (ENCODED_SIGNATURE, METADATA_FILE, SERVING_SIGNATURE,
                                       describe_signatures, export_saved_model, load_metadata)

__all__ = ["ENCODED_SIGNATURE", "METADATA_FILE", "SERVING_SIGNATURE", "describe_signatures",
           "export_saved_model", "load_metadata"]
