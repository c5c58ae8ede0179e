"""In-graph inference: one uint8 image of any size in, decoded people in its own pixels out.

`Predictor` chains the deterministic resize (`kdc_tf.geometry.resize_and_pad_image`),
the Keras model (ARCHITECTURE.md section 4) and the grouping decoder (section 5) in ONE
tf.function with a fixed input signature, so that the same graph serves in-process prediction,
evaluation and the exported SavedModel (`kdc_tf.export`). Nothing in it runs Python per image.

Outputs (fixed size, `N = GroupingConfig.max_people`, valid people first):

| key | dtype, shape | meaning |
| --- | --- | --- |
| `keypoints` | float32 `[N, K, 3]` | `(x, y, score)` in the input image's pixels |
| `scores` | float32 `[N]` | person score, 0 for empty slots |
| `mask_scores` | float32 `[N]` | the masks' ranking score, 0 for empty slots |
| `masks` | uint8 `[N, H, W]` | 0/1 instance masks at the input image's size |
| `num_people` | int32 `[]` | number of valid slots |
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras
import tensorflow as tf
from absl import logging

from kdc_tf import checkpoints, flip_test, grouping
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.datasets import DatasetSpec
from kdc_tf.geometry import Geometry, resize_and_pad_image

# The one input every entry point takes: an RGB image, any height and width, three channels.
IMAGE_SIGNATURE = tf.TensorSpec([None, None, 3], tf.uint8, name="image")
OUTPUT_KEYS = ("keypoints", "scores", "mask_scores", "masks", "num_people")


def validate_image(image: tf.Tensor) -> tf.Tensor:
  """Checks, at run time, that `image` is `[H, W, 3]` with H, W >= 1; returns it.

  A signature does not check shapes when it is called (a SavedModel signature or TF Serving
  passes a rank-2 tensor straight through, and a convolution then aborts the process), so the
  shape is enforced in the graph: `tf.ensure_shape` for the rank and channels, an assertion for
  empty images, both ordered before any other op touches the image.
  """
  image = tf.ensure_shape(image, [None, None, 3])
  size = tf.shape(image)[:2]
  check = tf.debugging.assert_positive(
      size, message="image must have at least one row and one column; got [height, width] =")
  with tf.control_dependencies([check]):
    return tf.identity(image)


class Predictor(tf.Module):
  """Resize -> model -> grouping, as one graph; `predictor(image)` returns the output dict."""

  def __init__(self,
               model: keras.Model,
               experiment: ExperimentConfig,
               grouping_config: GroupingConfig,
               jit_compile_grouping: bool = False,
               flip: bool = False,
               name: str = "kdc_predictor"):
    """Wraps a trained model.

    Args:
      model: the KDC Keras model (named outputs of ARCHITECTURE.md section 4), built for
        `experiment.geometry.input_size`.
      experiment: the model's configuration; its `geometry` is the one the model runs at
        (dataset, test scale, stride, disk radius); the grouper reads what it needs from it.
      grouping_config: decoder settings.
      jit_compile_grouping: XLA-compile the grouping stages that allow it (about twice as
        fast on CPU: `experiments.bench_grouping`). Off by default because an exported graph
        with XLA clusters needs XLA at serving time (tensorflow_model_server
        --xla_cpu_compilation_enabled=true).
      flip: flip test (`kdc_tf.flip_test`): the maps of the image averaged with its mirror
        image's; two forward passes.
      name: module name.
    """
    super().__init__(name=name)
    model_size = tuple(model.input_shape[1:3])
    if model_size != (experiment.geometry.input_size,) * 2:
      raise ValueError(f"the model takes {model_size} inputs but the geometry's input_size is "
                       f"{experiment.geometry.input_size}")
    self.model = model
    self.experiment = experiment
    self.grouping_config = grouping_config
    self.grouper = grouping.Grouper(experiment, grouping_config, jit_compile=jit_compile_grouping)
    self.flip = flip

  @property
  def geometry(self) -> Geometry:
    return self.experiment.geometry

  @property
  def spec(self) -> DatasetSpec:
    return self.geometry.spec

  @property
  def input_size(self) -> int:
    return self.geometry.input_size

  @classmethod
  def from_model_dir(cls,
                     model_dir_or_checkpoint: str,
                     grouping_config: Optional[GroupingConfig] = None,
                     input_size: Optional[int] = None,
                     jit_compile_grouping: bool = False,
                     flip: bool = False) -> "Predictor":
    """Rebuilds a trained model from its model_dir (or one checkpoint in it) and wraps it.

    Args:
      model_dir_or_checkpoint: a training model_dir, or a checkpoint path inside one.
      grouping_config: decoder settings; `GroupingConfig()` when None, with the steps the model
        cannot feed switched off (`ExperimentConfig.decoding_config`).
      input_size: square test scale (the model is rebuilt for it); when None, the model's
        `geometry.test_input_size` if set, else its training input size. (size - 1) must be
        divisible by the output stride and by 4.
      jit_compile_grouping, flip: as in `__init__`.
    """
    model, config = checkpoints.restore_model(model_dir_or_checkpoint, input_size=input_size)
    logging.info("Restored %s (%s, test scale %d)", model_dir_or_checkpoint,
                 config.geometry.dataset, config.geometry.input_size)
    return cls(model, config, config.decoding_config(grouping_config), jit_compile_grouping,
               flip)

  @tf.function(input_signature=[IMAGE_SIGNATURE])
  def __call__(self, image: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Decodes the people in one uint8 RGB image `[H, W, 3]`; see the module docstring."""
    image = validate_image(image)
    image_size = tf.shape(image)[:2]
    resized, scale = resize_and_pad_image(image, self.input_size)
    if self.flip:
      head_outputs = self.model(tf.stack([resized, resized[:, ::-1]]), training=False)
      image_maps, mirror_maps = (grouping.model_outputs_to_grouping_inputs(
          {key: value[i:i + 1] for key, value in head_outputs.items()}) for i in (0, 1))
      probabilities = flip_test.average_with_mirror(image_maps, mirror_maps, self.spec)
    else:
      head_outputs = self.model(resized[tf.newaxis], training=False)
      probabilities = grouping.model_outputs_to_grouping_inputs(head_outputs)
    decoded = self.grouper(probabilities, output_size=image_size, input_scale=scale)
    return {key: decoded[key] for key in OUTPUT_KEYS}

  def predict_numpy(self, image) -> Dict[str, Any]:
    """`self(image)` for a numpy uint8 image, returning numpy arrays."""
    return {key: value.numpy() for key, value in self(tf.convert_to_tensor(image)).items()}

