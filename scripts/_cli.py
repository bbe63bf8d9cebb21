"""What the scripts share: flag help that names the choices, quiet backends, ``--out`` checks.

Every script ends with ``_cli.run(main)`` instead of ``absl.app.run(main)``,
so that the logging set-up below happens once flags are parsed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import socket
import sys
import threading
import warnings
from pathlib import Path

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


def enable_compilation_cache() -> str | None:
  """Keep compiled programs across runs: JAX's persistent compilation cache
  under the weights cache folder (``$CLASSGEN_JAX_CACHE/xla``...), unless
  ``CLASSGEN_JAX_XLA_CACHE=0`` or JAX's own ``JAX_COMPILATION_CACHE_DIR`` is
  set. A rerun of the same job skips its compiles (tens of seconds on a CPU)."""
  import jax

  from classgen_jax.weights import cache_dir
  if os.environ.get("CLASSGEN_JAX_XLA_CACHE") == "0":
    return None
  folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_dir() / "xla")
  jax.config.update("jax_compilation_cache_dir", folder)
  # Every octave is worth keeping; the default (1 s) would skip small ones.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if not getattr(warnings.showwarning, "classgen_jax_cache", False):
    warnings.showwarning = cache_warnings_in_one_line(folder, warnings.showwarning)
  return folder


_CACHE_WARNING = re.compile(
    r"Error (writing|reading) persistent compilation cache entry for '[^']*': (.*)", re.S)


def cache_warnings_in_one_line(folder: str, show):
  """A ``warnings.showwarning`` that passes every warning to ``show`` but
  JAX's about cache entries it cannot write (a full disk, a read-only
  folder), one per program and each with a long path: of those, one line.
  The run goes on; only the next run's compiles are lost."""
  said = set()

  def showwarning(message, category, filename, lineno, file=None, line=None):
    match = _CACHE_WARNING.match(str(message))
    if match is None:
      return show(message, category, filename, lineno, file, line)
    if match.group(1) not in said:
      said.add(match.group(1))
      reason = match.group(2).splitlines()[0].split(": '")[0][:160]
      logging.warning("the compile cache in %s is not being %s (%s); the run goes on, and "
                      "its programs will be compiled again next time", folder,
                      "written" if match.group(1) == "writing" else "read", reason)
    return None

  showwarning.classgen_jax_cache = True
  return showwarning


def run(main) -> None:
  """``absl.app.run(main)``, with backend logs quietened after flag parsing and
  the persistent compilation cache on."""

  def main_after_flags(argv):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # after scripts._startup
    sys.unraisablehook = interrupt_again(sys.unraisablehook)
    quiet_backend_logs(flags.FLAGS.verbosity)
    enable_compilation_cache()
    try:
      return main(argv)
    except KeyboardInterrupt:  # before the script's own handling began: nothing written
      stop(f"interrupted, no partial files; rerun to resume: {resume_command()}")

  app.run(main_after_flags)


# ----------------------------------------------------------------------------
# Ctrl-C: one line, exit status 130, no traceback, within a second or two.


def resume_command() -> str:
  """The command line that ran this script: rerunning it resumes."""
  return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def stop(message: str) -> None:
  """Print ``message`` and end the process now with status 130 (SIGINT's).

  ``os._exit``: a computation still running on the device would otherwise
  hold the interpreter's shutdown until it ends.
  """
  prefix = "\n" if sys.stderr.isatty() else ""
  sys.stderr.write(f"{prefix}{message}\n")
  sys.stderr.flush()
  sys.stdout.flush()
  os._exit(130)


def interrupt_again(hook):
  """A ``sys.unraisablehook`` that passes everything to ``hook`` but a
  KeyboardInterrupt raised where Python cannot let it propagate (a gc
  callback, such as the one where JAX frees buffers, or a finalizer): that
  would be printed as "Exception ignored in ..." with a traceback, and the
  Ctrl-C lost; instead the Ctrl-C is delivered again a moment later."""

  def unraisable(info):
    if isinstance(info.exc_value, KeyboardInterrupt):
      threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
      return
    hook(info)

  return unraisable


def completed_rows(out: str) -> int:
  """Images a run folder's summary lists (its PNGs are complete), with its
  layers' folders' (a unit atlas's) and the summary parts of a job's shares."""
  from classgen_jax import folders  # pylint: disable=g-import-not-at-top
  total = 0
  for folder in [out, *(entry.path for entry in _subfolders(out))]:
    try:
      parts = [None, *(int(p.name[9:-6]) for p in Path(folder).glob("summary.p*.jsonl")
                       if p.name[9:-6].isdigit())]
      total += len({r.get("file") for part in parts for r in folders.read_summary(folder, part)})
    except (OSError, ValueError, AttributeError):
      pass
  return total


def _subfolders(out: str) -> list[os.DirEntry]:
  try:
    return [entry for entry in os.scandir(out) if entry.is_dir()]
  except OSError:
    return []


@contextlib.contextmanager
def interruptible(out: str, writing: contextlib.AbstractContextManager):
  """Ends the process within about two seconds of a Ctrl-C, with one line.

  The main thread handles a Ctrl-C itself whenever it is in Python (it waits
  for the device in a polling loop). While it is inside a long call that
  cannot be interrupted (XLA compiling an octave), a watchdog thread, woken
  by the signal through ``signal.set_wakeup_fd``, waits for ``writing`` (no
  file half-written) and ends the process.

  Yields:
    An event the main thread sets once it has taken the interrupt.
  """
  receive, send = socket.socketpair()
  send.setblocking(False)
  handled = threading.Event()
  previous = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)

  def watchdog():
    while True:
      data = receive.recv(16)
      if not data:
        return
      if signal.SIGINT in data and not handled.wait(1.5):
        with writing:
          stop(f"interrupted: {completed_rows(out)} images complete in {out}, no partial "
               f"files; resume with: {resume_command()}")

  threading.Thread(target=watchdog, daemon=True).start()
  try:
    yield handled
  finally:
    signal.set_wakeup_fd(previous)
    send.close()
    receive.close()
