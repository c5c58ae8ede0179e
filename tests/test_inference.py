"""Predictor.from_model_dir decodes with the MaskCentroid settings the model was trained with."""

import pytest

from kdc_tf.checkpoints import make_checkpoint
from kdc_tf.config import EncoderConfig, ExperimentConfig, GroupingConfig, LossConfig, save_config
from kdc_tf.geometry import Geometry
from kdc_tf.inference import Predictor
from kdc_tf.modeling import ModelConfig, build_kdc_model

_GEOMETRY = Geometry(dataset="coco", input_size=65, output_stride=8, disk_radius=8.0)


def _static_experiment() -> ExperimentConfig:
  return ExperimentConfig(geometry=_GEOMETRY, model=ModelConfig(depth="tiny"),
                          encoder=EncoderConfig(centroid_mode="static"),
                          loss=LossConfig(membership_sigma=0.3))


def test_decoding_config_of_a_model_with_masks_is_the_callers():
  base = GroupingConfig(nms_radius=7.0, max_people=5)
  assert _static_experiment().decoding_config(base) == base


def test_predictor_from_model_dir_decodes_like_the_model_was_trained(tmp_path):
  config = _static_experiment()
  model = build_kdc_model(config.model, config.geometry)
  save_config(config, str(tmp_path))
  make_checkpoint(model).save(str(tmp_path / "ckpt"))

  predictor = Predictor.from_model_dir(str(tmp_path), GroupingConfig(nms_radius=7.0))

  assert predictor.grouper.centroid_mode == "static"
  assert predictor.grouper.membership_sigma == pytest.approx(0.3)
  assert predictor.grouping_config.nms_radius == pytest.approx(7.0)
  assert predictor.geometry == _GEOMETRY


def test_a_model_trained_without_masks_decodes_without_its_untrained_segnet_embeddings():
  crowdpose = ExperimentConfig(geometry=Geometry(dataset="crowdpose", input_size=65),
                               model=ModelConfig(depth="tiny"))
  decoding = crowdpose.decoding_config()
  assert not decoding.merge_fragments and not decoding.mask_only_people
  coco = _static_experiment().decoding_config()
  assert coco.merge_fragments and coco.mask_only_people


def test_a_model_trained_without_keycentroid_decodes_without_it():
  trained = ExperimentConfig(geometry=_GEOMETRY, model=ModelConfig(depth="tiny"),
                             loss=LossConfig(keycentroid=0.0))
  assert not trained.decoding_config().use_keycentroid
  assert _static_experiment().decoding_config().use_keycentroid
  chosen = GroupingConfig(use_keycentroid=False)  # selectable on any model
  assert not _static_experiment().decoding_config(chosen).use_keycentroid

