"""The model's pass one image at a time, so that an image does not depend
on its batch.

XLA's convolutions round differently for different batch sizes (on the CPU,
by the last bit). A class logit's gradient hardly depends on the forward
pass's rounding, but a prior on the activations (DeepInversion's BatchNorm
statistics) does, and diversity's groups couple images: ``step`` runs such
objectives on one image's views at a time, a loop whose body is the same
whatever the batch.

* ``map_images``: the model's pass in a differentiable loop (an objective
  with groups, whose value couples the images of a group).
* ``values_with_gradients``: without groups each view's value depends on
  that view alone, so the loop takes each image's gradient in its own
  iteration, and the backward pass only scales it by the values'
  cotangents. Differentiated through a loop instead, the forward pass kept
  every layer's residuals for every image in stacked buffers for a second,
  backward loop to read (a seventh of the BatchNorm prior's step on the CPU).
* ``as_one_of_two``: XLA compiles an op on a batch of one differently from
  one on a batch (an axis of one is simplified away, a loop of one unrolled)
  and rounds it differently; one image's step runs on the image and a copy
  of it, as in a batch of two, while the loop runs once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def _joined(tree: Any) -> Any:
  """Each leaf's first two axes (images, then each image's items) as one."""
  return jax.tree_util.tree_map(lambda value: value.reshape(-1, *value.shape[2:]), tree)


def map_images(function: Callable, grouped: Any) -> Any:
  """``lax.map(function, grouped)`` over at least two images (``grouped``'s
  leaves ``(N, items, ...)``), the results' first two axes joined.
  Differentiable."""
  return _joined(lax.map(function, grouped))


def each_image(function: Callable, grouped: Any, count: int) -> Any:
  """``map_images`` of the first ``count`` images, by a loop whose trip
  count XLA cannot see (``count`` may be fewer than ``grouped`` holds:
  ``as_one_of_two``). Not differentiable."""
  first = jax.tree_util.tree_map(lambda x: x[0], grouped)
  size = jax.tree_util.tree_leaves(grouped)[0].shape[0]
  results = jax.tree_util.tree_map(lambda s: jnp.zeros((size, *s.shape), s.dtype),
                                   jax.eval_shape(function, first))

  def body(index, results):
    item = jax.tree_util.tree_map(lambda x: lax.dynamic_index_in_dim(x, index, 0, False),
                                  grouped)
    return jax.tree_util.tree_map(
        lambda out, value: lax.dynamic_update_index_in_dim(out, value, index, 0),
        results, function(item))

  return _joined(lax.fori_loop(0, lax.optimization_barrier(jnp.int32(count)), body, results))


def values_with_gradients(values_and_scores: Callable, view: jax.Array, targets: jax.Array,
                          views: int, count: int) -> tuple[jax.Array, jax.Array]:
  """Per view, ``values_and_scores(views_of_one_image, their_targets)``, one
  image at a time (the first ``count`` of ``view``'s images), each image's
  gradient taken in its own iteration.

  Args:
    values_and_scores: ``(v, t) -> (values, scores)`` for one image's
      ``(views, H, W, 3)`` views and ``(views,)`` targets, each view's value
      depending on that view alone.
    view: ``(N * views, H, W, 3)``, image-major.
    targets: ``(N * views,)``.
    views: views per image.
    count: the images to run (the rest get zeros).

  Returns:
    ``(values, scores)``, ``(N * views,)`` and ``(N * views, K)``,
    differentiable with respect to ``view`` only.
  """
  def one(item):
    one_view, one_targets = item
    values, back, scores = jax.vjp(lambda v: values_and_scores(v, one_targets), one_view,
                                   has_aux=True)
    (gradient,) = back(jnp.ones_like(values))
    return values, scores, gradient

  def run(v):
    return each_image(one, (v.reshape(-1, views, *v.shape[1:]), targets.reshape(-1, views)),
                      count)

  @jax.custom_vjp
  def evaluate(v):
    values, scores, _ = run(v)
    return values, scores

  def forward(v):
    values, scores, gradient = run(v)
    return (values, scores), gradient

  def backward(gradient, cotangents):
    g_values = cotangents[0].astype(gradient.dtype)
    return (g_values.reshape(-1, *(1,) * (gradient.ndim - 1)) * gradient,)

  evaluate.defvjp(forward, backward)
  return evaluate(view)


def as_one_of_two(step_of_two: Callable) -> Callable:
  """One image's ``step(state) -> (state, trace)`` from ``step_of_two``, a
  step made for the image twice (its targets and keys doubled) whose
  per-image loop runs once: the state's per-image arrays (first axis 1) go
  in twice and come back once, and so does the trace."""
  def step(state):
    per_image = jax.tree_util.tree_map(lambda x: x.ndim > 0 and x.shape[0] == 1, state)
    state, trace = step_of_two(jax.tree_util.tree_map(
        lambda x, each: jnp.concatenate([x, x]) if each else x, state, per_image))
    state = jax.tree_util.tree_map(lambda x, each: x[:1] if each else x, state, per_image)
    return state, jax.tree_util.tree_map(lambda x: x[:1], trace)
  return step


__all__ = ["as_one_of_two", "each_image", "map_images", "values_with_gradients"]
