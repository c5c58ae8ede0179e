"""The flags every binary shares, defined only when a binary runs (`define_*` in its __main__).

- `define_dataset_flag`: --dataset, its choices from the dataset registry (`kdc_tf.datasets`).
- `define_geometry_flags`: --input_size (one name for the square model input; --test_scale and
  --image_size are deprecated aliases), and optionally --output_stride and --disk_radius.
- `define_config_flags`: --config (a JSON file of `ExperimentConfig` sections, any subset of the
  fields) and --override section.field=value (repeatable), applied in that order by
  `experiment_config_from_flags` on top of the flags that set geometry fields.
- `define_predictor_flags`: --model_dir / --checkpoint, the test scale, --flip_test and the
  grouping settings of the binaries that build a `Predictor` from a trained model (export,
  predict); `predictor_from_flags` builds it.

Every `define_*` may be called by several binaries in one process (tests): a flag already defined
is left as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from absl import app, flags

from kdc_tf import config as config_lib
from kdc_tf import datasets
from kdc_tf.config import GroupingConfig
from kdc_tf.geometry import OUTPUT_STRIDES, Geometry
from kdc_tf.inference import Predictor

FLAGS = flags.FLAGS
_DEFAULT = Geometry()
# Flag names of the input size that earlier binaries used.
_INPUT_SIZE_ALIASES = ("test_scale", "image_size")


def _defined(name: str, flag_values: flags.FlagValues) -> bool:
  return name in flag_values


def define_dataset_flag(default: str = _DEFAULT.dataset,
                        flag_values: flags.FlagValues = FLAGS) -> None:
  """--dataset: keypoint layout and evaluation protocol, from the dataset registry."""
  if not _defined("dataset", flag_values):
    flags.DEFINE_enum("dataset", default, datasets.dataset_names(),
                      "Dataset: keypoint layout, masks and evaluation protocol.",
                      flag_values=flag_values)


def define_geometry_flags(input_size: Optional[int] = _DEFAULT.input_size,
                          output_stride: bool = False, disk_radius: bool = False,
                          flag_values: flags.FlagValues = FLAGS) -> None:
  """--input_size (with its deprecated aliases) and, when asked, --output_stride, --disk_radius.

  `input_size=None` makes the flag optional (e.g. a test scale that defaults to the training one).
  """
  if not _defined("input_size", flag_values):
    flags.DEFINE_integer(
        "input_size", input_size, "Square model input S (test scale: the image's long side is "
        "resized to it); (S - 1) must be a multiple of the output stride and of 4, e.g. 401, 641, "
        "801.", flag_values=flag_values)
    for alias in _INPUT_SIZE_ALIASES:
      flags.DEFINE_alias(alias, "input_size", flag_values=flag_values)
  if output_stride and not _defined("output_stride", flag_values):
    flags.DEFINE_enum("output_stride", str(_DEFAULT.output_stride),
                      [str(s) for s in OUTPUT_STRIDES], "Pose-grid stride (4: PoseNet on SegNet's "
                      "stride-4 decoder, the trunk at --override=model.trunk_stride=8 or 16).",
                      flag_values=flag_values)
  if disk_radius and not _defined("disk_radius", flag_values):
    flags.DEFINE_float("disk_radius", _DEFAULT.disk_radius,
                       "Keypoint disk radius R in input pixels.", flag_values=flag_values)


def define_config_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """--config FILE.json and --override section.field=value."""
  if _defined("config", flag_values):
    return
  flags.DEFINE_string("config", None, "JSON file of experiment configuration sections (any "
                      "subset of the fields of kdc_tf.config.ExperimentConfig, e.g. "
                      "{\"model\": {\"depth\": \"50\"}}), applied over the defaults.",
                      flag_values=flag_values)
  flags.DEFINE_multi_string("override", [], "section.field=value, e.g. model.depth=152 or "
                            "loss.membership_sigma=0.3; repeatable, applied after --config.",
                            flag_values=flag_values)


def _given(name: str, flag_values: flags.FlagValues) -> bool:
  """Whether a defined flag was set (on the command line, or away from its default)."""
  if not _defined(name, flag_values):
    return False
  flag = flag_values[name]
  return flag.value is not None and (bool(flag.present) or flag.value != flag.default)


def geometry_from_flags(base: Geometry = _DEFAULT,
                        flag_values: flags.FlagValues = FLAGS) -> Geometry:
  """`base` with the geometry flags that were given (the others keep `base`'s values)."""
  values = {}
  for name, cast in (("dataset", str), ("input_size", int), ("output_stride", int),
                     ("disk_radius", float)):
    if _given(name, flag_values):
      values[name] = cast(flag_values[name].value)
  return dataclasses.replace(base, **values)


def experiment_config_from_flags(
    base: Optional[config_lib.ExperimentConfig] = None,
    flag_values: flags.FlagValues = FLAGS) -> config_lib.ExperimentConfig:
  """`base` (default `ExperimentConfig()`), then --config, the geometry flags given, --override."""
  config = base or config_lib.ExperimentConfig()
  if flag_values["config"].value:
    config = config_lib.read_config_file(flag_values["config"].value, config)
  config = dataclasses.replace(config, geometry=geometry_from_flags(config.geometry, flag_values))
  return config_lib.apply_overrides(config, flag_values["override"].value)


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
    "pgo_sigma_high": "PGO sigma of the high-variance keypoints (wrists, ankles, elbows, knees), "
                      "in units of 32 input pixels (kdc_tf.grouping.gaussian).",
    "pgo_sigma_low": "PGO sigma of the other keypoints, in units of 32 input pixels.",
    "igo_sigma": "IGO sigma of each instance's probability map, in units of 32 input pixels.",
    "use_keycentroid": "Hough voting and refinement with KeyCentroid; false decodes from heatmap "
                       "peaks (automatic for models trained with keycentroid weight 0).",
}


def define_predictor_flags() -> None:
  """--model_dir / --checkpoint, the test scale and the grouping settings (`GroupingConfig()`
  defaults) of the binaries that build a `Predictor` from a trained model (export, predict)."""
  define_geometry_flags(input_size=None)  # None: the training input size
  if "jit_compile_grouping" in FLAGS:
    return
  flags.DEFINE_string("model_dir", None, "Training model_dir (its latest checkpoint is used).")
  flags.DEFINE_string("checkpoint", None, "A checkpoint inside a training model_dir.")
  flags.DEFINE_bool("jit_compile_grouping", False,
                    "XLA-compile grouping stages (the serving host then needs XLA; see "
                    "kdc_tf/inference.py).")
  define_flip_test_flag()
  define_grouping_flags()


def define_flip_test_flag() -> None:
  """--flip_test (`Predictor`'s `flip`), unless already defined."""
  if "flip_test" not in FLAGS:
    flags.DEFINE_bool("flip_test", False, "Average the network's maps of the image and of its "
                      "mirror image (two forward passes; kdc_tf/flip_test.py).")


def define_grouping_flags() -> None:
  """The grouping settings' flags (`GroupingConfig()` defaults), unless already defined; also
  used alone by evaluate and the oracle."""
  if "use_keycentroid" in FLAGS:
    return
  defaults = GroupingConfig()
  for name, help_text in _GROUPING_FLAGS.items():
    default = getattr(defaults, name)
    if isinstance(default, bool):
      define = flags.DEFINE_bool
    else:
      define = flags.DEFINE_integer if isinstance(default, int) else flags.DEFINE_float
    define(name, default, help_text)


def grouping_config_from_flags() -> GroupingConfig:
  """`GroupingConfig()` with the grouping flags' values."""
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
                                  jit_compile_grouping=FLAGS.jit_compile_grouping,
                                  flip=FLAGS.flip_test)
