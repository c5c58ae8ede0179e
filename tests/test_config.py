"""The configuration root: one geometry, old experiment_config.json files, --config, --override."""

import json

import pytest

from kdc_tf import config as config_lib
from kdc_tf.config import ExperimentConfig, load_config, save_config
from kdc_tf.geometry import OFFSET_SCALE, Geometry

# An experiment_config.json as written before the geometry was one value (abridged to the fields
# that moved; the rest takes the defaults).
_OLD_LAYOUT = {
    "model": {"depth": "tiny", "dataset": "crowdpose", "input_size": 129, "output_stride": 16,
              "disk_radius": 16.0, "offset_scale": 16.0},
    "encoder": {"dataset": "crowdpose", "input_size": 129, "output_stride": 16,
                "disk_radius": 16.0, "centroid_mode": "static", "max_people": 8},
    "loss": {"sigma_igo": 0.3, "heatmap": 2.0},
    "train": {"batch_size": 2},
}


def test_a_model_dir_written_before_the_geometry_section_loads(tmp_path):
  (tmp_path / config_lib.CONFIG_FILENAME).write_text(json.dumps(_OLD_LAYOUT))
  config = load_config(str(tmp_path))
  assert config.geometry == Geometry(dataset="crowdpose", input_size=129, output_stride=16,
                                     disk_radius=16.0)
  assert (config.model.depth, config.model.offset_scale) == ("tiny", 16.0)
  assert (config.encoder.centroid_mode, config.encoder.max_people) == ("static", 8)
  assert (config.loss.membership_sigma, config.loss.heatmap) == (0.3, 2.0)
  assert config.train.batch_size == 2


def test_an_old_model_dir_whose_model_and_encoder_disagree_is_refused(tmp_path):
  old = json.loads(json.dumps(_OLD_LAYOUT))
  old["encoder"]["input_size"] = 161
  (tmp_path / config_lib.CONFIG_FILENAME).write_text(json.dumps(old))
  with pytest.raises(ValueError, match=r"experiment_config\.json .*disagree on input_size"):
    load_config(str(tmp_path))


def test_unknown_keys_are_refused_naming_them(tmp_path):
  values = ExperimentConfig().to_dict()
  values["model"]["widht"] = 3
  (tmp_path / config_lib.CONFIG_FILENAME).write_text(json.dumps(values))
  with pytest.raises(ValueError, match=r"unknown keys \['widht'\] .* section 'model'"):
    load_config(str(tmp_path))


def test_json_that_is_not_an_object_is_refused_naming_the_file(tmp_path):
  (tmp_path / config_lib.CONFIG_FILENAME).write_text("[1, 2]")
  with pytest.raises(ValueError, match=r"experiment_config\.json does not describe .*got list"):
    load_config(str(tmp_path))
  path = tmp_path / "ablation.json"
  path.write_text('"static"')
  with pytest.raises(ValueError, match=r"ablation\.json: expected a JSON object .*got str"):
    config_lib.read_config_file(str(path))


def test_save_and_load_round_trip_with_one_geometry(tmp_path):
  config = ExperimentConfig(geometry=Geometry(input_size=193, disk_radius=8.0))
  save_config(config, str(tmp_path))
  written = json.loads((tmp_path / config_lib.CONFIG_FILENAME).read_text())
  assert written["geometry"] == {"dataset": "coco", "input_size": 193, "output_stride": 8,
                                 "disk_radius": 8.0, "test_input_size": None}
  assert "input_size" not in written["model"] and "input_size" not in written["encoder"]
  assert written["model"]["offset_scale"] == OFFSET_SCALE
  assert load_config(str(tmp_path)) == config


def test_overrides_take_the_field_types():
  config = config_lib.apply_overrides(ExperimentConfig(), [
      "model.depth=50", "model.separable_heads=true", "train.seed=7", "train.batch_size=8",
      "loss.membership_sigma=0.25", "geometry.input_size=193", "model.weights=w.h5"])
  assert (config.model.depth, config.model.separable_heads, config.train.seed) == ("50", True, 7)
  assert (config.train.batch_size, config.loss.membership_sigma) == (8, 0.25)
  assert (config.geometry.input_size, config.model.weights) == (193, "w.h5")
  assert config_lib.apply_overrides(config, ["train.seed=none"]).train.seed is None


@pytest.mark.parametrize("override, message", [
    ("model.depth", "section.field=value"),
    ("modle.depth=50", "section.field=value"),
    ("train.batch_size=four", "invalid literal"),
    ("model.separable_heads=maybe", "true or false"),
    ("train.precision=bfloat16", "precision must be one of"),
    ("geometry.input_size=400", "corner-aligned"),
])
def test_bad_overrides_are_clear_errors(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.apply_overrides(ExperimentConfig(), [override])


def test_the_old_mixed_precision_flag_maps_to_a_precision():
  """model_dirs written before `train.precision` stored `train.mixed_precision` (float16)."""
  for old, new in ((True, "mixed_float16"), (False, "float32")):
    values = ExperimentConfig().to_dict()
    del values["train"]["precision"]
    values["train"]["mixed_precision"] = old
    assert ExperimentConfig.from_dict(values).train.precision == new


def test_a_config_file_sets_only_the_fields_it_names(tmp_path):
  path = tmp_path / "ablation.json"
  path.write_text('{"encoder": {"centroid_mode": "static"}, "loss": {"sigma_igo": 0.4}}')
  base = ExperimentConfig(geometry=Geometry(input_size=193))
  config = config_lib.read_config_file(str(path), base)
  assert config.encoder.centroid_mode == "static" and config.loss.membership_sigma == 0.4
  assert config.geometry == base.geometry and config.model == base.model
  path.write_text('{"loss": {"membership_sigma": 0.4')
  with pytest.raises(ValueError, match="ablation.json is not valid JSON"):
    config_lib.read_config_file(str(path))
