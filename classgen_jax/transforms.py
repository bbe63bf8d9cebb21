"""Image transforms of the generation engine: blur, resize, crop, jitter, colour.

Data contract: an image is a single HWC float array (float32 in the library,
float64 in parity tests) with values in [0, 1]. The engine batches with
``jax.vmap``; every function here works eager, under ``jax.jit`` and under
``jax.vmap`` with identical results.

Every random transform is split in two, so that the PyTorch reference path
(``converters/torch_transforms.py``) can replay exactly the same randomness:

* a *draw*, ``draw_*(key, ...)``, turns a ``jax.random`` key into a few
  explicit parameters (offsets, factors, an order);
* an *apply*, a deterministic function of the image and those parameters,
  which the torch twin implements on NCHW batches.

The public random transforms are closures built from config that return
``fn(key, image) -> image`` (lucid's ``optvis/transform.py``), chained by
``compose``, which splits the key once per transform (optax's ``chain``)::

  augment = compose(jitter(8), flip(), color_jitter(brightness=1e-4))
  image = augment(jax.random.key(0), image)

What each recipe of ``docs/RECIPES.md`` takes from here:

* smoothness prior, octaves: ``gaussian_blur`` (traced sigma schedule) or,
  for cropped octaves, ``gaussian_blur_region`` on the updated crop;
* resilience: ``color_jitter(brightness=1e-4)`` and the fixed-shape cyclic
  resize ``cyclic_size_indices`` + ``resize_within`` + ``apply_within``;
* octaves: ``draw_crop_offset``, ``crop``, ``paste``; ``resize`` between
  octaves; the padding recipe's ``fill_border``;
* DeepInversion / Lucid style augmentation: ``jitter``, ``flip``.

The article reproduced here ("Input generation") uses
torchvision's ``gaussian_blur``, ``ColorJitter``, ``Pad`` and
``torch.nn.functional.interpolate``; each function says which torch
semantics it matches and where the fixed-shape world of ``lax.scan`` forced a
choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Size = int | tuple[int, int]
# fn(key, image) -> image, the signature of every random transform.
Transform = Callable[[jax.Array, jax.Array], jax.Array]


# The article's 'transformation resilience' recipe: before step 76, step i
# resizes the image to RESILIENCE_SIZES[i % 5].
RESILIENCE_SIZES = (256, 198, 160, 180, 200)
RESILIENCE_STOP = 76


def _pair(size: Size) -> tuple[int, int]:
  if isinstance(size, int):
    return size, size
  height, width = size
  return int(height), int(width)


def _check_image(image: jax.Array) -> None:
  chex.assert_rank(image, 3)


# ---------------------------------------------------------------------------
# Chaining and clipping.


def compose(*fns: Transform) -> Transform:
  """Chains random transforms, splitting the key once per transform.

  Args:
    *fns: transforms ``fn(key, image) -> image``, applied left to right.

  Returns:
    A transform ``fn(key, image) -> image``. Transform ``i`` gets
    ``jax.random.split(key, len(fns))[i]``, so adding a transform at the end
    does not change the randomness of the ones before it.
  """

  def composed(key: jax.Array, image: jax.Array) -> jax.Array:
    if not fns:
      return image
    for fn_key, fn in zip(jax.random.split(key, len(fns)), fns):
      image = fn(fn_key, image)
    return image

  return composed


def clip(image: jax.Array) -> jax.Array:
  """Clips to the valid range [0, 1]."""
  return jnp.clip(image, 0.0, 1.0)


# ---------------------------------------------------------------------------
# Gaussian blur (torchvision.transforms.functional.gaussian_blur).


def default_sigma(kernel_size: int) -> float:
  """torchvision's sigma when none is given: 0.8 for the article's 3x3."""
  return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


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
  sigma)``; the article calls it with ``kernel_size=3`` (sigma 0.8 by default,
  a schedule in the octave recipes). Computed separably, as two depthwise 1-D
  passes; each pass is a sum of ``kernel_size`` shifted slices, which XLA
  fuses and which keeps float64 exact.

  Args:
    image: ``(h, w, c)`` with ``h, w > kernel_size // 2``.
    sigma: standard deviation; may be traced.
    kernel_size: odd, static.

  Returns:
    The blurred ``(h, w, c)`` image.
  """
  _check_image(image)
  kernel = gaussian_kernel(kernel_size, sigma, dtype=image.dtype)
  half = kernel_size // 2
  height, width, _ = image.shape
  # 'reflect' excludes the edge pixel, like torch's reflect padding.
  padded = jnp.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")
  rows = sum(kernel[k] * padded[k:k + height] for k in range(kernel_size))
  return sum(kernel[k] * rows[:, k:k + width] for k in range(kernel_size))


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
  _check_image(image)
  if context:
    region = crop(gaussian_blur(image, sigma=sigma, kernel_size=kernel_size),
                  offset, size=size)
  else:
    region = gaussian_blur(crop(image, offset, size=size), sigma=sigma,
                           kernel_size=kernel_size)
  return paste(image, region, offset)


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
  out_h, out_w = _pair(size)
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


# Cyclic resizing with a fixed carry shape.
#
# The article's resilience recipe resizes the image itself every step
# (299 -> 256 -> 198 -> 160 -> 180 -> 200 -> 256 -> ...), and the gradient is
# taken and applied at that size. A lax.scan carry has a fixed shape, so the
# image lives in the top-left corner of a fixed *buffer* at least as large as
# every size, zero elsewhere; the current size is a function of the step, so
# it need not be carried. Resizing from the previous size to the next one and
# running the step's body at the next size are lax.switch-es over the static
# sizes. This reproduces the article's chain of resizes exactly (same
# resampling, same accumulation of nearest-neighbour drift, gradient at the
# resized size), so the engine can be compared with the torch reference path
# bit for bit. The alternatives drift from it: resizing to s and back to the
# canvas every step adds a second, upsampling resize (extra blur for
# bilinear, a different drift for nearest), and taking the objective on a
# resized *view* keeps the canvas at full resolution and never resamples it.


def embed(image: jax.Array, *, shape: Size) -> jax.Array:
  """Places ``image`` in the top-left corner of a zero buffer of ``shape``."""
  _check_image(image)
  buf_h, buf_w = _pair(shape)
  height, width, _ = image.shape
  if height > buf_h or width > buf_w:
    raise ValueError(f"image {image.shape[:2]} does not fit buffer {shape}")
  return jnp.pad(image, ((0, buf_h - height), (0, buf_w - width), (0, 0)))


def resize_within(buffer: jax.Array, from_index: jax.Array,
                  to_index: jax.Array, *, sizes: Sequence[Size],
                  method: str = "bilinear") -> jax.Array:
  """Resizes the image held in a buffer from one listed size to another.

  Args:
    buffer: ``(H, W, c)`` holding an image of size ``sizes[from_index]`` in
      its top-left corner (see ``embed``).
    from_index: int scalar, may be traced; keep it the same for the whole
      batch (not vmapped), or vmap turns the switch into running every
      branch.
    to_index: int scalar, may be traced, same advice.
    sizes: static sizes, each no larger than the buffer.
    method: as in ``resize``.

  Returns:
    The buffer holding ``resize(image, sizes[to_index])``, zero elsewhere.
  """
  _check_image(buffer)
  pairs = [_pair(s) for s in sizes]
  shape = buffer.shape[:2]

  def branch(src: tuple[int, int], dst: tuple[int, int]):
    def resized(buf: jax.Array) -> jax.Array:
      image = buf[:src[0], :src[1]]
      return embed(resize(image, dst, method=method), shape=shape)
    return resized

  branches = [branch(src, dst) for src in pairs for dst in pairs]
  index = jnp.asarray(from_index) * len(pairs) + jnp.asarray(to_index)
  return lax.switch(index, branches, buffer)


def apply_within(buffer: jax.Array, index: jax.Array,
                 fn: Callable[[jax.Array], object], *, sizes: Sequence[Size],
                 has_aux: bool = False):
  """Runs ``fn`` on the image held in a buffer at size ``sizes[index]``.

  ``fn`` sees an array of the static size ``sizes[index]`` (one trace per
  size), so a model can take the gradient at that resolution, as the
  article's code does after each resize.

  Args:
    buffer: ``(H, W, c)`` holding an image of size ``sizes[index]``.
    index: int scalar, may be traced; keep it unbatched under vmap.
    fn: ``image -> image`` of the same shape, or ``image -> (image, aux)``
      with ``has_aux``; ``aux`` must have one structure and shape for every
      size (e.g. logits, a loss).
    sizes: static sizes, each no larger than the buffer.
    has_aux: whether ``fn`` returns ``(image, aux)``.

  Returns:
    The buffer holding ``fn``'s image, zero elsewhere; with ``has_aux``,
    ``(buffer, aux)``.
  """
  _check_image(buffer)
  shape = buffer.shape[:2]

  def branch(size: tuple[int, int]):
    def applied(buf: jax.Array):
      out = fn(buf[:size[0], :size[1]])
      if has_aux:
        image, aux = out
        return embed(image, shape=shape), aux
      return embed(out, shape=shape)
    return applied

  return lax.switch(index, [branch(_pair(s)) for s in sizes], buffer)


def cyclic_size_indices(step: jax.Array, *, num_sizes: int = 5,
                        stop: int = RESILIENCE_STOP) -> tuple[jax.Array,
                                                              jax.Array]:
  """``(from_index, to_index)`` of the article's cyclic resize at ``step``.

  Index 0 is the starting size and indices ``1..num_sizes`` the cycle, i.e.
  ``sizes = (start,) + RESILIENCE_SIZES``. Step ``i < stop`` resizes to
  ``1 + i % num_sizes`` from the previous step's size; from ``stop`` on the
  image keeps the last size (``from == to``, and ``resize_within`` is then
  the identity), as the article stops resizing after iteration 75.

  Args:
    step: int scalar, may be traced.
    num_sizes: length of the cycle.
    stop: static first step without a resize; at least 1.

  Returns:
    Two int32 scalars.
  """
  if stop < 1:
    raise ValueError(f"stop must be at least 1, got {stop}")
  step = jnp.asarray(step, jnp.int32)
  last = 1 + (stop - 1) % num_sizes
  to_index = jnp.where(step < stop, 1 + step % num_sizes, last)
  previous = jnp.minimum(step, stop) - 1
  from_index = jnp.where(step == 0, 0, 1 + previous % num_sizes)
  return from_index.astype(jnp.int32), to_index.astype(jnp.int32)


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
  (height, width), (crop_h, crop_w) = _pair(image_size), _pair(size)
  if crop_h > height or crop_w > width:
    raise ValueError(f"crop {size} larger than image {image_size}")
  return jax.random.randint(key, (2,), 0,
                            jnp.array([height - crop_h + 1,
                                       width - crop_w + 1]),
                            dtype=jnp.int32)


def crop(image: jax.Array, offset: jax.Array, *, size: Size) -> jax.Array:
  """The ``size`` region at ``offset = (top, left)`` (clamped to fit)."""
  _check_image(image)
  height, width = _pair(size)
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


def random_crop(size: Size) -> Transform:
  """Random crop of static ``size``; for the offset, use the draw directly.

  The engine needs the offset to paste the update back, so it calls
  ``draw_crop_offset`` and ``crop``; this closure serves augmentation chains.
  """

  def fn(key: jax.Array, image: jax.Array) -> jax.Array:
    offset = draw_crop_offset(key, image.shape[:2], size=size)
    return crop(image, offset, size=size)

  return fn


# ---------------------------------------------------------------------------
# Roll jitter and flips (DeepInversion, Lucid).


def draw_shift(key: jax.Array, *, max_shift: int) -> jax.Array:
  """Draws ``(dy, dx)`` uniformly in ``[-max_shift, max_shift]`` (int32)."""
  return jax.random.randint(key, (2,), -max_shift, max_shift + 1,
                            dtype=jnp.int32)


def shift(image: jax.Array, offset: jax.Array) -> jax.Array:
  """Rolls by ``offset = (dy, dx)``, wrapping around (``torch.roll``)."""
  _check_image(image)
  offset = jnp.asarray(offset)
  return jnp.roll(image, (offset[0], offset[1]), axis=(0, 1))


def jitter(max_shift: int) -> Transform:
  """Random roll by up to ``max_shift`` pixels along each axis.

  DeepInversion's and Lucid's jitter: a translation with wrap-around, so the
  image keeps its shape and no pixel is lost.
  """

  def fn(key: jax.Array, image: jax.Array) -> jax.Array:
    return shift(image, draw_shift(key, max_shift=max_shift))

  return fn


def draw_flip(key: jax.Array, *, probability: float = 0.5) -> jax.Array:
  """Draws whether to flip (bool scalar)."""
  return jax.random.bernoulli(key, probability)


def flip_horizontal(image: jax.Array, flipped: jax.Array) -> jax.Array:
  """Mirrors left-right where ``flipped`` is true (``torch.flip(x, [-1])``)."""
  _check_image(image)
  return jnp.where(flipped, pix.flip_left_right(image), image)


def flip(probability: float = 0.5) -> Transform:
  """Random horizontal flip with the given probability."""

  def fn(key: jax.Array, image: jax.Array) -> jax.Array:
    return flip_horizontal(image, draw_flip(key, probability=probability))

  return fn


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


# ---------------------------------------------------------------------------
# Colour jitter (torchvision ColorJitter: brightness, contrast, saturation).


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
  _check_image(image)
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
  _check_image(image)
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


def color_jitter(brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, *,
                 permute: bool = True) -> Transform:
  """torchvision's ``ColorJitter`` (without hue), reproducible from a key.

  The article applies ``ColorJitter(1e-4)`` (brightness only) every step and
  notes it could not be seeded; here the key decides everything.

  Args:
    brightness: strength; factor uniform in ``[max(0, 1 - b), 1 + b]``.
    contrast: strength, likewise.
    saturation: strength, likewise.
    permute: draw the order of the ops (torchvision) or fix it.

  Returns:
    A transform ``fn(key, image) -> image``.
  """
  strengths = (brightness, contrast, saturation)
  for s in strengths:
    _factor_range(s)
  enabled = tuple(s > 0 for s in strengths)

  def fn(key: jax.Array, image: jax.Array) -> jax.Array:
    params = draw_color_jitter(key, brightness=brightness, contrast=contrast,
                               saturation=saturation, permute=permute,
                               dtype=image.dtype)
    return adjust_color(image, params, enabled=enabled)

  return fn


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
  y0 = jnp.clip(jnp.floor(source_y).astype(jnp.int32), 0, max(height - 2, 0))
  x0 = jnp.clip(jnp.floor(source_x).astype(jnp.int32), 0, max(width - 2, 0))
  y1, x1 = jnp.minimum(y0 + 1, height - 1), jnp.minimum(x0 + 1, width - 1)
  wy = (source_y - y0)[..., None]
  wx = (source_x - x0)[..., None]
  top = (1 - wx) * image[y0, x0] + wx * image[y0, x1]
  bottom = (1 - wx) * image[y1, x0] + wx * image[y1, x1]
  return (1 - wy) * top + wy * bottom


def scale_matrix(factor: jax.Array) -> jax.Array:
  """``affine``'s matrix for a zoom by ``factor`` (> 1 enlarges the content)."""
  factor = jnp.asarray(factor)
  return jnp.eye(2, dtype=factor.dtype) / factor


def rotation_matrix(degrees: jax.Array) -> jax.Array:
  """``affine``'s matrix for a rotation by ``degrees``."""
  angle = jnp.deg2rad(jnp.asarray(degrees))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])


def pad_reflect(image: jax.Array, *, width: int) -> jax.Array:
  """Reflect padding on all four sides (``F.pad(..., mode="reflect")``)."""
  _check_image(image)
  return jnp.pad(image, ((width, width), (width, width), (0, 0)), mode="reflect")
