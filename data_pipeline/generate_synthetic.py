"""Writes a synthetic COCO-format stick-people dataset (see data_pipeline.synthetic).

  python -m data_pipeline.generate_synthetic --output_dir=/tmp/synthetic --num_images=64 \
      --num_shards=2

writes `output_dir/images/`, `output_dir/annotations.json` and, with --num_shards > 0,
`output_dir/tfrecords/data-0000i-of-0000N.tfrecord`.
"""

import os
from typing import List

from absl import app
from absl import flags

from data_pipeline import synthetic

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("output_dir", None, "Folder to write into.", required=True)
  flags.DEFINE_integer("num_images", 64, "Images to draw.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed: the same seed gives the same dataset.")
  flags.DEFINE_integer("first_image_id", 1, "First image id.", lower_bound=1)
  flags.DEFINE_enum("image_format", "jpg", ["jpg", "png"], "Image file format.")
  flags.DEFINE_integer("num_shards", 0, "TFRecord shards to write; 0 writes none.",
                       lower_bound=0)


def main(argv: List[str]) -> None:
  del argv
  json_path = synthetic.generate_synthetic_coco(
      FLAGS.output_dir, FLAGS.num_images, seed=FLAGS.seed,
      first_image_id=FLAGS.first_image_id, image_format=FLAGS.image_format)
  print(f"wrote {json_path} and {FLAGS.num_images} images in "
        f"{os.path.join(FLAGS.output_dir, 'images')}")
  if FLAGS.num_shards:
    from data_pipeline.tfrecord_writer import write_tfrecords  # TensorFlow only when asked.
    print(write_tfrecords(json_path, os.path.join(FLAGS.output_dir, "images"),
                          os.path.join(FLAGS.output_dir, "tfrecords", "data"), FLAGS.num_shards,
                          "coco"))


if __name__ == "__main__":
  define_flags()
  app.run(main)
