"""Bad ground truth and bad results: one checked annotation path for every reader, no silent
scores (issue 12)."""

import json

import cv2
import numpy as np
import pytest

from data_pipeline import annotations
from kdc_tf import evaluation
from kdc_tf.evaluation.coco_evaluator import check_results

SQUARE = [[5.0, 5.0, 25.0, 5.0, 25.0, 30.0, 5.0, 30.0]]


def _keypoints(x=10.0, y=10.0):
  values = [0.0] * 51
  values[0:3] = [x, y, 2]
  values[15:18] = [x + 10, y + 12, 2]
  return values


def _person(ann_id, image_id=1, **fields):
  return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
          "bbox": [5.0, 5.0, 20.0, 25.0], "area": 500.0, "num_keypoints": 2,
          "segmentation": SQUARE, "keypoints": _keypoints(), **fields}


def _write(tmp_path, images, anns, name="gt.json", **extra):
  path = tmp_path / name
  path.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "person"}], **extra}))
  return str(path)


def _image(image_id, height=40, width=50, file_name=None):
  return {"id": image_id, "height": height, "width": width,
          "file_name": file_name or f"{image_id}.png"}


def _perfect(coco_gt, image_id=1):
  """Results equal to the non-crowd ground truth of one image."""
  results = []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id], iscrowd=False)):
    mask = coco_gt.annToMask(ann)[None]
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, -1, 3)
    results += evaluation.grouping_to_results(image_id, keypoints, np.array([0.9]), 1, mask)
  return results


def test_degenerate_and_empty_polygons_become_ignore_regions(tmp_path):
  path = _write(tmp_path, [_image(1)], [
      _person(1), _person(2, segmentation=[[1, 1, 5, 5]]), _person(3, segmentation=[])])
  coco_gt = evaluation.load_ground_truth(path, "coco")  # pycocotools crashed on both
  crowd = {a["id"]: a["iscrowd"] for a in coco_gt.dataset["annotations"]}
  assert crowd == {1: 0, 2: 1, 3: 1}
  report = evaluation.evaluate(_perfect(coco_gt), coco_gt, "coco")
  assert report.stats["segm"]["AP"] == pytest.approx(1.0)
  assert report.stats["keypoints"]["AP"] == pytest.approx(1.0)


def test_missing_annotations_key_or_truncated_json_names_the_file(tmp_path):
  path = tmp_path / "no_annotations.json"
  path.write_text(json.dumps({"images": [_image(1)]}))
  with pytest.raises(ValueError, match=r"no_annotations\.json.*'annotations'"):
    evaluation.load_ground_truth(str(path), "coco")
  good = _write(tmp_path, [_image(1)], [_person(1)])
  truncated = tmp_path / "truncated.json"
  truncated.write_text(open(good).read()[:-40])
  with pytest.raises(ValueError, match=r"truncated\.json: not valid JSON"):
    evaluation.load_ground_truth(str(truncated), "coco")
  with pytest.raises(ValueError, match=r"truncated\.json: not valid JSON"):
    evaluation.read_results(str(truncated))


def test_invalid_ground_truth_rle_becomes_an_ignore_region(tmp_path):
  wrong_size = {"size": [20, 50], "counts": [0, 1000]}
  path = _write(tmp_path, [_image(1)], [_person(1), _person(2, segmentation=wrong_size)])
  coco_gt = evaluation.load_ground_truth(path, "coco")
  assert {a["id"]: a["iscrowd"] for a in coco_gt.dataset["annotations"]} == {1: 0, 2: 1}
  assert coco_gt.loadAnns(2)[0]["segmentation"] == [[5.0, 5.0, 25.0, 5.0, 25.0, 30.0, 5.0, 30.0]]


def test_evaluator_and_writer_keep_the_same_people_and_image_entries(tmp_path):
  """Duplicate image ids keep the first entry in both readers; the same people survive."""
  rng = np.random.default_rng(0)
  for name, (h, w) in (("1.png", (40, 50)), ("2.png", (60, 70))):
    cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
  images = [_image(1), _image(2, 60, 70), _image(2, 30, 30, "1.png")]
  anns = [_person(1), _person(2, segmentation=[[1, 1, 5, 5]]), _person(3, image_id=2),
          _person(4, keypoints=[0.0] * 48), _person(5, image_id=2, segmentation=[]),
          _person(6, keypoints=_keypoints(x=float("nan"))), _person(1, image_id=2)]
  path = _write(tmp_path, images, anns)
  coco_gt = evaluation.load_ground_truth(path, "coco")
  written = annotations.read_coco(path, str(tmp_path))
  assert coco_gt.imgs[2]["height"] == 60 and coco_gt.imgs[2]["width"] == 70
  assert {r.image_id: (r.height, r.width) for r in written.images} == {1: (40, 50), 2: (60, 70)}
  people = {(a["image_id"], a["id"]) for a in coco_gt.dataset["annotations"] if not a["iscrowd"]}
  assert people == {(r.image_id, p.id) for r in written.images for p in r.people}
  assert people == {(1, 1), (2, 3)}
  assert written.skips.as_dict() == {"DEGENERATE_POLYGON": 1, "BAD_SEGMENTATION": 2,
                                     "WRONG_KEYPOINT_COUNT": 1, "INVALID_KEYPOINTS": 1,
                                     "DUPLICATE_IMAGE_ID": 1, "DUPLICATE_ANNOTATION_ID": 1}


def test_wrong_dataset_is_still_a_clear_error(tmp_path):
  path = _write(tmp_path, [_image(1)], [_person(1, keypoints=[0.0] * 42)])
  with pytest.raises(ValueError, match="wrong --dataset"):
    evaluation.load_ground_truth(path, "coco")


@pytest.fixture
def ground_truth(tmp_path):
  return evaluation.load_ground_truth(_write(tmp_path, [_image(1)], [_person(1)]), "coco")


@pytest.mark.parametrize("field, value, message", [
    ("keypoints", _keypoints(x=float("nan")), "non-finite"),
    ("keypoints", _keypoints(x=float("inf")), "non-finite"),
    ("keypoints", _keypoints()[:-3], "keypoint values"),
    ("score", "0.9", "score '0.9'"),
    ("score", float("nan"), "score nan"),
    ("image_id", "1", "image_id '1'"),
    ("segmentation", {"size": [20, 50], "counts": "PX11"}, r"size \[40, 50\]"),
    ("segmentation", {"size": [40, 50], "counts": [0, 5]}, "not a valid RLE"),
])
def test_unsound_results_are_errors_naming_the_entry(ground_truth, field, value, message):
  results = _perfect(ground_truth)
  assert len(results) == 1
  bad = dict(results[0], **{field: value})
  with pytest.raises(ValueError, match=f"results entry 1 .*{message}"):
    evaluation.evaluate(results + [bad], ground_truth, "coco")


def test_nan_keypoints_never_score(ground_truth):
  """pycocotools scores a NaN coordinate as a perfect match: before the check, AP was 1.000."""
  results = _perfect(ground_truth)
  results[0]["keypoints"] = [float("nan")] * 51
  with pytest.raises(ValueError, match="non-finite"):
    evaluation.evaluate(results, ground_truth, "coco")


def test_entries_without_keypoints_or_mask_are_left_out_and_counted(ground_truth):
  results = _perfect(ground_truth) + [{"image_id": 1, "category_id": 1, "score": 0.5}]
  kept = check_results(ground_truth, results, 17)
  assert kept == results[:1]
  report = evaluation.evaluate(results, ground_truth, "coco")
  assert report.table.startswith("keypoints: 1 images, 1 detections")


@pytest.fixture
def images_with_a_corrupt_one(tmp_path):
  """Two annotated images: a good PNG and a corrupt JPEG, with one person each."""
  cv2.imwrite(str(tmp_path / "good.png"), np.full((40, 50, 3), 90, np.uint8))
  (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
  path = _write(tmp_path, [_image(1, file_name="good.png"), _image(2, file_name="bad.jpg")],
                [_person(1), _person(2, image_id=2)])
  return path, str(tmp_path)


def test_evaluate_skips_a_corrupt_image_and_counts_it(images_with_a_corrupt_one):
  from experiments import evaluation_runner
  path, images = images_with_a_corrupt_one
  coco_gt = evaluation.load_ground_truth(path, "coco")
  seen = []

  def predict(image):
    seen.append(image.shape)
    return {"keypoints": np.zeros((1, 17, 3)), "scores": np.zeros(1), "num_people": 0}

  results, image_ids = evaluation_runner.predict_dataset(predict, coco_gt, images)
  assert image_ids == [1] and seen == [(40, 50, 3)] and results == []
  with pytest.raises(ValueError, match=r"image 2: .*bad\.jpg"):
    evaluation_runner.predict_dataset(predict, coco_gt, images, fail_on_bad_image=True)


def test_oracle_skips_a_corrupt_image_and_counts_it(images_with_a_corrupt_one):
  from data_pipeline.ground_truth_examples import decoded_examples
  path, images = images_with_a_corrupt_one
  assert [int(e["image_id"]) for e in decoded_examples(path, images, "coco")] == [1]
  with pytest.raises(ValueError, match=r"image 2: .*bad\.jpg"):
    list(decoded_examples(path, images, "coco", fail_on_bad_image=True))
