"""Augmentation geometry: identity, flips, registration of image/masks/keypoints, inference resize."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from data_pipeline import augmentation
from kdc_tf import geometry
from kdc_tf.config import AugmentConfig
from kdc_tf.datasets import COCO
from tests.sample_examples import load_decoded_examples

SIZE = 161  # (161 - 1) % 8 == 0: corner-aligned pose (21) and mask (41) grids.
NO_AUGMENTATION = AugmentConfig(min_scale=1.0, max_scale=1.0, max_rotation_degrees=0.0,
                                flip_probability=0.0)


@pytest.fixture(scope="module")
def coco_examples(coco_sample_dir):
  return load_decoded_examples(coco_sample_dir, "test_coco.json", COCO.num_keypoints)


def _crop_square(example, top, left, size=SIZE):
  """The size x size crop of a decoded example (keypoints outside it become unlabelled)."""
  crop = dict(example)
  crop["image"] = example["image"][top:top + size, left:left + size]
  crop["instance_masks"] = example["instance_masks"][:, top:top + size, left:left + size]
  crop["crowd_mask"] = example["crowd_mask"][top:top + size, left:left + size]
  keypoints = example["keypoints"].numpy() - np.array([left, top, 0], np.float32)
  inside = np.all((keypoints[..., :2] >= 0) & (keypoints[..., :2] <= size - 1), axis=-1)
  keypoints[~(inside & (keypoints[..., 2] > 0))] = 0
  crop["keypoints"] = tf.constant(keypoints)
  return crop


@pytest.fixture(scope="module")
def square_example(coco_examples):
  """A 161 x 161 crop of 000000197388 holding several labelled keypoints and masks."""
  crop = _crop_square(coco_examples[3], top=100, left=150)
  assert np.sum(crop["keypoints"].numpy()[..., 2] > 0) > 10
  assert np.sum(crop["instance_masks"].numpy()) > 1000
  return crop


def _matrix(scale=1.0, angle=0.0, flip=False, tx=0.0, ty=0.0):
  cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
  sign = -1.0 if flip else 1.0
  return tf.constant([[cos * sign, -sin, tx], [sin * sign, cos, ty], [0.0, 0.0, 1.0]], tf.float32)


def _assert_identity(augmented, example):
  np.testing.assert_array_equal(augmented["image"].numpy(),
                                example["image"].numpy().astype(np.float32))
  np.testing.assert_array_equal(augmented["keypoints"].numpy(), example["keypoints"].numpy())
  np.testing.assert_array_equal(augmented["instance_masks"].numpy(),
                                example["instance_masks"].numpy()[:, ::4, ::4])
  np.testing.assert_array_equal(augmented["crowd_mask"].numpy(),
                                example["crowd_mask"].numpy()[::4, ::4])


def test_identity_matrix_is_exact(square_example):
  augmented = augmentation.warp_example(square_example, _matrix(), SIZE, COCO.flip_permutation)
  _assert_identity(augmented, square_example)


def test_random_augmentation_with_scale_1_rotation_0_no_flip_is_identity(square_example):
  augmented = augmentation.augment(square_example, NO_AUGMENTATION, SIZE, COCO,
                                   seed=tf.constant([7, 11]))
  _assert_identity(augmented, square_example)


def test_resize_and_pad_of_a_square_input_is_identity(square_example):
  _assert_identity(augmentation.resize_and_pad_example(square_example, SIZE), square_example)


def test_flip_matrix_mirrors_image_masks_and_keypoints(square_example):
  flip = _matrix(flip=True, tx=SIZE - 1)
  augmented = augmentation.warp_example(square_example, flip, SIZE, COCO.flip_permutation)
  np.testing.assert_array_equal(augmented["image"].numpy(),
                                square_example["image"].numpy()[:, ::-1].astype(np.float32))
  np.testing.assert_array_equal(augmented["instance_masks"].numpy(),
                                square_example["instance_masks"].numpy()[:, ::4, ::-4])
  original = square_example["keypoints"].numpy()
  expected = original[:, list(COCO.flip_permutation)]
  labelled = expected[..., 2] > 0
  expected[..., 0] = np.where(labelled, SIZE - 1 - expected[..., 0], 0)
  np.testing.assert_allclose(augmented["keypoints"].numpy(), expected, atol=1e-4)
  # The flip swaps types: a left wrist becomes a right wrist at the mirrored place.
  left_wrist, right_wrist = COCO.keypoint_names.index("left_wrist"), COCO.keypoint_names.index(
      "right_wrist")
  assert COCO.flip_permutation[left_wrist] == right_wrist


def test_flipping_without_a_permutation_is_an_error(square_example):
  with pytest.raises(tf.errors.InvalidArgumentError, match="flip_permutation"):
    augmentation.transform_keypoints(square_example["keypoints"], _matrix(flip=True, tx=160), SIZE)


def _coordinate_planes(height, width):
  ys, xs = np.mgrid[0:height, 0:width]
  return xs, ys


@settings(max_examples=8, deadline=None)
@given(scale=st.floats(0.5, 2.0), angle=st.floats(-0.6, 0.6), flip=st.booleans(),
       tx=st.floats(-60.0, 120.0), ty=st.floats(-60.0, 120.0))
def test_image_masks_and_keypoints_stay_registered(scale, angle, flip, tx, ty):
  """Every warped sample comes from A^-1 of its output position, and keypoints map by A exactly."""
  height, width = 90, 120
  matrix = _matrix(scale, angle, flip, tx, ty)
  inverse = np.linalg.inv(matrix.numpy().astype(np.float64))
  xs, ys = _coordinate_planes(height, width)

  # Bilinear interpolation of a linear function is exact: the warped planes read back A^-1 (x, y).
  planes = np.stack([xs, ys, np.ones_like(xs)], axis=-1).astype(np.float32)
  warped = geometry.warp_image(planes, matrix, SIZE).numpy()
  out_y, out_x = np.mgrid[0:SIZE, 0:SIZE]
  source = np.einsum("ij,hwj->hwi", inverse[:2], np.stack([out_x, out_y, np.ones_like(out_x)], -1))
  interior = ((source[..., 0] >= 0) & (source[..., 0] <= width - 1) & (source[..., 1] >= 0)
              & (source[..., 1] <= height - 1))
  np.testing.assert_allclose(warped[..., :2][interior], source[interior], atol=2e-2)
  outside = ((source[..., 0] <= -1) | (source[..., 0] >= width) | (source[..., 1] <= -1)
             | (source[..., 1] >= height))
  assert np.all(warped[outside] == 0)

  # Masks (nearest) on the mask grid: grid point (r, c) reads source pixel round(A^-1 (4c, 4r)).
  mask_planes = np.stack([xs, ys]).astype(np.int32)
  warped_masks = geometry.warp_masks(mask_planes, matrix, SIZE).numpy()
  grid_source = source[::4, ::4]
  inside = ((grid_source[..., 0] >= 0.5) & (grid_source[..., 0] <= width - 1.5)
            & (grid_source[..., 1] >= 0.5) & (grid_source[..., 1] <= height - 1.5))
  fraction = lambda v: np.abs(v - np.floor(v) - 0.5)
  clear = inside & (fraction(grid_source[..., 0]) > 1e-2) & (fraction(grid_source[..., 1]) > 1e-2)
  np.testing.assert_array_equal(warped_masks[0][clear], np.round(grid_source[..., 0][clear]))
  np.testing.assert_array_equal(warped_masks[1][clear], np.round(grid_source[..., 1][clear]))

  # Keypoints: labelled points move by A; those landing outside [0, S - 1] become (0, 0, 0).
  points = np.array([[[10.0, 20.0, 2.0], [100.0, 5.0, 1.0], [0.0, 0.0, 0.0], [60.0, 80.0, 2.0]]],
                    np.float32)
  moved = augmentation.transform_keypoints(
      points, matrix, SIZE, flip_permutation=(0, 1, 2, 3)).numpy()[0]
  expected = points[0, :, :2] @ matrix.numpy()[:2, :2].T + matrix.numpy()[:2, 2]
  kept = (points[0, :, 2] > 0) & np.all((expected >= 0) & (expected <= SIZE - 1), axis=-1)
  np.testing.assert_allclose(moved[kept, :2], expected[kept], atol=1e-3)
  np.testing.assert_array_equal(moved[kept, 2], points[0, kept, 2])
  np.testing.assert_array_equal(moved[~kept], 0.0)


def test_augment_is_deterministic_in_the_seed(coco_examples):
  example = coco_examples[1]
  first = augmentation.augment(example, AugmentConfig(), SIZE, COCO, tf.constant([5, 9]))
  again = augmentation.augment(example, AugmentConfig(), SIZE, COCO, tf.constant([5, 9]))
  other = augmentation.augment(example, AugmentConfig(), SIZE, COCO, tf.constant([5, 10]))
  for key in ("image", "keypoints", "instance_masks"):
    np.testing.assert_array_equal(first[key].numpy(), again[key].numpy())
  assert not np.array_equal(first["image"].numpy(), other["image"].numpy())
  assert first["image"].dtype == tf.float32 and first["image"].shape == (SIZE, SIZE, 3)
  assert first["instance_masks"].dtype == tf.uint8
  assert first["instance_masks"].shape == (example["keypoints"].shape[0], 41, 41)
  assert first["crowd_mask"].shape == (41, 41)


def test_random_affine_keeps_the_people_in_view(coco_examples):
  """When the labelled keypoints' box fits in the input after scaling/rotation, none is lost."""
  config = AugmentConfig()
  checked = 0
  for index, example in enumerate(coco_examples):
    shape = example["image"].shape
    for draw in range(6):
      matrix = augmentation.random_affine(shape[0], shape[1], example["keypoints"], SIZE, config,
                                          tf.constant([index, draw])).numpy()
      keypoints = example["keypoints"].numpy().reshape(-1, 3)
      labelled = keypoints[:, 2] > 0
      moved = keypoints[labelled, :2] @ matrix[:2, :2].T
      extent = moved.max(axis=0) - moved.min(axis=0)
      if np.all(extent <= SIZE - 1 - 1e-3):
        checked += 1
        placed = moved + matrix[:2, 2]
        assert np.all(placed >= -1e-3) and np.all(placed <= SIZE - 1 + 1e-3)
  assert checked >= 6


def test_resize_and_pad_image_maps_corners_and_pads(coco_examples):
  image = coco_examples[0]["image"]  # 425 x 640: the width is the long side.
  height, width = image.shape[:2]
  resize = tf.function(lambda im: geometry.resize_and_pad_image(im, SIZE),
                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  resized, scale = resize(image)
  assert resized.shape == (SIZE, SIZE, 3) and resized.dtype == tf.float32
  assert scale.numpy() == pytest.approx((SIZE - 1) / (width - 1))
  assert scale.numpy() == pytest.approx(
      geometry.inference_scale(height, width, SIZE).numpy())
  pixels = image.numpy().astype(np.float32)
  np.testing.assert_allclose(resized[0, 0].numpy(), pixels[0, 0], atol=1e-3)
  np.testing.assert_allclose(resized[0, SIZE - 1].numpy(), pixels[0, width - 1], atol=1e-2)
  last_row = int(np.floor((height - 1) * scale.numpy()))
  assert np.all(resized[last_row + 2:].numpy() == 0)
  assert np.any(resized[last_row].numpy() > 0)


def test_resize_and_pad_example_scales_keypoints(coco_examples):
  example = coco_examples[2]
  scale = geometry.inference_scale(*example["image"].shape[:2], SIZE).numpy()
  augmented = augmentation.resize_and_pad_example(example, SIZE)
  original = example["keypoints"].numpy()
  labelled = original[..., 2] > 0
  np.testing.assert_allclose(augmented["keypoints"].numpy()[..., :2][labelled],
                             original[..., :2][labelled] * scale, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(augmented["keypoints"].numpy()[..., 2], original[..., 2])
  assert augmented["has_masks"].numpy() and augmented["image_id"].numpy() == 196141
