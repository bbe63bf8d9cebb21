"""Where an image begins: its keys, and its starting canvas as a value.

Every random draw of image ``j`` comes from its base key
``key_j = fold_in(fold_in(key(seed), target_j), restart_j)`` (``image_keys``):
the start from ``fold_in(key_j, 0)``, octave ``o`` from ``fold_in(key_j, o +
1)`` (``step``). No draw depends on the batch, so an image is the same
whatever batch made it.

A recipe's start is a frozen value with a batched ``draw``:

* ``Uniform(divisor, offset)``: ``U(0, 1) / divisor + offset`` (the article's
  noise, and its stabler ``Uniform(25, 0.5)``);
* ``Normal(mean, std)``;
* ``Photo()``: a photo the caller gives (``generate(init=...)``), resized
  to the canvas with antialiasing, as torchvision's ``Resize``;
* ``Parameters()``: the image parameterisation's own random start (Lucid's
  small random spectrum, ``parameterisations``).

Data contract: starting canvases are ``(N, side, side, 3)`` float32 (a
float64 photo stays float64, for parity tests).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import transforms as T
from classgen_jax.images import load_image
from classgen_jax.parameterisations import Parameterisation


def image_keys(seed: int, targets: Sequence[int], restarts: Sequence[int]) -> jax.Array:
  """The per-image base keys: ``fold_in(fold_in(key(seed), target), restart)``."""
  base = jax.random.key(seed)
  targets = jnp.asarray(targets, jnp.uint32)
  restarts = jnp.asarray(restarts, jnp.uint32)
  return jax.vmap(lambda t, r: jax.random.fold_in(jax.random.fold_in(base, t), r))(
      targets, restarts)


def fold_in(keys: jax.Array, data) -> jax.Array:
  """``fold_in`` of the same data into each key of a batch."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


class Start:
  """A recipe's starting canvas: ``draw(keys, side, image) -> (N, side, side, 3)``
  from the per-image start keys."""

  # Whether the caller gives the start (``generate(init=...)``).
  photo: ClassVar[bool] = False

  def draw(self, keys: jax.Array, side: int, image: Parameterisation) -> jax.Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Uniform(Start):
  """``U(0, 1) / divisor + offset``; ``Uniform(25, 0.5)`` is the article's
  stabler start (its ``rand / 25 + 0.5``)."""
  divisor: float = 1.0
  offset: float = 0.0

  def draw(self, keys, side, image):
    uniform = jax.vmap(lambda k: jax.random.uniform(k, (side, side, 3)))(keys)
    if (self.divisor, self.offset) == (1.0, 0.0):
      return uniform
    return uniform / self.divisor + self.offset


@dataclasses.dataclass(frozen=True)
class Normal(Start):
  """``N(mean, std)`` per pixel."""
  mean: float = 0.5
  std: float = 0.1

  def draw(self, keys, side, image):
    normal = jax.vmap(lambda k: jax.random.normal(k, (side, side, 3)))(keys)
    return self.mean + self.std * normal


@dataclasses.dataclass(frozen=True)
class Photo(Start):
  """A photo the caller gives (transfiguration: ``generate(init=...)``)."""
  photo: ClassVar[bool] = True

  def draw(self, keys, side, image):
    raise ValueError(_PHOTO_NEEDED)


_PHOTO_NEEDED = ("starts from a photo: pass init= (an image file, an (H, W, 3) array, or one "
                 "per target)")


def check(recipe: Any, init: Any) -> None:
  """Raises the ``ValueError`` that a recipe starting from a photo without
  ``init`` would meet, before anything is compiled."""
  if init is None and recipe.start.photo:
    raise ValueError(f"recipe {recipe.name!r} {_PHOTO_NEEDED}")


@dataclasses.dataclass(frozen=True)
class Parameters(Start):
  """The image parameterisation's own random start, rendered."""

  def draw(self, keys, side, image):
    return _random_images(image, side)(keys)


@functools.lru_cache(maxsize=16)
def _random_images(image: Parameterisation, side: int):
  return jax.jit(jax.vmap(lambda key: image.render(image.init(key, side, jnp.float32))))


def initial_images(recipe: Any, keys: jax.Array, init: Any = None) -> jax.Array:
  """A recipe's starting canvases ``(N, size, size, 3)``.

  Args:
    recipe: a ``Recipe``: its ``start``, canvas ``size`` and ``image``.
    keys: per-image base keys (``image_keys``).
    init: photos for a transfiguration: one ``(H, W, 3)`` array or path for
      every image, or one per image (a sequence or ``(N, H, W, 3)``); each is
      resized to the canvas with antialiasing, as torchvision's ``Resize``.

  Raises:
    ValueError: a photo recipe without ``init``; ``init`` of the wrong count
      or shape.
  """
  n, size = keys.shape[0], recipe.size
  if init is not None:
    # As torchvision's Resize, which the article loads its photos with.
    return jnp.stack([T.resize(jnp.asarray(p), size, method="bilinear", antialias=True)
                      for p in photos(init, n)])
  check(recipe, init)
  return recipe.start.draw(fold_in(keys, 0), size, recipe.image_of(0))


def photos(init: Any, n: int) -> list[np.ndarray]:
  """``init`` as ``n`` float photos ``(H, W, 3)``: one path or array for all,
  or one per image.

  Raises:
    ValueError: another count than 1 or ``n``, or not ``(H, W, 3)``.
    ImageError: an unreadable file.
  """
  if isinstance(init, (str, bytes, os.PathLike)):
    init = [init]
  elif isinstance(init, np.ndarray | jax.Array) and init.ndim == 3:
    init = [init]
  loaded = [load_image(p) if isinstance(p, (str, bytes, os.PathLike)) else _as_float_image(p)
            for p in init]
  if len(loaded) == 1:
    loaded = loaded * n
  if len(loaded) != n:
    raise ValueError(f"init has {len(loaded)} photos for {n} images: give one photo, or one "
                     "per target (each target's restarts share it)")
  for photo in loaded:
    if photo.ndim != 3 or photo.shape[-1] != 3:
      raise ValueError(f"an init photo must be (H, W, 3), got shape {photo.shape}")
  return loaded


def _as_float_image(photo: Any) -> np.ndarray:
  photo = np.asarray(photo)
  if np.issubdtype(photo.dtype, np.integer):
    return photo.astype(np.float32) / 255.0
  return photo if photo.dtype == np.float64 else photo.astype(np.float32)
