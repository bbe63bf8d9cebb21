"""The compiled octave programs, one cache for the process.

An octave's program (``octave.run`` of one plan and chunk length, jitted
with the state donated) depends on a ``Signature``: the plan, the chunk
length, the padded batch size, the canvas dtype, the classifier's abstract
value (architecture, weight shapes and dtypes) and the devices. Equal
signatures share one executable: compiled once per process, by
``compile_all``, which traces a recipe's octaves in turn and compiles the
new ones on threads, each as soon as it is traced (XLA releases the GIL
while compiling). A run asks only for its first octave's program to wait
on (``compile_all(..., first=1)``): the later octaves' programs compile
behind it, one after another, while the first octave runs, and ``wait``
(called as each octave starts) takes whatever of their compile is left. XLA's
persistent cache (``weights.enable_compile_cache``) keeps them across
processes.

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
# Programs compiling behind a run (``compile_all(..., first=k)``): futures of
# ``(executable, seconds its compile took)``.
_PENDING: dict[Signature, concurrent.futures.Future] = {}
_GUARD = threading.Lock()


def count() -> int:
  """Programs compiled, or compiling, in this process so far."""
  with _GUARD:
    return len(_CACHE) + len(_PENDING)


def clear() -> None:
  """Forgets every compiled program, giving its memory back (the next run
  compiles again, or reads JAX's persistent compile cache); waits for those
  still compiling first."""
  with _GUARD:
    pending = list(_PENDING.values())
  concurrent.futures.wait(pending)
  with _GUARD:
    _CACHE.clear()
    _PENDING.clear()


def cached(signature: Signature) -> bool:
  """Whether ``signature``'s program is compiled."""
  return signature in _CACHE


def executable(signature: Signature):
  """``signature``'s compiled program (``compile_all`` compiles it; one still
  compiling behind a run is waited for, and left for ``wait`` to report)."""
  compiled = _CACHE.get(signature)
  if compiled is None:
    with _GUARD:
      future = _PENDING.get(signature)
    if future is None:
      raise KeyError(f"no program compiled for {signature.plan.octave} at batch "
                     f"{signature.batch}: compile_all first")
    compiled = future.result()[0]
  return compiled


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
                tracker: Tracker | None = None, batch: int = 0, *,
                first: int | None = None) -> float:
  """Compiles the programs of ``signatures`` not compiled yet; returns the
  wall seconds it waited (0 when every one was compiled before).

  ``first``: wait only for the first ``first`` new programs (None: all);
  the others compile behind, each after the one before it, so that the
  first octave runs while the later ones compile, and ``wait`` takes what
  is left of each when its octave starts.

  ``tracker`` hears ``"compiling"`` for each new program (by its plan's
  octave) before, and ``"compiled"`` after (those compiled behind: when
  ``wait`` finds them), and adds the seconds waited to its compile time;
  ``batch`` is the images the caller runs (for its reports).
  """
  with _GUARD:
    todo = list(dict.fromkeys(s for s in signatures if s not in _CACHE and s not in _PENDING))
  if not todo:
    return 0.0
  began = time.perf_counter()
  for signature in todo:
    if tracker is not None:
      tracker.compiling(signature.plan.index, batch)
  now, behind = (todo, []) if first is None else (todo[:first], todo[first:])
  if len(todo) == 1 and now:
    executables = [_lower(now[0], classifier).compile()]
  else:
    # Each program compiles on a thread as soon as it is traced (XLA
    # releases the GIL), while the next one is traced: tracing a program
    # takes seconds of Python, compiling it tens of seconds.
    with concurrent.futures.ThreadPoolExecutor(max(1, len(now))) as pool:
      futures = [pool.submit(_lower(signature, classifier).compile) for signature in now]
      lowered = [_lower(signature, classifier) for signature in behind]
      executables = [future.result() for future in futures]
    _compile_behind(behind, lowered)
  with _GUARD:
    _CACHE.update(zip(now, executables))
  seconds = time.perf_counter() - began
  if tracker is not None:
    tracker.add_compile_time(seconds)
    for signature in now:
      tracker.compiled(signature.plan.index, batch, seconds)
  logging.debug("compiled %d octave programs in %.1f s (%d more behind)", len(now), seconds,
                len(todo) - len(now))
  return seconds


def _compile_behind(signatures: Sequence[Signature], lowered: Sequence[Any]) -> None:
  """Compiles ``lowered`` (traced programs) one after another on a thread
  (not a daemon: the interpreter's exit waits for it rather than tear XLA
  down under it; the scripts' Ctrl-C ends the process at once)."""
  if not signatures:
    return
  futures = [concurrent.futures.Future() for _ in signatures]
  with _GUARD:
    for signature, future in zip(signatures, futures):
      _PENDING[signature] = future

  def compile_in_turn():
    for program, future in zip(lowered, futures):
      if future.set_running_or_notify_cancel():
        began = time.perf_counter()
        try:
          future.set_result((program.compile(), time.perf_counter() - began))
        except BaseException as error:  # noqa: BLE001  (given to whoever waits)
          future.set_exception(error)

  threading.Thread(target=compile_in_turn, name="classgen_jax-compile").start()


def _wait_pending(signature: Signature) -> tuple[float, float] | None:
  """Waits for a program compiling behind a run, moves it to the cache and
  returns ``(seconds waited, seconds its compile took)``; None when none is
  pending. A compile that failed raises here, and is forgotten (the next
  call compiles again)."""
  with _GUARD:
    future = _PENDING.get(signature)
  if future is None:
    return None
  waited = time.perf_counter()
  try:
    compiled, seconds = future.result()
  except BaseException:
    with _GUARD:
      _PENDING.pop(signature, None)
    raise
  waited = time.perf_counter() - waited
  with _GUARD:
    _CACHE[signature] = compiled
    _PENDING.pop(signature, None)
  return waited, seconds


def wait(classifier: Classifier, signature: Signature, tracker: Tracker | None = None,
         batch: int = 0) -> float:
  """Makes sure ``signature``'s program is compiled before its octave runs:
  waits for it if it is compiling behind a run (the tracker hears
  ``"compiled"`` with the seconds its compile took, and its compile time
  grows by the seconds waited), compiles it if nobody has. Returns the
  seconds waited."""
  if signature in _CACHE:
    return 0.0
  pending = _wait_pending(signature)
  if pending is None:
    return compile_all(classifier, [signature], tracker, batch)
  waited, seconds = pending
  if tracker is not None:
    tracker.add_compile_time(waited)
    tracker.compiled(signature.plan.index, batch, seconds)
  return waited


def memory_bytes(signature: Signature) -> int | None:
  """Device memory the compiled program needs per device (XLA's analysis:
  arguments + outputs + temporaries - aliased), or None where the backend
  does not say."""
  try:
    stats = executable(signature).memory_analysis()
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
  return executable(signature)(classifier, state, targets, keys)


def padded_batch(n: int, at_least: int = 0) -> int:
  """The batch a program runs ``n`` images at: ``max(n, at_least)`` rounded
  up to the device count."""
  return devices.padded_size(n, devices.batch_mesh(), at_least)
