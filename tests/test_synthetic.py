"""The synthetic stick-people dataset: valid COCO, keypoints on their people, deterministic."""

import json
import pathlib

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
import pytest
import tensorflow as tf

from data_pipeline import annotations
from data_pipeline import synthetic
from data_pipeline import tfrecord_io

_NUM_IMAGES = 24

# pycocotools 2.0.11 (annToMask, decode in these tests) warns about numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  json_path = synthetic.generate_synthetic_coco(str(out), _NUM_IMAGES, seed=0)
  return pathlib.Path(json_path), COCO(json_path)


def _people(coco: COCO):
  return [a for a in coco.loadAnns(coco.getAnnIds()) if not a["iscrowd"]]


def test_valid_coco_with_consistent_area_bbox_and_counts(generated):
  _, coco = generated
  assert len(coco.getImgIds()) == _NUM_IMAGES
  people = _people(coco)
  assert len(people) >= _NUM_IMAGES  # About two people per image on average.
  for ann in coco.loadAnns(coco.getAnnIds()):
    image = coco.loadImgs(ann["image_id"])[0]
    h, w = image["height"], image["width"]
    assert 320 <= h <= 480 and 320 <= w <= 400
    mask = coco.annToMask(ann)
    assert ann["area"] == mask.sum() > 0
    rle = mask_utils.encode(np.asfortranarray(mask))
    np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(rle), atol=0.01)
    keypoints = np.reshape(ann["keypoints"], (17, 3))
    assert ann["num_keypoints"] == np.sum(keypoints[:, 2] > 0)
    if not ann["iscrowd"]:
      for polygon in ann["segmentation"]:
        xy = np.reshape(polygon, (-1, 2))
        assert len(xy) >= 3
        assert np.all((xy >= 0) & (xy <= [w, h]))


def test_keypoints_lie_on_their_person(generated):
  _, coco = generated
  inside = total = 0
  for ann in _people(coco):
    image = coco.loadImgs(ann["image_id"])[0]
    keypoints = np.reshape(ann["keypoints"], (17, 3))
    labelled = keypoints[:, 2] > 0
    assert np.all(keypoints[~labelled, :2] == 0)
    x, y = keypoints[labelled, 0], keypoints[labelled, 1]
    assert np.all((x >= 0) & (x <= image["width"] - 1) & (y >= 0) & (y <= image["height"] - 1))
    visible = keypoints[keypoints[:, 2] == 2]
    mask = coco.annToMask(ann)
    rows, cols = np.round(visible[:, 1]).astype(int), np.round(visible[:, 0]).astype(int)
    inside += int(mask[rows, cols].sum())
    total += len(visible)
  assert total > 10 * _NUM_IMAGES
  assert inside / total >= 0.98


def test_scenes_have_occlusion_border_cuts_crowds_and_little_overlap(generated):
  _, coco = generated
  people = _people(coco)
  keypoints = np.array([a["keypoints"] for a in people]).reshape(-1, 17, 3)
  assert np.sum(keypoints[..., 2] == 1) >= 5  # Occluded keypoints.
  crowds = [a for a in coco.loadAnns(coco.getAnnIds()) if a["iscrowd"]]
  assert crowds and all(isinstance(a["segmentation"]["counts"], list) for a in crowds)
  # Someone is cut by the border: body keypoints (not the face) outside the image.
  body_unlabelled = keypoints[:, 5:, 2] == 0
  assert np.sum(np.any(body_unlabelled, axis=1)) >= 2
  # Masks are visible regions: two people of an image share (almost) no pixel.
  for image_id in coco.getImgIds():
    masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
    if len(masks) > 1:
      stacked = np.sum(masks, axis=0)
      assert np.sum(stacked > 1) <= 0.02 * np.sum(stacked > 0)


def test_reader_accepts_it_without_skips(generated):
  json_path, coco = generated
  result = annotations.read_coco(str(json_path), str(json_path.parent / "images"),
                                 verify_images=True)
  assert result.skips.total() == 0
  assert result.num_people == len(_people(coco))
  assert any(record.crowd_mask().any() for record in result.images)


def test_deterministic_for_a_seed(generated, tmp_path):
  json_path, _ = generated
  again = pathlib.Path(synthetic.generate_synthetic_coco(str(tmp_path / "a"), 3, seed=0))
  original = json.loads(json_path.read_text())
  repeated = json.loads(again.read_text())
  assert repeated["annotations"] == [a for a in original["annotations"] if a["image_id"] <= 3]
  for image in repeated["images"]:
    name = image["file_name"]
    assert (again.parent / "images" / name).read_bytes() == (
        json_path.parent / "images" / name).read_bytes()
  other = json.loads(pathlib.Path(synthetic.generate_synthetic_coco(
      str(tmp_path / "b"), 3, seed=1)).read_text())
  assert other["annotations"] != repeated["annotations"]


def test_fixed_size_and_png(tmp_path):
  json_path = synthetic.generate_synthetic_coco(str(tmp_path), 2, image_size=(161, 129), seed=3,
                                                image_format="png")
  images = json.loads(pathlib.Path(json_path).read_text())["images"]
  sizes = [(i["height"], i["width"], i["file_name"][-4:]) for i in images]
  assert sizes == [(161, 129, ".png")] * 2


def test_ensure_embedded_dataset_builds_once(tmp_path):
  root = tmp_path / "embedded"
  paths = synthetic.ensure_embedded_dataset(str(root), num_train=4, num_val=2)
  assert set(paths) >= {"train", "val", "annotations_val", "images_val"}
  train_files = tfrecord_io.list_tfrecord_files(paths["train"])
  assert len(train_files) == 2 and len(tfrecord_io.list_tfrecord_files(paths["val"])) == 1
  val = json.loads(pathlib.Path(paths["annotations_val"]).read_text())
  # Distinct from the train ids 1..4, and the same whatever the train split's size.
  assert [i["id"] for i in val["images"]] == [synthetic.EMBEDDED_VAL_FIRST_ID,
                                               synthetic.EMBEDDED_VAL_FIRST_ID + 1]
  people_per_image = {i["id"]: 0 for i in val["images"]}
  for ann in val["annotations"]:
    people_per_image[ann["image_id"]] += not ann["iscrowd"]
  decoded = [tfrecord_io.decode_example(s, 17) for s in tf.data.TFRecordDataset(
      tfrecord_io.list_tfrecord_files(paths["val"]))]
  assert {int(e["image_id"]): len(e["person_ids"]) for e in decoded} == people_per_image

  marker = root / "COMPLETE.json"
  built_at = marker.stat().st_mtime_ns
  assert synthetic.ensure_embedded_dataset(str(root), num_train=4, num_val=2) == paths
  assert marker.stat().st_mtime_ns == built_at
  synthetic.ensure_embedded_dataset(str(root), num_train=3, num_val=2)  # Other sizes: rebuilt.
  assert len(json.loads((root / "train" / "annotations.json").read_text())["images"]) == 3
  assert not list(tmp_path.glob("embedded.building-*"))


def test_embedded_training_split_may_not_reach_the_validation_ids(tmp_path):
  with pytest.raises(ValueError, match="num_train"):
    synthetic.ensure_embedded_dataset(str(tmp_path / "embedded"),
                                      num_train=synthetic.EMBEDDED_VAL_FIRST_ID, num_val=1)
