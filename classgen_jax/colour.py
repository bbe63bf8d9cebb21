"""Colour jitter (torchvision's ``ColorJitter``: brightness, contrast, saturation).

The article's ``ColorJitter(1e-4)`` and the ``operations.ColourJitter``
value, as a draw (``draw_color_jitter``: factors and an order from a
``jax.random`` key, so the run is reproducible, which the article's was not)
and an apply (``adjust_color``). The data contract is that of
``transforms``: one ``(h, w, 3)`` float image in [0, 1], the same result
eager, under ``jax.jit`` and under ``jax.vmap``; each enabled op clamps to
[0, 1], as torchvision's does. The torch twin is
``converters/reference/transforms.adjust_color``.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import dm_pix as pix
import jax
import jax.numpy as jnp
from jax import lax


class ColorJitterParams(NamedTuple):
  """The draw of a colour jitter.

  Attributes:
    factors: ``(3,)`` brightness, contrast and saturation factors (1 means
      unchanged).
    order: ``(3,)`` int32 permutation of ``0`` (brightness), ``1``
      (contrast), ``2`` (saturation): the order in which they are applied.
  """
  factors: jax.Array
  order: jax.Array


def grayscale(image: jax.Array) -> jax.Array:
  """torchvision's ``rgb_to_grayscale``, ``(h, w, 3) -> (h, w, 1)``: dm-pix's
  Rec. 601 luma, whose weights are torchvision's (0.2989, 0.587, 0.114)."""
  chex.assert_rank(image, 3)
  chex.assert_axis_dimension(image, 2, 3)
  return pix.rgb_to_grayscale(image)


def _blend(image: jax.Array, other: jax.Array | float,
           ratio: jax.Array) -> jax.Array:
  # torchvision's _blend clamps to [0, 1] for float images, so every enabled
  # colour op is also a clip; the article's ColorJitter(1e-4) is in effect
  # its only clip.
  return jnp.clip(ratio * image + (1.0 - ratio) * other, 0.0, 1.0)


def _adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  return _blend(image, 0.0, factor)


def _adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  return _blend(image, jnp.mean(grayscale(image)), factor)


def _adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
  return _blend(image, grayscale(image), factor)


def _factor_range(strength: float) -> tuple[float, float]:
  if strength < 0:
    raise ValueError(f"colour jitter strength must be >= 0, got {strength}")
  return max(0.0, 1.0 - strength), 1.0 + strength


def draw_color_jitter(key: jax.Array, *, brightness: float = 0.0,
                      contrast: float = 0.0, saturation: float = 0.0,
                      permute: bool = True,
                      dtype=jnp.float32) -> ColorJitterParams:
  """Draws factors and order as torchvision's ``ColorJitter.get_params``.

  Each factor is uniform in ``[max(0, 1 - s), 1 + s]`` for strength ``s``
  (exactly 1 when ``s == 0``). torchvision applies the ops in a random
  permutation; ``permute=True`` draws one too (uniform over the 6 orders of
  the three ops, which is what torchvision's ``randperm(4)`` induces once hue
  is dropped), ``permute=False`` fixes brightness, contrast, saturation.

  Args:
    key: a ``jax.random`` key.
    brightness: strength ``s`` of the brightness factor.
    contrast: strength of the contrast factor.
    saturation: strength of the saturation factor.
    permute: whether the order is drawn.
    dtype: dtype of the factors (that of the image).

  Returns:
    ``ColorJitterParams``.
  """
  order_key, factor_key = jax.random.split(key)
  ranges = [_factor_range(s) for s in (brightness, contrast, saturation)]
  low = jnp.array([r[0] for r in ranges], dtype)
  high = jnp.array([r[1] for r in ranges], dtype)
  factors = jax.random.uniform(factor_key, (3,), dtype, low, high)
  # uniform() can round to just below `low`; exact 1 for disabled ops.
  factors = jnp.where(low == high, low, factors)
  if permute:
    order = jax.random.permutation(order_key, 3).astype(jnp.int32)
  else:
    order = jnp.arange(3, dtype=jnp.int32)
  return ColorJitterParams(factors=factors, order=order)


def adjust_color(image: jax.Array, params: ColorJitterParams, *,
                 enabled: tuple[bool, bool, bool] = (True, True, True)
                 ) -> jax.Array:
  """Applies brightness, contrast and saturation in ``params.order``.

  torchvision semantics for float images: brightness scales, contrast blends
  with the mean of the grayscale image, saturation blends with the grayscale
  image, each clamped to [0, 1].

  Args:
    image: ``(h, w, 3)``.
    params: factors and order, e.g. from ``draw_color_jitter``.
    enabled: static; a disabled op is skipped entirely (no clamp), as
      torchvision skips an op whose strength is 0.

  Returns:
    The adjusted image.
  """
  chex.assert_rank(image, 3)
  chex.assert_axis_dimension(image, 2, 3)
  factors = jnp.asarray(params.factors, image.dtype)
  adjusts = (_adjust_brightness, _adjust_contrast, _adjust_saturation)

  def branch(op: int):
    if not enabled[op]:
      return lambda x: x
    return lambda x: adjusts[op](x, factors[op])

  branches = [branch(op) for op in range(3)]
  for position in range(3):
    image = lax.switch(params.order[position], branches, image)
  return image
