"""The OCHuman-like occlusion scenes: every person overlaps another, OCHuman's labelling, readable."""

import json
import pathlib

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
import pytest

from data_pipeline import annotations
from data_pipeline import synthetic_occlusion

_NUM_IMAGES = 12

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("occlusion")
  json_path = synthetic_occlusion.generate_occlusion_coco(str(out), _NUM_IMAGES, seed=3)
  return pathlib.Path(json_path), COCO(json_path)


def _xyxy(bbox):
  return np.asarray([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])


def test_every_person_overlaps_another_with_bbox_iou_at_least_half(generated):
  _, coco = generated
  counts = []
  for image_id in coco.getImgIds():
    people = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    counts.append(len(people))
    assert synthetic_occlusion.MIN_PEOPLE <= len(people) <= synthetic_occlusion.MAX_PEOPLE
    boxes = [_xyxy(p["bbox"]) for p in people]
    for i, box in enumerate(boxes):
      best = max(synthetic_occlusion.box_iou(box, b) for j, b in enumerate(boxes) if j != i)
      assert best >= synthetic_occlusion.MIN_IOU
  assert len(set(counts)) > 1


def test_masks_are_disjoint_visible_regions_with_consistent_area_and_bbox(generated):
  _, coco = generated
  for image_id in coco.getImgIds():
    people = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    masks = np.stack([coco.annToMask(p) for p in people])
    assert masks.sum(axis=0).max() == 1  # visible regions: no pixel in two people
    for person, mask in zip(people, masks):
      assert isinstance(person["segmentation"]["counts"], str)  # compressed RLE, as OCHuman
      assert person["area"] == mask.sum() >= synthetic_occlusion.MIN_VISIBLE_AREA
      rle = mask_utils.encode(np.asfortranarray(mask))
      np.testing.assert_allclose(person["bbox"], mask_utils.toBbox(rle), atol=0.01)


def test_hidden_keypoints_are_mostly_unlabelled_some_labelled_occluded(generated):
  _, coco = generated
  people = coco.loadAnns(coco.getAnnIds())
  keypoints = np.asarray([p["keypoints"] for p in people], np.float64).reshape(-1, 17, 3)
  v = keypoints[..., 2]
  assert set(np.unique(v)) == {0, 1, 2}
  assert np.all(keypoints[v == 0][:, :2] == 0)
  assert (v == 0).sum() > (v == 1).sum() > 0
  for person, points in zip(people, keypoints):
    assert person["num_keypoints"] == np.sum(points[:, 2] > 0) >= synthetic_occlusion.MIN_KEYPOINTS
    image = coco.loadImgs(person["image_id"])[0]
    own = coco.annToMask(person).astype(bool)
    for x, y, visibility in points:
      if visibility == 2:  # visible keypoints lie on the person's own visible mask
        row = min(int(round(y)), image["height"] - 1)
        col = min(int(round(x)), image["width"] - 1)
        assert own[row, col]


def test_deterministic_for_a_seed_and_read_by_the_coco_reader(generated, tmp_path):
  json_path, _ = generated
  again = synthetic_occlusion.generate_occlusion_coco(str(tmp_path), _NUM_IMAGES, seed=3)
  assert json.loads(pathlib.Path(again).read_text()) == json.loads(json_path.read_text())
  assert (tmp_path / "images" / "000001.png").read_bytes() == (
      json_path.parent / "images" / "000001.png").read_bytes()
  other = synthetic_occlusion.generate_occlusion_coco(str(tmp_path / "other"), 2, seed=4)
  assert json.loads(pathlib.Path(other).read_text()) != json.loads(json_path.read_text())
  records = annotations.read_annotations(str(json_path), str(json_path.parent / "images"), "coco")
  assert len(records.images) == _NUM_IMAGES
  assert sum(len(r.people) for r in records.images) == len(json.loads(
      json_path.read_text())["annotations"])
