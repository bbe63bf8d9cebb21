r"""Generate classes with one model, judge the images with others.

  python scripts/evaluate_quality.py --generator=efficientnet_lite0 \
      --judges=efficientnet_lite1,efficientnet_lite2 --recipes=gradient,sign,octaves \
      --json_out=quality.json --grid_out=quality.png

  # The markdown table of saved runs:
  python scripts/evaluate_quality.py --from_json=a.json,b.json

  # The article's claim about adversarial examples (photos from scikit-image):
  python scripts/evaluate_quality.py --adversarial --json_out=adversarial.json

Default classes: 32 spread over ImageNet (classgen_jax.quality.DEFAULT_CLASSES).
The work is classgen_jax.quality.run, quality.table_from_files and
classgen_jax.adversarial.run.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from classgen_jax import adversarial, quality, recipes
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("generator", "efficientnet_lite0",
                    f"The model that makes the images. {_cli.MODEL_HELP}")
flags.DEFINE_list("judges", ["efficientnet_lite1", "efficientnet_lite2"],
                  "Models that classify them, each at its native size.")
flags.DEFINE_list("recipes", [recipes.DEFAULT], "Recipes to compare.")
flags.DEFINE_list("classes", [str(c) for c in quality.DEFAULT_CLASSES],
                  "Class indices or names (default: 32 spread over ImageNet).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations (previews).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Generator's compute dtype (bfloat16: mixed precision; judges stay float32).")
flags.DEFINE_integer("batch_size", None, "Images optimised at once (default: what fits the "
                     "free device memory; 8 per device on a CPU).")
flags.DEFINE_string("json_out", None, "Write the scores as JSON here.")
flags.DEFINE_string("grid_out", None, "Write labelled contact sheets here (one per recipe: "
                    "NAME.png, or NAME-RECIPE.png for several recipes).")
flags.DEFINE_string("photo", None, "Start of the photo recipes (transfigure); default: the "
                    "bundled cat photo.")
flags.DEFINE_list("from_json", [], "Print the markdown table of these --json_out files "
                  "(e.g. runs of different recipes) instead of generating.")
flags.DEFINE_bool("adversarial", False, "Measure random-sign vs gradient-sign flip rates "
                  "on scikit-image's photos instead.")
flags.DEFINE_list("epsilons", ["0.5", "1", "2", "4", "8", "16"],
                  "L-infinity sizes for --adversarial, in 1/255 units.")

# The photos that ship with scikit-image: the set the README's adversarial table was
# measured on. scikit-image is a test dependency, so the library takes photos as an
# argument and only this script reaches for these.
_SCIKIT_IMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "hubble_deep_field",
    "immunohistochemistry", "logo", "moon", "page", "text", "retina", "brick", "grass", "gravel",
    "colorwheel", "cell", "clock")


def _scikit_image_photos() -> dict[str, np.ndarray]:
  try:
    import skimage.data
  except ImportError:
    raise ValueError("the photos come from scikit-image: pip install scikit-image") from None
  photos = {}
  for name in _SCIKIT_IMAGE_PHOTOS:
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
      image = image.astype(np.uint8) * 255
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    photos[name] = image[..., :3].astype(np.float32) / 255.0
  return photos


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if FLAGS.from_json:
      print(quality.table_from_files(FLAGS.from_json))
    elif FLAGS.adversarial:
      print(adversarial.run(FLAGS.generator, _scikit_image_photos(), FLAGS.epsilons,
                            json_out=FLAGS.json_out))
    else:
      print(quality.run(
          FLAGS.generator, FLAGS.judges, FLAGS.recipes, FLAGS.classes, seed=FLAGS.seed,
          steps_scale=FLAGS.steps_scale, dtype=FLAGS.dtype, batch_size=FLAGS.batch_size,
          photo=FLAGS.photo, json_out=FLAGS.json_out, grid_out=FLAGS.grid_out))
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
