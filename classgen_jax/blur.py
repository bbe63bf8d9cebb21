"""Gaussian blur (``torchvision.transforms.functional.gaussian_blur``).

The article's smoothing prior and the octaves' blur, behind the
``operations.Blur`` value: a blur of the whole image with a sigma that may
follow a traced per-step schedule, and a blur of one region, the crop that a
step has just updated. The data contract is that of ``transforms``: one
``(h, w, c)`` float image in [0, 1], the same result eager, under ``jax.jit``
and under ``jax.vmap``. The torch twins are in
``converters/reference/transforms.py``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax import lax

from classgen_jax.transforms import Size, crop, paste


def gaussian_kernel(kernel_size: int, sigma: float | jax.Array, *,
                    dtype=jnp.float32) -> jax.Array:
  """torchvision's normalised 1-D Gaussian kernel.

  Args:
    kernel_size: odd, static.
    sigma: standard deviation; may be traced (a per-step schedule).
    dtype: dtype of the kernel.

  Returns:
    ``(kernel_size,)`` weights summing to 1; the 2-D kernel is their outer
    product, as in torchvision.
  """
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
  # Same expression order as torchvision, so float64 kernels agree to 1 ulp.
  x = jnp.arange(kernel_size, dtype=dtype) - (kernel_size - 1) * 0.5
  pdf = jnp.exp(-0.5 * (x / jnp.asarray(sigma, dtype)) ** 2)
  return pdf / jnp.sum(pdf)


def gaussian_blur(image: jax.Array, *, sigma: float | jax.Array,
                  kernel_size: int = 3) -> jax.Array:
  """Gaussian blur with torchvision's kernel and reflect padding.

  Matches ``torchvision.transforms.functional.gaussian_blur(x, kernel_size,
  sigma)``; the article calls it with ``kernel_size=3`` and torchvision's
  default sigma, ``0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8`` = 0.8 (the
  octave recipes: a schedule). Computed separably, as two depthwise 1-D
  passes; each pass is a sum of ``kernel_size`` shifted slices, which XLA
  fuses and which keeps float64 exact. Its gradient is the same blur of the
  cotangent, zero-padded, with the reflected border folded back
  (``_separable_blur``): autodiff's would pad every shifted slice's
  cotangent to the full size and add them up, ``2 * kernel_size`` arrays of
  the image's size (a quarter of a ``Glance`` view's step on the CPU).

  Args:
    image: ``(h, w, c)`` with ``h, w > kernel_size // 2``.
    sigma: standard deviation; may be traced.
    kernel_size: odd, static.

  Returns:
    The blurred ``(h, w, c)`` image.
  """
  chex.assert_rank(image, 3)
  return _separable_blur(image, gaussian_kernel(kernel_size, sigma, dtype=image.dtype))


def _correlate(x: jax.Array, kernel: jax.Array, axis: int) -> jax.Array:
  """``x`` correlated with ``kernel`` along ``axis``, valid positions only:
  ``out[i] = sum_k kernel[k] * x[i + k]``, added in the order of ``k``."""
  size = x.shape[axis] - kernel.shape[0] + 1
  return sum(kernel[k] * lax.slice_in_dim(x, k, k + size, axis=axis)
             for k in range(kernel.shape[0]))


def _reflect_pad(image: jax.Array, half: int) -> jax.Array:
  # 'reflect' excludes the edge pixel, like torch's reflect padding.
  return jnp.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")


@jax.custom_vjp
def _separable_blur(image: jax.Array, kernel: jax.Array) -> jax.Array:
  """``image`` reflect-padded and correlated with ``kernel`` down, then across."""
  rows = _correlate(_reflect_pad(image, kernel.shape[0] // 2), kernel, 0)
  return _correlate(rows, kernel, 1)


def _separable_blur_fwd(image, kernel):
  return _separable_blur(image, kernel), (image, kernel)


def _separable_blur_bwd(residuals, g):
  image, kernel = residuals
  size = kernel.shape[0]
  # A valid correlation's transpose is the full correlation with the
  # reversed kernel: the cotangent padded with zeros by size - 1.
  def back(x, axis):
    pads = [(0, 0)] * x.ndim
    pads[axis] = (size - 1, size - 1)
    return _correlate(jnp.pad(x, pads), kernel[::-1], axis)
  g_rows = back(g, 1)
  g_padded = back(g_rows, 0)
  unpad = jax.linear_transpose(lambda x: _reflect_pad(x, size // 2),
                               jax.ShapeDtypeStruct(image.shape, image.dtype))
  (g_image,) = unpad(g_padded)
  # The kernel's cotangent (a traced sigma's gradient); XLA drops it when
  # nothing asks for it, as when only the image is differentiated.
  padded = _reflect_pad(image, size // 2)
  rows = _correlate(padded, kernel, 0)
  height, width = image.shape[:2]
  g_kernel = jnp.stack([
      jnp.sum(g * lax.slice_in_dim(rows, k, k + width, axis=1))
      + jnp.sum(g_rows * lax.slice_in_dim(padded, k, k + height, axis=0))
      for k in range(size)])
  return g_image, g_kernel


_separable_blur.defvjp(_separable_blur_fwd, _separable_blur_bwd)


def gaussian_blur_region(image: jax.Array, offset: jax.Array, *, size: Size,
                         sigma: float | jax.Array, kernel_size: int = 3,
                         context: bool = False) -> jax.Array:
  """Blurs only a rectangular region (the updated crop), leaving the rest.

  The article's fix for the grey border of cropped octaves: blur only the
  part of the canvas that the step updated, so the untouched border is not
  blurred again and again without any gradient to restore it.

  At the region's border there are two choices:

  * ``context=False`` (default, the article's code): the crop is blurred as
    an image of its own, i.e. torchvision's ``gaussian_blur`` on the crop
    tensor, with reflect padding *inside* the crop.
  * ``context=True``: the region's pixels are those of a blur of the whole
    image (reflect padding only at the image's own border), so the region's
    edge mixes in its neighbours outside and leaves no seam.

  Args:
    image: ``(h, w, c)`` canvas.
    offset: ``(top, left)`` int array of the region, may be traced; like
      ``lax.dynamic_slice``, it is clamped so that the region fits.
    size: static ``(height, width)`` of the region, or an int for a square.
    sigma: standard deviation; may be traced.
    kernel_size: odd, static.
    context: the border semantics above.

  Returns:
    The canvas with the region blurred.
  """
  chex.assert_rank(image, 3)
  if context:
    region = crop(gaussian_blur(image, sigma=sigma, kernel_size=kernel_size),
                  offset, size=size)
  else:
    region = gaussian_blur(crop(image, offset, size=size), sigma=sigma,
                           kernel_size=kernel_size)
  return paste(image, region, offset)
