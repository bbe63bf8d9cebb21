"""Sums whose rounding does not depend on the batch.

XLA may reduce an ``(N, ...)`` array in an order that depends on ``N`` (it
vectorises across whichever axis suits the shape), so an image's sum could
change in the last bit with its batch mates. ``pairwise_sum`` fixes the
association instead: halves added elementwise, level by level, which no
compiler reorders. The image priors that sum over many values use it, so an
image stays bit-identical whatever batch made it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def pairwise_sum(x: jax.Array, axes: Sequence[int]) -> jax.Array:
  """``jnp.sum(x, axes)`` by a fixed tree of elementwise additions."""
  axes = tuple(a % x.ndim for a in axes)
  keep = [a for a in range(x.ndim) if a not in axes]
  x = jnp.transpose(x, (*keep, *axes))
  x = x.reshape(*x.shape[:len(keep)], -1)
  while x.shape[-1] > 1:
    count = x.shape[-1]
    half = count // 2
    summed = x[..., :half] + x[..., half:2 * half]
    if count % 2:
      summed = jnp.concatenate([summed, x[..., 2 * half:]], axis=-1)
    x = summed
  return x[..., 0]


def pairwise_mean(x: jax.Array, axes: Sequence[int]) -> jax.Array:
  """``jnp.mean(x, axes)`` by ``pairwise_sum``."""
  count = 1
  for a in axes:
    count *= x.shape[a]
  return pairwise_sum(x, axes) / count


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def mean_like(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """``pairwise_mean(x, axes)`` broadcast back to ``x``'s shape.

  Subtracting a plain ``pairwise_mean`` would broadcast it, and the
  gradient of a broadcast is an XLA sum (batch-dependent again); this one's
  gradient is the same pairwise mean of the cotangent (the map is symmetric).
  """
  return _broadcast_mean(x, axes)


def _broadcast_mean(x, axes):
  return jnp.broadcast_to(jnp.expand_dims(pairwise_mean(x, axes), axes), x.shape)


mean_like.defvjp(lambda x, axes: (_broadcast_mean(x, axes), None),
                 lambda axes, _, g: (_broadcast_mean(g, axes),))
