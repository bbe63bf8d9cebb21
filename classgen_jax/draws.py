"""The random draws of an octave's operations, per image and iteration.

Every operation draws from the image's own key (``operations``), at the side
of the image it applies to: iteration ``i`` of octave ``o`` draws from
``iteration_keys`` (the image key folded with ``o + 1``, then ``i``), and
``random_draws`` replays those draws on the host for the torch reference.
``step`` draws inside the compiled step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax.operations import Operation
from classgen_jax.plans import Plan, input_sides, octave_plans
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import fold_in, image_keys

# Every iteration's key is split into at least this many streams, one per
# random operation (see ``operations``).
_MIN_STREAMS = 5
_FIRST_FREE_STREAM = 5


def streams(operations: tuple[Operation, ...]) -> tuple[int, ...]:
  """The key stream of each operation (see ``operations``' module doc)."""
  taken, free, result = set(), _FIRST_FREE_STREAM, []
  for op in operations:
    fixed = type(op).stream
    if fixed is not None and fixed not in taken:
      taken.add(fixed)
      result.append(fixed)
    else:
      result.append(free)
      free += 1
  return tuple(result)


def octave_keys(plan: Plan, keys: jax.Array) -> jax.Array:
  """The per-image keys of ``plan``'s octave, from the image keys."""
  return fold_in(keys, plan.index + 1)


def iteration_keys(keys_of_octave: jax.Array, iteration) -> jax.Array:
  """The per-image keys of one iteration, from ``octave_keys``."""
  return fold_in(keys_of_octave, iteration)


def draw(octave: Octave, keys: jax.Array, side: int, dtype: Any,
         first_side: int | None = None, *, view_only: bool = False) -> tuple[Any, ...]:
  """Every operation's draw for one iteration, from the per-image step keys.

  Args:
    octave: the octave.
    keys: ``(N,)`` per-image step keys (``iteration_keys``).
    side: the canvas side after the iteration's resize.
    dtype: of the canvas.
    first_side: the side before it, at which the ``before_resize``
      operations draw (default: ``side``).
    view_only: draw only the ``view`` operations (with the streams they
      have among all of them).

  Returns:
    One entry per ``octave.operations`` (or per ``octave.view``): its
    parameters batched over the images (``None`` for operations that draw
    nothing).
  """
  ops = octave.operations
  ids = streams(ops)
  sides = input_sides(octave, side, first_side)
  count = max(_MIN_STREAMS, max(ids, default=0) + 1)
  split = jax.vmap(lambda k: jax.random.split(k, count))(keys)
  first = len(octave.before_resize) + len(octave.before)
  chosen = range(first, first + len(octave.view)) if view_only else range(len(ops))
  return tuple(jax.vmap(lambda k, j=j: ops[j].draw(k, sides[j], dtype))(split[:, ids[j]])
               for j in chosen)


def view_draws(octave: Octave, keys: jax.Array, side: int, dtype: Any) -> tuple[Any, ...]:
  """The view operations' draws of views ``1 .. views - 1`` (view 0 uses
  ``draw``'s): view ``k``'s come from the step keys folded with ``k``."""
  return tuple(draw(octave, fold_in(keys, k), side, dtype, view_only=True)
               for k in range(1, octave.views))


def random_draws(recipe: Recipe, targets: Sequence[int], restarts: Sequence[int], seed: int,
                 dtype: Any = jnp.float32) -> list[list[tuple[Any, ...]]]:
  """Every draw a run of ``recipe`` makes, per octave and iteration, as numpy.

  Each iteration's entry has one item per ``octave.operations``, and with
  ``octave.views > 1`` one more: the other views' draws (``view_draws``).
  The torch reference path replays these, so that both paths see the same
  crops, shifts, flips and colour jitter (``converters/reference/loop.py``).
  """
  keys = image_keys(seed, targets, restarts)
  result = []
  for plan in octave_plans(recipe):
    keys_of_octave = octave_keys(plan, keys)
    draws = []
    for iteration in range(plan.octave.iterations):
      from_index, to_index = plan.size_indices(iteration)
      entry = _iteration_draws(plan.octave, plan.sides[to_index], plan.sides[from_index],
                               jnp.dtype(dtype))(keys_of_octave, iteration)
      draws.append(jax.tree_util.tree_map(np.asarray, entry))
    result.append(draws)
  return result


@functools.lru_cache(maxsize=64)
def _iteration_draws(octave: Octave, side: int, first_side: int, dtype: Any):
  """One iteration's draws, as the step makes them, compiled (replayed per
  iteration, eager dispatch would cost more than the draws)."""
  def draws(keys_of_octave, iteration):
    step_keys = iteration_keys(keys_of_octave, iteration)
    entry = draw(octave, step_keys, side, dtype, first_side=first_side)
    if octave.views > 1:
      entry = (*entry, view_draws(octave, step_keys, side, dtype))
    return entry
  return jax.jit(draws)


__all__ = ["draw", "iteration_keys", "octave_keys", "random_draws", "streams", "view_draws"]
