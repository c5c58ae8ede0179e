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

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder to write into.", required=True)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 64, "Images to draw.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed: the same seed gives the same dataset.")
_FIRST_IMAGE_ID = flags.DEFINE_integer("first_image_id", 1, "First image id.", lower_bound=1)
_IMAGE_FORMAT = flags.DEFINE_enum("image_format", "jpg", ["jpg", "png"], "Image file format.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 0, "TFRecord shards to write; 0 writes none.",
                                   lower_bound=0)


def main(argv: List[str]) -> None:
  del argv
  json_path = synthetic.generate_synthetic_coco(
      _OUTPUT_DIR.value, _NUM_IMAGES.value, seed=_SEED.value,
      first_image_id=_FIRST_IMAGE_ID.value, image_format=_IMAGE_FORMAT.value)
  print(f"wrote {json_path} and {_NUM_IMAGES.value} images in "
        f"{os.path.join(_OUTPUT_DIR.value, 'images')}")
  if _NUM_SHARDS.value:
    from data_pipeline.tfrecord_writer import write_tfrecords  # TensorFlow only when asked.
    print(write_tfrecords(json_path, os.path.join(_OUTPUT_DIR.value, "images"),
                          os.path.join(_OUTPUT_DIR.value, "tfrecords", "data"), _NUM_SHARDS.value,
                          "coco"))


if __name__ == "__main__":
  app.run(main)
