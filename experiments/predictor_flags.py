"""Flags shared by the binaries that build a `Predictor` from a trained model (export, predict).

`define_predictor_flags()` defines --model_dir / --checkpoint, the test scale and the grouping
settings (defaults: `GroupingConfig()`), once per process however many binaries ask for them;
`predictor_from_flags()` builds the predictor they name. As in the other binaries, importing
defines no flag.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags

from kdc_tf.config import GroupingConfig
from kdc_tf.inference import Predictor

FLAGS = flags.FLAGS

# GroupingConfig fields a user tunes at export or prediction time, with their help text.
_GROUPING_FLAGS = {
    "max_people": "Output slots N: people decoded per image at most.",
    "nms_radius": "A candidate this close (input pixels) to the same keypoint of a decoded "
                  "person is not a new seed.",
    "peak_threshold": "Score-map local maxima below this do not seed people.",
    "peaks_per_type": "Local maxima per keypoint type considered as seeds.",
    "centroid_keypoint_threshold": "Keypoints above this score define a person's mask centroid.",
    "seg_threshold": "Segmentation probability above which a pixel is foreground.",
    "membership_threshold": "Membership phi above which a foreground pixel joins a person.",
}




def define_predictor_flags() -> None:
  """Defines the shared flags in absl's global FLAGS, unless already defined."""
  if "jit_compile_grouping" in FLAGS:
    return
  flags.DEFINE_string("model_dir", None, "Training model_dir (its latest checkpoint is used).")
  flags.DEFINE_string("checkpoint", None, "A checkpoint inside a training model_dir.")
  flags.DEFINE_integer("input_size", None,
                       "Square test scale, e.g. 401 or 641; default: the training input size.")
  flags.DEFINE_bool("jit_compile_grouping", False,
                    "XLA-compile grouping stages (the serving host then needs XLA; see "
                    "kdc_tf/inference.py).")
  defaults = GroupingConfig()
  for name, help_text in _GROUPING_FLAGS.items():
    default = getattr(defaults, name)
    define = flags.DEFINE_integer if isinstance(default, int) else flags.DEFINE_float
    define(name, default, help_text)


def grouping_config_from_flags() -> GroupingConfig:
  return dataclasses.replace(GroupingConfig(),
                             **{name: getattr(FLAGS, name) for name in _GROUPING_FLAGS})


def model_path_from_flags() -> str:
  """The --checkpoint or --model_dir given (exactly one of them)."""
  if bool(FLAGS.model_dir) == bool(FLAGS.checkpoint):
    raise app.UsageError("give exactly one of --model_dir and --checkpoint")
  return FLAGS.checkpoint or FLAGS.model_dir


def predictor_from_flags() -> Predictor:
  return Predictor.from_model_dir(model_path_from_flags(),
                                  grouping_config=grouping_config_from_flags(),
                                  input_size=FLAGS.input_size,
                                  jit_compile_grouping=FLAGS.jit_compile_grouping)
