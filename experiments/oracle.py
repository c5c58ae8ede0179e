r"""The oracle: ground truth -> target encoder -> grouping -> COCO evaluation.

  python -m experiments.oracle --annotations=coco_sample/test_coco.json --images=coco_sample \
      --dataset=coco --input_size=401

Each image goes through the deterministic inference transform (`resize_and_pad_example`: long
side to `--input_size`, pad bottom/right), `encode_targets`, and the grouping decoder with the
targets as perfect head outputs; people come out at the original resolution and are evaluated like
a model's.
This measures what the representation and the decoder lose with perfect predictions.

  python -m experiments.oracle --synthetic=occlusion --num_images=100 --input_size=401 [--seed=0]

runs it on generated OCHuman-like occlusion scenes instead (`data_pipeline.synthetic_occlusion`,
written to a temporary directory, or to `--synthetic_dir`), through the same path.

Masks are also judged against the mask-grid ceiling (`kdc_tf.evaluation.mask_ceiling`): the mask
AP of the ground-truth masks sampled on the same stride-4 grid and resampled back with perfect
assignment. Prints the tables, the ceiling, a `segm_ceiling=<z>` line (datasets with masks) and ends
with `keypoints_AP=<x> segm_AP=<y>` (segm omitted for datasets without masks).
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import synthetic_occlusion
from data_pipeline.augmentation import resize_and_pad_example
from data_pipeline.ground_truth_examples import decoded_examples
from data_pipeline.targets import encode_targets
from experiments import common_flags
from kdc_tf import evaluation, grouping
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.evaluation.coco_evaluator import SEGM, EvaluationReport
from kdc_tf.evaluation.mask_ceiling import grid_masks_to_image
from kdc_tf.evaluation.progress import Progress
from kdc_tf.evaluation.results import Result
from kdc_tf.geometry import Geometry, inference_scale

FLAGS = flags.FLAGS

def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("annotations", None, "COCO-format ground-truth JSON.")
  flags.DEFINE_string("images", None, "Directory of the annotation file's images.")
  common_flags.define_dataset_flag()
  common_flags.define_geometry_flags(output_stride=True, disk_radius=True)
  common_flags.define_grouping_flags()
  flags.DEFINE_integer("max_images", None, "Only the first N images.")
  flags.DEFINE_string("output", None, "Optional: write the oracle's COCO results JSON here.")
  flags.DEFINE_bool("fail_on_bad_image", False, "Stop at a missing or corrupt image; by default "
                    "it is skipped, counted and left out of the evaluation.")
  flags.DEFINE_bool("jit_compile", False, "Compile the grouping with XLA (pays a compilation first; "
                    "faster per image on long runs).")
  flags.DEFINE_enum("synthetic", None, ["occlusion"], "Instead of --annotations/--images: "
                    "generated scenes (occlusion: OCHuman-like, data_pipeline.synthetic_occlusion).")
  flags.DEFINE_integer("num_images", 100, "Generated scenes (with --synthetic).")
  flags.DEFINE_integer("seed", 0, "Scene generator seed (with --synthetic).")
  flags.DEFINE_string("synthetic_dir", None, "Keep the generated scenes here (with --synthetic); "
                      "default: a temporary directory, removed afterwards.")
  flags.register_multi_flags_validator(
      ["annotations", "images", "synthetic"],
      lambda f: f["synthetic"] is not None or (f["annotations"] and f["images"]),
      message="give --annotations and --images, or --synthetic")


@dataclasses.dataclass
class OracleReport:
  """The oracle's evaluation and, for datasets with masks, the mask-grid ceiling's segm stats."""

  report: EvaluationReport
  ceiling: Optional[Dict[str, float]]
  ceiling_table: str
  results: List[Result]

  def lines(self) -> List[str]:
    """What the binary prints, ending with the `keypoints_AP=... segm_AP=...` line."""
    lines = [self.report.table]
    if self.ceiling is not None:
      lines.append("mask-grid ceiling (ground-truth masks on the stride-4 grid, bilinear back, "
                   "perfect assignment):\n" + self.ceiling_table)
      if SEGM in self.report.stats:
        gap = self.report.stats[SEGM]["AP"] - self.ceiling["AP"]
        lines.append(f"segm AP {self.report.stats[SEGM]['AP']:.3f} vs ceiling "
                     f"{self.ceiling['AP']:.3f} (gap {gap:+.3f})")
      lines.append(f"segm_ceiling={self.ceiling['AP']:.3f}")
    lines.append(self.report.summary_line())
    return lines


class Oracle:
  """GT decoded example -> people at the original resolution, plus the ceiling's masks."""

  def __init__(self, experiment: ExperimentConfig, grouping_config: GroupingConfig,
               jit_compile: bool = False):
    self._experiment = experiment
    self._grouper = grouping.Grouper(experiment, grouping_config, jit_compile)

  def __call__(self, example: dict) -> Dict[str, np.ndarray]:
    """Grouping outputs (ARCHITECTURE.md 5) and `ceiling_masks` `[P, H, W]` for one image."""
    size = tf.shape(example["image"])[:2]
    input_size = self._experiment.geometry.input_size
    scale = inference_scale(size[0], size[1], input_size)
    augmented = resize_and_pad_example(example, input_size)
    targets = encode_targets(augmented, self._experiment.geometry, self._experiment.encoder)
    inputs = {key: targets[key] for key in grouping.INPUT_KEYS}
    outputs = {k: v.numpy() for k, v in self._grouper(inputs, size, scale).items()}
    outputs["ceiling_masks"] = grid_masks_to_image(
        augmented["instance_masks"], size, scale).numpy()
    return outputs


def run_oracle(annotations_path: str, images_dir: str, dataset: str, test_scale: int,
               output_stride: int = 8, max_images: Optional[int] = None,
               grouping_config: Optional[GroupingConfig] = None,
               jit_compile: bool = False, fail_on_bad_image: bool = False,
               disk_radius: float = Geometry.disk_radius) -> OracleReport:
  """Runs the oracle over the images of an annotation file and evaluates it; unreadable images
  are skipped and counted (`fail_on_bad_image`: an error)."""
  experiment = ExperimentConfig(geometry=Geometry(dataset=dataset, input_size=test_scale,
                                                 output_stride=output_stride,
                                                 disk_radius=disk_radius))
  oracle = Oracle(experiment, grouping_config or GroupingConfig(), jit_compile)
  coco_gt = evaluation.load_ground_truth(annotations_path, dataset)
  examples = list(decoded_examples(annotations_path, images_dir, dataset, max_images,
                                   fail_on_bad_image))
  if not examples:
    raise ValueError(f"no image of {annotations_path} could be read from {images_dir}")
  has_masks = bool(examples) and all(bool(e["has_masks"]) for e in examples)

  results, ceiling_results, image_ids = [], [], []
  progress = Progress(len(examples), f"oracle at {test_scale}")
  for example in examples:
    image_id = int(example["image_id"])
    outputs = oracle(example)
    results += evaluation.grouping_to_results(
        image_id, outputs["keypoints"], outputs["scores"], outputs["num_people"],
        outputs["masks"] if has_masks else None)
    ceiling_masks = outputs["ceiling_masks"]
    ceiling_results += evaluation.grouping_to_results(
        image_id, np.zeros(ceiling_masks.shape[:1] + (experiment.geometry.spec.num_keypoints, 3)),
        np.ones(ceiling_masks.shape[:1]), ceiling_masks.shape[0], ceiling_masks)
    image_ids.append(image_id)
    progress.update()

  report = evaluation.evaluate(results, coco_gt, dataset, image_ids)
  ceiling, ceiling_table = None, ""
  if has_masks:
    ceiling, ceiling_table = evaluation.run_cocoeval(
        coco_gt, ceiling_results, SEGM, experiment.geometry.spec.oks_sigmas, image_ids)
  return OracleReport(report, ceiling, ceiling_table, results)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with tempfile.TemporaryDirectory(prefix="kdc_oracle_") as scratch:
    annotations, images, dataset = FLAGS.annotations, FLAGS.images, FLAGS.dataset
    if FLAGS.synthetic == "occlusion":
      if FLAGS.num_images < 1:
        raise app.UsageError("--num_images must be >= 1")
      directory = FLAGS.synthetic_dir or scratch
      annotations = synthetic_occlusion.generate_occlusion_coco(directory, FLAGS.num_images,
                                                               FLAGS.seed)
      images, dataset = f"{directory}/images", "coco"
    oracle_report = run_oracle(annotations, images, dataset, FLAGS.input_size,
                               int(FLAGS.output_stride), FLAGS.max_images,
                               common_flags.grouping_config_from_flags(),
                               jit_compile=FLAGS.jit_compile,
                               fail_on_bad_image=FLAGS.fail_on_bad_image,
                               disk_radius=FLAGS.disk_radius)
  if FLAGS.output:
    evaluation.write_results(FLAGS.output, oracle_report.results)
  logging.info("Oracle done.")
  for line in oracle_report.lines():
    print(line, flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
