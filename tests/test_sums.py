"""Batch-independent sums: the pairwise tree equals the plain sum to
rounding, does not change with the batch, and its mean's gradient is the
mean's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax._sums import mean_like, pairwise_mean, pairwise_sum


def test_pairwise_sum_is_the_sum_over_any_axes():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 7, 5, 2)))
  summed = jax.jit(pairwise_sum, static_argnums=1)  # (eager, every op compiles)
  for axes in [(1,), (1, 2), (1, 2, 3), (-1,), (0, 2)]:
    np.testing.assert_allclose(summed(x, axes), jnp.sum(x, axis=axes), rtol=1e-5,
                               atol=1e-5)
  mean = jax.jit(pairwise_mean, static_argnums=1)
  np.testing.assert_allclose(mean(x, (1, 2)), jnp.mean(x, axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_an_image_sums_the_same_bits_whatever_its_batch():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((9, 33, 31, 3)), jnp.float32)
  summed = jax.jit(lambda x: pairwise_sum(x, (1, 2, 3)))
  whole = np.asarray(summed(x))
  for i in (0, 4, 8):
    assert np.asarray(summed(x[i:i + 1]))[0] == whole[i]


def test_mean_like_broadcasts_and_differentiates_as_the_mean():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 6, 4)))
  np.testing.assert_allclose(mean_like(x, (1, 2)), jnp.broadcast_to(
      jnp.mean(x, axis=(1, 2), keepdims=True), x.shape), rtol=1e-6)
  weights = jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)
  ours = jax.grad(lambda x: jnp.sum(weights * mean_like(x, (1, 2))))(x)
  plain = jax.grad(lambda x: jnp.sum(weights * jnp.mean(x, axis=(1, 2), keepdims=True)))(x)
  np.testing.assert_allclose(ours, plain, rtol=1e-5)


def _tree(values: np.ndarray) -> np.float32:
  """The documented association, in numpy: first half plus second, level by
  level, an odd one out carried over."""
  while values.size > 1:
    half = values.size // 2
    values = np.concatenate([values[:half] + values[half:2 * half], values[2 * half:]])
  return values[0]


def test_pairwise_sum_adds_in_its_documented_order_bit_for_bit():
  """XLA must neither merge the levels into one reduction (its own order)
  nor reassociate them: the result is the numpy tree's to the last bit, for
  even, odd and prime counts."""
  rng = np.random.default_rng(3)
  summed = jax.jit(pairwise_sum, static_argnums=1)
  for count in (2, 37, 1000, 1280):
    x = (rng.standard_normal((3, count)) * 10 ** rng.uniform(-3, 3, (3, count))).astype(np.float32)
    ours = np.asarray(summed(jnp.asarray(x), (1,)))
    np.testing.assert_array_equal(ours, [_tree(row) for row in x])
