"""The SavedModel export: signature, equality with the in-process graph, bad inputs at serving."""

import pathlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from kdc_tf import grouping
from kdc_tf.config import GroupingConfig
from kdc_tf.datasets import COCO
from kdc_tf.export import ENCODED_SIGNATURE, SERVING_SIGNATURE, load_metadata
from kdc_tf.geometry import resize_and_pad_image
from kdc_tf.inference import Predictor
from tests.serving_fixtures import INPUT_SIZE, MAX_PEOPLE, tiny_export  # noqa: F401 (fixture)

K = COCO.num_keypoints


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _test_image(height: int = 161, width: int = 241) -> np.ndarray:
  """A deterministic, non-square RGB image with some structure (gradients and blobs)."""
  y, x = np.mgrid[:height, :width].astype(np.float32)
  rng = np.random.default_rng(1)
  image = np.stack([x / width * 255, y / height * 255, 128 + 60 * np.sin(x / 9 + y / 13)], -1)
  for cx, cy, r in rng.uniform([0, 0, 8], [width, height, 30], size=(6, 3)):
    image[(x - cx) ** 2 + (y - cy) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
  return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def loaded(tiny_export):  # noqa: F811 (fixture)
  return tf.saved_model.load(str(tiny_export.export_dir))


@pytest.fixture(scope="module")
def serve(loaded):
  return loaded.signatures[SERVING_SIGNATURE]


@pytest.fixture(scope="module")
def image():
  return _test_image()


@pytest.fixture(scope="module")
def served(serve, image):
  return {key: value.numpy() for key, value in serve(image=tf.constant(image)).items()}


def _in_process(tiny, image: np.ndarray):
  """The reference: resize, the Keras model eagerly, then the grouping module, step by step."""
  resized, scale = resize_and_pad_image(tf.constant(image), INPUT_SIZE)
  heads = tiny.model(resized[tf.newaxis], training=False)
  probabilities = grouping.model_outputs_to_grouping_inputs(heads)
  grouper = grouping.Grouper(tiny.experiment, tiny.grouping_config, jit_compile=False)
  decoded = grouper(probabilities, output_size=tf.shape(image)[:2], input_scale=scale)
  return {key: np.asarray(value) for key, value in decoded.items()}


def test_export_binary_prints_the_signature(tiny_export):  # noqa: F811 (fixture)
  printed = tiny_export.printed
  assert "signature 'serving_default':" in printed
  assert "input  image: uint8 [-1, -1, 3]" in printed
  assert f"output keypoints: float32 [{MAX_PEOPLE}, {K}, 3]" in printed
  assert f"output masks: uint8 [{MAX_PEOPLE}, -1, -1]" in printed
  assert "output num_people: int32 []" in printed
  assert "input  image_bytes: string []" in printed


def test_serving_signature_names_dtypes_and_shapes(serve):
  inputs = serve.structured_input_signature[1]
  assert list(inputs) == ["image"]
  assert inputs["image"].dtype == tf.uint8
  assert inputs["image"].shape.as_list() == [None, None, 3]
  outputs = serve.structured_outputs
  assert sorted(outputs) == ["keypoints", "mask_scores", "masks", "num_people", "scores"]
  assert (outputs["keypoints"].dtype, outputs["keypoints"].shape.as_list()) == (
      tf.float32, [MAX_PEOPLE, K, 3])
  for name in ("scores", "mask_scores"):
    assert (outputs[name].dtype, outputs[name].shape.as_list()) == (tf.float32, [MAX_PEOPLE])
  assert (outputs["masks"].dtype, outputs["masks"].shape.as_list()) == (
      tf.uint8, [MAX_PEOPLE, None, None])
  assert (outputs["num_people"].dtype, outputs["num_people"].shape.as_list()) == (tf.int32, [])


def test_saved_model_equals_in_process_model_and_grouping(tiny_export, served, image):  # noqa: F811
  reference = _in_process(tiny_export, image)
  num_people = int(reference["num_people"])
  assert num_people > 0, "the test needs decoded people to compare"
  assert int(served["num_people"]) == num_people
  np.testing.assert_allclose(served["keypoints"], reference["keypoints"], atol=1e-3)
  np.testing.assert_allclose(served["scores"], reference["scores"], atol=1e-5)
  np.testing.assert_allclose(served["mask_scores"], reference["mask_scores"], atol=1e-5)
  assert served["masks"].shape == (MAX_PEOPLE,) + image.shape[:2]
  assert served["masks"].dtype == np.uint8
  np.testing.assert_array_equal(served["masks"], reference["masks"])


def _assert_in_image_pixels(outputs, height: int, width: int) -> None:
  """Valid keypoints lie in the resized square mapped back to the image.

  That is [0, max(H, W) - 1] (the resize maps the long side's last pixel to the input's last,
  with a denominator of at least 1): the decoder may place keypoints in the padding.
  """
  num_people = int(outputs["num_people"])
  keypoints = np.asarray(outputs["keypoints"])[:num_people]
  assert np.all(np.isfinite(keypoints))
  assert keypoints[..., :2].min() >= 0.0
  assert keypoints[..., :2].max() <= max(height - 1, width - 1, 1) + 1e-3
  assert np.asarray(outputs["masks"]).shape == (MAX_PEOPLE, height, width)
  np.testing.assert_array_equal(np.asarray(outputs["scores"])[num_people:], 0.0)


def test_graph_holds_resize_model_and_grouping_and_no_python_ops(tiny_export):  # noqa: F811 (fixture)
  saved_model = saved_model_pb2.SavedModel()
  saved_model.ParseFromString((tiny_export.export_dir / "saved_model.pb").read_bytes())
  graph = saved_model.meta_graphs[0].graph_def
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  # Resize, model and grouping are all in the graph...
  assert {"ImageProjectiveTransformV3", "Conv2D", "NonMaxSuppressionWithOverlaps"} <= ops
  # ... and nothing calls back into Python.
  assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def test_session_loader_like_tf_serving_gives_the_same_outputs(tiny_export, served,  # noqa: F811
                                                                image):
  """TF Serving and saved_model_cli load through a TF1 session and the saver's restore op."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(
        session, [tf.saved_model.SERVING], str(tiny_export.export_dir))
    signature = meta_graph.signature_def[SERVING_SIGNATURE]
    outputs = session.run({key: info.name for key, info in signature.outputs.items()},
                          {signature.inputs["image"].name: image})
  assert int(outputs["num_people"]) == int(served["num_people"])
  np.testing.assert_allclose(outputs["keypoints"], served["keypoints"], atol=1e-5)
  np.testing.assert_array_equal(outputs["masks"], served["masks"])


def test_outputs_are_in_the_input_image_pixels(served, image):
  _assert_in_image_pixels(served, *image.shape[:2])
  assert set(np.unique(served["masks"])) <= {0, 1}
  assert served["masks"].any(), "the test needs non-empty masks"


def test_encoded_signature_matches_pixels(loaded, served, image):
  encode = loaded.signatures[ENCODED_SIGNATURE]
  png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
  from_bytes = {key: value.numpy() for key, value in encode(image_bytes=tf.constant(png)).items()}
  assert int(from_bytes["num_people"]) == int(served["num_people"])
  np.testing.assert_allclose(from_bytes["keypoints"], served["keypoints"], atol=1e-5)
  np.testing.assert_array_equal(from_bytes["masks"], served["masks"])


def test_encoded_signature_converts_grayscale_and_rejects_garbage(loaded):
  encode = loaded.signatures[ENCODED_SIGNATURE]
  gray = cv2.imencode(".png", _test_image(40, 30)[..., 0])[1].tobytes()
  assert encode(image_bytes=tf.constant(gray))["masks"].shape == (MAX_PEOPLE, 40, 30)
  with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)image"):
    encode(image_bytes=tf.constant(b"certainly not an image"))


def test_metadata_describes_the_export(tiny_export):  # noqa: F811 (fixture)
  metadata = load_metadata(str(tiny_export.export_dir))
  assert metadata["dataset"] == "coco"
  assert metadata["keypoint_names"] == list(COCO.keypoint_names)
  assert metadata["edges"] == [list(edge) for edge in COCO.edges]
  assert metadata["input_size"] == INPUT_SIZE
  assert metadata["grouping"]["max_people"] == MAX_PEOPLE


def test_one_pixel_image(serve):
  outputs = serve(image=tf.constant([[[200, 10, 30]]], tf.uint8))
  assert 0 <= int(outputs["num_people"]) <= MAX_PEOPLE
  _assert_in_image_pixels(outputs, 1, 1)


def test_large_image_is_resized_first(serve):
  large = cv2.resize(_test_image(), (4000, 3000), interpolation=cv2.INTER_LINEAR)
  outputs = serve(image=tf.constant(large))
  _assert_in_image_pixels(outputs, 3000, 4000)


def test_float_image_is_refused_with_the_expected_dtype(serve, loaded):
  image = tf.zeros([8, 8, 3], tf.float32)
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
    serve(image=image)
  with pytest.raises(TypeError, match="uint8"):
    loaded.serving_default(image)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4), (1, 8, 8, 3), (8, 8, 1)])
def test_wrong_rank_or_channels_is_refused_with_the_expected_shape(serve, shape):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,\?,3\]"):
    serve(image=tf.zeros(shape, tf.uint8))


@pytest.mark.parametrize("shape", [(0, 8, 3), (8, 0, 3)])
def test_empty_image_is_refused_clearly(serve, shape):
  with pytest.raises(tf.errors.InvalidArgumentError, match="at least one row and one column"):
    serve(image=tf.zeros(shape, tf.uint8))


def test_predictor_refuses_a_model_built_for_another_size(tiny_export):  # noqa: F811 (fixture)
  with pytest.raises(ValueError, match="input_size"):
    Predictor(tiny_export.model, tiny_export.experiment.with_input_size(161), GroupingConfig())


def test_export_is_atomic_and_quiet(tiny_export, tmp_path):  # noqa: F811 (fixture)
  """No staging folder left behind, an existing export is refused, and no log line of thousands
  of characters listing TF's internal input names (unknown_0 ... unknown_130)."""
  import os
  import subprocess
  import sys

  def export(version):
    return subprocess.run(
        [sys.executable, "-m", "experiments.export", f"--model_dir={tiny_export.model_dir}",
         f"--export_dir={tmp_path / version}", "--max_people=2"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT)))

  result = export("1")
  assert result.returncode == 0, result.stderr[-2000:]
  assert os.listdir(tmp_path) == ["1"]
  assert "unknown_0" not in result.stderr and "INFO:tensorflow" not in result.stderr
  assert max(len(line) for line in result.stderr.splitlines()) < 1000
  again = export("1")
  assert again.returncode != 0 and "already holds a SavedModel" in again.stderr
