"""Tests of classgen_jax.resize_cycle: the resize within a fixed-shape buffer and the cycle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import resize_cycle
from classgen_jax import transforms as T
from converters.reference import transforms as TT

# Before tests.image_cases is imported, so that its checks' asserts say what failed.
from tests.image_cases import (
  PARITY_DTYPES,
  H,
  W,
  batched,
  check_eager_jit_vmap_agree,
  check_torch_parity,
  images,
  to_torch,
)

# A scaled-down resilience cycle: start size (the H x W canvas), then the
# square sizes of the cycle.
SIZES = ((H, W), 16, 12, 10, 13, 14)
STOP = 8
# The article's resilience cycle: step i < 76 resizes to ARTICLE_CYCLE[i % 5].
ARTICLE_CYCLE = (256, 198, 160, 180, 200)
ARTICLE_STOP = 76


# ---------------------------------------------------------------------------
# The resize within a fixed-shape buffer: eager == jit == vmap.

CASES = {
    "resize_within": lambda k, x: resize_cycle.resize_within(
        resize_cycle.embed(x[:16, :16], shape=(H, W)), 1, 4, sizes=SIZES,
        method="nearest"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_jit_vmap_agree(name):
  check_eager_jit_vmap_agree(CASES[name])


# ---------------------------------------------------------------------------
# Parity with torch, float64 (tight) and float32 (realistic).


def _parity_cyclic_chain(dtype, method):
  """The article's resize loop, fixed-shape JAX vs torch's interpolate."""
  x = images(dtype)
  steps = STOP + 3

  def run(image):
    def step(buffer, i):
      from_index, to_index = resize_cycle.cyclic_size_indices(i, num_sizes=5, stop=STOP)
      buffer = resize_cycle.resize_within(buffer, from_index, to_index, sizes=SIZES,
                                          method=method)
      # Something in between, as the gradient step would be; resize_within
      # reads only the image's corner, so it may touch the whole buffer.
      return buffer * 0.9 + 0.05, None

    buffer, _ = jax.lax.scan(step, resize_cycle.embed(image, shape=(H, W)),
                             jnp.arange(steps))
    last = SIZES[1 + (STOP - 1) % 5]
    return buffer[:last, :last]

  jax_out = batched(run)(jnp.asarray(x))
  ref = to_torch(x)
  for i in range(steps):
    if i < STOP:
      ref = TT.resize(ref, SIZES[1 + i % 5], method=method)
    ref = ref * 0.9 + 0.05
  return jax_out, ref


PARITY = {
    "cyclic_chain_nearest": lambda d: _parity_cyclic_chain(d, "nearest"),
    "cyclic_chain_bilinear": lambda d: _parity_cyclic_chain(d, "bilinear"),
}


@PARITY_DTYPES
@pytest.mark.parametrize("name", sorted(PARITY))
def test_torch_parity(name, dtype, request):
  check_torch_parity(PARITY[name], dtype, request)


# ---------------------------------------------------------------------------
# Behaviour.


def test_cyclic_size_indices_follow_the_article():
  sizes = (299, *ARTICLE_CYCLE)
  current = 299
  for step in range(100):
    from_index, to_index = resize_cycle.cyclic_size_indices(step, num_sizes=5,
                                                            stop=ARTICLE_STOP)
    assert sizes[int(from_index)] == current
    if step < ARTICLE_STOP:  # the article: interpolate(x, sizes[i % 5]) for i < 76
      expected = ARTICLE_CYCLE[step % 5]
    else:
      expected = current
    assert sizes[int(to_index)] == expected, step
    current = expected
  assert current == 256


def test_resize_within_matches_plain_resize_and_zeroes_the_rest():
  image = jnp.asarray(images()[0][:16, :16])
  buffer = resize_cycle.embed(image, shape=(H, W))
  out = resize_cycle.resize_within(buffer, 1, 3, sizes=SIZES, method="bilinear")
  # Compiled inside a switch, XLA may fuse multiply-adds: equal to rounding.
  np.testing.assert_allclose(out[:10, :10], T.resize(image, 10), atol=1e-6)
  assert float(jnp.abs(out[10:]).max()) == 0.0
  assert float(jnp.abs(out[:, 10:]).max()) == 0.0
