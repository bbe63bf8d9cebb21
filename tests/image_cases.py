"""What the image-transform tests share: images, keys, torch conversion, tolerances, checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from classgen_jax import transforms as T

# Small sizes keep the suite fast; the article's own sizes are checked where
# only index arithmetic is involved.
H, W = 20, 24
BATCH = 3


def images(dtype=np.float32, seed=0, low=0.0, high=1.0, shape=(H, W)):
  rng = np.random.default_rng(seed)
  return rng.uniform(low, high, (BATCH, *shape, 3)).astype(dtype)


def to_torch(batch) -> torch.Tensor:
  return torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).contiguous()


def from_torch(x: torch.Tensor) -> np.ndarray:
  return x.permute(0, 2, 3, 1).numpy()


def keys(seed=0, n=BATCH):
  return jax.random.split(jax.random.key(seed), n)


def region_offset(key, image):
  return T.draw_crop_offset(key, image.shape[:2], size=(9, 11))


# ---------------------------------------------------------------------------
# Every transform: eager == jit == vmap (each test file's ``CASES`` table).

def check_eager_jit_vmap_agree(fn):
  batch, batch_keys = jnp.asarray(images()), keys(1)
  eager = np.stack([np.asarray(fn(k, x)) for k, x in zip(batch_keys, batch)])
  jitted = jax.jit(fn)
  jit_out = np.stack([np.asarray(jitted(k, x))
                      for k, x in zip(batch_keys, batch)])
  # Jitted, as the engine runs it; op-by-op vmap checks the same batching
  # rules at several times the cost.
  vmap_out = np.asarray(jax.jit(jax.vmap(fn))(batch_keys, batch))
  np.testing.assert_allclose(jit_out, eager, rtol=0, atol=1e-6)
  np.testing.assert_allclose(vmap_out, eager, rtol=0, atol=1e-6)


def check_gradients_flow_through(fn):
  # The engine takes the gradient of the objective through these.
  image, key = jnp.asarray(images()[0]), keys(3)[0]
  # numpy's normal: jax.random's would compile anew for every output shape.
  weights = np.random.default_rng(2).standard_normal(
      jax.eval_shape(fn, key, image).shape).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(weights * fn(key, x))))(image)
  assert grad.shape == image.shape
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


# ---------------------------------------------------------------------------
# Parity with the torch twins, float64 (tight) and float32 (realistic): each
# test file's ``PARITY`` table maps a case to a function of the dtype that
# returns the JAX and the torch outputs.

TOLERANCE = {np.float64: 1e-12, np.float32: 2e-6}
PARITY_DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32],
                                        ids=["float64", "float32"])


def batched(fn):
  """``fn`` over the batch, jitted: one compile instead of many op-by-op ones."""
  return jax.jit(jax.vmap(fn))


# Shared by the crop, paste and region parity cases: one compile of the
# (costly) threefry draw per dtype mode, not one per case.
crop_offsets = batched(lambda k: T.draw_crop_offset(k, (H, W), size=(9, 11)))


def check_torch_parity(case, dtype, request):
  if dtype == np.float64:
    request.getfixturevalue("x64")
  jax_out, torch_out = case(dtype)
  jax_out, torch_out = np.asarray(jax_out), from_torch(torch_out)
  assert jax_out.dtype == dtype and torch_out.dtype == dtype
  assert jax_out.shape == torch_out.shape
  np.testing.assert_allclose(jax_out, torch_out, rtol=0,
                             atol=TOLERANCE[dtype])
