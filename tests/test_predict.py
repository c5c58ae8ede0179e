"""experiments.predict / kdc_tf.prediction on real photos, bad files and a video; overlays."""

import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest
from absl.testing import flagsaver
from pycocotools.coco import COCO as CocoApi

from experiments import predict
from kdc_tf import media, prediction
from kdc_tf.datasets import COCO
from kdc_tf.visualization.overlay import blend_masks, draw_predictions, instance_colours
from tests.serving_fixtures import (define_binary_flags,  # noqa: F401 (fixture)
                                    tiny_export)

COCO_IMAGE_NAMES = ("000000000785.jpg", "000000196141.jpg")


@pytest.fixture(scope="module")
def saved_model_fn(tiny_export):  # noqa: F811 (fixture)
  return prediction.saved_model_predict_fn(str(tiny_export.export_dir))


@pytest.fixture(scope="module")
def coco_run(tiny_export, coco_sample_dir, tmp_path_factory):  # noqa: F811 (fixture)
  """The predict binary on a folder of two real COCO photos, from the SavedModel."""
  input_dir = tmp_path_factory.mktemp("coco_photos")
  for name in COCO_IMAGE_NAMES:
    shutil.copy(coco_sample_dir / name, input_dir / name)
  output_dir = tmp_path_factory.mktemp("coco_predictions")
  define_binary_flags()
  # The random model's keypoint scores are tiny: draw every keypoint of every decoded person.
  with flagsaver.flagsaver(saved_model=str(tiny_export.export_dir), input=str(input_dir),
                           output_dir=str(output_dir), keypoint_threshold=0.0):
    predict.main(["predict"])
  return input_dir, output_dir


def test_results_load_in_pycocotools_against_the_annotations(coco_run, coco_sample_dir):
  _, output_dir = coco_run
  results = json.loads((output_dir / "results.json").read_text())
  assert results, "the tiny model decodes people on the photos"
  ground_truth = CocoApi(str(coco_sample_dir / "test_coco.json"))
  detections = ground_truth.loadRes(str(output_dir / "results.json"))
  assert len(detections.getAnnIds()) == len(results)
  expected_ids = {int(pathlib.Path(n).stem) for n in COCO_IMAGE_NAMES}
  assert {r["image_id"] for r in results} <= expected_ids
  for result in results:
    image = ground_truth.imgs[result["image_id"]]
    assert result["segmentation"]["size"] == [image["height"], image["width"]]
    # Mask-only people (kdc_tf.grouping.mask_only) give segmentation-only results.
    assert len(result.get("keypoints", [0] * 3 * COCO.num_keypoints)) == 3 * COCO.num_keypoints
    assert result["category_id"] == 1
  ids = json.loads((output_dir / "image_ids.json").read_text())
  assert ids == {n: int(pathlib.Path(n).stem) for n in COCO_IMAGE_NAMES}


def test_overlays_are_readable_pngs_of_the_photos(coco_run):
  input_dir, output_dir = coco_run
  results = json.loads((output_dir / "results.json").read_text())
  for name in COCO_IMAGE_NAMES:
    overlay = cv2.imread(str(output_dir / "overlays" / f"{pathlib.Path(name).stem}.png"))
    photo = cv2.imread(str(input_dir / name))
    assert overlay is not None and overlay.shape == photo.shape
    has_people = any(r["image_id"] == int(pathlib.Path(name).stem) for r in results)
    assert np.any(overlay != photo) == has_people, "people, and only people, are drawn"


def test_bad_files_are_skipped_and_counted(saved_model_fn, tmp_path, coco_sample_dir):
  input_dir = tmp_path / "mixed"
  input_dir.mkdir()
  photo = cv2.imread(str(coco_sample_dir / COCO_IMAGE_NAMES[0]))
  small = cv2.resize(photo, (96, 72))
  cv2.imwrite(str(input_dir / "gray.png"), cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
  cv2.imwrite(str(input_dir / "rgba.png"), cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))
  (input_dir / "notes.txt").write_text("not a picture")
  (input_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
  (input_dir / "empty.png").write_bytes(b"")

  predict_fn, spec = saved_model_fn
  output_dir = tmp_path / "out"
  summary = prediction.run(predict_fn, spec, str(input_dir), str(output_dir))

  assert summary.processed == 2
  assert summary.num_skipped == 3
  assert summary.skipped["not an image"] == [str(input_dir / "notes.txt")]
  assert sorted(summary.skipped["unreadable"]) == [str(input_dir / "broken.jpg"),
                                                   str(input_dir / "empty.png")]
  assert "3 skipped" in summary.describe()
  ids = json.loads((output_dir / "image_ids.json").read_text())
  assert sorted(ids) == ["gray.png", "rgba.png"]
  for name in ("gray", "rgba"):
    overlay = cv2.imread(str(output_dir / "overlays" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (72, 96, 3)


def test_single_bad_input_is_a_clear_error(saved_model_fn, tmp_path):
  notes = tmp_path / "notes.txt"
  notes.write_text("hello")
  with pytest.raises(ValueError, match="not an image"):
    prediction.run(*saved_model_fn, str(notes), str(tmp_path / "out"))
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG garbage")
  with pytest.raises(media.UnreadableImageError, match="corrupt or unsupported image data"):
    prediction.run(*saved_model_fn, str(broken), str(tmp_path / "out"))


def test_a_directory_that_is_not_an_export_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a kdc-tf export"):
    prediction.saved_model_predict_fn(str(tmp_path))


def test_video_gives_an_mp4_overlay_and_per_frame_results(saved_model_fn, tmp_path,
                                                          coco_sample_dir):
  photo = cv2.resize(cv2.imread(str(coco_sample_dir / COCO_IMAGE_NAMES[1])), (96, 64))
  video_path = tmp_path / "clip.mp4"
  writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
  for shift in range(3):
    writer.write(np.roll(photo, 8 * shift, axis=1))
  writer.release()

  summary = prediction.run(*saved_model_fn, str(video_path), str(tmp_path / "out"))
  assert summary.processed == 3
  capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_overlay.mp4"))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame)
  assert len(frames) == 3 and frames[0].shape == (64, 96, 3)
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  assert {r["image_id"] for r in results} <= {0, 1, 2}
  assert all(r["segmentation"]["size"] == [64, 96] for r in results)


def test_model_dir_predictions_equal_the_saved_model(tiny_export, saved_model_fn,  # noqa: F811
                                                     coco_sample_dir):
  from kdc_tf.inference import Predictor

  # The export's own decoder settings (its untrained maps need the low peak threshold).
  predictor = Predictor.from_model_dir(str(tiny_export.model_dir), tiny_export.grouping_config)
  image = media.read_image(coco_sample_dir / COCO_IMAGE_NAMES[0])
  in_process, served = predictor.predict_numpy(image), saved_model_fn[0](image)
  assert int(in_process["num_people"]) == int(served["num_people"])
  np.testing.assert_allclose(in_process["keypoints"], served["keypoints"], atol=1e-3)
  np.testing.assert_array_equal(in_process["masks"], served["masks"])


class TestImageConversion:

  def test_grayscale_becomes_three_equal_channels(self):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = media.to_rgb_uint8(gray)
    assert rgb.shape == (3, 4, 3)
    for c in range(3):
      np.testing.assert_array_equal(rgb[..., c], gray)

  def test_bgra_drops_alpha_and_becomes_rgb(self):
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 7  # Blue, mostly transparent.
    np.testing.assert_array_equal(media.to_rgb_uint8(bgra)[0, 0], [0, 0, 255])

  def test_sixteen_bit_keeps_the_high_byte(self):
    deep = np.full((2, 2, 3), 0xAB12, np.uint16)
    np.testing.assert_array_equal(media.to_rgb_uint8(deep), 0xAB)

  def test_float_images_are_unreadable(self):
    with pytest.raises(media.UnreadableImageError, match="pixel type"):
      media.to_rgb_uint8(np.zeros((2, 2, 3), np.float32))

  def test_image_ids_from_numeric_names_else_running(self):
    numeric = [pathlib.Path("000000000785.jpg"), pathlib.Path("12.png")]
    assert prediction.image_ids_for(numeric) == [785, 12]
    mixed = [pathlib.Path("785.jpg"), pathlib.Path("cat.png")]
    assert prediction.image_ids_for(mixed) == [1, 2]

  def test_overlay_names_disambiguate_shared_stems(self):
    paths = [pathlib.Path("a.jpg"), pathlib.Path("a.png"), pathlib.Path("b.jpg")]
    assert prediction.overlay_file_names(paths) == ["a_jpg.png", "a_png.png", "b.png"]


class TestOverlay:

  def test_masks_tint_their_pixels_and_the_first_instance_wins(self):
    image = np.full((4, 5, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 5), np.uint8)
    masks[0, :2] = 1
    masks[1, 1:3] = 1
    colours = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    out = blend_masks(image, masks, colours, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [178, 50, 50])
    np.testing.assert_array_equal(out[1, 0], [178, 50, 50])  # Overlap: instance 0.
    np.testing.assert_array_equal(out[2, 0], [50, 50, 178])
    np.testing.assert_array_equal(out[3], image[3])

  def test_skeleton_is_drawn_only_between_confident_keypoints(self):
    image = np.zeros((60, 80, 3), np.uint8)
    keypoints = np.zeros((1, COCO.num_keypoints, 3), np.float32)
    keypoints[0, :, :2] = [75, 5]
    left_shoulder, left_elbow = 5, 7
    keypoints[0, left_shoulder] = [10, 50, 0.9]
    keypoints[0, left_elbow] = [70, 50, 0.9]
    out = draw_predictions(image, keypoints, np.array([0.9]), spec=COCO, keypoint_threshold=0.5)
    assert out[50, 40].any(), "the limb between two confident keypoints is drawn"
    assert not out[5, 75].any(), "keypoints below the threshold are not drawn"
    assert not image.any(), "the input is left untouched"

  def test_colours_are_distinct(self):
    colours = instance_colours(30)
    assert len({tuple(c) for c in colours}) == 30
