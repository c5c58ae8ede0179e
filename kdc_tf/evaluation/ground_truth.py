"""Ground truth for pycocotools through the same checked path as the TFRecord writer.

`load_ground_truth` reads the annotation file with `kdc_tf.coco_format.clean_coco_dataset`
(the writer's reader), so evaluation, the oracle and training see the same people: duplicate image
ids keep the first entry, degenerate polygon parts are dropped, a person without a usable
segmentation (empty, invalid RLE, wrong RLE size) or with unusable keypoints becomes an ignore
(`iscrowd`) region, labelled keypoints outside the image become unlabelled, and so on; every fix
is counted and logged. pycocotools is then given exactly the cleaned dataset.
"""

from __future__ import annotations

from absl import logging
from pycocotools.coco import COCO

from kdc_tf import coco_format
from kdc_tf.datasets import get_dataset_spec
from kdc_tf.evaluation.coco_evaluator import coco_from_dataset
from kdc_tf.evaluation.crowdpose_evaluator import set_crowdpose_areas
from kdc_tf.io_utils import load_json


def load_ground_truth(annotations: str, dataset: str) -> COCO:
  """Loads a COCO-format annotation file, cleaned and adjusted for the dataset's protocol."""
  spec = get_dataset_spec(dataset)
  skips = coco_format.SkipCounter()
  cleaned = coco_format.clean_coco_dataset(load_json(annotations), dataset, annotations, skips)
  if not cleaned["images"]:
    raise ValueError(f"{annotations}: no usable images in the annotation file")
  if skips.total():
    logging.warning("%s: %d ground-truth items skipped or fixed before evaluation (the TFRecord "
                    "writer applies the same policy):\n%s", annotations, skips.total(),
                    skips.summary())
  coco_gt = coco_from_dataset(cleaned)
  if dataset.lower() == "crowdpose":
    set_crowdpose_areas(coco_gt)
  elif dataset.lower() == "ochuman":
    logging.info("OCHuman: ground-truth 'area' is the bbox area, so OKS and APm/APl use it.")
  logging.info("Loaded %s ground truth (%d keypoints): %d images, %d annotations", dataset,
               spec.num_keypoints, len(coco_gt.getImgIds()), len(coco_gt.getAnnIds()))
  return coco_gt
