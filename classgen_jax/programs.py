"""The compiled octave programs, one cache for the process.

An octave's program (``octave.run`` of one plan and chunk length, jitted
with the state donated) depends on a ``Signature``: the plan, the chunk
length, the padded batch size, the canvas dtype, the classifier's abstract
value (architecture, weight shapes and dtypes) and the devices. Equal
signatures share one executable: compiled once per process, by
``compile_all``, which traces a recipe's octaves in turn and compiles the
new ones on threads, each as soon as it is traced (XLA releases the GIL
while compiling and compiles a program on one core, so a three-octave
recipe waits for its slowest octave, not the sum). XLA's persistent cache
(``weights.enable_compile_cache``) keeps them across processes.

Every argument is placed with the sharding the program was compiled for
(``run``): images, keys, targets and every per-image state array split over
the batch mesh, the weights and scalars replicated. A program is always
called as compiled; nothing falls back to tracing again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from classgen_jax import devices
from classgen_jax import octave as octave_lib
from classgen_jax import step as step_lib
from classgen_jax._classifier import Classifier
from classgen_jax.plans import Plan
from classgen_jax.tracking import Tracker


@dataclasses.dataclass(frozen=True)
class Signature:
  """What one compiled octave program depends on (see the module doc)."""
  plan: Plan
  length: int
  batch: int
  dtype: str
  classifier: Any  # the classifier's abstract value: tree structure, shapes, dtypes
  devices: tuple[int, ...]
  x64: bool

  @classmethod
  def of(cls, plan: Plan, length: int, batch: int, classifier: Classifier,
         dtype: Any = jnp.float32) -> Signature:
    """The signature of ``plan``'s program for ``batch`` images (already
    padded to the device count) on the current batch mesh."""
    leaves, structure = jax.tree_util.tree_flatten(classifier)
    abstract = (structure, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves))
    mesh = devices.batch_mesh()
    return cls(plan, length, batch, str(jnp.dtype(dtype)), abstract,
               tuple(d.id for d in mesh.devices.flat), bool(jax.config.jax_enable_x64))


def signatures(classifier: Classifier, plans: Sequence[Plan], batch: int,
               tracker: Tracker) -> list[Signature]:
  """The octaves' signatures for batches of ``batch`` images, chunked as
  ``tracker`` says."""
  padded = padded_batch(batch)
  return [Signature.of(plan, tracker.chunk_length(plan), padded, classifier) for plan in plans]


_CACHE: dict[Signature, Any] = {}
_GUARD = threading.Lock()


def count() -> int:
  """Programs compiled in this process so far."""
  return len(_CACHE)


def clear() -> None:
  """Forgets every compiled program, giving its memory back (the next run
  compiles again, or reads JAX's persistent compile cache)."""
  with _GUARD:
    _CACHE.clear()


def cached(signature: Signature) -> bool:
  """Whether ``signature``'s program is compiled."""
  return signature in _CACHE


def executable(signature: Signature):
  """``signature``'s compiled program (``compile_all`` compiles it)."""
  return _CACHE[signature]


def _shardings(tree: Any, batch: int, mesh) -> Any:
  """Per leaf: split over the batch when its first axis is the batch, else
  replicated."""
  split, whole = devices.batch_sharding(mesh), devices.replicated(mesh)
  return jax.tree_util.tree_map(
      lambda leaf: split if leaf.ndim and leaf.shape[0] == batch else whole, tree)


def _abstract_arguments(signature: Signature, classifier: Classifier):
  """The program's arguments as shapes with their shardings:
  ``(classifier, state, targets, keys)``."""
  plan, batch = signature.plan, signature.batch
  mesh = devices.batch_mesh()
  split, whole = devices.batch_sharding(mesh), devices.replicated(mesh)
  canvas = jax.ShapeDtypeStruct((batch, plan.buffer, plan.buffer, 3), signature.dtype)
  state = jax.eval_shape(functools.partial(step_lib.init_state, plan), canvas)
  state = jax.tree_util.tree_map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding,
                                                  weak_type=leaf.weak_type),
      state, _shardings(state, batch, mesh))
  weights = jax.tree_util.tree_map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=whole), classifier)
  targets = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=split)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
  keys = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=split)
  return weights, state, targets, keys


def _lower(signature: Signature, classifier: Classifier):
  program = jax.jit(functools.partial(octave_lib.run, signature.plan, signature.length),
                    donate_argnums=(1,))
  return program.lower(*_abstract_arguments(signature, classifier))


def compile_all(classifier: Classifier, signatures: Sequence[Signature],
                tracker: Tracker | None = None, batch: int = 0) -> float:
  """Compiles the programs of ``signatures`` not compiled yet, all at once;
  returns the wall seconds it took (0 when every one was compiled before).

  ``tracker`` hears ``"compiling"`` for each new program (by its plan's
  octave) before, and ``"compiled"`` after, and adds the seconds to its
  compile time; ``batch`` is the images the caller runs (for its reports).
  """
  with _GUARD:
    todo = list(dict.fromkeys(s for s in signatures if s not in _CACHE))
  if not todo:
    return 0.0
  began = time.perf_counter()
  for signature in todo:
    if tracker is not None:
      tracker.compiling(signature.plan.index, batch)
  if len(todo) == 1:
    executables = [_lower(todo[0], classifier).compile()]
  else:
    # Each program compiles on a thread as soon as it is traced (XLA
    # releases the GIL), while the next one is traced: tracing a program
    # takes seconds of Python, compiling it tens of seconds of one core.
    with concurrent.futures.ThreadPoolExecutor(len(todo)) as pool:
      futures = [pool.submit(_lower(signature, classifier).compile) for signature in todo]
      executables = [future.result() for future in futures]
  with _GUARD:
    _CACHE.update(zip(todo, executables))
  seconds = time.perf_counter() - began
  if tracker is not None:
    tracker.add_compile_time(seconds)
    for signature in todo:
      tracker.compiled(signature.plan.index, batch, seconds)
  logging.debug("compiled %d octave programs in %.1f s", len(todo), seconds)
  return seconds


def memory_bytes(signature: Signature) -> int | None:
  """Device memory the compiled program needs per device (XLA's analysis:
  arguments + outputs + temporaries - aliased), or None where the backend
  does not say."""
  try:
    stats = _CACHE[signature].memory_analysis()
  except Exception:  # noqa: BLE001  (a backend without the analysis)
    return None
  if stats is None:
    return None
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def run(signature: Signature, classifier: Classifier, state: step_lib.State,
        targets: jax.Array, keys: jax.Array):
  """Runs ``signature``'s compiled program (returns at once; it computes
  asynchronously): ``(state, trace, snapshots)`` as ``octave.run``. Every
  argument is first placed as the program expects (a no-op when it is)."""
  mesh = devices.batch_mesh()
  batch = signature.batch
  state = jax.device_put(state, _shardings(state, batch, mesh))
  targets, keys = jax.device_put((targets, keys), devices.batch_sharding(mesh))
  classifier = jax.device_put(classifier, devices.replicated(mesh))
  return _CACHE[signature](classifier, state, targets, keys)


def padded_batch(n: int, at_least: int = 0) -> int:
  """The batch a program runs ``n`` images at: ``max(n, at_least)`` rounded
  up to the device count."""
  return devices.padded_size(n, devices.batch_mesh(), at_least)
