"""Where a batch computes: the device mesh, gathering to the host, precision.

The batch is sharded over every visible device (a 1-D ``Mesh`` with axis
``"batch"``; images, keys and targets ``P("batch")``, weights replicated),
on one device as on many, and across hosts after
``jax.distributed.initialize()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from classgen_jax._classifier import Classifier

_LOCAL = contextvars.ContextVar("process_local", default=False)


@contextlib.contextmanager
def process_local(local: bool = True):
  """Within it (when ``local``), a batch computes on this process's devices
  only and nothing is gathered from other processes: for jobs whose
  processes each make their own share (an atlas on several hosts)."""
  token = _LOCAL.set(local or _LOCAL.get())
  try:
    yield
  finally:
    _LOCAL.reset(token)


def batch_mesh() -> Mesh:
  """A 1-D mesh over every visible device (all hosts', or this process's
  within ``process_local``), axis ``"batch"``."""
  return Mesh(np.asarray(jax.local_devices() if _LOCAL.get() else jax.devices()), ("batch",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their first axis over ``mesh``."""
  return NamedSharding(mesh, P("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
  """Arrays copied to every device of ``mesh``."""
  return NamedSharding(mesh, P())


def padded_size(n: int, mesh: Mesh, at_least: int = 0) -> int:
  """The batch size to run ``n`` images at: ``max(n, at_least)`` rounded up to
  a multiple of the device count."""
  return -(-max(n, at_least) // mesh.size) * mesh.size


def spans_processes() -> bool:
  """Whether a batch computes on several processes' devices (after
  ``jax.distributed.initialize()``, outside ``process_local``)."""
  return jax.process_count() > 1 and not _LOCAL.get()


def to_host(tree):
  """Numpy copies of (possibly sharded, possibly multi-host) arrays."""
  if spans_processes():
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree_util.tree_map(np.asarray, tree)


def wait(array: jax.Array, poll: float = 0.02) -> None:
  """Waits until ``array`` is computed, in a loop that lets signals through.

  ``block_until_ready`` waits inside XLA, where a Ctrl-C is only delivered
  once the computation ends (tens of seconds for a long chunk); polling
  keeps the main thread in Python, so a KeyboardInterrupt lands at once.
  The first polls come sooner (1 ms, doubling up to ``poll``), so a short
  computation is not left waiting for a whole ``poll``.
  """
  pause = min(0.001, poll)
  while not array.is_ready():
    time.sleep(pause)
    pause = min(2 * pause, poll)


def mixed_precision(classifier: Classifier, dtype: Any = jnp.bfloat16) -> Classifier:
  """The classifier computing in ``dtype`` (bfloat16), for ``generate``.

  Weights are cast and the module's ``dtype`` set, so convolutions, BatchNorm
  and dense layers run in ``dtype``. ``generate`` keeps the canvas, the
  objective, the gradient (cast back to float32 where the view enters the
  model) and the update in float32.

  >>> fast = mixed_precision(load_classifier("googlenet"))  # doctest: +SKIP
  >>> generate(fast, "tabby", "octaves")  # doctest: +SKIP

  Args:
    classifier: a float32 ``Classifier``.
    dtype: the compute dtype, normally ``jnp.bfloat16``.

  Returns:
    A ``Classifier`` whose ``dtype`` is ``dtype``.
  """
  module = classifier.module.clone(dtype=dtype)
  return dataclasses.replace(classifier.astype(dtype), module=module)
