"""Decoded examples (ARCHITECTURE.md section 1) built in-test from the real COCO-format samples.

Independent of the TFRecord reader on purpose: the augmentation and target tests check geometry
against pycocotools' own rasterisation of the annotations.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import warnings
from typing import Dict, List

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO


def load_decoded_examples(sample_dir: pathlib.Path, annotation_file: str,
                          num_keypoints: int) -> List[Dict[str, tf.Tensor]]:
  """One decoded example per image of a COCO-format sample, in image-id order."""
  with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO(str(sample_dir / annotation_file))
  examples = []
  for image_id in sorted(coco.getImgIds()):
    info = coco.loadImgs(image_id)[0]
    height, width = info["height"], info["width"]
    # TF's decoder, as in the pipeline (JPEG decoders differ by a few levels).
    image = tf.io.decode_image(tf.io.read_file(str(sample_dir / info["file_name"])), channels=3)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    people = [a for a in annotations if not a.get("iscrowd", 0)]
    has_masks = all("segmentation" in a for a in annotations) and bool(annotations)
    keypoints = np.array([a["keypoints"] for a in people], np.float32).reshape(
        len(people), num_keypoints, 3)
    masks = np.zeros((len(people), height, width), np.uint8)
    crowd = np.zeros((height, width), np.uint8)
    with warnings.catch_warnings():
      # pycocotools 2.0.11 warns about numpy 2's copy keyword on every mask decode.
      warnings.simplefilter("ignore", DeprecationWarning)
      if has_masks:
        for index, annotation in enumerate(people):
          masks[index] = coco.annToMask(annotation)
      for annotation in annotations:
        if annotation.get("iscrowd", 0):
          crowd |= coco.annToMask(annotation)
    examples.append({
        "image": image,
        "image_id": tf.constant(image_id, tf.int64),
        "person_ids": tf.constant([a["id"] for a in people], tf.int64),
        "keypoints": tf.constant(keypoints),
        "instance_masks": tf.constant(masks),
        "crowd_mask": tf.constant(crowd),
        "has_masks": tf.constant(has_masks),
    })
  return examples
