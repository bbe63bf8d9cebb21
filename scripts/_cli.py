"""What the scripts share: flag help that names the choices, quiet backends, ``--out`` checks.

Every script ends with ``_cli.run(main)`` instead of ``absl.app.run(main)``,
so that the logging set-up below happens once flags are parsed.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags

from classgen_jax import models, recipes
from classgen_jax.imagenet import class_name

DEFAULT_CLASS = 19
MODEL_HELP = (f"Model: {', '.join(models.MODELS)} (torchvision's need the [torch] extra to "
              "convert their weights once).")
RECIPE_HELP = f"Recipe: {', '.join(recipes.names())}."
CLASSES_HELP = ("Names, indices, ranges (0-99), comma-separated, or all "
                f"({DEFAULT_CLASS} is {class_name(DEFAULT_CLASS)}).")

# Loggers that report on backends at INFO (jax's "Unable to initialize backend
# 'tpu'" probe on every machine without one): noise unless asked for.
_BACKEND_LOGGERS = ("jax",)


def quiet_backend_logs(verbosity: int) -> None:
  """Hide backend INFO chatter below absl ``--verbosity=1``; warnings always pass.

  Args:
    verbosity: absl's ``--verbosity`` (0, the default, shows INFO).
  """
  for name in _BACKEND_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING if verbosity < 1 else logging.NOTSET)


def check_out_folder(out: str) -> None:
  """Exit with one line when ``--out``, which names a folder, is an existing file."""
  if os.path.isfile(out):
    raise SystemExit(f"error: --out {out} is a file; give a folder (new or from an earlier run)")


def run(main) -> None:
  """``absl.app.run(main)``, with backend logs quietened after flag parsing."""

  def main_after_flags(argv):
    quiet_backend_logs(flags.FLAGS.verbosity)
    return main(argv)

  app.run(main_after_flags)
