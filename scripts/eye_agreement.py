r"""How well each automatic measure agrees with a person's eye.

  python scripts/eye_agreement.py --labels=docs/eye_labels.json \
      --folders=compare/natural,compare/maco

Finds the image of every eye label in the atlas folders given (by recipe,
class, seed, restart and steps scale), measures them
(classgen_jax.comparison.measure_folder; kept in each folder's
measures.json), and prints, for every measure, its rank correlation with the
verdicts over the images, the chance that a named image scores above an
unnamed one (AUC), and its rank correlation over recipes with the share named.
The work is classgen_jax.eye.
"""

from __future__ import annotations

import sys

from absl import app, flags

from classgen_jax import comparison
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("labels", "docs/eye_labels.json", "The eye-label file.")
flags.DEFINE_list("folders", [], "Atlas folders holding the labelled images.")
flags.DEFINE_list("judges", ["efficientnet_lite1", "efficientnet_lite2"],
                  "Models that classify them, each at its native size.")
flags.DEFINE_string("json_out", None, "Write the agreement as JSON here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from classgen_jax.weights import load_classifier
  try:
    judges = {name: load_classifier(name) for name in FLAGS.judges}
    print(comparison.agreement_report(FLAGS.labels, FLAGS.folders, judges,
                                      json_out=FLAGS.json_out))
  except (ValueError, RuntimeError) as error:
    sys.exit(f"error: {error}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
