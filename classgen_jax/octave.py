"""An octave's iterations as one ``lax.scan`` of ``step.make_step``.

``run(plan, length, ...)`` runs ``length`` iterations of an octave from a
``step.State``: all of them (one call), or a chunk at a time so that the
host can report progress and stop between chunks. When the octave's length
is not a multiple of the chunk's, the iterations past its end are skipped
inside the scan (``lax.cond``), so the last chunk runs the same program as
the others. ``programs`` compiles it, once per plan, length and shapes.

>>> plans = plans.plan(classifier, recipe)             # doctest: +SKIP
>>> state = step.init_state(plans[0], canvas)          # doctest: +SKIP
>>> state, trace, snapshots = run(plans[0], 100, classifier, state, targets, keys)  # doctest: +SKIP
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from classgen_jax import step as step_lib
from classgen_jax._classifier import Classifier
from classgen_jax.plans import Plan


def run(plan: Plan, length: int, classifier: Classifier, state: step_lib.State,
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
  # Weight-only work (flipped, transposed kernels) once, outside the loop.
  classifier = classifier.with_gradient_kernels()
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
    return body(state)

  every = plan.snapshot_every
  if not every:
    return (*lax.scan(scan_step, state, None, length=length), None)

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
    state, trace = lax.scan(scan_step, state, None, length=every)
    return state, (trace, image, logits)

  frames = length // every
  state, (traces, images, logits) = lax.scan(frame, state, None, length=frames)
  trace = jax.tree_util.tree_map(lambda r: r.reshape(frames * every, *r.shape[2:]), traces)
  if length % every:
    state, tail = lax.scan(scan_step, state, None, length=length % every)
    trace = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), trace, tail)
  return state, trace, (images, logits)
