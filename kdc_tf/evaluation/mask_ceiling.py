"""The mask-grid ceiling: the mask AP a perfect decoder could reach on the stride-4 mask grid.

Ground-truth masks sampled on the mask grid exactly as the target encoder sees them (nearest, by
`kdc_tf.geometry.warp_masks`), resampled back to the image bilinearly and thresholded at 0.5, one
per person (perfect assignment, overlaps allowed). The decoder's masks go through the same grid,
so the oracle's mask AP (ground truth through encoder and grouping) is judged against this figure,
not against 1 (DESIGN.md 'Conventions settled here').
"""

from __future__ import annotations

import tensorflow as tf

from kdc_tf.geometry import MASK_STRIDE


def grid_masks_to_image(grid_masks: tf.Tensor, output_size, input_scale,
                        mask_stride: int = MASK_STRIDE) -> tf.Tensor:
  """uint8 `[P, Ho, Wo]`: masks on the corner-aligned mask grid, bilinear to the image, > 0.5.

  Output pixel `(x, y)` reads grid coordinate `(x, y) * input_scale / mask_stride` (grid point
  `(r, c)` sits at input pixel `(stride * c, stride * r)`); outside the grid reads 0.

  Args:
    grid_masks: `[P, M, M]` 0/1 (any numeric dtype).
    output_size: `(Ho, Wo)` of the original image.
    input_scale: input pixels per original pixel.
    mask_stride: input pixels per mask-grid cell.
  """
  step = tf.cast(input_scale, tf.float32) / float(mask_stride)
  zero = tf.zeros([], tf.float32)
  # ImageProjectiveTransformV3 maps each output pixel to the source point `transform @ (x, y, 1)`.
  transform = tf.stack([step, zero, zero, zero, step, zero, zero, zero])[tf.newaxis]
  resampled = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(grid_masks, tf.float32)[..., tf.newaxis], transforms=transform,
      output_shape=tf.convert_to_tensor(output_size, tf.int32), fill_value=zero,
      interpolation="BILINEAR", fill_mode="CONSTANT")
  return tf.cast(resampled[..., 0] > 0.5, tf.uint8)
