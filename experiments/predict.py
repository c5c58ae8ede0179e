r"""Runs KDC on an image, a folder of images or a video: COCO results JSON plus overlays.

  python -m experiments.predict --saved_model=/models/kdc/1 --input=photos/ --output_dir=out
  python -m experiments.predict --model_dir=runs/coco --input=clip.mp4 --output_dir=out

Writes `output_dir/results.json` (COCO results: keypoints, score, RLE segmentation per person),
`output_dir/image_ids.json` (input file or frame -> image_id) and overlays: one PNG per image in
`output_dir/overlays/`, or `output_dir/<video name>_overlay.mp4` for a video. Image ids are the
file names' numbers when every name is a number (COCO's 000000000785.jpg -> 785), else 1, 2, ...
in sorted order, or, with --annotations, the annotation file's ids for the file names (so that
results.json can be evaluated against it); a video's frames are numbered from 0. The JSON files
are written atomically, and a second run into the same --output_dir while one runs is refused.

Grayscale, RGBA and 16-bit images are converted to 8-bit RGB; files that are not images, or do
not decode, are skipped with the reason logged and counted (`kdc_tf.prediction`). The model is an
exported SavedModel (--saved_model, its `serving_default` signature) or a trained model_dir
(--model_dir or --checkpoint, with the grouping flags of experiments/common_flags.py).
"""

from __future__ import annotations

from typing import Tuple

from absl import app, flags, logging

from experiments import common_flags
from kdc_tf import prediction
from kdc_tf.datasets import DatasetSpec

FLAGS = flags.FLAGS


def _predict_fn_from_flags() -> Tuple[prediction.PredictFn, DatasetSpec]:
  if FLAGS.saved_model:
    if FLAGS.model_dir or FLAGS.checkpoint:
      raise app.UsageError("give --saved_model or --model_dir/--checkpoint, not both")
    return prediction.saved_model_predict_fn(FLAGS.saved_model)
  if not (FLAGS.model_dir or FLAGS.checkpoint):
    raise app.UsageError("give --saved_model, --model_dir or --checkpoint")
  predictor = common_flags.predictor_from_flags()
  return predictor.predict_numpy, predictor.spec


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  common_flags.define_predictor_flags()
  flags.DEFINE_string("saved_model", None, "An exported SavedModel directory (experiments.export).")
  flags.DEFINE_string("input", None, "An image file, a folder of images, or a video file.")
  flags.DEFINE_string("output_dir", None, "Where results.json and the overlays go.")
  flags.DEFINE_float("keypoint_threshold", 0.1, "Overlays leave out keypoints scoring below this.")
  flags.DEFINE_integer("max_frames", 0, "Stop a video after this many frames (0: all).")
  flags.DEFINE_string("annotations", None, "A COCO-format annotation file listing the photos: "
                      "their image ids are taken from it (by file name), so that results.json "
                      "can be evaluated against it. Default: ids from numeric file names, else "
                      "1..n.")
  flags.mark_flags_as_required(["input", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  predict, spec = _predict_fn_from_flags()
  summary = prediction.run(predict, spec, FLAGS.input, FLAGS.output_dir,
                           FLAGS.keypoint_threshold, FLAGS.max_frames, FLAGS.annotations)
  logging.info("Done: %s. Outputs in %s", summary.describe(), FLAGS.output_dir)
  for reason, paths in sorted(summary.skipped.items()):
    logging.info("Skipped (%s): %s", reason, ", ".join(paths))


if __name__ == "__main__":
  define_flags()
  app.run(main)
