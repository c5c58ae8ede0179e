"""kdc_tf.evaluation and experiments.evaluate on the real samples of ../shared/data."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from kdc_tf import evaluation
from kdc_tf.datasets import COCO, CROWDPOSE
from kdc_tf.evaluation.coco_evaluator import STAT_NAMES
from kdc_tf.evaluation.crowdpose_evaluator import BAND_NAMES, band_of, crowd_index_bands
from kdc_tf.evaluation.per_keypoint import per_keypoint_report
from kdc_tf.evaluation.results import validate_results
from tests.serving_fixtures import MAX_PEOPLE, tiny_export  # noqa: F401 (the session fixture)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coco_annotations(coco_sample_dir):
  return str(coco_sample_dir / "test_coco.json")


@pytest.fixture(scope="module")
def crowdpose_annotations(crowdpose_sample_dir):
  return str(crowdpose_sample_dir / "test_crowdpose.json")


def _expected_reference_stats(eval_reference_dir):
  """The ten figures of expected.txt, in pycocotools' keypoint summary order."""
  text = (eval_reference_dir / "expected.txt").read_text()
  values = [float(v) for v in re.findall(r"\] =\s+([0-9.]+)", text)]
  assert len(values) == len(STAT_NAMES["keypoints"])
  return dict(zip(STAT_NAMES["keypoints"], values))


def _perfect_results(coco_gt, scores_by_annotation=None):
  """Results equal to the ground truth: keypoints (v as score) and the annotation masks."""
  results = []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
    image = coco_gt.loadImgs(ann["image_id"])[0]
    mask = coco_gt.annToMask(ann)[None]
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, -1, 3)
    score = (scores_by_annotation or {}).get(ann["id"], 0.9)
    results += evaluation.grouping_to_results(image["id"], keypoints, np.array([score]), 1, mask)
  return results


def test_masks_are_ranked_by_their_mask_score_and_keypoints_by_the_person_score(coco_annotations):
  """Per true person, one result with its keypoints and an empty mask (score 0.9, mask score 0.1)
  and one with its mask and keypoints 100 px off (score 0.1, mask score 0.9): each task ranks its
  own good results first. Ranked by `score` alone, the empty masks came first (segm AP < 1)."""
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  with_mask_scores, without = [], []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
    image = coco_gt.loadImgs(ann["image_id"])[0]
    mask = coco_gt.annToMask(ann)[None]
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, -1, 3)
    wrong = keypoints + np.array([100.0, 0.0, 0.0])
    for points, person_mask, score, mask_score in ((keypoints, 0 * mask, 0.9, 0.1),
                                                   (wrong, mask, 0.1, 0.9)):
      with_mask_scores += evaluation.grouping_to_results(
          image["id"], points, np.array([score]), 1, person_mask, np.array([mask_score]))
      without += evaluation.grouping_to_results(image["id"], points, np.array([score]), 1,
                                                person_mask)
  assert all(r["mask_score"] in (0.1, 0.9) for r in with_mask_scores)
  report = evaluation.evaluate(with_mask_scores, coco_gt, "coco")
  assert report.stats["keypoints"]["AP"] == pytest.approx(1.0)
  assert report.stats["segm"]["AP"] == pytest.approx(1.0)
  assert evaluation.evaluate(without, coco_gt, "coco").stats["segm"]["AP"] < 0.9
  first = with_mask_scores[0]
  image = coco_gt.loadImgs(first["image_id"])[0]
  with pytest.raises(ValueError, match="mask_score"):
    validate_results([dict(first, mask_score=float("nan"))],
                     {first["image_id"]: (image["height"], image["width"])}, 17)


def test_reference_predictions_reproduce_pycocotools_printout(coco_annotations,
                                                              eval_reference_dir):
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  results = evaluation.read_results(str(eval_reference_dir / "example_coco_preds.json"))
  report = evaluation.evaluate(results, coco_gt, "coco")
  expected = _expected_reference_stats(eval_reference_dir)
  assert expected["AP"] == 0.861 and expected["AR"] == 0.875
  for name, value in expected.items():
    assert round(report.stats["keypoints"][name], 3) == pytest.approx(value, abs=1e-9), name
  # The reference results carry no masks: no mask AP, and the summary line says so.
  assert "segm" not in report.stats
  assert report.summary_line() == "keypoints_AP=0.861"
  assert "area=medium | maxDets= 20 ] = 0.776" in report.table


def test_results_round_trip_through_json(tmp_path):
  rng = np.random.default_rng(0)
  num_slots, num_people, height, width = 5, 3, 37, 52
  keypoints = np.concatenate(
      [rng.uniform(0, 50, (num_slots, 17, 2)), rng.uniform(0, 1, (num_slots, 17, 1))], -1)
  scores = rng.uniform(0.2, 1.0, num_slots)
  masks = (rng.uniform(size=(num_slots, height, width)) > 0.6).astype(np.uint8)
  masks[1] = 0  # an empty mask must survive too

  results = evaluation.grouping_to_results(42, keypoints, scores, num_people, masks)
  path = tmp_path / "results.json"
  evaluation.write_results(str(path), results)
  loaded = evaluation.read_results(str(path))

  assert len(loaded) == num_people
  for j, result in enumerate(loaded):
    assert result["image_id"] == 42 and result["category_id"] == 1
    assert result["score"] == pytest.approx(scores[j])
    np.testing.assert_allclose(
        np.reshape(result["keypoints"], (17, 3)), keypoints[j], atol=1e-3)
    assert isinstance(result["segmentation"]["counts"], str)
    decoded = evaluation.decode_segmentation(result["segmentation"])
    assert decoded.shape == (height, width)
    np.testing.assert_array_equal(decoded, masks[j])


def test_people_without_keypoint_scores_give_mask_only_results():
  keypoints = np.ones((3, 17, 3))
  keypoints[1] = 0.0  # a mask-only person: every keypoint score 0
  masks = np.zeros((3, 6, 8), np.uint8)
  masks[:, 2:4, 3:6] = 1
  results = evaluation.grouping_to_results(5, keypoints, np.array([0.7, 0.05, 0.0]), 2, masks)
  assert len(results) == 2
  assert "keypoints" in results[0] and "segmentation" in results[0]
  assert "keypoints" not in results[1] and results[1]["score"] == pytest.approx(0.05)
  np.testing.assert_array_equal(evaluation.decode_segmentation(results[1]["segmentation"]),
                                masks[1])
  # Without masks such a person has nothing to evaluate.
  pose_only = evaluation.grouping_to_results(5, keypoints, np.array([0.7, 0.05, 0.0]), 2)
  assert len(pose_only) == 1 and pose_only[0]["score"] == pytest.approx(0.7)


def test_results_without_masks_have_no_segmentation():
  results = evaluation.grouping_to_results(
      7, np.ones((2, 14, 3)), np.array([0.5, 0.0]), 1)
  assert len(results) == 1 and "segmentation" not in results[0]
  assert len(results[0]["keypoints"]) == 42


def test_bad_grouping_output_is_rejected():
  with pytest.raises(ValueError, match="num_people"):
    evaluation.grouping_to_results(1, np.zeros((2, 17, 3)), np.zeros(2), 3)
  with pytest.raises(ValueError, match="non-finite"):
    evaluation.grouping_to_results(1, np.full((1, 17, 3), np.nan), np.zeros(1), 1)
  with pytest.raises(ValueError, match="masks"):
    evaluation.grouping_to_results(1, np.zeros((2, 17, 3)), np.zeros(2), 1,
                                   np.zeros((3, 4, 4), np.uint8))


def test_ground_truth_as_results_scores_one_for_keypoints_and_masks(coco_annotations):
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  # People without keypoints (all keypoint scores 0) give mask-only results: they count for
  # masks and never as keypoint false positives, even when ranked first.
  unlabelled = {a["id"]: 0.99 for a in coco_gt.dataset["annotations"] if a["num_keypoints"] == 0}
  assert unlabelled
  results = _perfect_results(coco_gt, unlabelled)
  assert sum("keypoints" not in r for r in results) == len(unlabelled)
  report = evaluation.evaluate(results, coco_gt, "coco")
  assert report.stats["keypoints"]["AP"] == pytest.approx(1.0)
  assert report.stats["segm"]["AP"] == pytest.approx(1.0)
  assert report.summary_line() == "keypoints_AP=1.000 segm_AP=1.000"

  # The score is used: the same people as keypoint false positives (scores > 0) cost keypoint AP
  # when ranked first, not when ranked after every true positive.
  for score, costs_ap in ((0.99, True), (0.1, False)):
    as_poses = []
    for result in _perfect_results(coco_gt, {k: score for k in unlabelled}):
      if "keypoints" not in result:
        result["keypoints"] = [0.0, 0.0, 1.0] * 17
      as_poses.append(result)
    report = evaluation.evaluate(as_poses, coco_gt, "coco")
    assert (report.stats["keypoints"]["AP"] < 0.99) == costs_ap


def test_no_detections_and_images_without_people(coco_annotations, tmp_path):
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  report = evaluation.evaluate([], coco_gt, "coco")
  assert report.stats["keypoints"]["AP"] == 0.0 and report.stats["segm"]["AP"] == 0.0

  # An image with no annotated person: its detections are plain false positives, and
  # evaluating it alone gives pycocotools' "undefined" -1 rather than a crash.
  data = json.loads(pathlib.Path(coco_annotations).read_text())
  data["images"].append({"id": 1, "file_name": "empty.jpg", "height": 40, "width": 60})
  path = tmp_path / "with_empty_image.json"
  path.write_text(json.dumps(data))
  coco_gt = evaluation.load_ground_truth(str(path), "coco")
  detection = evaluation.grouping_to_results(
      1, np.full((1, 17, 3), 10.0), np.array([0.8]), 1, np.ones((1, 40, 60), np.uint8))
  report = evaluation.evaluate(detection, coco_gt, "coco", image_ids=[1])
  assert report.stats["keypoints"]["AP"] == -1.0 and report.stats["segm"]["AP"] == -1.0


def test_results_for_unknown_images_or_wrong_layout_fail_clearly(coco_annotations,
                                                                  crowdpose_annotations):
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  stray = evaluation.grouping_to_results(123456789, np.ones((1, 17, 3)), np.ones(1), 1)
  with pytest.raises(ValueError, match="not in the annotations"):
    evaluation.evaluate(stray, coco_gt, "coco")
  short = evaluation.grouping_to_results(785, np.ones((1, 14, 3)), np.ones(1), 1)
  with pytest.raises(ValueError, match="keypoint values"):
    evaluation.evaluate(short, coco_gt, "coco")
  with pytest.raises(ValueError, match="wrong --dataset"):
    evaluation.load_ground_truth(crowdpose_annotations, "coco")


def test_crowdpose_protocol(crowdpose_annotations):
  coco_gt = evaluation.load_ground_truth(crowdpose_annotations, "crowdpose")
  for ann in coco_gt.dataset["annotations"]:
    assert ann["area"] == pytest.approx(0.53 * ann["bbox"][2] * ann["bbox"][3])

  rng = np.random.default_rng(1)
  results = []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, CROWDPOSE.num_keypoints, 3)
    keypoints[..., :2] += rng.normal(0.0, 3.0, keypoints[..., :2].shape)
    keypoints[..., 2] = 1.0
    results += evaluation.grouping_to_results(
        ann["image_id"], keypoints, rng.uniform(0.5, 1.0, 1), 1)
  report = evaluation.evaluate(results, coco_gt, "crowdpose")

  stats = report.stats["keypoints"]
  assert "segm" not in report.stats
  assert report.table.startswith("keypoints: 2 images, 5 detections, 14 keypoints")
  assert 0.3 < stats["AP"] < 1.0  # small perturbations: good but imperfect
  # Both sample images have crowdIndex in [0.2, 0.8): all medium, the others undefined.
  assert [band_of(i["crowdIndex"]) for i in coco_gt.dataset["images"]] == ["medium", "medium"]
  assert stats["AP_medium"] == pytest.approx(stats["AP"])
  assert stats["AP_easy"] == -1.0 and stats["AP_hard"] == -1.0
  for name in BAND_NAMES:
    assert re.search(rf"crowd index=\s*{name} \| images=\s*\d+ \] = ", report.table), name
  assert report.summary_line() == f"keypoints_AP={stats['AP']:.3f}"


def test_crowd_index_band_edges():
  """crowdposetools' get_type_result(first=0.2, second=0.8): easy < 0.2, medium < 0.8, hard."""
  assert [band_of(x) for x in (0.0, 0.15, 0.1999, 0.2, 0.5, 0.7999, 0.8, 1.0)] == [
      "easy", "easy", "easy", "medium", "medium", "medium", "hard", "hard"]


def test_crowdpose_bands_on_ground_truth_at_0_15_and_0_8(crowdpose_annotations, tmp_path):
  """One image at crowd index 0.15 (easy) and one at exactly 0.8 (hard), as crowdposetools."""
  data = json.loads(pathlib.Path(crowdpose_annotations).read_text())
  easy_id, hard_id = (image["id"] for image in data["images"])
  for image, crowd_index in zip(data["images"], (0.15, 0.8)):
    image["crowdIndex"] = crowd_index
  path = tmp_path / "bands.json"
  path.write_text(json.dumps(data))
  coco_gt = evaluation.load_ground_truth(str(path), "crowdpose")
  assert crowd_index_bands(coco_gt) == {"easy": [easy_id], "medium": [],
                                                    "hard": [hard_id]}
  # Perfect keypoints on the easy image only: easy AP 1, hard AP 0 (missed), medium undefined.
  results = []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[easy_id])):
    if ann["num_keypoints"] == 0:
      continue
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, CROWDPOSE.num_keypoints, 3)
    keypoints[..., 2] = 1.0
    results += evaluation.grouping_to_results(easy_id, keypoints, np.array([0.9]), 1)
  report = evaluation.evaluate(results, coco_gt, "crowdpose")
  stats = report.stats["keypoints"]
  assert stats["AP_easy"] == pytest.approx(1.0)
  assert stats["AP_hard"] == pytest.approx(0.0)
  assert stats["AP_medium"] == -1.0
  assert re.search(r"crowd index=\s*hard \| images=\s*1 \]", report.table)


def test_per_keypoint_report_gives_each_types_oks_term_and_confidence(coco_annotations):
  coco_gt = evaluation.load_ground_truth(coco_annotations, "coco")
  wrist = COCO.keypoint_names.index("left_wrist")
  results = []
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
    if ann["num_keypoints"] == 0:
      continue
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(1, -1, 3)
    keypoints[..., 2] = 0.7
    keypoints[0, 0, 2] = 0.3  # nose confidence
    keypoints[0, wrist, 0] += 0.5 * np.sqrt(ann["area"]) * COCO.oks_sigmas[wrist]  # d = s k / 2
    results += evaluation.grouping_to_results(ann["image_id"], keypoints, np.array([0.9]), 1)
  report = per_keypoint_report(coco_gt, results, COCO.oks_sigmas, COCO.keypoint_names)
  labelled = np.zeros(COCO.num_keypoints, np.int64)
  for ann in coco_gt.loadAnns(coco_gt.getAnnIds()):
    labelled += np.asarray(ann["keypoints"]).reshape(-1, 3)[:, 2] > 0
  assert report.num_pairs == 12
  np.testing.assert_array_equal(report.count, labelled)
  others = np.arange(COCO.num_keypoints) != wrist
  np.testing.assert_allclose(report.oks[others & (labelled > 0)], 1.0)
  # OKS term exp(-d^2 / (2 s^2 (2 k)^2)) with d = s k / 2: exp(-1/32).
  assert report.oks[wrist] == pytest.approx(np.exp(-1.0 / 32.0), rel=1e-4)  # rounded results
  assert report.confidence[0] == pytest.approx(0.3)
  np.testing.assert_allclose(report.confidence[1:][labelled[1:] > 0], 0.7)
  assert "left_wrist" in report.table and report.table.startswith("per keypoint type (12 people")


def _run_evaluate(*args):
  completed = subprocess.run([sys.executable, "-m", "experiments.evaluate", *args],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                             check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return completed.stdout.strip().splitlines()


def test_evaluate_binary_results_mode(coco_annotations, eval_reference_dir, tmp_path):
  output = tmp_path / "copy.json"
  lines = _run_evaluate(f"--results={eval_reference_dir / 'example_coco_preds.json'}",
                        f"--annotations={coco_annotations}", "--dataset=coco",
                        f"--output={output}")
  assert lines[-1] == "keypoints_AP=0.861"
  assert any("Average Recall" in line and line.endswith("0.875") for line in lines)
  assert len(json.loads(output.read_text())) == 73


@pytest.mark.parametrize("model_flag", ["saved_model", "checkpoint"])
def test_evaluate_binary_model_mode(model_flag, tiny_export, coco_sample_dir,  # noqa: F811
                                    coco_annotations, tmp_path):
  """A tiny random model: the figures mean nothing, the plumbing does (AP is ~0)."""
  model_path = tiny_export.export_dir if model_flag == "saved_model" else tiny_export.model_dir
  # A checkpoint is decoded with the flags' settings: the export's low peak threshold, which the
  # untrained maps need (the SavedModel carries it).
  grouping = ([] if model_flag == "saved_model" else
              [f"--peak_threshold={tiny_export.grouping_config.peak_threshold}"])
  output = tmp_path / "results.json"
  lines = _run_evaluate(f"--{model_flag}={model_path}", f"--annotations={coco_annotations}",
                        f"--images={coco_sample_dir}", "--dataset=coco",
                        f"--input_size={tiny_export.experiment.geometry.input_size}",
                        "--max_images=1", f"--output={output}", *grouping)
  assert re.fullmatch(r"keypoints_AP=\d\.\d{3} segm_AP=\d\.\d{3}", lines[-1])
  results = evaluation.read_results(str(output))
  assert results and {r["image_id"] for r in results} == {785}  # the first image id only
  if model_flag == "saved_model":
    assert len(results) <= MAX_PEOPLE  # the exported grouping settings apply
  for result in results:  # mask-only people (kdc_tf.grouping.mask_only) have no keypoints
    assert len(result.get("keypoints", [0] * 51)) == 51
    assert evaluation.decode_segmentation(result["segmentation"]).shape == (425, 640)
  assert any("keypoints" in result for result in results)
