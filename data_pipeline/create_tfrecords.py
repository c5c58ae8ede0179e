"""Converts a COCO-format keypoint dataset (COCO, CrowdPose, OCHuman) into sharded TFRecords.

  python -m data_pipeline.create_tfrecords --annotations=person_keypoints_train2017.json \
      --images=train2017 --output=/data/coco/train --num_shards=64 --dataset=coco

writes `/data/coco/train-00000-of-00064.tfrecord` ... (`data_pipeline.tfrecord_writer`), logs
progress and prints what it wrote and what it skipped, by reason.
"""

from __future__ import annotations

from typing import List

from absl import app
from absl import flags

from data_pipeline.tfrecord_writer import write_tfrecords
from kdc_tf.datasets import dataset_names

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (only when run: importing defines none)."""
  flags.DEFINE_string("annotations", None, "COCO-format keypoint annotation JSON.")
  flags.DEFINE_string("images", None, "Folder of the images named in the JSON.")
  flags.DEFINE_string("output", None, "Output prefix: writes PREFIX-00000-of-0000N.tfrecord.")
  flags.DEFINE_integer("num_shards", 16, "Number of TFRecord shards.", lower_bound=1)
  flags.DEFINE_enum("dataset", "coco", dataset_names(),
                    "Dataset layout (keypoint count, segmentation).")
  flags.DEFINE_bool("keep_images_without_people", True,
                    "Keep images with no non-crowd person as negatives.")
  flags.DEFINE_integer("log_every", 1000, "Log progress every this many images.", lower_bound=1)
  flags.mark_flags_as_required(["annotations", "images", "output"])


def main(argv: List[str]) -> None:
  del argv
  summary = write_tfrecords(
      FLAGS.annotations, FLAGS.images, FLAGS.output, FLAGS.num_shards, FLAGS.dataset,
      keep_images_without_people=FLAGS.keep_images_without_people, log_every=FLAGS.log_every)
  print(summary)


if __name__ == "__main__":
  define_flags()
  app.run(main)
