"""The oracle (ground truth -> encoder -> grouping -> evaluation) and the mask-grid ceiling."""

import re

import numpy as np
import pytest

from experiments import oracle_runner
from kdc_tf import evaluation
from kdc_tf.evaluation.mask_ceiling import grid_masks_to_image
from kdc_tf.geometry import Geometry

TEST_SCALE = 401


@pytest.fixture(scope="module")
def coco_oracle(coco_sample_dir):
  return oracle_runner.run_oracle(str(coco_sample_dir / "test_coco.json"), str(coco_sample_dir),
                                  Geometry(dataset="coco", input_size=TEST_SCALE))


@pytest.fixture(scope="module")
def crowdpose_oracle(crowdpose_sample_dir):
  return oracle_runner.run_oracle(str(crowdpose_sample_dir / "test_crowdpose.json"),
                                  str(crowdpose_sample_dir),
                                  Geometry(dataset="crowdpose", input_size=TEST_SCALE))


def test_oracle_keypoint_ap_is_near_perfect(coco_oracle):
  assert coco_oracle.report.stats["keypoints"]["AP"] >= 0.95


def test_oracle_mask_ap_reaches_the_mask_grid_ceiling(coco_oracle):
  ceiling = coco_oracle.ceiling["AP"]
  # The 4 images hold people of 286 to 27,800 px: the stride-4 grid loses the small ones' detail.
  assert 0.5 < ceiling < 1.0
  assert coco_oracle.report.stats["segm"]["AP"] >= ceiling - 0.03


def test_oracle_decodes_every_person_once(coco_oracle, coco_sample_dir):
  # 14 people, 2 with no keypoint: those cannot seed a pose, and come out as mask-only people
  # (segmentation results without keypoints), scored below every keypoint person.
  poses = [r for r in coco_oracle.results if "keypoints" in r]
  per_image = {}
  for result in poses:
    per_image[result["image_id"]] = per_image.get(result["image_id"], 0) + 1
  assert per_image == {785: 1, 40083: 2, 196141: 4, 197388: 5}
  scores = [r["score"] for r in poses]
  assert len(set(scores)) > 1 and min(scores) > 0.0  # real per-person scores

  mask_only = [r for r in coco_oracle.results if "keypoints" not in r]
  coco_gt = evaluation.load_ground_truth(str(coco_sample_dir / "test_coco.json"), "coco")
  unlabelled = [a for a in coco_gt.dataset["annotations"] if a["num_keypoints"] == 0]
  assert sorted(r["image_id"] for r in mask_only) == sorted(a["image_id"] for a in unlabelled)
  for result in mask_only:
    mask = evaluation.decode_segmentation(result["segmentation"]).astype(bool)
    truth = next(coco_gt.annToMask(a).astype(bool) for a in unlabelled
                 if a["image_id"] == result["image_id"])
    assert (mask & truth).sum() / (mask | truth).sum() > 0.5
    assert 0.0 < result["score"] < min(scores)


def test_oracle_printout_ends_with_the_summary_line(coco_oracle):
  lines = coco_oracle.lines()
  assert re.fullmatch(r"keypoints_AP=\d\.\d{3} segm_AP=\d\.\d{3}", lines[-1])
  assert any(line.startswith("segm AP ") and "vs ceiling" in line for line in lines)
  assert f"segm_ceiling={coco_oracle.ceiling['AP']:.3f}" in lines[:-1]


def test_crowdpose_oracle_has_no_masks(crowdpose_oracle):
  assert crowdpose_oracle.ceiling is None
  assert "segm" not in crowdpose_oracle.report.stats
  assert crowdpose_oracle.report.stats["keypoints"]["AP"] >= 0.95
  assert re.fullmatch(r"keypoints_AP=\d\.\d{3}", crowdpose_oracle.lines()[-1])


def test_grid_masks_to_image_geometry():
  grid = np.zeros((1, 11, 11), np.uint8)
  grid[0, 2:5, 3:7] = 1  # grid rows 2..4, columns 3..6
  # One grid cell per output pixel: the grid itself.
  same = grid_masks_to_image(grid, (11, 11), input_scale=4.0).numpy()
  np.testing.assert_array_equal(same, grid)
  # Two output pixels per cell (input_scale 2): grid point i sits at output pixel 2 i, and the
  # bilinear value exceeds 0.5 up to less than half a cell beyond the last grid point inside.
  upsampled = grid_masks_to_image(grid, (22, 22), input_scale=2.0).numpy()[0]
  rows = np.flatnonzero(upsampled.any(axis=1))
  cols = np.flatnonzero(upsampled.any(axis=0))
  assert (rows.min(), rows.max()) == (4, 8) and (cols.min(), cols.max()) == (6, 12)
