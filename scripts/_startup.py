"""Imported first by the long-running scripts: a Ctrl-C while they are still
importing (JAX, the models; a few seconds, before anything is written) ends
with one line and status 130, not Python's traceback. ``_cli.run`` hands
Ctrl-C back to Python once the flags are parsed."""

import os
import signal
import sys


def _interrupted(signum, frame):
  del signum, frame
  sys.stderr.write("interrupted while starting, before anything was written\n")
  sys.stderr.flush()
  os._exit(130)


signal.signal(signal.SIGINT, _interrupted)
