"""Substitution analysis: where a trained model's AP is lost, head output by head output.

For every image, the trained model's head outputs (ARCHITECTURE.md 4, as grouping inputs 5) and
the ground-truth targets of the real encoder at the same test geometry (as the oracle builds them)
are both computed; each `Substitution` decodes the model's outputs with some of them replaced by
their targets. All rows are evaluated with pycocotools on the same images, so the row whose
replacement gains the most names the head that loses the most. Replacing everything is the oracle
(same encoder, same decoder), so that row equals `experiments.oracle` at the same test scale.
Each row also splits its people's quality by how much the true people overlap (`overlap`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools.coco import COCO

from kdc_tf import grouping
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation import overlap
from kdc_tf.evaluation.coco_evaluator import KEYPOINTS, SEGM
from kdc_tf.evaluation.evaluator import evaluate
from kdc_tf.evaluation.results import grouping_to_results

HEADS = tuple(grouping.INPUT_KEYS)


@dataclasses.dataclass(frozen=True)
class Substitution:
  """One row of the analysis: `replaced` head outputs come from the ground truth."""

  name: str
  replaced: Tuple[str, ...]


def substitutions(all_but_one: bool = False) -> List[Substitution]:
  """The model alone; each head replaced alone; optionally all but one; all (the oracle)."""
  rows = [Substitution("model", ())]
  rows += [Substitution(f"GT {head}", (head,)) for head in HEADS]
  if all_but_one:
    rows += [Substitution(f"GT all but {head}", tuple(h for h in HEADS if h != head))
             for head in HEADS]
  rows.append(Substitution("GT all (oracle)", HEADS))
  return rows


@dataclasses.dataclass
class DiagnosisRow:
  """pycocotools figures and people statistics of one substitution."""

  name: str
  keypoints_ap: float
  keypoints_ap50: float
  segm_ap: Optional[float]
  people_per_image: float
  mean_person_score: float
  overlap: List[overlap.BandRow]


_COLUMNS = ("replaced", "keypoints AP", "keypoints AP50", "segm AP", "people / image",
            "mean person score")


def _cells(row: DiagnosisRow) -> List[str]:
  segm = "-" if row.segm_ap is None else f"{row.segm_ap:.3f}"
  return [row.name, f"{row.keypoints_ap:.3f}", f"{row.keypoints_ap50:.3f}", segm,
          f"{row.people_per_image:.2f}", f"{row.mean_person_score:.3f}"]


def to_markdown(rows: Sequence[DiagnosisRow], gt_people_per_image: float) -> str:
  """The table as Markdown, with the ground truth's people per image under it."""
  lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
  lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
  lines.append(f"\nGround truth: {gt_people_per_image:.2f} people / image.")
  return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[DiagnosisRow]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(_COLUMNS)
  writer.writerows(_cells(row) for row in rows)
  return buffer.getvalue()


@dataclasses.dataclass
class DiagnosisCase:
  """One image: the model's and the ground truth's grouping inputs (ARCHITECTURE.md 5)."""

  image_id: int
  predicted: Dict[str, tf.Tensor]
  truth: Dict[str, tf.Tensor]
  image_size: tf.Tensor  # [2] (H, W) of the original image.
  input_scale: tf.Tensor  # input pixels per original pixel.
  has_masks: bool


def diagnose(cases: Iterable[DiagnosisCase], grouper: grouping.Grouper, coco_gt: COCO,
             dataset: str, rows: Sequence[Substitution]) -> List[DiagnosisRow]:
  """Decodes and evaluates every substitution over the images.

  Args:
    cases: per image, the trained model's head outputs and the ground-truth targets of the real
      encoder at the same test geometry (`experiments.diagnose`).
    grouper: the decoder, built for that geometry with the trained model's decoding settings.
    coco_gt: the ground truth of those images, for pycocotools.
    dataset: evaluation protocol ('coco', 'crowdpose', 'ochuman').
    rows: the substitutions to evaluate.
  """
  results: Dict[str, list] = {row.name: [] for row in rows}
  people: Dict[str, List[int]] = {row.name: [] for row in rows}
  scores: Dict[str, List[float]] = {row.name: [] for row in rows}
  image_ids: List[int] = []
  has_masks = True
  for case in cases:  # Streamed: one image's maps in memory at a time.
    has_masks = has_masks and case.has_masks
    for row in rows:
      inputs = {key: case.truth[key] if key in row.replaced else case.predicted[key]
                for key in HEADS}
      outputs = {k: v.numpy() for k, v in
                 grouper(inputs, case.image_size, case.input_scale).items()}
      count = int(outputs["num_people"])
      results[row.name] += grouping_to_results(case.image_id, outputs["keypoints"],
                                               outputs["scores"], count,
                                               outputs["masks"] if case.has_masks else None,
                                               outputs["mask_scores"])
      people[row.name].append(count)
      scores[row.name] += outputs["scores"][:count].tolist()
    image_ids.append(case.image_id)
    if len(image_ids) % 50 == 0:
      logging.info("diagnosis: %d images, %d decodings each", len(image_ids), len(rows))
  if not has_masks:  # Some images have no ground-truth masks: keypoints only.
    results = {name: [{k: v for k, v in r.items() if k != "segmentation"}
                      for r in row_results if "keypoints" in r]
               for name, row_results in results.items()}

  table = []
  sigmas = get_dataset_spec(dataset).oks_sigmas
  for row in rows:
    stats = evaluate(results[row.name], coco_gt, dataset, image_ids).stats
    table.append(DiagnosisRow(
        name=row.name, keypoints_ap=stats[KEYPOINTS]["AP"],
        keypoints_ap50=stats[KEYPOINTS]["AP50"],
        segm_ap=stats[SEGM]["AP"] if SEGM in stats else None,
        people_per_image=float(np.mean(people[row.name])) if image_ids else 0.0,
        mean_person_score=float(np.mean(scores[row.name])) if scores[row.name] else 0.0,
        overlap=overlap.overlap_report(results[row.name], coco_gt, image_ids, sigmas)))
    logging.info("%s: %s", row.name, " ".join(_cells(table[-1])[1:]))
  return table


def ground_truth_people_per_image(coco_gt: COCO, image_ids: Sequence[int]) -> float:
  """Non-crowd people per evaluated image."""
  anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(image_ids)))
  return sum(1 for a in anns if not a.get("iscrowd", 0)) / max(len(image_ids), 1)
