"""KDC (Keypoints as Dynamic Centroids) in TensorFlow 2 / Keras 3."""

import tensorflow as _tf

# TensorFlow gives its logger its own stderr handler when the root logger has none yet (absl
# installs its handler later, in app.run), so every 'INFO:tensorflow:' line was printed twice.
# absl's handler (or the application's root handler) is enough.
_tf.get_logger().handlers.clear()
