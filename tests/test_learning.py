"""Training learns: on a trivially learnable case, AP rises far above an untrained model's.

Two generated images with one or two people each, no augmentation, a tiny trunk at 129 x 129,
evaluated on the same images through the normal path (`Predictor`, pycocotools). It fails if the
losses, the targets, the decoder or the batch-norm statistics of the trained model are broken.
"""

import json
import os

import numpy as np
import pytest

from data_pipeline import synthetic
from data_pipeline.input_pipeline import build_dataset
from data_pipeline.tfrecord_writer import write_tfrecords
from experiments.evaluation_runner import predict_dataset
from kdc_tf import evaluation
from kdc_tf.config import AugmentConfig, ExperimentConfig, TrainConfig
from kdc_tf.geometry import Geometry
from kdc_tf.inference import Predictor
from kdc_tf.modeling import ModelConfig
from kdc_tf.training import Trainer, create_strategy

SIZE = 129
NUM_IMAGES = 2
STEPS = 200
NO_AUGMENTATION = AugmentConfig(min_scale=1.0, max_scale=1.0, max_rotation_degrees=0.0,
                                flip_probability=0.0)


@pytest.fixture(scope="module")
def learnable_set(tmp_path_factory):
  """The first generated S x S images with one or two whole, well-labelled people and no crowd."""
  root = tmp_path_factory.mktemp("learnable")
  with open(synthetic.generate_synthetic_coco(str(root), num_images=16, image_size=(SIZE, SIZE),
                                              seed=0, image_format="png")) as f:
    generated = json.load(f)
  by_image = {}
  for annotation in generated["annotations"]:
    by_image.setdefault(annotation["image_id"], []).append(annotation)
  chosen = [image for image in generated["images"]
            if 1 <= len(by_image.get(image["id"], [])) <= 2
            and all(a["iscrowd"] == 0 and a["num_keypoints"] >= 12 for a in by_image[image["id"]])]
  chosen = chosen[:NUM_IMAGES]
  assert len(chosen) == NUM_IMAGES, "the generator no longer draws such images: change the seed"
  ids = {image["id"] for image in chosen}
  path = str(root / "learnable.json")
  with open(path, "w") as f:
    json.dump({**generated, "images": chosen,
               "annotations": [a for a in generated["annotations"] if a["image_id"] in ids]}, f)
  images = str(root / "images")
  write_tfrecords(path, images, str(root / "train"), 1, "coco")
  return dict(annotations=path, images=images, pattern=str(root / "train-*.tfrecord"),
              root=root)


def _train_and_evaluate(data, steps: int, name: str):
  config = ExperimentConfig(
      geometry=Geometry(input_size=SIZE, disk_radius=16), model=ModelConfig(depth="tiny"),
      augment=NO_AUGMENTATION,
      train=TrainConfig(train_pattern=data["pattern"], batch_size=NUM_IMAGES, learning_rate=3e-3,
                        epochs=steps, steps_per_epoch=1, checkpoint_every=steps, log_every=50,
                        seed=0, strategy="one_device"))
  model_dir = str(data["root"] / name)
  Trainer(config, model_dir, create_strategy("one_device")).run(
      build_dataset(data["pattern"], config.geometry, config.encoder, config.augment,
                    NUM_IMAGES, training=True, seed=0, deterministic=True))
  predictor = Predictor.from_model_dir(model_dir)
  coco_gt = evaluation.load_ground_truth(data["annotations"], "coco")
  results, image_ids = predict_dataset(predictor.predict_numpy, coco_gt, data["images"])
  return evaluation.evaluate(results, coco_gt, "coco", image_ids).stats


def test_training_raises_ap_on_its_own_images_far_above_an_untrained_model(learnable_set):
  # Measured 2026-11-30 (keypoints / segm AP): untrained 0.000 / 0.000; trained 0.844 / 0.320
  # (150 steps: 0.850 / 0.392, 300: 0.944 / 0.303); the oracle on these images gives 1.000 / 0.389
  # (33 x 33 mask grid); the same training with train.batch_norm_reestimation_batches=0 gives
  # 0.000 / 0.000 (moving statistics that lag the weights).
  untrained = _train_and_evaluate(learnable_set, 1, "untrained")
  trained = _train_and_evaluate(learnable_set, STEPS, "trained")
  assert untrained["keypoints"]["AP"] < 0.1 and untrained["segm"]["AP"] < 0.1
  assert trained["keypoints"]["AP"] >= 0.6
  assert trained["segm"]["AP"] >= 0.2
