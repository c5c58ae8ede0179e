"""The overlap report: people banded by MaxIoU, their best OKS and mask IoU as COCOeval scores them."""

import copy

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from kdc_tf.datasets import COCO
from kdc_tf.evaluation import load_ground_truth, overlap


@pytest.fixture(scope="module")
def coco_gt(coco_sample_dir):
  return load_ground_truth(str(coco_sample_dir / "test_coco.json"), "coco")


def _as_results(coco_gt, annotations):
  """Each true person as a detection: its keypoints (score 1 where labelled) and its mask."""
  results = []
  for ann in annotations:
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    keypoints[:, 2] = keypoints[:, 2] > 0
    rle = coco_gt.annToRLE(ann)
    results.append({"image_id": ann["image_id"], "category_id": 1, "score": 1.0,
                    "keypoints": keypoints.reshape(-1).tolist(), "segmentation": rle})
  return results


def test_max_box_ious():
  boxes = [[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 5, 5]]
  np.testing.assert_allclose(overlap.max_box_ious(boxes), [50 / 150, 50 / 150, 0.0])
  np.testing.assert_array_equal(overlap.max_box_ious([[0, 0, 4, 4]]), [0.0])
  assert [overlap.band_of(v) for v in (0.0, 0.2, 0.5)] == list(overlap.BANDS)


def test_oks_is_cocoevals(coco_gt):
  ann = next(a for a in coco_gt.loadAnns(coco_gt.getAnnIds()) if a["num_keypoints"] >= 10)
  truth = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
  rng = np.random.default_rng(0)
  detections = np.repeat(truth[None], 3, axis=0)
  detections[..., :2] += rng.normal(0, [[[0.5]], [[4.0]], [[15.0]]], detections[..., :2].shape)
  ours = overlap.object_keypoint_similarity(truth, ann["area"], detections, COCO.oks_sigmas)
  dt = coco_gt.loadRes([{"image_id": ann["image_id"], "category_id": 1, "score": 1.0,
                         "keypoints": d.reshape(-1).tolist()} for d in detections])
  evaluator = COCOeval(coco_gt, dt, "keypoints")
  evaluator.params.imgIds = [ann["image_id"]]
  evaluator.params.kpt_oks_sigmas = np.asarray(COCO.oks_sigmas)
  evaluator._prepare()
  theirs = evaluator.computeOks(ann["image_id"], 1)  # [detections, true people of the image]
  column = [g["id"] for g in evaluator._gts[ann["image_id"], 1]].index(ann["id"])
  np.testing.assert_allclose(ours, theirs[:, column], rtol=1e-9)
  assert ours[0] > ours[1] > ours[2]


def test_the_truth_finds_every_person_and_a_missing_one_is_counted(coco_gt):
  image_ids = sorted(coco_gt.getImgIds())
  annotations = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids))
                 if not a["iscrowd"]]
  rows = overlap.overlap_report(_as_results(coco_gt, annotations), coco_gt, image_ids,
                                COCO.oks_sigmas)
  assert sum(r.people for r in rows) == len(annotations)
  assert sum(r.keypoint_people for r in rows) == sum(a["num_keypoints"] > 0 for a in annotations)
  assert rows[0].people > 0 and rows[1].people + rows[2].people > 0  # the samples have both
  for row in rows:
    if row.people:
      assert row.masks_found == 1.0 and row.mean_best_mask_iou == pytest.approx(1.0)
    if row.keypoint_people:
      assert row.keypoints_found == 1.0 and row.mean_best_oks == pytest.approx(1.0)

  # One overlapping person missing, another detected 40 px off: both show in their bands.
  boxes = {}
  for ann in annotations:
    boxes.setdefault(ann["image_id"], []).append(ann)
  crowded = next(group for group in boxes.values()
                 if overlap.max_box_ious([a["bbox"] for a in group]).max() > 0)
  max_ious = overlap.max_box_ious([a["bbox"] for a in crowded])
  posed = np.array([a["num_keypoints"] > 0 for a in crowded])
  missing = crowded[int(np.argmax(np.where(posed, max_ious, -1.0)))]
  moved = copy.deepcopy(next(a for a in annotations if a["image_id"] != missing["image_id"]
                             and a["num_keypoints"] > 0))
  moved["keypoints"] = [v + 40 if i % 3 < 2 else v for i, v in enumerate(moved["keypoints"])]
  kept = [moved if a["id"] == moved["id"] else a for a in annotations if a is not missing]
  rows_after = overlap.overlap_report(_as_results(coco_gt, kept), coco_gt, image_ids,
                                      COCO.oks_sigmas)
  band = overlap.band_of(float(np.max(np.where(posed, max_ious, -1.0))))
  after = {r.band: r for r in rows_after}
  assert after[band].masks_found < 1.0
  posed_rows = [r for r in rows_after if r.keypoint_people]
  assert sum(r.mean_best_oks * r.keypoint_people for r in posed_rows) < sum(
      r.keypoint_people for r in posed_rows) - 1.0  # the missing and the moved person
