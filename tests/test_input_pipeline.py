"""The tf.data pipeline over TFRecords written from the real COCO sample."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import augmentation
from data_pipeline import tfrecord_writer
from data_pipeline.input_pipeline import build_dataset
from data_pipeline.targets import encode_targets
from kdc_tf.config import AugmentConfig, EncoderConfig
from kdc_tf.geometry import Geometry
from kdc_tf.datasets import COCO
from tests.sample_examples import load_decoded_examples

# pycocotools 2.0.11 (inside tfrecord_writer) warns about numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 161
GEOMETRY = Geometry(input_size=SIZE)


def _build(pattern, batch_size, **kwargs):
  return build_dataset(pattern, GEOMETRY, EncoderConfig(), AugmentConfig(), batch_size, **kwargs)


@pytest.fixture(scope="module")
def coco_records(coco_sample_dir, tmp_path_factory):
  """The 4 COCO sample images in 2 TFRecord shards; returns the glob."""
  prefix = tmp_path_factory.mktemp("records") / "coco"
  tfrecord_writer.write_tfrecords(str(coco_sample_dir / "test_coco.json"), str(coco_sample_dir),
                                   str(prefix), num_shards=2, dataset="coco")
  return f"{prefix}-*.tfrecord"


def _take(dataset, num_batches):
  return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(num_batches)]


def test_training_batches_have_the_contract_shapes(coco_records):
  image, targets = next(iter(_build(coco_records, batch_size=3, training=True, seed=1)))
  g, m, k, e = 21, 41, COCO.num_keypoints, COCO.num_directed_edges
  assert image.shape == (3, SIZE, SIZE, 3) and image.dtype == tf.float32
  expected = {
      "heatmap": (3, g, g, k), "keypoint_weight": (3, g, g, 1), "keycentroid": (3, g, g, 2 * k),
      "keycentroid_weight": (3, g, g, k), "midrange": (3, g, g, 2 * e),
      "midrange_weight": (3, g, g, e), "seg": (3, m, m, 1), "seg_weight": (3, m, m, 1),
      "mask_offset": (3, m, m, 2), "mask_offset_weight": (3, m, m, 1), "instance_ids": (3, m, m)}
  assert {key: tuple(value.shape) for key, value in targets.items()} == expected
  assert float(tf.reduce_sum(targets["heatmap"])) > 0


def test_training_is_deterministic_for_a_seed_and_repeats(coco_records):
  def batches(seed):
    dataset = _build(coco_records, batch_size=2, training=True, seed=seed, deterministic=True)
    return _take(dataset, 5)  # 10 examples from 4 images: repeats, later epochs re-augmented

  first, again, other = batches(7), batches(7), batches(8)
  for a, b in zip(first, again):
    tf.nest.map_structure(np.testing.assert_array_equal, a, b)
  assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
  images = np.concatenate([batch[0] for batch in first])
  assert len({image.tobytes() for image in images}) == len(images)  # no two augmentations alike


def test_deterministic_training_needs_a_seed(coco_records):
  with pytest.raises(ValueError, match="seed"):
    _build(coco_records, 2, training=True, deterministic=True)


def test_missing_files_are_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="No TFRecord"):
    _build(str(tmp_path / "none-*.tfrecord"), 2, training=False)


def test_evaluation_is_resize_and_pad_in_order(coco_records, coco_sample_dir):
  """One pass, no augmentation; decoding the records agrees with the annotations in memory."""
  batches = _take(_build(coco_records, batch_size=3, training=False), 10)
  assert [len(b[0]) for b in batches] == [3, 1]
  images = np.concatenate([b[0] for b in batches])
  heatmaps = np.concatenate([b[1]["heatmap"] for b in batches])
  instance_ids = np.concatenate([b[1]["instance_ids"] for b in batches])
  examples = load_decoded_examples(coco_sample_dir, "test_coco.json", COCO.num_keypoints)
  # Written round robin into 2 shards and read back interleaved: the original order.
  for position, example in enumerate(examples):
    augmented = augmentation.resize_and_pad_example(example, SIZE)
    targets = encode_targets(augmented, GEOMETRY)
    np.testing.assert_allclose(images[position], augmented["image"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(heatmaps[position], targets["heatmap"].numpy())
    np.testing.assert_array_equal(instance_ids[position], targets["instance_ids"].numpy())
