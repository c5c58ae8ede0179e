"""Readers: real COCO and CrowdPose samples, RLE forms, OCHuman-style files, counted bad input."""

import copy
import json

import cv2
import numpy as np
from pycocotools import mask as mask_utils
import pytest

from data_pipeline import annotations
from data_pipeline import tfrecord_writer
from data_pipeline.annotations import SkipReason
from kdc_tf import coco_format

# pycocotools 2.0.11 (annToMask, decode in these tests) warns about numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco_sample(coco_sample_dir):
  json_path = coco_sample_dir / "test_coco.json"
  return (json.loads(json_path.read_text()),
          annotations.read_coco(str(json_path), str(coco_sample_dir)))


def _masks_by_person(result: annotations.AnnotationSet) -> dict:
  return {person.id: mask for image in result.images
          for person, mask in zip(image.people, image.instance_masks())}


def test_coco_sample_people_keypoints_and_masks(coco_sample):
  raw, result = coco_sample
  assert len(result.images) == 4
  people = [p for image in result.images for p in image.people]
  assert len(people) == 14
  assert sum(p.num_keypoints == 0 for p in people) == 2
  assert result.skips.total() == 0
  raw_by_id = {a["id"]: a for a in raw["annotations"]}
  masks = _masks_by_person(result)
  for person in people:
    ann = raw_by_id[person.id]
    assert person.keypoints.dtype == np.float32 and person.keypoints.shape == (17, 3)
    np.testing.assert_array_equal(person.keypoints.reshape(-1),
                                  np.float32(ann["keypoints"]))
    assert person.num_keypoints == ann["num_keypoints"]
    # COCO's `area` is its own rasterisation of the same polygons.
    assert abs(int(masks[person.id].sum()) - ann["area"]) <= 0.02 * ann["area"] + 5
  for image in result.images:
    assert image.has_masks and image.crowd_mask().sum() == 0


def _rle_variant(raw: dict, compressed: bool) -> dict:
  """The same file with every person's polygons replaced by the pycocotools RLE of them."""
  data = copy.deepcopy(raw)
  sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
  for ann in data["annotations"]:
    h, w = sizes[ann["image_id"]]
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
    if compressed:
      ann["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    else:
      flat = mask_utils.decode(rle).reshape(-1, order="F").astype(np.int8)
      bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
      runs = np.diff(bounds).tolist()
      ann["segmentation"] = {"size": [h, w], "counts": ([0] + runs) if flat[0] else runs}
  return data


@pytest.mark.parametrize("compressed", [False, True])
def test_rle_from_polygon_gives_the_polygon_mask(coco_sample, coco_sample_dir, tmp_path,
                                                 compressed):
  raw, polygon_result = coco_sample
  path = tmp_path / "rle.json"
  path.write_text(json.dumps(_rle_variant(raw, compressed)))
  rle_result = annotations.read_coco(str(path), str(coco_sample_dir))
  assert rle_result.skips.total() == 0
  polygon_masks, rle_masks = _masks_by_person(polygon_result), _masks_by_person(rle_result)
  assert polygon_masks.keys() == rle_masks.keys()
  for person_id, mask in polygon_masks.items():
    np.testing.assert_array_equal(rle_masks[person_id], mask)


def test_ochuman_style_compressed_rle_with_bbox_area(coco_sample, coco_sample_dir, tmp_path):
  raw, polygon_result = coco_sample
  data = _rle_variant(raw, compressed=True)
  for ann in data["annotations"]:
    ann["area"] = ann["bbox"][2] * ann["bbox"][3]  # OCHuman stores the bbox area.
    ann["keypoints"] = [v + 0.25 if i % 3 < 2 and ann["keypoints"][i - i % 3 + 2] else v
                        for i, v in enumerate(ann["keypoints"])]
  path = tmp_path / "ochuman.json"
  path.write_text(json.dumps(data))
  result = annotations.read_ochuman(str(path), str(coco_sample_dir))
  assert result.num_people == 14 and result.skips.total() == 0
  masks = _masks_by_person(result)
  for person_id, mask in _masks_by_person(polygon_result).items():
    np.testing.assert_array_equal(masks[person_id], mask)
  raw_by_id = {a["id"]: a for a in data["annotations"]}
  for image in result.images:
    for person in image.people:
      np.testing.assert_array_equal(person.keypoints.reshape(-1),
                                    np.float32(raw_by_id[person.id]["keypoints"]))


def test_iscrowd_region_becomes_the_crowd_mask(coco_sample, coco_sample_dir, tmp_path):
  raw, _ = coco_sample
  data = copy.deepcopy(raw)
  image = data["images"][0]
  h, w = image["height"], image["width"]
  region = np.zeros((h, w), np.uint8)
  region[10:60, 100:180] = 1
  flat = region.reshape(-1, order="F").astype(np.int8)
  bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
  data["annotations"].append({
      "id": 999, "image_id": image["id"], "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
      "keypoints": [0] * 51, "bbox": [100, 10, 80, 50], "area": 4000,
      "segmentation": {"size": [h, w], "counts": np.diff(bounds).tolist()}})
  path = tmp_path / "crowd.json"
  path.write_text(json.dumps(data))
  result = annotations.read_coco(str(path), str(coco_sample_dir))
  assert result.num_people == 14
  record = next(r for r in result.images if r.image_id == image["id"])
  np.testing.assert_array_equal(record.crowd_mask(), region)


def test_crowdpose_sample(crowdpose_sample_dir):
  result = annotations.read_crowdpose(str(crowdpose_sample_dir / "test_crowdpose.json"),
                                      str(crowdpose_sample_dir))
  assert result.num_people == 5 and result.skips.total() == 0
  assert {r.image_id: r.crowd_index for r in result.images} == {106848: 0.33, 103319: 0.39}
  for record in result.images:
    assert not record.has_masks
    assert record.instance_masks().shape == (len(record.people), record.height, record.width)
    assert record.instance_masks().max() == 0
    for person in record.people:
      assert person.keypoints.shape == (14, 3)
      assert np.all(person.keypoints[person.keypoints[:, 2] == 0, :2] == 0)
  # The person without labelled keypoints (bbox 108.5, 96.78, 35.46 x 30.23) is ignored.
  record = next(r for r in result.images if r.image_id == 106848)
  unlabelled = [p for p in record.people if p.num_keypoints == 0]
  assert [p.id for p in unlabelled] == [131039]
  assert record.crowd_mask()[100:125, 110:142].all()
  assert record.crowd_mask().sum() == pytest.approx(35.46 * 30.23, rel=0.1)


def _keypoints(*labelled):
  """17 COCO keypoints, the given (index, x, y) labelled with v = 2."""
  values = [0] * 51
  for index, x, y in labelled:
    values[3 * index:3 * index + 3] = [x, y, 2]
  return values


@pytest.fixture
def bad_dataset(tmp_path):
  """A small COCO file exercising every skip reason; returns (json path, images dir)."""
  rng = np.random.default_rng(0)
  for name, (h, w) in (("good.png", (40, 50)), ("empty.png", (40, 50)), ("small.png", (30, 30))):
    cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
  (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
  square = [[5, 5, 20, 5, 20, 30, 5, 30]]
  person = lambda i, **kw: {"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [5, 5, 15, 25], "num_keypoints": 1,
                            "segmentation": square, "keypoints": _keypoints((0, 10, 10)), **kw}
  images = [{"id": i, "file_name": name, "height": 40, "width": 50}
            for i, name in enumerate(["good.png", "empty.png", "small.png", "corrupt.jpg",
                                      "missing.jpg"], 1)]
  anns = [
      person(1),
      person(2, segmentation=[[1, 1, 5, 5]]),  # Degenerate only: person skipped.
      person(3, segmentation=square + [[30, 30, 35, 35]] + [[30, 5, 40, 5, 35, 5]]),  # 2 bad parts.
      person(4, keypoints=_keypoints((0, 10, 10), (5, 60, 10), (6, 10, -2))),  # 2 outside.
      person(5, keypoints=[0] * 48, segmentation=[[30, 10, 45, 10, 45, 35, 30, 35]]),
      person(6, keypoints=_keypoints((0, 10, 10))[:-1] + [3]),  # v = 3.
      person(7, segmentation={"size": [40, 50], "counts": "not an RLE \x7f"}),
      person(8, image_id=77),
      person(9, category_id=2),
  ]
  for image_id in (3, 4, 5):
    anns.append(person(10 + image_id, image_id=image_id))
  path = tmp_path / "bad.json"
  path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
      {"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}))
  return str(path), str(tmp_path)


def test_bad_inputs_are_skipped_with_counted_reasons(bad_dataset):
  json_path, images_dir = bad_dataset
  result = annotations.read_coco(json_path, images_dir, verify_images=True)
  assert result.skips.as_dict() == {
      "DEGENERATE_POLYGON": 3,
      "BAD_SEGMENTATION": 2,
      "KEYPOINT_OUTSIDE_IMAGE": 2,
      "WRONG_KEYPOINT_COUNT": 1,
      "INVALID_KEYPOINTS": 1,
      "UNKNOWN_IMAGE": 1,
      "NOT_A_PERSON": 1,
      "MISSING_IMAGE": 1,
      "CORRUPT_IMAGE": 1,
      "IMAGE_SIZE_MISMATCH": 1,
  }
  assert "missing.jpg" in result.skips.summary()
  assert [r.image_id for r in result.images] == [1, 2]  # The image without people is kept.
  good = result.images[0]
  assert [p.id for p in good.people] == [1, 3, 4]
  person4 = good.people[2]
  np.testing.assert_array_equal(person4.keypoints[[5, 6]], np.zeros((2, 3)))
  assert person4.num_keypoints == 1
  # The person with a wrong keypoint count still covers its region: ignored, not background.
  assert good.crowd_mask()[12:33, 32:44].all()
  np.testing.assert_array_equal(good.instance_masks()[1], good.instance_masks()[0])


def test_images_without_people_can_be_dropped(bad_dataset):
  json_path, images_dir = bad_dataset
  result = annotations.read_coco(json_path, images_dir, keep_images_without_people=False)
  assert result.skips[SkipReason.NO_PEOPLE] == 1
  assert 2 not in [r.image_id for r in result.images]


def test_writer_keeps_only_images_with_people_by_default(bad_dataset, tmp_path):
  """COCOPersons: the image without people (id 2) is skipped and counted, unless asked for."""
  json_path, images_dir = bad_dataset
  persons = tfrecord_writer.write_tfrecords(json_path, images_dir, str(tmp_path / "a" / "bad"),
                                            1, "coco")
  assert persons.num_images == 1 and persons.skips[SkipReason.NO_PEOPLE] == 1
  everything = tfrecord_writer.write_tfrecords(json_path, images_dir, str(tmp_path / "b" / "bad"),
                                               1, "coco", keep_images_without_people=True)
  assert everything.num_images == 2 and everything.skips[SkipReason.NO_PEOPLE] == 0


def test_select_images_with_people_counts_what_it_drops():
  skips = annotations.SkipCounter()
  with_person = annotations.ImageRecord(1, "a.png", 4, 4, True, people=[
      annotations.PersonRecord(7, np.zeros((17, 3), np.float32), None, 0)])
  without = annotations.ImageRecord(2, "b.png", 4, 4, True)
  kept = annotations.select_images_with_people([with_person, without], skips)
  assert kept == [with_person] and skips[SkipReason.NO_PEOPLE] == 1


def test_writer_counts_undecodable_images(bad_dataset, tmp_path):
  json_path, images_dir = bad_dataset
  summary = tfrecord_writer.write_tfrecords(json_path, images_dir, str(tmp_path / "out" / "bad"),
                                             1, "coco", keep_images_without_people=True)
  assert summary.num_images == 2 and summary.num_people == 3
  assert summary.skips[SkipReason.CORRUPT_IMAGE] == 1
  assert summary.skips[SkipReason.IMAGE_SIZE_MISMATCH] == 1
  assert summary.skips[SkipReason.MISSING_IMAGE] == 1
  assert "TF cannot decode" in str(summary)


def test_compressed_rle_runs_match_pycocotools():
  rng = np.random.default_rng(1)
  for shape, density in (((7, 9), 0.5), ((64, 48), 0.02), ((33, 1), 0.9)):
    mask = (rng.random(shape) < density).astype(np.uint8)
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    runs = coco_format._compressed_rle_runs(counts)
    flat = mask.reshape(-1, order="F")
    decoded = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
    np.testing.assert_array_equal(decoded, flat)


def test_missing_person_category_is_an_error(tmp_path):
  path = tmp_path / "cats.json"
  path.write_text(json.dumps({"images": [], "annotations": [],
                              "categories": [{"id": 1, "name": "cat"}]}))
  with pytest.raises(ValueError, match="no 'person' category"):
    annotations.read_coco(str(path), str(tmp_path))
