"""An octave's iterations as one compiled scan of ``step.make_step``.

``compiled(plan, length)`` is the jit-compiled program that runs ``length``
iterations of an octave from a ``step.State``: all of them at once (the
default), or a chunk at a time so that the host can report progress and
stop between chunks. Chunks of one length share one program; when the
octave's length is not a multiple of it, the iterations past its end are
skipped inside the program (``lax.cond``), so the last chunk needs no
program of its own. The canvas buffer is donated: each call writes its
result in place of its input.

>>> plans = step.plan(classifier, recipe)              # doctest: +SKIP
>>> state = step.init_state(plans[0], canvas)          # doctest: +SKIP
>>> run = octave.compiled(plans[0])                     # doctest: +SKIP
>>> state, trace, snapshots = run(classifier, state, targets, keys)  # doctest: +SKIP
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from classgen_jax import step as step_lib
from classgen_jax._classifier import Classifier


def chunk_length(plan: step_lib.Plan, target: int | None) -> int:
  """The iterations per call for about ``target`` per chunk (None: all of
  them); shorter than the octave, a multiple of the snapshot interval."""
  n, every = plan.octave.iterations, plan.snapshot_every
  if target is None or target >= n:
    return n
  length = max(1, target)
  return every * -(-length // every) if every else length


def run(plan: step_lib.Plan, length: int, classifier: Classifier, state: step_lib.State,
        targets: jax.Array, keys: jax.Array):
  """``length`` iterations of the octave from ``state``.

  Returns:
    ``(state, trace, snapshots)``: ``trace`` a ``metrics.Trace`` of
    ``(length, N)`` arrays (rows past the octave's end are zeros); with
    ``plan.snapshot_every``, ``snapshots`` is ``(images, logits)`` of
    ``(length // every, N, ...)``: the canvas buffer before each
    ``every``-th iteration, and the main head's logits for the image it
    holds (at its side then, not the step's jittered, cropped or resized
    view); else None.
  """
  step = step_lib.make_step(plan, classifier, targets, keys)
  n = plan.octave.iterations
  if n % length == 0:
    body = step
  else:
    skipped = jax.eval_shape(step, state)[1]

    def body(state):
      zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), skipped)
      return lax.cond(state.iteration < n, step, lambda s: (s, zeros), state)

  def scan_step(state, _):
    state, record = body(state)
    return state, record

  every = plan.snapshot_every
  if not every:
    state, records = lax.scan(scan_step, state, None, length=length)
    return state, records.trace, None

  def logits_at(side, buffer):
    image = buffer[:, :side, :side].astype(classifier.dtype)
    return classifier(image, heads=("logits",))["logits"].astype(jnp.float32)

  def frame(state, _):
    image = step_lib.canvas_images(plan, state.canvas)
    if len(plan.sides) > 1:
      from_index = plan.octave.resize.indices(state.iteration, n)[0]
      branches = [functools.partial(logits_at, side) for side in plan.sides]
      logits = lax.switch(from_index, branches, image)
    else:
      logits = logits_at(plan.sides[0], image)
    state, records = lax.scan(scan_step, state, None, length=every)
    return state, (records.trace, image, logits)

  frames = length // every
  state, (traces, images, logits) = lax.scan(frame, state, None, length=frames)
  trace = jax.tree_util.tree_map(lambda r: r.reshape(frames * every, *r.shape[2:]), traces)
  if length % every:
    state, tail = lax.scan(scan_step, state, None, length=length % every)
    trace = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), trace, tail.trace)
  return state, trace, (images, logits)


def compiled(plan: step_lib.Plan, length: int | None = None):
  """The jitted ``run`` of ``length`` iterations (default: the whole octave).

  Returns:
    ``fn(classifier, state, targets, keys) -> (state, trace, snapshots)``;
    the state's buffers are donated. Equal plans share one program, and a
    second call with the same shapes reuses it.
  """
  return _compiled(plan, plan.octave.iterations if length is None else length)


@functools.lru_cache(maxsize=64)
def _compiled(plan: step_lib.Plan, length: int):
  return jax.jit(functools.partial(run, plan, length), donate_argnums=(1,))
