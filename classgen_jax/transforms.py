"""Geometric image transforms: resize, crop and paste, roll, flip, padding, affine.

The functional transforms behind the ``operations`` values ``Crop``, ``Roll``,
``Flip``, ``Pad``, ``PadRing``, ``Scale`` and ``Rotate``, the resize between
octaves and of photo starts, and ``clip``. Their siblings hold the rest:
``blur`` (Gaussian blur), ``colour`` (colour jitter) and ``resize_cycle`` (the
article's cyclic resize at a fixed shape).

Data contract, for this module and its siblings: an image is one ``(h, w, c)``
float array, no batch axis, float32 with values in [0, 1] in the library and
float64 in the parity tests. Sizes and widths are static Python ints;
offsets, shifts, flags and factors may be traced. The engine batches with
``jax.vmap``; every function gives the same image eager, under ``jax.jit`` and
under ``jax.vmap``, and is differentiable in the image.

A random transform is a draw and an apply, so that the PyTorch reference path
(``converters/reference/transforms.py``) replays exactly the engine's
randomness: ``draw_*(key, ...)`` turns a ``jax.random`` key into a few explicit
parameters (an offset, a shift, a flag); the apply is a deterministic function
of the image and those parameters, which the torch twin implements on NCHW
batches from the same draws.

The article reproduced here ("Input generation") uses
``torch.nn.functional.interpolate`` and torchvision's ``Pad`` (here),
``gaussian_blur`` (``blur``) and ``ColorJitter`` (``colour``); each function
says which torch semantics it matches and where the fixed-shape world of
``lax.scan`` forced a choice.
"""

from __future__ import annotations

import chex
import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Size = int | tuple[int, int]


def as_pair(size: Size) -> tuple[int, int]:
  if isinstance(size, int):
    return size, size
  height, width = size
  return int(height), int(width)


def _check_image(image: jax.Array) -> None:
  chex.assert_rank(image, 3)


def clip(image: jax.Array) -> jax.Array:
  """Clips to the valid range [0, 1]."""
  return jnp.clip(image, 0.0, 1.0)


# ---------------------------------------------------------------------------
# Resizing (torch.nn.functional.interpolate).

_RESIZE_METHODS = ("bilinear", "nearest")


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """torch's legacy 'nearest' source index: floor(dst * in / out).

  Computed in float32, as torch's kernels do for float32 images, so that the
  rounding of ``dst * scale`` agrees with torch's for every size pair (where
  ``dst * in / out`` is an integer, float32 may land just below it). The
  index does not depend on the image's dtype. torch's float64 kernel rounds
  differently for about 1% of size pairs; it agrees on the article's sizes.
  """
  dst = np.arange(out_size)
  if in_size == out_size:
    return dst
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def _linear_indices(in_size: int, out_size: int, dtype) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Indices and weights of torch's bilinear resize, align_corners=False.

  Mirrors torch's ``area_pixel_compute_source_index`` and
  ``guard_index_and_lambda`` in torch's accumulation type (float32 for
  float32 images, float64 for float64), so the weights match torch's.
  """
  acc = np.float64 if np.dtype(dtype) == np.float64 else np.float32
  scale = acc(in_size) / acc(out_size)
  src = scale * (np.arange(out_size).astype(acc) + acc(0.5)) - acc(0.5)
  src = np.maximum(src, acc(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  lam1 = np.clip(src - i0.astype(acc), acc(0), acc(1)).astype(acc)
  i1 = i0 + (i0 < in_size - 1)
  lam0 = (acc(1) - lam1).astype(acc)
  return i0, i1, lam0, lam1


def _antialias_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Source indices and weights ``(out, taps)`` of torch's antialiased bilinear.

  torch's ``_upsample_bilinear2d_aa`` (and PIL's bilinear ``resize``): a
  triangle filter stretched by the scale when shrinking, its weights
  normalised to sum to 1 over the pixels inside the image. Unused taps have
  weight 0 and index 0.
  """
  scale = in_size / out_size
  support = scale if scale >= 1.0 else 1.0
  inverse = 1.0 / scale if scale >= 1.0 else 1.0
  rows = []
  for i in range(out_size):
    centre = scale * (i + 0.5)
    first = max(int(centre - support + 0.5), 0)
    count = min(int(centre + support + 0.5), in_size) - first
    source = np.arange(first, first + count)
    weights = np.maximum(0.0, 1.0 - np.abs((source - centre + 0.5) * inverse))
    rows.append((source, weights / weights.sum() if weights.sum() else weights))
  taps = max(len(source) for source, _ in rows)
  indices = np.zeros((out_size, taps), np.int64)
  weights = np.zeros((out_size, taps))
  for i, (source, w) in enumerate(rows):
    indices[i, :len(source)], weights[i, :len(w)] = source, w
  return indices, weights


def _resize_antialiased(image: jax.Array, out_h: int, out_w: int) -> jax.Array:
  # Width first, then height, as torch's separable kernel.
  dtype = image.dtype
  index, weight = _antialias_weights(image.shape[1], out_w)
  image = jnp.einsum("hokc,ok->hoc", image[:, index], jnp.asarray(weight, dtype))
  index, weight = _antialias_weights(image.shape[0], out_h)
  return jnp.einsum("okwc,ok->owc", image[index], jnp.asarray(weight, dtype))


def resize(image: jax.Array, size: Size, *,
           method: str = "bilinear", antialias: bool = False) -> jax.Array:
  """Resizes exactly as ``torch.nn.functional.interpolate`` does.

  * ``"bilinear"``: ``mode='bilinear', align_corners=False, antialias=False``
    (half-pixel centres, source clamped at 0 and at the last pixel).
    Downsampling by more than 2 aliases, as torch's does; upsampling also
    matches torchvision's ``Resize`` (its antialias only acts when shrinking).
  * ``"nearest"``: torch's legacy ``mode='nearest'`` (the default the article
    used), source ``floor(dst * in / out)``. It always rounds towards the
    top-left source pixel, so shrinking moves content towards the
    bottom-right by up to a pixel: the drift the article observes when it
    resizes every step.

  The sizes are static, so the gather indices and weights are computed once
  in numpy at trace time; the result is differentiable in ``image``.

  Args:
    image: ``(h, w, c)``.
    size: static output ``(height, width)``, or an int for a square (as
      ``interpolate(x, 256)``).
    method: ``"bilinear"`` or ``"nearest"``.
    antialias: with ``"bilinear"``, ``interpolate(..., antialias=True)``,
      which is what torchvision's ``Resize`` does (and PIL's bilinear): when
      shrinking, each output pixel averages every source pixel under it.

  Returns:
    The ``(height, width, c)`` image.
  """
  _check_image(image)
  if method not in _RESIZE_METHODS:
    raise ValueError(f"method must be one of {_RESIZE_METHODS}, got {method!r}")
  if antialias and method != "bilinear":
    raise ValueError(f"antialias needs method='bilinear', got {method!r}")
  out_h, out_w = as_pair(size)
  in_h, in_w, _ = image.shape
  if (in_h, in_w) == (out_h, out_w):
    # Both torch modes are the identity at scale 1 (bilinear weights 1 and 0).
    return image
  if antialias:
    return _resize_antialiased(image, out_h, out_w)
  if method == "nearest":
    return image[nearest_indices(in_h, out_h)][:, nearest_indices(in_w, out_w)]
  h0, h1, h_lam0, h_lam1 = _linear_indices(in_h, out_h, image.dtype)
  w0, w1, w_lam0, w_lam1 = _linear_indices(in_w, out_w, image.dtype)
  dtype = image.dtype
  # Width first, then height: the same association as torch's kernel,
  # h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
  rows = (jnp.asarray(w_lam0, dtype)[None, :, None] * image[:, w0]
          + jnp.asarray(w_lam1, dtype)[None, :, None] * image[:, w1])
  return (jnp.asarray(h_lam0, dtype)[:, None, None] * rows[h0]
          + jnp.asarray(h_lam1, dtype)[:, None, None] * rows[h1])


# ---------------------------------------------------------------------------
# Random crop and paste (positional jitter of the octave recipes).


def draw_crop_offset(key: jax.Array, image_size: Size, *,
                     size: Size) -> jax.Array:
  """Draws a crop offset uniformly over all valid offsets.

  Like torchvision's ``RandomCrop.get_params``: top in ``[0, h - size_h]``,
  left in ``[0, w - size_w]``, both inclusive.

  Args:
    key: a ``jax.random`` key.
    image_size: static ``(h, w)`` of the canvas.
    size: static crop size.

  Returns:
    ``(top, left)`` int32 array.
  """
  (height, width), (crop_h, crop_w) = as_pair(image_size), as_pair(size)
  if crop_h > height or crop_w > width:
    raise ValueError(f"crop {size} larger than image {image_size}")
  return jax.random.randint(key, (2,), 0,
                            jnp.array([height - crop_h + 1,
                                       width - crop_w + 1]),
                            dtype=jnp.int32)


def crop(image: jax.Array, offset: jax.Array, *, size: Size) -> jax.Array:
  """The ``size`` region at ``offset = (top, left)`` (clamped to fit)."""
  _check_image(image)
  height, width = as_pair(size)
  # One index dtype for all three, or x64 mode makes the literal 0 int64.
  offset = jnp.asarray(offset, jnp.int32)
  return lax.dynamic_slice(image, (offset[0], offset[1], jnp.int32(0)),
                           (height, width, image.shape[2]))


def paste(image: jax.Array, patch: jax.Array, offset: jax.Array) -> jax.Array:
  """Writes ``patch`` into ``image`` at ``offset = (top, left)`` (clamped)."""
  _check_image(image)
  offset = jnp.asarray(offset, jnp.int32)
  return lax.dynamic_update_slice(image, patch.astype(image.dtype),
                                  (offset[0], offset[1], jnp.int32(0)))


# ---------------------------------------------------------------------------
# Roll and flips (DeepInversion's and Lucid's jitter).


def draw_shift(key: jax.Array, *, max_shift: int) -> jax.Array:
  """Draws ``(dy, dx)`` uniformly in ``[-max_shift, max_shift]`` (int32)."""
  return jax.random.randint(key, (2,), -max_shift, max_shift + 1,
                            dtype=jnp.int32)


def shift(image: jax.Array, offset: jax.Array) -> jax.Array:
  """Rolls by ``offset = (dy, dx)``, wrapping around (``torch.roll``)."""
  _check_image(image)
  offset = jnp.asarray(offset)
  return jnp.roll(image, (offset[0], offset[1]), axis=(0, 1))


def draw_flip(key: jax.Array, *, probability: float = 0.5) -> jax.Array:
  """Draws whether to flip (bool scalar)."""
  return jax.random.bernoulli(key, probability)


def flip_horizontal(image: jax.Array, flipped: jax.Array) -> jax.Array:
  """Mirrors left-right where ``flipped`` is true (``torch.flip(x, [-1])``)."""
  _check_image(image)
  return jnp.where(flipped, pix.flip_left_right(image), image)


# ---------------------------------------------------------------------------
# Padding.


def pad(image: jax.Array, *, width: int, value: float) -> jax.Array:
  """Constant padding on all four sides (``torchvision`` ``Pad(width, fill)``).

  Height and width each grow by ``2 * width``, so this is for use between
  scans (e.g. once per octave), not inside one; see ``fill_border``.
  """
  _check_image(image)
  return jnp.pad(image, ((width, width), (width, width), (0, 0)),
                 constant_values=jnp.asarray(value, image.dtype))


def fill_border(image: jax.Array, *, width: int, value: float) -> jax.Array:
  """Overwrites the outer ring of ``width`` pixels with ``value``.

  The fixed-shape stand-in for the article's padding recipe, which pads
  1 px of 0.7 every step of the first octave, so its canvas grows by 2 px a
  step. A scan cannot grow its carry. What the padding does, per the article,
  is keep features from collecting at the border: whatever the gradient
  writes into the outermost pixels is replaced by flat grey before the next
  forward pass. Overwriting the ring does exactly that, and equals padding
  then cropping the centre back (``pad(crop(...))``, the torch twin's
  formulation). What it does not reproduce is the article's slow zoom-out
  (content shrinking relative to a growing frame); ``resize(pad(image, ...),
  image.shape[:2])`` would, at the cost of resampling the image every step.

  Args:
    image: ``(h, w, c)`` with ``h, w > 2 * width``.
    width: static ring width.
    value: fill value (the article uses 0.7).

  Returns:
    The image with its border ring set to ``value``.
  """
  _check_image(image)
  if width == 0:
    return image
  height, image_width, _ = image.shape
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(image_width)[None, :]
  ring = ((rows < width) | (rows >= height - width)
          | (cols < width) | (cols >= image_width - width))
  return jnp.where(ring[:, :, None], jnp.asarray(value, image.dtype), image)


def pad_reflect(image: jax.Array, *, width: int) -> jax.Array:
  """Reflect padding on all four sides (``F.pad(..., mode="reflect")``)."""
  _check_image(image)
  return jnp.pad(image, ((width, width), (width, width), (0, 0)), mode="reflect")


# ---------------------------------------------------------------------------
# Scale and rotation about the centre (Lucid's transformation robustness).


def _reflect(coordinate: jax.Array, size: int) -> jax.Array:
  """Folds source coordinates into ``[0, size - 1]``, mirroring about the
  outer pixels' centres (``numpy.pad``'s and torch's ``"reflect"``)."""
  if size == 1:
    return jnp.zeros_like(coordinate)
  period = 2 * (size - 1)
  folded = jnp.mod(jnp.abs(coordinate), period)
  return jnp.where(folded > size - 1, period - folded, folded)


def affine(image: jax.Array, matrix: jax.Array) -> jax.Array:
  """Resamples ``image`` (bilinear) under a linear map about its centre.

  Output pixel ``p`` reads the input at ``c + matrix @ (p - c)``, ``c`` the
  centre; sources outside the image are reflected back into it, so a
  zoom-out or a rotation shows mirrored content, not a flat fill, in its
  corners. The output has the input's shape, so it can run inside a scan.

  Args:
    image: ``(h, w, c)``.
    matrix: ``(2, 2)`` from output offsets ``(dy, dx)`` to input offsets.

  Returns:
    The ``(h, w, c)`` image; differentiable in ``image``.
  """
  _check_image(image)
  height, width, _ = image.shape
  dtype = image.dtype
  matrix = jnp.asarray(matrix, dtype)
  dy = jnp.arange(height, dtype=dtype)[:, None] - (height - 1) / 2
  dx = jnp.arange(width, dtype=dtype)[None, :] - (width - 1) / 2
  source_y = _reflect((height - 1) / 2 + matrix[0, 0] * dy + matrix[0, 1] * dx, height)
  source_x = _reflect((width - 1) / 2 + matrix[1, 0] * dy + matrix[1, 1] * dx, width)
  return _bilinear(image, source_y, source_x)


def _bilinear(image: jax.Array, source_y: jax.Array, source_x: jax.Array) -> jax.Array:
  """``image`` (``(h, w, c)``) read bilinearly at ``(source_y, source_x)``
  (broadcast together; in-range pixel coordinates)."""
  height, width = image.shape[:2]
  y0, y1, wy = _neighbours(source_y, height)
  x0, x1, wx = _neighbours(source_x, width)
  wy, wx = wy[..., None], wx[..., None]
  top = (1 - wx) * image[y0, x0] + wx * image[y0, x1]
  bottom = (1 - wx) * image[y1, x0] + wx * image[y1, x1]
  return (1 - wy) * top + wy * bottom


def zoom(image: jax.Array, factor: jax.Array) -> jax.Array:
  """``affine(image, scale_matrix(factor))``, the same values bit for bit,
  computed one axis at a time.

  A zoom's source row depends on the output row alone and its source column
  on the output column alone, so the bilinear read is a read of whole
  columns (each input row sampled in x), then of whole rows: gathers of a
  few hundred slices instead of four of one pixel per output pixel. Their
  gradients are scatters of as many slices; ``affine``'s were four
  scatter-adds of one pixel each per output pixel (2.5-4x slower on a
  CPU, ``docs/benchmarks.md``).

  Args:
    image: ``(h, w, c)``.
    factor: the zoom (> 1 enlarges the content), a scalar.
  """
  _check_image(image)
  height, width, _ = image.shape
  dtype = image.dtype
  inverse = 1 / jnp.asarray(factor, dtype)  # scale_matrix's diagonal
  dy = jnp.arange(height, dtype=dtype) - (height - 1) / 2
  dx = jnp.arange(width, dtype=dtype) - (width - 1) / 2
  # As ``affine`` rounds them: its off-diagonal terms add an exact zero.
  source_y = _reflect((height - 1) / 2 + inverse * dy, height)
  source_x = _reflect((width - 1) / 2 + inverse * dx, width)
  return _interpolate(_interpolate(image, source_x, 1), source_y, 0)


def _neighbours(source: jax.Array, size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The two pixels either side of each in-range coordinate ``source`` on an
  axis of ``size``, and the second's weight: ``(low, high, weight)``."""
  low = jnp.clip(jnp.floor(source).astype(jnp.int32), 0, max(size - 2, 0))
  return low, jnp.minimum(low + 1, size - 1), source - low


def _interpolate(image: jax.Array, source: jax.Array, axis: int) -> jax.Array:
  """``image`` read linearly along ``axis`` at ``source`` (``(n,)``,
  in-range pixel coordinates); ``_bilinear``'s arithmetic, per axis."""
  low, high, weight = _neighbours(source, image.shape[axis])
  weight = jnp.expand_dims(weight, [a for a in range(image.ndim) if a != axis])
  return ((1 - weight) * jnp.take(image, low, axis=axis)
          + weight * jnp.take(image, high, axis=axis))


def scale_matrix(factor: jax.Array) -> jax.Array:
  """``affine``'s matrix for a zoom by ``factor`` (> 1 enlarges the content)."""
  factor = jnp.asarray(factor)
  return jnp.eye(2, dtype=factor.dtype) / factor


def rotation_matrix(degrees: jax.Array) -> jax.Array:
  """``affine``'s matrix for a rotation by ``degrees``."""
  angle = jnp.deg2rad(jnp.asarray(degrees))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])


def box(image: jax.Array, params: jax.Array, *, out: int) -> jax.Array:
  """A square box of ``image`` resampled bilinearly to ``out`` px.

  Args:
    image: ``(side, side, c)``.
    params: ``(3,)``: the box's centre ``(y, x)`` and side, as fractions of
      ``side``; the box is moved to lie inside the image.
    out: the output side (static).

  Returns:
    ``(out, out, c)``: output pixel ``i`` reads the input at
    ``top + (i + 0.5) * box / out - 0.5`` (pixel centres), per axis.
  """
  _check_image(image)
  side = image.shape[0]
  dtype = image.dtype
  params = jnp.asarray(params, dtype)
  size = jnp.clip(params[2], 1.0 / side, 1.0) * side
  top = jnp.clip(params[:2] * side - size / 2, 0.0, side - size)
  steps = (jnp.arange(out, dtype=dtype) + 0.5) * (size / out) - 0.5
  source_y = jnp.clip(top[0] + steps, 0.0, side - 1.0)[:, None]
  source_x = jnp.clip(top[1] + steps, 0.0, side - 1.0)[None, :]
  return _bilinear(image, source_y, source_x)
