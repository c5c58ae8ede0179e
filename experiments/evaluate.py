r"""COCO-style evaluation (keypoint OKS AP, mask AP) of a results file or of a trained model.

Results file (no model needed):
  python -m experiments.evaluate --results=preds.json --annotations=person_keypoints_val2017.json \
      --dataset=coco

Trained model (a training model_dir / checkpoint, or an exported SavedModel), on the images of
the annotation file:
  python -m experiments.evaluate --checkpoint=/tmp/kdc_run --annotations=... --images=val2017/ \
      --dataset=coco --input_size=401 --output=results.json

Without --input_size a model is evaluated at its own size (its test input size, else its training
input size, or the export's), as in export and predict.

Prints the AP/AR tables, the per-keypoint-type table (mean OKS term and mean confidence of the
keypoints matched at OKS 0.5, `kdc_tf.evaluation.per_keypoint`) and ends with
`keypoints_AP=<x> segm_AP=<y>` (segm left out when the dataset or the results have no masks).
In model mode the grouping flags (--pgo_sigma_high, --pgo_sigma_low, --igo_sigma,
--use_keycentroid, ...) set the decoder of a --checkpoint, and --flip_test averages its maps with
its mirror image's (`kdc_tf.flip_test`). CrowdPose adds AP per crowd-index
band; its protocol and OCHuman's `area` convention are described in `kdc_tf.evaluation`.
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags

from experiments import common_flags
from experiments import evaluation_runner as runner
from kdc_tf import evaluation
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.per_keypoint import per_keypoint_report

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("results", None, "An existing COCO results JSON to evaluate (mode A).")
  flags.DEFINE_string("checkpoint", None, "Training model_dir or checkpoint to evaluate (mode B).")
  flags.DEFINE_string("saved_model", None, "Exported SavedModel directory to evaluate (mode B).")
  flags.DEFINE_string("annotations", None, "COCO-format ground-truth JSON.")
  common_flags.define_dataset_flag()
  flags.DEFINE_string("images", None, "Directory of the annotation file's images (mode B).")
  # --input_size: the test scale (mode B); unset, the model's own size.
  common_flags.define_geometry_flags(input_size=None)
  flags.DEFINE_integer("max_images", None, "Evaluate only the first N images (mode B).")
  flags.DEFINE_string("output", None, "Where to write the results JSON (required in mode B).")
  flags.DEFINE_bool("fail_on_bad_image", False, "Stop at a missing or corrupt image (mode B); "
                    "by default it is skipped, counted and left out of the evaluation.")
  common_flags.define_grouping_flags()
  common_flags.define_flip_test_flag()
  flags.mark_flag_as_required("annotations")
  flags.register_multi_flags_validator(
      ["results", "checkpoint", "saved_model", "images", "output"], _valid_mode,
      message="give exactly one of --results, --checkpoint, --saved_model; a model also needs "
      "--images and --output")


def _valid_mode(values) -> bool:
  sources = [values[k] for k in ("results", "checkpoint", "saved_model") if values[k]]
  if len(sources) != 1:
    return False
  return bool(values["results"]) or bool(values["images"] and values["output"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  coco_gt = evaluation.load_ground_truth(FLAGS.annotations, FLAGS.dataset)
  if FLAGS.results:
    results, image_ids = evaluation.read_results(FLAGS.results), None
  else:
    if FLAGS.checkpoint:
      predict = runner.checkpoint_predict_fn(FLAGS.checkpoint, FLAGS.dataset, FLAGS.input_size,
                                             common_flags.grouping_config_from_flags(),
                                             FLAGS.flip_test)
    else:
      predict = runner.saved_model_predict_fn(FLAGS.saved_model, FLAGS.dataset, FLAGS.input_size)
    results, image_ids = runner.predict_dataset(predict, coco_gt, FLAGS.images, FLAGS.max_images,
                                                FLAGS.fail_on_bad_image)
  if FLAGS.output:
    evaluation.write_results(FLAGS.output, results)
  report = evaluation.evaluate(results, coco_gt, FLAGS.dataset, image_ids)
  print(report.table, flush=True)
  spec = get_dataset_spec(FLAGS.dataset)
  print(per_keypoint_report(coco_gt, results, spec.oks_sigmas, spec.keypoint_names,
                            image_ids).table, flush=True)
  print(report.summary_line(), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
