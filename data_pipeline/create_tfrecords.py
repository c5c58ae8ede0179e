"""Converts a COCO-format keypoint dataset (COCO, CrowdPose, OCHuman) into sharded TFRecords.

  python -m data_pipeline.create_tfrecords --annotations=person_keypoints_train2017.json \
      --images=train2017 --output=/data/coco/train --num_shards=64 --dataset=coco

writes `/data/coco/train-00000-of-00064.tfrecord` ... (`data_pipeline.tfrecord_writer`) with
`--num_workers` processes, logging progress with images/s and the ETA and what it skipped, by
reason; it prints one line of figures. Existing shards stop it, unless --resume (write the missing
shards) or --overwrite.
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
  flags.DEFINE_bool("keep_images_without_people", False,
                    "Also write images with no non-crowd person, as negatives. Default: only "
                    "images with a person (COCOPersons, the paper's training set).")
  flags.DEFINE_integer("log_every", 1000, "Log progress every this many images.", lower_bound=1)
  flags.DEFINE_integer("num_workers", 1, "Processes writing shards in parallel.", lower_bound=1)
  flags.DEFINE_bool("resume", False, "Keep the shards that exist (complete: shards are renamed "
                    "into place when written) and write only the missing ones.")
  flags.DEFINE_bool("overwrite", False, "Rewrite every shard even if it exists.")
  flags.mark_flags_as_required(["annotations", "images", "output"])


def main(argv: List[str]) -> None:
  del argv
  if FLAGS.resume and FLAGS.overwrite:
    raise app.UsageError("give --resume or --overwrite, not both")
  summary = write_tfrecords(
      FLAGS.annotations, FLAGS.images, FLAGS.output, FLAGS.num_shards, FLAGS.dataset,
      keep_images_without_people=FLAGS.keep_images_without_people, log_every=FLAGS.log_every,
      num_workers=FLAGS.num_workers,
      existing="resume" if FLAGS.resume else "overwrite" if FLAGS.overwrite else "refuse")
  print(summary.line())  # The skips by reason are in the log above.


if __name__ == "__main__":
  define_flags()
  app.run(main)
