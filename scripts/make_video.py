r"""A video of one class being generated, or a stability comparison of models.

  python scripts/make_video.py --classes=tabby --snapshot_every=5 --out=tabby.gif
  python scripts/make_video.py --classes=tabby --models=googlenet,inception_v3,resnet50 \
      --out=stability.png

Each frame: the image on the left, all 1000 logits on the right (the target
in red). With --models: the target's logit and rank over the iterations
for each model, side by side (classgen_jax.video).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from classgen_jax import classify, recipes, video
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", classify.DEFAULT_MODEL, _cli.MODEL_HELP)
flags.DEFINE_string("weights", None, "A .pth state dict (default: the model's own weights).")
flags.DEFINE_list("models", None, "Models to compare: writes a stability plot (PNG) to --out.")
flags.DEFINE_string("recipe", recipes.DEFAULT, _cli.RECIPE_HELP)
flags.DEFINE_string("classes", "tabby", "The class (one name or index).")
flags.DEFINE_integer("seed", 0, "The seed.")
flags.DEFINE_integer("restarts", 1, "With --models: images per model (one line each).")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations by this.")
flags.DEFINE_integer("snapshot_every", 5, "A frame every this many iterations.")
flags.DEFINE_float("fps", 10.0, "Frames per second.")
flags.DEFINE_string("head", None, "Move the recipe's objectives to this head.")
flags.DEFINE_string("init", None, "A photo to transfigure (its own class is marked in green).")
flags.DEFINE_string("out", "video.gif", "Output: .gif, .webp or .mp4 (with --models: .png).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if FLAGS.models:
      path = video.compare_models(models=FLAGS.models, target=FLAGS.classes, out=FLAGS.out,
                                  recipe=FLAGS.recipe, seed=FLAGS.seed,
                                  steps_scale=FLAGS.steps_scale, restarts=FLAGS.restarts)
    else:
      path = video.make_video(model=FLAGS.model, weights=FLAGS.weights, target=FLAGS.classes,
                              out=FLAGS.out, recipe=FLAGS.recipe, seed=FLAGS.seed,
                              steps_scale=FLAGS.steps_scale,
                              snapshot_every=FLAGS.snapshot_every, fps=FLAGS.fps,
                              head=FLAGS.head, init=FLAGS.init)
  except (ValueError, RuntimeError) as error:  # the library's errors are one line each
    sys.exit(f"error: {error}")
  logging.info("wrote %s", path)


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
