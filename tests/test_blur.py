"""Tests of classgen_jax.blur: eager == jit == vmap, gradients, torch parity, behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import blur
from converters.reference import transforms as TT

# Before tests.image_cases is imported, so that its checks' asserts say what failed.
from tests.image_cases import (
  PARITY_DTYPES,
  H,
  W,
  batched,
  check_eager_jit_vmap_agree,
  check_gradients_flow_through,
  check_torch_parity,
  crop_offsets,
  images,
  keys,
  region_offset,
  to_torch,
)

# ---------------------------------------------------------------------------
# Every blur: eager == jit == vmap.

CASES = {
    "gaussian_blur": lambda k, x: blur.gaussian_blur(
        x, sigma=0.4 + jax.random.uniform(k), kernel_size=3),
    "gaussian_blur_k5": lambda k, x: blur.gaussian_blur(x, sigma=1.7,
                                                        kernel_size=5),
    "blur_region": lambda k, x: blur.gaussian_blur_region(
        x, region_offset(k, x), size=(9, 11), sigma=1.2),
    "blur_region_context": lambda k, x: blur.gaussian_blur_region(
        x, region_offset(k, x), size=(9, 11), sigma=1.2, context=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_jit_vmap_agree(name):
  check_eager_jit_vmap_agree(CASES[name])


@pytest.mark.parametrize("name", ["gaussian_blur", "blur_region"])
def test_gradients_flow_through(name):
  check_gradients_flow_through(CASES[name])


def test_sigma_can_follow_a_schedule_inside_scan():
  image = jnp.asarray(images()[0])
  sigmas = jnp.linspace(2.4, 0.8, 4)

  def step(x, sigma):
    return blur.gaussian_blur(x, sigma=sigma), None

  scanned, _ = jax.lax.scan(step, image, sigmas)
  expected = image
  for sigma in [2.4, 2.4 - 1.6 / 3, 2.4 - 3.2 / 3, 0.8]:
    expected = blur.gaussian_blur(expected, sigma=sigma)
  np.testing.assert_allclose(scanned, expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Parity with the torch twins, float64 (tight) and float32 (realistic).

# torchvision's sigma when none is given, 0.3 * ((k - 1) / 2 - 1) + 0.8: the
# article's blur, a 3x3 kernel.
TORCHVISION_SIGMA_3X3 = 0.8


def _parity_blur(dtype):
  x = images(dtype)
  jax_out = batched(lambda i: blur.gaussian_blur(i, sigma=1.3, kernel_size=5))(
      jnp.asarray(x))
  return jax_out, TT.gaussian_blur(to_torch(x), sigma=1.3, kernel_size=5)


def _parity_blur_default(dtype):
  x = images(dtype)
  jax_out = batched(lambda i: blur.gaussian_blur(i, sigma=TORCHVISION_SIGMA_3X3))(
      jnp.asarray(x))
  # The article's call: torchvision's default sigma for a 3x3 kernel.
  from torchvision.transforms import functional as tvf
  return jax_out, tvf.gaussian_blur(to_torch(x), [3, 3])


def _parity_blur_region(dtype, context):
  x = images(dtype)
  offsets = crop_offsets(keys(2))
  fn = lambda i, o: blur.gaussian_blur_region(i, o, size=(9, 11), sigma=0.9,
                                              context=context)
  jax_out = batched(fn)(jnp.asarray(x), offsets)
  return jax_out, TT.gaussian_blur_region(to_torch(x), np.asarray(offsets),
                                          size=(9, 11), sigma=0.9,
                                          context=context)


PARITY = {
    "gaussian_blur": _parity_blur,
    "gaussian_blur_torchvision_default": _parity_blur_default,
    "blur_region": lambda d: _parity_blur_region(d, False),
    "blur_region_context": lambda d: _parity_blur_region(d, True),
}


@PARITY_DTYPES
@pytest.mark.parametrize("name", sorted(PARITY))
def test_torch_parity(name, dtype, request):
  check_torch_parity(PARITY[name], dtype, request)


@pytest.mark.parametrize("kernel_size", [3, 19])
def test_the_gradient_is_torchs_and_the_sigmas_too(kernel_size, x64):
  """The blur's own backward pass (``_separable_blur``) against torch's
  autograd through torchvision's blur, float64: the image's cotangent, and
  a traced sigma's (per image, under vmap)."""
  x = images(np.float64, shape=(23, 21))[:2]
  weights = np.random.default_rng(1).standard_normal(x.shape)
  sigmas = np.array([1.3, 2.9])

  def ours(x, sigmas):
    out = jax.vmap(lambda i, s: blur.gaussian_blur(i, sigma=s, kernel_size=kernel_size))(
        x, sigmas)
    return jnp.sum(out * weights)
  g_x, g_sigma = jax.jit(jax.grad(ours, (0, 1)))(jnp.asarray(x), jnp.asarray(sigmas))
  import torch
  from torchvision.transforms import functional as tvf
  for i, sigma in enumerate(sigmas):
    image = to_torch(x[i:i + 1]).requires_grad_()
    sigma_t = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    # torchvision's kernel, with a differentiable sigma.
    t = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) * 0.5
    kernel = torch.exp(-0.5 * (t / sigma_t) ** 2)
    kernel = kernel / kernel.sum()
    half = kernel_size // 2
    padded = torch.nn.functional.pad(image, (half,) * 4, mode="reflect")
    k2 = (kernel[:, None] * kernel[None, :]).expand(3, 1, kernel_size, kernel_size)
    out = torch.nn.functional.conv2d(padded, k2, groups=3)
    np.testing.assert_allclose(
        out.detach().permute(0, 2, 3, 1).numpy()[0],
        tvf.gaussian_blur(to_torch(x[i:i + 1]), [kernel_size] * 2, [float(sigma)] * 2)
        .permute(0, 2, 3, 1).numpy()[0], rtol=1e-12, atol=1e-14)
    (out * to_torch(weights[i:i + 1])).sum().backward()
    np.testing.assert_allclose(g_x[i], image.grad.permute(0, 2, 3, 1).numpy()[0],
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_sigma[i], sigma_t.grad.numpy(), rtol=1e-9)


# ---------------------------------------------------------------------------
# Behaviour.


def test_gaussian_kernel_is_torchvision_default_for_3x3():
  kernel = np.asarray(blur.gaussian_kernel(3, TORCHVISION_SIGMA_3X3))
  np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
  # The article's approximation: centre weight about twice the outer ones.
  assert kernel[0] == pytest.approx(kernel[2])
  assert 1.9 < kernel[1] / kernel[0] < 2.2


def test_blur_preserves_constant_and_reduces_variance():
  constant = jnp.full((H, W, 3), 0.37)
  np.testing.assert_allclose(blur.gaussian_blur(constant, sigma=2.0), constant,
                             atol=1e-6)
  noise = jnp.asarray(images()[0])
  blurred = blur.gaussian_blur(noise, sigma=0.8)
  assert float(jnp.var(blurred)) < 0.5 * float(jnp.var(noise))
  np.testing.assert_allclose(jnp.mean(blurred), jnp.mean(noise), atol=0.02)


def test_blur_region_touches_only_the_region():
  image = jnp.asarray(images()[0])
  offset = jnp.array([4, 6])
  for context in (False, True):
    out = np.asarray(blur.gaussian_blur_region(image, offset, size=(9, 11),
                                               sigma=1.0, context=context))
    outside = np.ones((H, W), bool)
    outside[4:13, 6:17] = False
    np.testing.assert_array_equal(out[outside], np.asarray(image)[outside])
    assert not np.allclose(out[4:13, 6:17], np.asarray(image)[4:13, 6:17])
  region_only = blur.gaussian_blur_region(image, offset, size=(9, 11), sigma=1.0)
  np.testing.assert_allclose(
      region_only[4:13, 6:17],
      blur.gaussian_blur(image[4:13, 6:17], sigma=1.0), atol=1e-7)
  with_context = blur.gaussian_blur_region(image, offset, size=(9, 11), sigma=1.0,
                                           context=True)
  # The two semantics differ only at the region's border.
  np.testing.assert_allclose(with_context[5:12, 7:16],
                             region_only[5:12, 7:16], atol=1e-7)
  assert not np.allclose(with_context[4], region_only[4])
