r"""A contact sheet and a browsable index.html for an atlas folder.

  python scripts/make_gallery.py --out=atlas

Writes contact_sheet.png and index.html into the folder
(classgen_jax.gallery); open index.html from disk. For a unit atlas
(scripts/generate.py --layer), a sheet and page per layer, and an
index.html that links them.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from classgen_jax import gallery
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "atlas", "The folder scripts/generate.py wrote.")
flags.DEFINE_integer("thumbnail", 128, "Thumbnail side in pixels.")
flags.DEFINE_integer("columns", 10, "Thumbnails per row of the contact sheet.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    pages = gallery.make_galleries(FLAGS.out, thumbnail=FLAGS.thumbnail,
                                   columns=FLAGS.columns)
  except (ValueError, RuntimeError, OSError) as error:
    sys.exit(f"error: {error}")
  for page in pages:
    logging.info("wrote %s", page)


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
