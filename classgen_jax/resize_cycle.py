"""The article's cyclic resize, at a fixed shape (``operations.ResizeCycle``).

The article's resilience recipe resizes the image itself every step
(299 -> 256 -> 198 -> 160 -> 180 -> 200 -> 256 -> ...), and the gradient is
taken and applied at that size. A ``lax.scan`` carry has a fixed shape, so the
image lives in the top-left corner of a fixed *buffer* at least as large as
every size, zero elsewhere; the current size is a function of the step, so it
need not be carried. Resizing from the previous size to the next one is a
``lax.switch`` over the static sizes. This reproduces the article's chain of
resizes exactly (same resampling, same accumulation of nearest-neighbour
drift, gradient at the resized size), so the engine can be compared with the
torch reference path bit for bit. The alternatives drift from it: resizing to
s and back to the canvas every step adds a second, upsampling resize (extra
blur for bilinear, a different drift for nearest), and taking the objective
on a resized *view* keeps the canvas at full resolution and never resamples
it.

The data contract is that of ``transforms`` (one ``(h, w, c)`` float image),
the image held in a ``(H, W, c)`` buffer as above.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
from jax import lax

from classgen_jax.transforms import Size, as_pair, resize


def embed(image: jax.Array, *, shape: Size) -> jax.Array:
  """Places ``image`` in the top-left corner of a zero buffer of ``shape``."""
  chex.assert_rank(image, 3)
  buf_h, buf_w = as_pair(shape)
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
  chex.assert_rank(buffer, 3)
  pairs = [as_pair(s) for s in sizes]
  shape = buffer.shape[:2]

  def branch(src: tuple[int, int], dst: tuple[int, int]):
    def resized(buf: jax.Array) -> jax.Array:
      image = buf[:src[0], :src[1]]
      return embed(resize(image, dst, method=method), shape=shape)
    return resized

  branches = [branch(src, dst) for src in pairs for dst in pairs]
  index = jnp.asarray(from_index) * len(pairs) + jnp.asarray(to_index)
  return lax.switch(index, branches, buffer)


def cyclic_size_indices(step: jax.Array, *, num_sizes: int,
                        stop: int) -> tuple[jax.Array, jax.Array]:
  """``(from_index, to_index)`` of the article's cyclic resize at ``step``.

  Index 0 is the starting size and indices ``1..num_sizes`` the cycle, i.e.
  ``sizes = (start, *cycle)`` as in ``ResizeCycle.canvas_sides`` (the
  article's cycle is 256, 198, 160, 180, 200, with ``stop=76``). Step
  ``i < stop`` resizes to ``1 + i % num_sizes`` from the previous step's
  size; from ``stop`` on the image keeps the last size (``from == to``, and
  ``resize_within`` is then the identity), as the article stops resizing
  after iteration 75.

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
