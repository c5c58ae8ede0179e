"""experiments.common_flags: one input-size flag with its old names, registry datasets, precedence."""

import pytest
from absl import flags

from experiments import common_flags
from kdc_tf import datasets
from kdc_tf.config import ExperimentConfig
from kdc_tf.geometry import Geometry


def _parse(*argv, **define):
  flag_values = flags.FlagValues()
  common_flags.define_dataset_flag(flag_values=flag_values)
  common_flags.define_geometry_flags(flag_values=flag_values, **define)
  common_flags.define_config_flags(flag_values=flag_values)
  flag_values(["binary", *argv])
  return flag_values


@pytest.mark.parametrize("name", ["input_size", "test_scale", "image_size"])
def test_the_input_size_has_one_flag_and_its_old_names_still_work(name):
  assert _parse(f"--{name}=641")["input_size"].value == 641


def test_dataset_choices_come_from_the_registry():
  assert _parse()["dataset"].parser.enum_values == datasets.dataset_names() == [
      "coco", "crowdpose", "ochuman"]
  with pytest.raises(flags.IllegalFlagValueError):
    _parse("--dataset=mpii")


def test_geometry_flags_given_win_over_the_config_file_and_overrides_over_both(tmp_path):
  path = tmp_path / "c.json"
  path.write_text('{"geometry": {"input_size": 193, "disk_radius": 16}}')
  base = ExperimentConfig(geometry=Geometry(output_stride=16))
  flag_values = _parse(f"--config={path}", output_stride=True, disk_radius=True)
  config = common_flags.experiment_config_from_flags(base, flag_values)
  assert config.geometry == Geometry(input_size=193, output_stride=16, disk_radius=16.0)
  flag_values = _parse(f"--config={path}", "--input_size=129", "--override=geometry.disk_radius=8",
                       output_stride=True, disk_radius=True)
  config = common_flags.experiment_config_from_flags(base, flag_values)
  assert config.geometry == Geometry(input_size=129, output_stride=16, disk_radius=8.0)
