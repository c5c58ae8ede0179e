"""The one configuration root: `ExperimentConfig` and its sections, saved in a model_dir.

Defaults are the paper's setup and the choices of ../shared/DESIGN.md. Binaries fill them in from
flags, a --config file and --override section.field=value (`experiments/common_flags.py`); library
code takes them as arguments and never reads flags. A model_dir's `experiment_config.json` is its
self-description: evaluation, export and serving rebuild the model from it alone
(`kdc_tf.checkpoints.restore_model`); files written by older versions load (`from_dict` maps
their keys) or fail naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import tensorflow as tf
from absl import logging

from kdc_tf.geometry import Geometry
from kdc_tf.io_utils import atomic_write_text
from kdc_tf.modeling.config import ModelConfig

CENTROID_MODES = ("dynamic", "static")
STRATEGIES = ("mirrored", "multi_worker", "one_device")
# Keras dtype policies of training: float32, or float16 / bfloat16 compute with float32 weights
# (float16 with dynamic loss scaling; bfloat16 has float32's range and needs none).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CONFIG_FILENAME = "experiment_config.json"


def check_centroid_mode(centroid_mode: str) -> None:
  """Raises for a MaskCentroid mode other than dynamic (DM_c) or static (SM_c)."""
  if centroid_mode not in CENTROID_MODES:
    raise ValueError(f"centroid_mode must be one of {CENTROID_MODES}, got {centroid_mode!r}")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Target choices beyond the geometry (DESIGN.md 'Conventions settled here')."""

  centroid_mode: str = "dynamic"
  # People kept per image after augmentation (segment ids of the membership loss).
  max_people: int = 64

  def __post_init__(self):
    check_centroid_mode(self.centroid_mode)
    if self.max_people < 1:
      raise ValueError(f"max_people must be >= 1, got {self.max_people}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Random scale, rotation, flip and crop/pad to the square input (the paper's augmentation)."""

  min_scale: float = 0.7
  max_scale: float = 1.3
  max_rotation_degrees: float = 30.0
  flip_probability: float = 0.5


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss weights (DESIGN.md: PersonLab-lineage defaults) and the membership sigma."""

  heatmap: float = 4.0
  segmentation: float = 2.0
  keycentroid: float = 1.0
  midrange: float = 0.25
  mask_offset: float = 0.125
  membership: float = 1.0
  # sigma_j = membership_sigma * sqrt(area_j) in the membership loss (eq. 7) and the decoder.
  membership_sigma: float = 0.5


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
  """Decoder settings (DESIGN.md 'Decoding')."""

  max_people: int = 30
  # Local maxima per keypoint type considered as seeds.
  peaks_per_type: int = 30
  # Seeds (score-map maxima) and people below this are dropped: 0.1 halves the people a trained
  # network's maps give and raises their segm AP; perfect maps' seeds score 0.15 and more
  # (docs/grouping.md, decoder defaults on learned maps).
  peak_threshold: float = 0.1
  nms_radius: float = 10.0
  # The tree walk does not place a keypoint (score 0, nor anything beyond it) that the KeyCentroid
  # refinements move further than this, in disk radii, from where the mid-range offset put it: it
  # jumped to another person (kdc_tf.grouping.poses). On learned maps the limit grows with the
  # KeyCentroid field's measured inconsistency (`poses.refinement_noise`).
  max_refinement_shift: float = 0.25
  # Keypoints above this score define a person's mask centroid (DM_c).
  centroid_keypoint_threshold: float = 0.05
  seg_threshold: float = 0.5
  membership_threshold: float = 0.5
  # PGO and IGO sigmas in units of 32 input pixels, the paper's disk radius
  # (`kdc_tf.grouping.gaussian.sigma_in_cells`): PGO of the high-variance keypoint types (wrists,
  # ankles, elbows, knees; the paper: [0.1, 0.5)) and of the others (the paper: [0.5, 1)); IGO of
  # each instance's probability map (the paper: [0.1, 1]). Defaults from the oracle sweeps of
  # docs/ablations.md (below the paper's ranges where its values cost oracle AP). (The membership
  # sigma and the MaskCentroid mode are the trained model's: `LossConfig.membership_sigma`,
  # `EncoderConfig.centroid_mode`, read by the `Grouper` from the `ExperimentConfig`.)
  pgo_sigma_high: float = 0.1
  pgo_sigma_low: float = 0.175
  igo_sigma: float = 0.0625
  # Hough voting with KeyCentroid offsets and KeyCentroid refinement of walked keypoints; False
  # takes keypoints from the PGO-smoothed heatmap peaks and the mid-range walk alone (the paper's
  # 'without KeyCentroid'; automatic for models trained with LossConfig.keycentroid = 0).
  use_keycentroid: bool = True
  # Rejoin people split by a missing keypoint through their mask embeddings
  # (kdc_tf.grouping.merging).
  merge_fragments: bool = True
  # Foreground that no keypoint person claims, clustered by its MaskCentroid embeddings, becomes
  # people with masks and no keypoints (kdc_tf.grouping.mask_only): people without labelled
  # keypoints still get masks.
  mask_only_people: bool = True
  # On learned maps, each mask's score is multiplied by its points' mean assignment margin
  # (kdc_tf.grouping.mask_ranking): cleanly separated masks rank before those between people.
  rank_masks_by_margin: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and bookkeeping of the loop (paper: Adam, lr 1e-5, batch 4, 400 epochs)."""

  train_pattern: str = ""
  # Global batch size, split evenly over the replicas.
  batch_size: int = 4
  learning_rate: float = 1e-5
  epochs: int = 400
  # 0: training records // batch size, counted by the train binary before the loop starts.
  steps_per_epoch: int = 1
  checkpoint_every: int = 1000
  max_checkpoints: int = 5
  summary_every: int = 100
  image_summary_every: int = 1000
  log_every: int = 10
  strategy: str = "mirrored"
  # A Keras dtype policy of PRECISIONS. mixed_bfloat16 pays on CPUs with native bfloat16
  # (AVX512_BF16 / AMX) and on TPUs and recent GPUs; inference always runs in float32.
  precision: str = "float32"
  seed: Optional[int] = None
  # After the last step, the trained (not frozen) batch-norm layers' moving statistics are
  # re-estimated on this many training batches with the final weights (kdc_tf.training.batch_norm:
  # momentum 0.99 leaves them lagging the weights after a short run); 0 keeps the moving averages.
  batch_norm_reestimation_batches: int = 20
  # > 0: Adam keeps an exponential moving average of the weights with this momentum, and the
  # weights become it after the last step (before the batch-norm re-estimation); 0: off.
  ema_momentum: float = 0.0

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
    for name in ("batch_size", "epochs", "checkpoint_every", "max_checkpoints",
                 "summary_every", "image_summary_every", "log_every"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.batch_norm_reestimation_batches < 0:
      raise ValueError("batch_norm_reestimation_batches must be >= 0, got "
                       f"{self.batch_norm_reestimation_batches}")
    if not 0.0 <= self.ema_momentum < 1.0:
      raise ValueError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
    if self.steps_per_epoch < 0:
      raise ValueError(f"steps_per_epoch must be >= 0 (0: count), got {self.steps_per_epoch}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch


# Keys of older experiment_config.json files -> their current place.
_RENAMED_KEYS = {("loss", "sigma_igo"): "membership_sigma"}
_GEOMETRY_FIELDS = tuple(field.name for field in dataclasses.fields(Geometry))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Geometry, model, targets, augmentation, losses and training of one model."""

  geometry: Geometry = Geometry()
  model: ModelConfig = ModelConfig()
  encoder: EncoderConfig = EncoderConfig()
  augment: AugmentConfig = AugmentConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def with_input_size(self, input_size: int) -> "ExperimentConfig":
    """The same model at another (test) scale: the network is fully convolutional."""
    return dataclasses.replace(self, geometry=self.geometry.with_input_size(input_size))

  def decoding_config(self, base: Optional[GroupingConfig] = None) -> GroupingConfig:
    """`base` (default `GroupingConfig()`), with the steps this model cannot feed switched off.

    A model trained on a dataset without masks (CrowdPose) has an untrained SegNet, so the decoder
    steps that read its embeddings (fragment merging, mask-only people) are switched off. A model
    trained without KeyCentroid (`loss.keycentroid` = 0) has untrained KeyCentroid offsets: it
    decodes without them (`use_keycentroid` off).
    """
    decoding = base or GroupingConfig()
    if not self.geometry.spec.has_masks:
      decoding = dataclasses.replace(decoding, merge_fragments=False, mask_only_people=False)
    if self.loss.keycentroid == 0 and decoding.use_keycentroid:
      logging.info("The model was trained without KeyCentroid (keycentroid weight 0): decoding "
                   "from heatmap peaks without KeyCentroid voting or refinement.")
      decoding = dataclasses.replace(decoding, use_keycentroid=False)
    return decoding

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ExperimentConfig":
    """Builds a config from `to_dict`'s layout; older layouts are mapped (`_upgrade`)."""
    sections = _section_types()
    values = _upgrade(values, complete=True)
    unknown = set(values) - set(sections)
    if unknown:
      raise ValueError(f"unknown experiment config sections {sorted(unknown)}; expected "
                       f"{sorted(sections)}")
    built = {}
    for name, section in sections.items():
      fields = dict(values.get(name, {}))
      known = {field.name for field in dataclasses.fields(section)}
      if set(fields) - known:
        raise ValueError(f"unknown keys {sorted(set(fields) - known)} in experiment config "
                         f"section {name!r}; expected some of {sorted(known)}")
      built[name] = section(**fields)
    return cls(**built)


def _section_types() -> Dict[str, type]:
  return {field.name: type(field.default) for field in dataclasses.fields(ExperimentConfig)}


def _upgrade(values: Mapping[str, Any], complete: bool) -> Dict[str, Any]:
  """Maps the layouts of older experiment_config.json files to the current one.

  Before one `geometry` section, `model` and `encoder` each held dataset, input_size,
  output_stride and disk_radius (required to agree); `loss.sigma_igo` is now
  `loss.membership_sigma`; `complete` files (a model_dir's) without `model.offset_scale` scaled
  offsets by the disk radius; `train.mixed_precision` (a bool) is `train.precision`
  (True: mixed_float16).
  """
  values = {name: dict(section) if isinstance(section, Mapping) else section
            for name, section in values.items()}
  for (section, old), new in _RENAMED_KEYS.items():
    if old in values.get(section, {}):
      values[section][new] = values[section].pop(old)
  train = values.get("train", {})
  if "mixed_precision" in train:
    train["precision"] = "mixed_float16" if train.pop("mixed_precision") else "float32"
  if "geometry" not in values:
    geometry: Dict[str, Any] = {}
    for section in ("model", "encoder"):
      for name in _GEOMETRY_FIELDS:
        if name not in values.get(section, {}):
          continue
        value = values[section].pop(name)
        if name in geometry and geometry[name] != value:
          raise ValueError(f"model and encoder disagree on {name}: {geometry[name]!r} vs "
                           f"{value!r}")
        geometry[name] = value
    values["geometry"] = geometry
  model = values.get("model", {})
  if complete and "offset_scale" not in model:
    # Written before the offset scale was decoupled from R: its heads scale by the disk radius.
    radius = values["geometry"].get("disk_radius", Geometry.disk_radius)
    logging.info("experiment config without model.offset_scale: offsets in disk radii (%g px), "
                 "as the model was trained.", radius)
    values["model"] = {**model, "offset_scale": radius}
  return values


def merge_config(config: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
  """`config` with the fields given in `values` ({section: {field: value}}) replaced."""
  merged = config.to_dict()
  for section, fields in values.items():
    if section not in merged or not isinstance(fields, Mapping):
      raise ValueError(f"unknown experiment config section {section!r} (or not a mapping); "
                       f"expected some of {sorted(merged)}")
    merged[section].update(fields)
  return ExperimentConfig.from_dict(merged)


def _parse_value(text: str, current: Any, default: Any) -> Any:
  """An override's text as the type of the field it replaces."""
  if text.lower() in ("none", "null") and default is None:
    return None
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")
  if isinstance(current, int) or (current is None and text.lstrip("-").isdigit()):
    return int(text)
  if isinstance(current, float):
    return float(text)
  return text


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
  """`config` with each `section.field=value` of `overrides` applied, in order."""
  for override in overrides:
    key, separator, text = override.partition("=")
    section, _, field = key.strip().partition(".")
    values = config.to_dict()
    if not separator or section not in values or field not in values[section]:
      raise ValueError(f"bad override {override!r}: expected section.field=value with a field of "
                       f"{', '.join(f'{s}.*' for s in sorted(values))}")
    default = getattr(type(getattr(ExperimentConfig(), section)), field, None)
    try:
      value = _parse_value(text.strip(), values[section][field], default)
    except ValueError as error:
      raise ValueError(f"bad override {override!r}: {error}") from None
    config = merge_config(config, {section: {field: value}})
  return config


def read_config_file(path: str, base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
  """`base` (default `ExperimentConfig()`) with the sections and fields a JSON file gives."""
  def build(values: Dict[str, Any]) -> ExperimentConfig:
    return merge_config(base or ExperimentConfig(), _upgrade(values, complete=False))

  return _read_config_json(path, build, invalid_json="{path} is not valid JSON: {error}",
                           invalid_config="{path}: {error}")


def save_config(config: ExperimentConfig, model_dir: str) -> str:
  """Writes `model_dir/experiment_config.json` (atomically on local disks); returns its path."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, CONFIG_FILENAME)
  text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
  if "://" in model_dir:  # Remote file systems: tf.io.gfile, whose rename is not atomic anyway.
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
  else:
    atomic_write_text(path, text)
  return path


def load_config(model_dir: str) -> ExperimentConfig:
  """The `ExperimentConfig` a model_dir was trained with."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"no {CONFIG_FILENAME} in {model_dir}: not a kdc-tf model_dir")
  return _read_config_json(
      path, ExperimentConfig.from_dict, invalid_json="{path}: not valid JSON ({error}); truncated?",
      invalid_config="{path} does not describe a kdc-tf experiment: {error}")


def _read_config_json(path: str, build: Callable[[Dict[str, Any]], ExperimentConfig],
                      invalid_json: str, invalid_config: str) -> ExperimentConfig:
  """Parses a JSON object from `path` (local or remote: tf.io.gfile) and builds a config from it.

  Errors are ValueErrors naming the file: `invalid_json` when it does not parse, `invalid_config`
  when it is not a configuration (also JSON that is not an object), formatted with `path` and
  `error`.
  """
  with tf.io.gfile.GFile(path) as f:
    try:
      values = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(invalid_json.format(path=path, error=error)) from None
  try:
    if not isinstance(values, dict):
      raise TypeError(f"expected a JSON object of config sections, got {type(values).__name__}")
    return build(values)
  except (TypeError, ValueError) as error:
    raise ValueError(invalid_config.format(path=path, error=error)) from None
