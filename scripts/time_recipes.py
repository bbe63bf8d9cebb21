r"""Compile time and per-iteration time of every recipe on one model, or
(--pieces) of each piece of the image priors added to a plain recipe.

  python scripts/time_recipes.py --model=efficientnet_lite0 --steps_scale=0.05
  python scripts/time_recipes.py --pieces --batch_size=4
"""

from __future__ import annotations

import json
import sys

from absl import flags

from classgen_jax import load_classifier
from converters.reference import benchmark
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet_lite0", _cli.MODEL_HELP)
flags.DEFINE_float("steps_scale", 0.05, "Scale every recipe's iterations.")
flags.DEFINE_list("recipes", None, "Recipes to time (default: all).")
flags.DEFINE_string("json_out", None, "Write the results as JSON here.")
flags.DEFINE_bool("pieces", False, "Time the pieces of the image priors (parameterisations, "
                  "views, priors), each added alone to Adam on 224 px pixels with flips.")
flags.DEFINE_integer("batch_size", 4, "Images at once, with --pieces.")
flags.DEFINE_integer("iterations", 16, "Iterations timed, with --pieces.")


def main(argv):
  del argv
  try:
    classifier = load_classifier(FLAGS.model)
    if FLAGS.pieces:
      results = benchmark.time_pieces(classifier, iterations=FLAGS.iterations,
                                      batch=FLAGS.batch_size)
      print(f"{'piece':<32} {'compile s':>10} {'ms/image-iteration':>19} {'extra ms':>9}")
      for name, r in results.items():
        print(f"{name:<32} {r['compile_s']:>10.1f} {r['ms_per_image_iter']:>19.1f} "
              f"{r['extra']:>+9.1f}")
      _write(results)
      return
    results = benchmark.time_recipes(classifier, steps_scale=FLAGS.steps_scale,
                                     names=tuple(FLAGS.recipes) if FLAGS.recipes else None)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
  print(f"{'recipe':<18} {'iterations':>10} {'compile s':>10} {'ms/iteration':>13}")
  for name, r in results.items():
    print(f"{name:<18} {r['iterations']:>10} {r['compile_s']:>10.1f} {r['ms_per_iter']:>13.1f}")
  _write(results)


def _write(results):
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  _cli.run(main)
