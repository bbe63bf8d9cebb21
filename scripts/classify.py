r"""Classify image files: the top-5 classes with names and probabilities.

  python scripts/classify.py classgen_jax/assets/chelsea.jpg
  python scripts/classify.py --model=googlenet --weights=googlenet.pth a.jpg b.png
  python scripts/classify.py --model=resnet50 --folder=atlas

With --folder, every image of an atlas folder (scripts/generate.py) is
classified and each row of its summary.jsonl gains a classify_<model>
field (top-1 class, name and probability, the target's rank and probability).
"""

from __future__ import annotations

import sys

from absl import app, flags

from classgen_jax import classify
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", classify.DEFAULT_MODEL, _cli.MODEL_HELP)
flags.DEFINE_string("weights", None, "A .pth state dict (default: the model's own weights).")
flags.DEFINE_integer("top_k", 5, "Classes to print per image.")
flags.DEFINE_bool("crop", True, "Centre-crop to the model's input size (else squash).")
flags.DEFINE_string("folder", None, "Classify an atlas folder and add the results to its "
                    "summary.jsonl (field classify_<model>).")


def main(argv):
  paths = argv[1:]
  if FLAGS.folder:
    try:
      rows = classify.classify_folder(FLAGS.folder, model=FLAGS.model, weights=FLAGS.weights)
    except ValueError as error:
      sys.exit(f"error: {error}")
    field = f"classify_{FLAGS.model}"
    agree = sum(r[field]["target_rank"] == 0 for r in rows)
    print(f"{FLAGS.folder}: {agree} of {len(rows)} images are top-1 for {FLAGS.model} "
          f"(field {field} in summary.jsonl)")
    return
  if not paths:
    raise app.UsageError("give one or more image files, e.g. classgen_jax/assets/chelsea.jpg")
  try:
    results = classify.classify_files(paths, model=FLAGS.model, weights=FLAGS.weights,
                                      top_k=FLAGS.top_k, crop=FLAGS.crop)
  except ValueError as error:  # the library's errors are one line each
    sys.exit(f"error: {error}")
  for path, top in results:
    print(path)
    for rank, (index, name, probability) in enumerate(top, 1):
      print(f"  {rank}. {probability:7.2%}  {index:4d} {name}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
