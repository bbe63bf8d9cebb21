r"""How well recipes show a layer's units: unit atlases per recipe, measured.

  python scripts/evaluate_units.py --layers=_blocks.4,_blocks.10 --channels=0-7 \
      --recipes=units,lucid,maco --out=unit_eval --json_out=units.json

Makes (or resumes) a channel atlas per recipe and layer under
--out/<recipe>/<layer>, prints per recipe the units' activation and robust
activation (as a share of the best recipe's), how often the unit is its
layer's most active, colourfulness, spectral slope and seconds per image,
and writes --out/units_<layer>.png (a row per recipe, a column per
channel). The work is classgen_jax.unit_quality.evaluate.
"""

from __future__ import annotations

import sys

from absl import app, flags

from classgen_jax import recipes, unit_quality, units
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet_lite0", _cli.MODEL_HELP)
flags.DEFINE_list("layers", ["_blocks.4", "_blocks.10"], "Layers whose channels to show.")
flags.DEFINE_string("channels", "0-7", "Channels of each layer: indices, ranges or all.")
flags.DEFINE_list("recipes", [units.DEFAULT_RECIPE, "lucid", "maco"], _cli.RECIPE_HELP)
flags.DEFINE_integer("views", 8, "Random crops per image for the robust activation.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations (previews).")
flags.DEFINE_integer("batch_size", None, "Images optimised at once (default: what fits).")
flags.DEFINE_string("out", "unit_eval", "Output folder.")
flags.DEFINE_string("json_out", None, "Also save the record as JSON here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _cli.check_out_folder(FLAGS.out)
  from classgen_jax.weights import load_classifier
  try:
    for recipe in FLAGS.recipes:
      recipes.get(recipe)
    classifier = load_classifier(FLAGS.model)
    record = unit_quality.evaluate(
        classifier, FLAGS.recipes, FLAGS.layers, FLAGS.channels, FLAGS.out, views=FLAGS.views,
        steps_scale=FLAGS.steps_scale, seed=FLAGS.seed, batch_size=FLAGS.batch_size)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
  record["command"] = _cli.resume_command()
  print(unit_quality.table(record))
  print(f"sheets: {unit_quality.sheet(record, FLAGS.out).parent}/units_<layer>.png")
  if FLAGS.json_out:
    unit_quality.save(record, FLAGS.json_out)


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
