r"""Exports a trained KDC model, with grouping inside the graph, as a TF SavedModel.

  python -m experiments.export --model_dir=runs/coco --export_dir=/models/kdc/1 \
      --nms_radius=10 --max_people=30

TF Serving wants one numbered version directory per export under --model_base_path (here
/models/kdc). Prints the serving signatures (see kdc_tf/export/saved_model.py).
"""

from absl import app, flags

from experiments import common_flags
from kdc_tf.export import describe_signatures, export_saved_model

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this binary's flags (in a function so that importing this module defines none)."""
  common_flags.define_predictor_flags()
  flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (must not hold one yet).")
  flags.mark_flag_as_required("export_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  predictor = common_flags.predictor_from_flags()
  export_saved_model(predictor, FLAGS.export_dir)
  print(f"Exported to {FLAGS.export_dir}")
  print(describe_signatures(FLAGS.export_dir))


if __name__ == "__main__":
  define_flags()
  app.run(main)
