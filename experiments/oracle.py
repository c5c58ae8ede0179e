r"""The oracle: ground truth -> target encoder -> grouping -> COCO evaluation.

  python -m experiments.oracle --annotations=coco_sample/test_coco.json --images=coco_sample \
      --dataset=coco --input_size=401

Each image goes through the deterministic inference transform (long side to `--input_size`, pad
bottom/right), the target encoder, and the grouping decoder with the targets as perfect head
outputs; people come out at the original resolution and are evaluated like a model's
(`experiments.oracle_runner`). This measures what the representation and the decoder lose with
perfect predictions.

  python -m experiments.oracle --synthetic=occlusion --num_images=100 --input_size=401 [--seed=0]

runs it on generated OCHuman-like occlusion scenes instead (`data_pipeline.synthetic_occlusion`,
written to a temporary directory, or to `--synthetic_dir`), through the same path.

Masks are also judged against the mask-grid ceiling (`kdc_tf.evaluation.mask_ceiling`): the mask
AP of the ground-truth masks sampled on the same stride-4 grid and resampled back with perfect
assignment. Prints the tables, the ceiling, a `segm_ceiling=<z>` line (datasets with masks) and ends
with `keypoints_AP=<x> segm_AP=<y>` (segm omitted for datasets without masks).
"""

from __future__ import annotations

import tempfile
from typing import Sequence

from absl import app, flags, logging

from data_pipeline import synthetic_occlusion
from experiments import common_flags
from experiments.oracle_runner import run_oracle
from kdc_tf import evaluation
from kdc_tf.geometry import Geometry

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  flags.DEFINE_string("annotations", None, "COCO-format ground-truth JSON.")
  flags.DEFINE_string("images", None, "Directory of the annotation file's images.")
  common_flags.define_dataset_flag()
  common_flags.define_geometry_flags(output_stride=True, disk_radius=True)
  common_flags.define_grouping_flags()
  flags.DEFINE_integer("max_images", None, "Only the first N images.")
  flags.DEFINE_string("output", None, "Optional: write the oracle's COCO results JSON here.")
  flags.DEFINE_bool("fail_on_bad_image", False, "Stop at a missing or corrupt image; by default "
                    "it is skipped, counted and left out of the evaluation.")
  flags.DEFINE_bool("jit_compile", False, "Compile the grouping with XLA (pays a compilation "
                    "first; faster per image on long runs).")
  flags.DEFINE_enum("synthetic", None, ["occlusion"], "Instead of --annotations/--images: "
                    "generated scenes (occlusion: OCHuman-like, "
                    "data_pipeline.synthetic_occlusion).")
  flags.DEFINE_integer("num_images", 100, "Generated scenes (with --synthetic).")
  flags.DEFINE_integer("seed", 0, "Scene generator seed (with --synthetic).")
  flags.DEFINE_string("synthetic_dir", None, "Keep the generated scenes here (with --synthetic); "
                      "default: a temporary directory, removed afterwards.")
  flags.register_multi_flags_validator(
      ["annotations", "images", "synthetic"],
      lambda f: f["synthetic"] is not None or (f["annotations"] and f["images"]),
      message="give --annotations and --images, or --synthetic")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with tempfile.TemporaryDirectory(prefix="kdc_oracle_") as scratch:
    annotations, images, dataset = FLAGS.annotations, FLAGS.images, FLAGS.dataset
    if FLAGS.synthetic == "occlusion":
      if FLAGS.num_images < 1:
        raise app.UsageError("--num_images must be >= 1")
      directory = FLAGS.synthetic_dir or scratch
      annotations = synthetic_occlusion.generate_occlusion_coco(directory, FLAGS.num_images,
                                                               FLAGS.seed)
      images, dataset = f"{directory}/images", "coco"
    geometry = Geometry(dataset=dataset, input_size=FLAGS.input_size,
                        output_stride=int(FLAGS.output_stride), disk_radius=FLAGS.disk_radius)
    oracle_report = run_oracle(annotations, images, geometry,
                               common_flags.grouping_config_from_flags(), FLAGS.max_images,
                               jit_compile=FLAGS.jit_compile,
                               fail_on_bad_image=FLAGS.fail_on_bad_image)
  if FLAGS.output:
    evaluation.write_results(FLAGS.output, oracle_report.results)
  logging.info("Oracle done.")
  for line in oracle_report.lines():
    print(line, flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
