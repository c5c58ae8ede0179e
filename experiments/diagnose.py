r"""Where does a trained model lose AP? Substitution analysis (`kdc_tf.evaluation.diagnosis`).

  python -m experiments.diagnose --model_dir=work_dirs/quickstart/model
  python -m experiments.diagnose --model_dir=runs/fit --annotations=coco_sample/test_coco.json \
      --images=coco_sample --dataset=coco [--input_size=401] [--all_but_one]

Decodes the model's head outputs with each one replaced by its ground-truth target in turn
(heatmap, keycentroid, midrange, seg, mask_offset), then all of them (the oracle), optionally all
but one, and evaluates every row with pycocotools on the same images. Without --annotations it
uses the embedded synthetic validation split. Prints one table (keypoints AP, AP50, segm AP,
people per image, mean person score) and writes it as `<output_prefix>.md` and `.csv`, by default
`diagnosis.md` / `diagnosis.csv` beside the model's checkpoints; under it, for the model's row and
the oracle's, how well the true people are found by how much they overlap another person
(`kdc_tf.evaluation.overlap`: separate, partly or heavily overlapping boxes). The grouping flags
are those of experiments.predict (the trained model's decoding defaults otherwise). An exported
SavedModel holds only the decoded people, not the head outputs: diagnose its training model_dir.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Iterator, Sequence

import keras
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic
from data_pipeline.ground_truth_examples import decoded_examples, encode_at_test_scale
from experiments import common_flags
from kdc_tf import evaluation, grouping
from kdc_tf.checkpoints import restore_model
from kdc_tf.config import ExperimentConfig
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation import diagnosis, overlap

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  common_flags.define_predictor_flags()
  flags.DEFINE_string("annotations", None, "COCO-format ground truth; default: the embedded "
                      "synthetic validation split.")
  flags.DEFINE_string("images", None, "Directory of the annotation file's images.")
  common_flags.define_dataset_flag()
  flags.DEFINE_integer("max_images", None, "Only the first N images.")
  flags.DEFINE_bool("all_but_one", False, "Also the rows with every head replaced but one.")
  flags.DEFINE_string("output_prefix", None, "Writes <prefix>.md and <prefix>.csv; default: "
                      "<model_dir>/diagnosis.")


def diagnosis_cases(model: keras.Model, experiment: ExperimentConfig,
                    examples: Iterable[Dict[str, tf.Tensor]]) -> Iterator[diagnosis.DiagnosisCase]:
  """Per decoded example: the model's grouping inputs and the encoder's targets, same geometry.

  The model sees the deterministic test transform (as `Predictor` does); the targets come from the
  real encoder on the same transform of the ground truth (`encode_at_test_scale`, as the oracle
  builds them).
  """
  forward = tf.function(lambda image: grouping.model_outputs_to_grouping_inputs(
      model(image[tf.newaxis], training=False)))
  for example in examples:
    encoded = encode_at_test_scale(example, experiment.geometry, experiment.encoder)
    yield diagnosis.DiagnosisCase(
        image_id=int(example["image_id"]), predicted=forward(encoded.augmented["image"]),
        truth={key: encoded.targets[key] for key in diagnosis.HEADS},
        image_size=encoded.image_size, input_scale=encoded.input_scale,
        has_masks=bool(example["has_masks"]))


def _model_dir(path: str) -> str:
  return path if os.path.isdir(path) else os.path.dirname(path)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if bool(FLAGS.annotations) != bool(FLAGS.images):
    raise app.UsageError("give both --annotations and --images, or neither (synthetic split)")
  annotations, images = FLAGS.annotations, FLAGS.images
  if not annotations:
    data = synthetic.ensure_embedded_dataset()
    annotations, images = data["annotations_val"], data["images_val"]
  model_path = common_flags.model_path_from_flags()
  model, config = restore_model(model_path, input_size=FLAGS.input_size)
  if config.geometry.spec.num_keypoints != get_dataset_spec(FLAGS.dataset).num_keypoints:
    raise app.UsageError(f"{model_path} predicts {config.geometry.spec.num_keypoints} keypoints; "
                         f"--dataset={FLAGS.dataset} does not match")
  grouping_config = config.decoding_config(common_flags.grouping_config_from_flags())
  coco_gt = evaluation.load_ground_truth(annotations, FLAGS.dataset)
  grouper = grouping.Grouper(config, grouping_config, jit_compile=FLAGS.jit_compile_grouping)
  image_ids = []

  def examples():
    for example in decoded_examples(annotations, images, FLAGS.dataset, FLAGS.max_images):
      image_ids.append(int(example["image_id"]))
      yield example

  rows = diagnosis.diagnose(diagnosis_cases(model, config, examples()), grouper, coco_gt,
                            FLAGS.dataset, diagnosis.substitutions(FLAGS.all_but_one))
  table = diagnosis.to_markdown(rows, diagnosis.ground_truth_people_per_image(coco_gt, image_ids))
  for row in (rows[0], rows[-1]):  # the model and the oracle
    table += f"\nTrue people by overlap, {row.name}:\n\n{overlap.to_markdown(row.overlap)}"
  prefix = FLAGS.output_prefix or os.path.join(_model_dir(model_path), "diagnosis")
  with open(prefix + ".md", "w") as f:
    f.write(f"Substitution analysis of {model_path} on {annotations} "
            f"({len(image_ids)} images, test scale {config.geometry.input_size})\n\n{table}")
  with open(prefix + ".csv", "w") as f:
    f.write(diagnosis.to_csv(rows))
  logging.info("Wrote %s.md and %s.csv", prefix, prefix)
  print(table, flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
