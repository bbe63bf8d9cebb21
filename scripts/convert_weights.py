r"""Convert a model's torch weights to Flax, cache them, print the parameter table.

  python scripts/convert_weights.py --model=inception_v3
  python scripts/convert_weights.py --model=googlenet --weights=googlenet.pth --out=g.safetensors

The table lists every parameter tensor (BatchNorm running statistics are not
parameters) and the total, which for Inception-v3 with its aux head is the
article's 27,161,264.
"""

from __future__ import annotations

import sys

from absl import flags

import classgen_jax
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "inception_v3", _cli.MODEL_HELP)
flags.DEFINE_string("weights", None, "A .pth state dict (default: the model's own weights).")
flags.DEFINE_string("out", None, "Also write the converted weights to this .safetensors file.")
flags.DEFINE_bool("table", True, "Print the per-tensor parameter table.")


def main(argv):
  del argv
  try:
    classifier = classgen_jax.load_classifier(FLAGS.model, weights=FLAGS.weights)
    if FLAGS.out:
      classgen_jax.save_classifier(classifier, FLAGS.out)
  except ValueError as error:
    sys.exit(f"error: {error}")
  rows = classifier.parameter_counts()
  if FLAGS.table:
    width = max(len(name) for name, _ in rows)
    print(f"| {'Modules':<{width}} | {'Parameters':>10} |")
    for name, count in rows:
      print(f"| {name:<{width}} | {count:>10,} |")
  print(f"Total trainable parameters: {sum(c for _, c in rows):,}")
  written = f"; written to {FLAGS.out}" if FLAGS.out else ""
  print(f"cached in {classgen_jax.cache_dir()}{written}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
