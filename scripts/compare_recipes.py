r"""Recipes side by side at full size, every image captioned with its measures.

  python scripts/compare_recipes.py --recipes=natural,maco --classes=0-15 --out=compare

Makes (or resumes) an atlas per recipe under --out/<recipe>, measures every
image with the judges (their verdict on the image and at a glance, in grey,
on its centre, on each quarter, and where its class evidence lies:
classgen_jax.recognisability), and writes compare_<k>.png (one row per
recipe, one column per class, full size, captioned) and blind_<k>.png (the
same images shuffled, uncaptioned, with blind_key.json) for naming by eye.
The work is classgen_jax.comparison.compare.
"""

from __future__ import annotations

import sys

from absl import app, flags

from classgen_jax import comparison, folders, quality, recipes
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("generator", "efficientnet_lite0", f"The model that makes the images. "
                    f"{_cli.MODEL_HELP}")
flags.DEFINE_list("judges", ["efficientnet_lite1", "efficientnet_lite2"],
                  "Models that classify them, each at its native size.")
flags.DEFINE_list("recipes", [recipes.DEFAULT, "maco"], _cli.RECIPE_HELP)
flags.DEFINE_string("classes", ",".join(map(str, quality.DEFAULT_CLASSES[:16])),
                    "Classes: names, indices, ranges (default: the first 16 of the quality "
                    "benchmark's 32).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations (previews).")
flags.DEFINE_integer("batch_size", None, "Images optimised at once (default: what fits).")
flags.DEFINE_integer("per_sheet", 4, "Classes (columns) per sheet.")
flags.DEFINE_string("out", "compare", "Output folder.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _cli.check_out_folder(FLAGS.out)
  from classgen_jax.weights import load_classifier
  try:
    classes = folders.parse_classes(FLAGS.classes)
    for recipe in FLAGS.recipes:
      recipes.get(recipe)
    generator = load_classifier(FLAGS.generator)
    judges = {name: load_classifier(name) for name in FLAGS.judges}
    summaries = comparison.compare(generator, judges, FLAGS.recipes, classes, FLAGS.out,
                                   seed=FLAGS.seed, steps_scale=FLAGS.steps_scale,
                                   per_sheet=FLAGS.per_sheet, batch_size=FLAGS.batch_size)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
  print(comparison.summary_table(summaries))


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
