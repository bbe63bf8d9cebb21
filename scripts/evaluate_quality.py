r"""Generate classes with one model, judge the images with others.

  python scripts/evaluate_quality.py --generator=efficientnet_lite0 \
      --judges=efficientnet_lite1,efficientnet_lite2 --recipes=gradient,sign,octaves \
      --json_out=quality.json --grid_out=quality.png

  # The article's claim about adversarial examples (photos from scikit-image):
  python scripts/evaluate_quality.py --adversarial --json_out=adversarial.json

Default classes: 32 spread over ImageNet (classgen_jax.quality.DEFAULT_CLASSES).
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
from absl import flags, logging

from classgen_jax import class_indices, load_classifier, quality, recipes
from classgen_jax._files import write_text
from classgen_jax.weights import model_spec
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("generator", "efficientnet_lite0", "Model that makes the images.")
flags.DEFINE_list("judges", ["efficientnet_lite1", "efficientnet_lite2"],
                  "Models that classify them, each at its native size.")
flags.DEFINE_list("recipes", [recipes.DEFAULT], "Recipes to compare.")
flags.DEFINE_list("classes", [str(c) for c in quality.DEFAULT_CLASSES],
                  "Class indices or names (default: 32 spread over ImageNet).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_float("steps_scale", 1.0, "Scale every octave's iterations (previews).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Generator's compute dtype (bfloat16: mixed precision; judges stay float32).")
flags.DEFINE_integer("batch_size", None, "Images optimised at once (default: all).")
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


def _write_json(path, data):
  write_text(path, json.dumps(data, indent=2) + "\n")


def main(argv):
  del argv
  if FLAGS.from_json:
    try:
      results = [json.loads(open(path).read()) for path in FLAGS.from_json]
    except (OSError, ValueError) as error:
      sys.exit(f"error: cannot read --from_json: {error}")
    print(quality.markdown_table(results))
    return
  try:
    if not FLAGS.adversarial:
      if not FLAGS.classes:
        raise ValueError("--classes is empty: give class indices or names")
      class_indices(FLAGS.classes)  # unknown names fail before any model loads
      for name in [FLAGS.generator, *FLAGS.judges]:
        model_spec(name)
      if not FLAGS.judges:
        raise ValueError("--judges is empty: give at least one model name")
    generator = load_classifier(FLAGS.generator)
    if FLAGS.adversarial:
      epsilons = [float(e) / 255 for e in FLAGS.epsilons]
      rates = quality.adversarial_flip_rates(generator, quality.sample_photos(), epsilons)
      n, sure = len(rates["photos"]), rates["confident_photos"]
      print(f"top-1 changed, all {n} photos / the {sure} classified with p >= 0.5")
      print(f"{'epsilon':>10} {'random sign':>16} {'gradient sign':>16}")
      for i, e in enumerate(FLAGS.epsilons):
        print(f"{e + '/255':>10} {rates['random_sign'][i]:>7.0%} / "
              f"{rates['confident_random_sign'][i]:>4.0%} {rates['gradient_sign'][i]:>9.0%} / "
              f"{rates['confident_gradient_sign'][i]:>4.0%}")
      if FLAGS.json_out:
        _write_json(FLAGS.json_out, {"model": FLAGS.generator, "epsilons_255": FLAGS.epsilons,
                                     **rates})
      return
    judges = {}
    for name in FLAGS.judges:
      if name == FLAGS.generator:
        logging.warning("judge %s is the generator: its scores are self-judging", name)
      judges[name] = generator if name == FLAGS.generator else load_classifier(name)
    scores, skipped = quality.evaluate(
        generator, judges, FLAGS.recipes, FLAGS.classes, seed=FLAGS.seed,
        steps_scale=FLAGS.steps_scale, batch_size=FLAGS.batch_size, photo=FLAGS.photo,
        compute_dtype=None if FLAGS.dtype == "float32" else jnp.bfloat16)
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")
  header = f"{'recipe':<18} {'self top1':>9}" + "".join(
      f" {name[-12:] + ' top1/top5':>24}" for name in judges) + f" {'seconds':>8}"
  print(header)
  for score in scores:
    cells = "".join(f" {j.top1:>11.0%} / {j.top5:>4.0%}{' (self)' if j.self_judging else '':>7}"
                    for j in score.judges.values())
    print(f"{score.recipe:<18} {score.self_top1:>9.0%}{cells} {score.seconds:>8.0f}")
  for name, reason in skipped.items():
    print(f"{name:<18} skipped: {reason}")
  result = {
      "generator": FLAGS.generator, "judges": FLAGS.judges, "classes": FLAGS.classes,
      "seed": FLAGS.seed, "steps_scale": FLAGS.steps_scale, "dtype": FLAGS.dtype,
      "device": jax.devices()[0].device_kind,
      "recipes": {s.recipe: s.as_json() for s in scores},
      "skipped": skipped}
  if scores:
    print(quality.markdown_table([result]))
  if FLAGS.json_out:
    _write_json(FLAGS.json_out, result)
  if FLAGS.grid_out:
    root, ext = os.path.splitext(FLAGS.grid_out)
    for score in scores:
      path = FLAGS.grid_out if len(scores) == 1 else f"{root}-{score.recipe}{ext or '.png'}"
      quality.contact_sheet(score, generator.labels).save(path)
      print(f"wrote {path}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
