"""The oracle: ground truth -> target encoder -> grouping -> COCO evaluation (a library).

Shared by `experiments.oracle` (the binary), `experiments.ablate` (the oracle column of each row)
and the tests. Each image goes through the deterministic inference transform and the real target
encoder (`data_pipeline.ground_truth_examples.encode_at_test_scale`), then the grouping decoder
with the targets as perfect head outputs; people come out at the original resolution and are
evaluated like a model's. This measures what the representation and the decoder lose with perfect
predictions. Masks are also judged against the mask-grid ceiling
(`kdc_tf.evaluation.mask_ceiling`): the ground-truth masks sampled on the same stride-4 grid and
resampled back with perfect assignment.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from data_pipeline.ground_truth_examples import decoded_examples, encode_at_test_scale
from kdc_tf import evaluation, grouping
from kdc_tf.config import ExperimentConfig, GroupingConfig
from kdc_tf.evaluation.coco_evaluator import SEGM, EvaluationReport
from kdc_tf.evaluation.mask_ceiling import grid_masks_to_image
from kdc_tf.evaluation.progress import Progress
from kdc_tf.evaluation.results import Result
from kdc_tf.geometry import Geometry


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
    encoded = encode_at_test_scale(example, self._experiment.geometry, self._experiment.encoder)
    inputs = {key: encoded.targets[key] for key in grouping.INPUT_KEYS}
    outputs = {k: v.numpy() for k, v in
               self._grouper(inputs, encoded.image_size, encoded.input_scale).items()}
    outputs["ceiling_masks"] = grid_masks_to_image(
        encoded.augmented["instance_masks"], encoded.image_size, encoded.input_scale).numpy()
    return outputs


def run_oracle(annotations_path: str, images_dir: str, geometry: Geometry,
               grouping_config: Optional[GroupingConfig] = None,
               max_images: Optional[int] = None, jit_compile: bool = False,
               fail_on_bad_image: bool = False) -> OracleReport:
  """Runs the oracle over the images of an annotation file at `geometry` and evaluates it.

  The dataset (keypoint layout, evaluation protocol) is `geometry.dataset`. Unreadable images are
  skipped and counted (`fail_on_bad_image`: an error).
  """
  experiment = ExperimentConfig(geometry=geometry)
  dataset = geometry.dataset
  oracle = Oracle(experiment, grouping_config or GroupingConfig(), jit_compile)
  coco_gt = evaluation.load_ground_truth(annotations_path, dataset)
  examples = list(decoded_examples(annotations_path, images_dir, dataset, max_images,
                                   fail_on_bad_image))
  if not examples:
    raise ValueError(f"no image of {annotations_path} could be read from {images_dir}")
  has_masks = all(bool(e["has_masks"]) for e in examples)

  results, ceiling_results, image_ids = [], [], []
  progress = Progress(len(examples), f"oracle at {geometry.input_size}")
  for example in examples:
    image_id = int(example["image_id"])
    outputs = oracle(example)
    results += evaluation.grouping_to_results(
        image_id, outputs["keypoints"], outputs["scores"], outputs["num_people"],
        outputs["masks"] if has_masks else None, outputs["mask_scores"])
    ceiling_masks = outputs["ceiling_masks"]
    ceiling_results += evaluation.grouping_to_results(
        image_id, np.zeros(ceiling_masks.shape[:1] + (geometry.spec.num_keypoints, 3)),
        np.ones(ceiling_masks.shape[:1]), ceiling_masks.shape[0], ceiling_masks)
    image_ids.append(image_id)
    progress.update()

  report = evaluation.evaluate(results, coco_gt, dataset, image_ids)
  ceiling, ceiling_table = None, ""
  if has_masks:
    ceiling, ceiling_table = evaluation.run_cocoeval(
        coco_gt, ceiling_results, SEGM, geometry.spec.oks_sigmas, image_ids)
  return OracleReport(report, ceiling, ceiling_table, results)
