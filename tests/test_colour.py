"""Tests of classgen_jax.colour (colour jitter): eager == jit == vmap, torch parity, behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import colour
from converters.reference import transforms as TT

# Before tests.image_cases is imported, so that its checks' asserts say what failed.
from tests.image_cases import (
  PARITY_DTYPES,
  batched,
  check_eager_jit_vmap_agree,
  check_torch_parity,
  images,
  keys,
  to_torch,
)

# ---------------------------------------------------------------------------
# The colour jitter: eager == jit == vmap.

CASES = {
    "color_jitter": lambda k, x: colour.adjust_color(x, colour.draw_color_jitter(
        k, brightness=0.3, contrast=0.4, saturation=0.5, dtype=x.dtype)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_jit_vmap_agree(name):
  check_eager_jit_vmap_agree(CASES[name])


# ---------------------------------------------------------------------------
# Parity with the torch twin, float64 (tight) and float32 (realistic).


def _parity_color_jitter(dtype):
  # Some values leave [0, 1] after scaling, so the clamps are exercised.
  x = images(dtype)
  params = batched(lambda k: colour.draw_color_jitter(
      k, brightness=0.5, contrast=0.6, saturation=0.7, dtype=dtype))(keys(6))
  jax_out = batched(colour.adjust_color)(jnp.asarray(x), params)
  return jax_out, TT.adjust_color(to_torch(x), np.asarray(params.factors),
                                  np.asarray(params.order))


PARITY = {
    "color_jitter": _parity_color_jitter,
}


@PARITY_DTYPES
@pytest.mark.parametrize("name", sorted(PARITY))
def test_torch_parity(name, dtype, request):
  check_torch_parity(PARITY[name], dtype, request)


# ---------------------------------------------------------------------------
# Behaviour.


def test_color_jitter_zero_strength_is_identity():
  # Out-of-range values too: torchvision skips disabled ops (no clamp).
  image = jnp.asarray(images(low=-0.2, high=1.2)[0])
  params = colour.draw_color_jitter(jax.random.key(0))
  np.testing.assert_array_equal(
      colour.adjust_color(image, params, enabled=(False, False, False)), image)
  np.testing.assert_array_equal(params.factors, 1.0)
  in_range = jnp.asarray(images()[0])
  np.testing.assert_array_equal(colour.adjust_color(in_range, params), in_range)


def test_color_jitter_brightness_scales_and_clamps():
  image = jnp.asarray(images()[0])
  key = jax.random.key(4)
  params = colour.draw_color_jitter(key, brightness=0.5)
  factor = float(params.factors[0])
  assert 0.5 <= factor <= 1.5 and factor != 1.0
  brightness = (True, False, False)
  out = colour.adjust_color(image, params, enabled=brightness)
  np.testing.assert_allclose(out, jnp.clip(factor * image, 0, 1), atol=1e-7)
  # The article's setting moves pixels by at most 1e-4 relative.
  tiny = colour.adjust_color(image, colour.draw_color_jitter(key, brightness=1e-4),
                             enabled=brightness)
  assert 0 < float(jnp.abs(tiny - image).max()) <= 1e-4


def test_color_jitter_factors_and_order():
  params = jax.jit(jax.vmap(lambda k: colour.draw_color_jitter(
      k, brightness=0.2, contrast=1.5, saturation=0.1)))(
          jax.random.split(jax.random.key(0), 300))
  factors = np.asarray(params.factors)
  assert factors[:, 0].min() >= 0.8 and factors[:, 0].max() <= 1.2
  assert factors[:, 1].min() >= 0.0 and factors[:, 1].max() <= 2.5
  orders = {tuple(o) for o in np.asarray(params.order)}
  assert len(orders) == 6  # every permutation is drawn
  fixed = colour.draw_color_jitter(jax.random.key(1), brightness=0.2,
                                   permute=False)
  np.testing.assert_array_equal(fixed.order, [0, 1, 2])


def test_saturation_zero_gives_grayscale():
  image = jnp.asarray(images()[0])
  params = colour.ColorJitterParams(factors=jnp.array([1.0, 1.0, 0.0]),
                                    order=jnp.arange(3))
  out = np.asarray(colour.adjust_color(image, params))
  gray = np.asarray(colour.grayscale(image))
  np.testing.assert_allclose(out, np.broadcast_to(gray, out.shape), atol=1e-6)
