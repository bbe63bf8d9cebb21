"""Max-pooling's input gradient (``classgen_jax.models._layers``) against torch.

Max-pooling computes its input gradient without XLA's default rule
(``select_and_scatter``). In float64 it must equal torch's autograd to
~1e-12, including torch's tie-breaking (a window's gradient goes to its
first maximum in row-major order), which only inputs with many equal values
exercise. The convolutions' rules: ``test_convolutions.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from classgen_jax.models import _layers as L

# (height, width), kernel, stride, padding, ceil_mode: every pool the ports
# run (GoogLeNet's ceil-mode pools, ResNet's padded stem pool, Inception's
# floor-mode pools) at even, odd and non-square sides.
POOLS = [
    ((12, 12), 3, 2, 0, True),
    ((13, 11), 3, 2, 0, True),
    ((9, 9), 3, 1, 1, True),
    ((7, 10), 3, 1, 1, True),
    ((8, 8), 2, 2, 0, True),
    ((7, 7), 2, 2, 0, True),
    ((12, 12), 3, 2, 1, False),
    ((11, 12), 3, 2, 1, False),
    ((15, 15), 3, 2, 0, False),
    ((14, 9), 3, 2, 0, False),
]


def _pool_id(case):
  (h, w), k, s, p, ceil = case
  return f"{h}x{w}-k{k}s{s}p{p}{'-ceil' if ceil else ''}"


def _inputs(h, w, rng):
  """A batch of random values, then two with many ties (where torch's
  tie-breaking matters): small integers, and constant blocks among noise."""
  x = rng.standard_normal((3, h, w, 3))
  x[1] = rng.integers(0, 3, (h, w, 3))
  x[2, 1:6, 2:7, :] = 0.5
  x[2, -4:, -5:, ::2] = -1.0
  return x


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


def _torch_pool(x, g, k, s, p, ceil):
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(True)
  y = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil)
  y.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
  return _nhwc(y), _nhwc(xt.grad)


def test_torch_routes_ties_to_the_first_maximum():
  """The rule the custom gradient reproduces, checked on torch itself."""
  x = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
  torch.nn.functional.max_pool2d(x, 3, 1).sum().backward()
  assert x.grad[0, 0, 0, 0] == 1 and x.grad.sum() == 1


@pytest.mark.parametrize("case", POOLS, ids=_pool_id)
def test_max_pool_matches_torch_float64(case, x64):
  (h, w), k, s, p, ceil = case
  rng = np.random.default_rng(0)
  x = _inputs(h, w, rng)

  @jax.jit
  def pool_and_grad(x, g):
    y, vjp = jax.vjp(lambda x: L.max_pool(x, k, s, p, ceil_mode=ceil), x)
    return y, vjp(g)[0]

  out_shape = (3, L.pool_output_size(h, k, s, p, ceil), L.pool_output_size(w, k, s, p, ceil), 3)
  g = rng.standard_normal(out_shape)
  y, grad = pool_and_grad(x, g)
  y_torch, grad_torch = _torch_pool(x, g, k, s, p, ceil)
  np.testing.assert_array_equal(np.asarray(y), y_torch)
  np.testing.assert_allclose(np.asarray(grad), grad_torch, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", POOLS[:3] + POOLS[6:8], ids=_pool_id)
def test_max_pool_forward_is_the_plain_reduce_window(case):
  (h, w), k, s, p, ceil = case
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, h, w, 4)), jnp.float32)
  pads = [L.torch_pool_padding(n, k, s, p, ceil) for n in (h, w)]
  np.testing.assert_array_equal(np.asarray(L.max_pool(x, k, s, p, ceil_mode=ceil)),
                                np.asarray(nn.max_pool(x, (k, k), (s, s), pads)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_gradient_in_low_precision(dtype):
  """Integer-valued inputs are exact in bfloat16, so the routing must be
  torch's exactly; the sums of a few bfloat16 gradients round."""
  rng = np.random.default_rng(2)
  x = rng.integers(0, 4, (2, 13, 12, 8)).astype(np.float32)
  g = rng.integers(-4, 5, (2, 6, 6, 8)).astype(np.float32)
  grad = jax.jit(lambda x, g: jax.vjp(lambda x: L.max_pool(x, 3, 2, ceil_mode=True), x)[1](g)[0])(
      jnp.asarray(x, dtype), jnp.asarray(g, dtype))
  assert grad.dtype == dtype
  _, grad_torch = _torch_pool(x, g, 3, 2, 0, True)
  np.testing.assert_array_equal(np.asarray(grad, np.float32), grad_torch)


def test_max_pool_gradient_under_jit_and_vmap():
  x = jnp.asarray(np.random.default_rng(3).integers(0, 3, (2, 2, 11, 11, 4)), jnp.float32)

  def loss(x):  # 2x2 windows overlap nothing; the 3x3 ones overlap
    return (L.max_pool(x, 3, 2, ceil_mode=True) ** 2).sum() + L.max_pool(x, 2, 2).sum()

  eager = np.stack([np.asarray(jax.grad(loss)(xi)) for xi in x])
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(jax.grad(loss)))(x)), eager)
  np.testing.assert_array_equal(np.asarray(jax.vmap(jax.jit(jax.grad(loss)))(x)), eager)
