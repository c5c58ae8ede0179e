"""Predictor.from_model_dir decodes with the MaskCentroid settings the model was trained with."""

import dataclasses

import pytest

from kdc_tf.config import EncoderConfig, GroupingConfig, LossConfig
from kdc_tf.inference import Predictor
from kdc_tf.modeling import ModelConfig, build_kdc_model
from kdc_tf.training.checkpointing import make_checkpoint
from kdc_tf.training.experiment import ExperimentConfig, save_config

_GEOMETRY = dict(dataset="coco", input_size=65, output_stride=8, disk_radius=8.0)


def _static_experiment() -> ExperimentConfig:
  return ExperimentConfig(model=ModelConfig(depth="tiny", **_GEOMETRY),
                          encoder=EncoderConfig(centroid_mode="static", **_GEOMETRY),
                          loss=LossConfig(sigma_igo=0.3))


def test_decoding_config_takes_the_trained_centroid_mode_and_sigma_and_keeps_the_rest():
  base = GroupingConfig(nms_radius=7.0, max_people=5)
  decoding = _static_experiment().decoding_config(base)
  assert (decoding.centroid_mode, decoding.sigma_igo) == ("static", 0.3)
  assert dataclasses.replace(decoding, centroid_mode=base.centroid_mode,
                             sigma_igo=base.sigma_igo) == base


def test_predictor_from_model_dir_decodes_like_the_model_was_trained(tmp_path):
  config = _static_experiment()
  model = build_kdc_model(config.model)
  save_config(config, str(tmp_path))
  make_checkpoint(model).save(str(tmp_path / "ckpt"))

  predictor = Predictor.from_model_dir(str(tmp_path), GroupingConfig(nms_radius=7.0))

  assert predictor.grouping_config.centroid_mode == "static"
  assert predictor.grouping_config.sigma_igo == pytest.approx(0.3)
  assert predictor.grouping_config.nms_radius == pytest.approx(7.0)


def test_a_model_trained_without_masks_decodes_without_its_untrained_segnet_embeddings():
  geometry = dict(_GEOMETRY, dataset="crowdpose")
  crowdpose = ExperimentConfig(model=ModelConfig(depth="tiny", **geometry),
                               encoder=EncoderConfig(**geometry))
  decoding = crowdpose.decoding_config()
  assert not decoding.merge_fragments and not decoding.mask_only_people
  coco = _static_experiment().decoding_config()
  assert coco.merge_fragments and coco.mask_only_people
