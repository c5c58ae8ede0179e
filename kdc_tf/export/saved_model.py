"""Writes a `Predictor` as a TF SavedModel: resize, model and grouping in one serving graph.

Signatures (no Python and no py_function at serving time):
- `serving_default`: `image` uint8 `[H, W, 3]` (RGB, any size, exactly three channels: clients
  convert grayscale or RGBA themselves) -> `keypoints` float32 `[N, K, 3]` in the image's pixels,
  `scores` float32 `[N]` (person scores: the keypoints' ranking), `mask_scores` float32 `[N]` (the
  masks' ranking), `masks` uint8 `[N, H, W]`, `num_people` int32 `[]`.
- `serving_encoded`: `image_bytes` string `[]` (a JPEG, PNG, BMP or GIF file's bytes; decoded to
  RGB in the graph, so grayscale and RGBA files work too) -> the same outputs. This is the one to
  use with base64 in TF Serving's REST API.

In Python: `tf.saved_model.load(export_dir).signatures["serving_default"](image=image)`.
A wrong dtype is refused before the graph runs; a wrong rank or channel count, or an empty image,
fails at the first op with a message naming the expected shape (`inference.validate_image`).

`assets.extra/kdc_metadata.json` beside the graph records the dataset's keypoint names and
skeleton, the test scale and the grouping settings baked into the export, for clients that draw
or convert the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging as logging_lib
import os
import shutil
import tempfile
from typing import Any, Dict, Union

import keras
import tensorflow as tf
from absl import logging

from kdc_tf.inference import IMAGE_SIGNATURE, Predictor

SERVING_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serving_encoded"
ENCODED_IMAGE_SIGNATURE = tf.TensorSpec([], tf.string, name="image_bytes")
METADATA_FILE = os.path.join("assets.extra", "kdc_metadata.json")


def export_saved_model(predictor: Predictor, export_dir: str) -> str:
  """Writes `predictor` to `export_dir` (created; must not hold a SavedModel yet), atomically on
  local disks (a staging folder renamed into place).

  Written with `keras.export.ExportArchive`, which tracks the variables the endpoints capture:
  a plain `tf.saved_model.save` of a module holding a Keras 3 model reloads in TF2 Python but
  not in the session-based loader of TF Serving and saved_model_cli ("Could not find variable").

  Returns:
    `export_dir`.
  """
  if tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    raise FileExistsError(f"{export_dir} already holds a SavedModel; choose a new export_dir "
                          "(TF Serving expects one numbered version directory per export)")

  def predict_encoded(image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    return predictor(image)

  archive = keras.export.ExportArchive()
  archive.track(predictor.model)
  archive.add_endpoint(SERVING_SIGNATURE, predictor.__call__, input_signature=[IMAGE_SIGNATURE])
  archive.add_endpoint(ENCODED_SIGNATURE, predict_encoded,
                       input_signature=[ENCODED_IMAGE_SIGNATURE])
  notice_filter = _DropInputRenamingNotice()
  tf_saved_model_logger = logging.get_absl_logger()  # tf.saved_model logs through absl
  tf_saved_model_logger.addFilter(notice_filter)
  try:
    if "://" in export_dir:  # Remote file systems cannot rename a folder atomically.
      archive.write_out(export_dir, verbose=False)
      _write_metadata(predictor, export_dir)
    else:
      _write_atomically(archive, predictor, export_dir)
  finally:
    tf_saved_model_logger.removeFilter(notice_filter)
  logging.info("Exported SavedModel to %s", export_dir)
  return export_dir


class _DropInputRenamingNotice(logging_lib.Filter):
  """TF logs, per signature, every captured variable's internal input name (unknown_0 ...
  unknown_130) in one line of thousands of characters; it says nothing the user can act on."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return "with unsupported characters which will be renamed" not in record.getMessage()


def _write_atomically(archive: keras.export.ExportArchive, predictor: Predictor,
                      export_dir: str) -> None:
  """Writes the export into a staging folder beside `export_dir`, then renames it into place, so
  TF Serving (which polls the version folders) never loads a half-written version."""
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.", suffix=".tmp",
                             dir=parent)
  try:
    archive.write_out(staging, verbose=False)
    _write_metadata(predictor, staging)
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
      os.rmdir(export_dir)
    try:
      os.rename(staging, export_dir)
    except OSError as e:
      raise FileExistsError(f"{export_dir} appeared while exporting and is not empty ({e}); "
                            "choose a new export_dir") from None
  finally:
    if os.path.isdir(staging):
      shutil.rmtree(staging)


def load_metadata(export_dir: str) -> Dict[str, Any]:
  """Reads the export's metadata (dataset, keypoint names, edges, input size, grouping)."""
  with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE)) as f:
    return json.load(f)


def describe_signatures(loaded_or_export_dir: Union[str, Any]) -> str:
  """One line per signature input and output: name, dtype, shape (-1 = any)."""
  loaded = (tf.saved_model.load(loaded_or_export_dir)
            if isinstance(loaded_or_export_dir, str) else loaded_or_export_dir)
  lines = []
  for name in sorted(loaded.signatures):
    function = loaded.signatures[name]
    lines.append(f"signature '{name}':")
    for role, specs in (("input", function.structured_input_signature[1]),
                        ("output", function.structured_outputs)):
      for key in sorted(specs):
        spec = specs[key]
        shape = [-1 if d is None else d for d in spec.shape.as_list()]
        lines.append(f"  {role:6s} {key}: {spec.dtype.name} {shape}")
  return "\n".join(lines)


def _write_metadata(predictor: Predictor, export_dir: str) -> None:
  spec = predictor.spec
  metadata = {
      "dataset": predictor.geometry.dataset,
      "keypoint_names": list(spec.keypoint_names),
      "edges": [list(edge) for edge in spec.edges],
      "input_size": predictor.input_size,
      "flip_test": predictor.flip,
      # The decoder's settings, with the trained model's ones it reads (as before they were split).
      "grouping": {**dataclasses.asdict(predictor.grouping_config),
                   "centroid_mode": predictor.experiment.encoder.centroid_mode,
                   "membership_sigma": predictor.experiment.loss.membership_sigma},
      "signatures": {
          SERVING_SIGNATURE: {"inputs": {"image": "uint8 [H, W, 3] RGB"}},
          ENCODED_SIGNATURE: {"inputs": {"image_bytes": "string [] encoded JPEG/PNG/BMP/GIF"}},
      },
  }
  path = os.path.join(export_dir, METADATA_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(metadata, f, indent=2)
