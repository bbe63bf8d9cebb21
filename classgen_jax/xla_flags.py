"""XLA:CPU settings the library needs, made before JAX starts its backends.

XLA:CPU runs an FFT (``FftThunk``, DUCC's transforms) on whichever thread
reaches it, and hands DUCC its intra-op thread pool: called from the
caller's thread DUCC splits a large transform (32768+ elements: a 400 px
canvas's Fourier image) over the pool's threads, called from a pool thread
it runs it alone. The two schedules round differently in the last bit, so
the same compiled program on the same input gave two or three different
results across calls and processes (jaxlib 0.10.2), which an ascent at
Adam's step 1.0 amplifies to another image (``maco_reference``, 512 px).
A pool thread fanning its FFT out into the pool it runs on can also wedge
the pool when every worker does so at once (reported against jaxlib 0.11).

``--xla_cpu_multi_thread_eigen=false`` runs the FFT inline, one thread, on
every schedule. XLA:CPU's convolutions and products run in YNNPACK's
kernels, which keep their threads, so the steps' speed did not move
(docs/benchmarks.md); only XLA's few remaining Eigen convolutions run on
one thread. Other backends ignore the flag.
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_multi_thread_eigen=false"
_NAME = FLAG[2:].split("=")[0]


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # a JAX without it: assume not
    return False


def set_flags() -> None:
  """Adds ``FLAG`` to ``XLA_FLAGS`` unless the user's ``XLA_FLAGS`` already
  sets it (either way: theirs is kept). Run when this module is imported,
  first of the package. Warns when JAX's backends had already started,
  since the flag is read at their start."""
  flags = os.environ.get("XLA_FLAGS", "")
  if _NAME in flags:
    return
  if _backends_started():
    warnings.warn(
        "classgen_jax was imported after JAX started its backends, so XLA:CPU's FFTs may "
        "round differently from call to call (Fourier images over 256 px); import "
        f"classgen_jax first, or set XLA_FLAGS={FLAG}", RuntimeWarning, stacklevel=3)
    return
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()


set_flags()
