"""The base of the image operations: ``Operation`` and the ``Context`` it reads.

An operation is a small frozen value with a random ``draw`` and a pure
apply (``classgen_jax.operations`` describes the family; ``views`` and
``canvas`` hold them).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax


class Context(NamedTuple):
  """What an operation may read besides its draw, for one image.

  Attributes:
    iteration: the iteration within the octave (int32 scalar, traced).
    iterations: the octave's length (static).
    region: ``(offset, size)`` of the canvas region the view shows
      (``offset`` a ``(2,)`` int array, ``size`` a static int), or None
      when the view shows the whole canvas.
  """
  iteration: jax.Array
  iterations: int
  region: tuple[jax.Array, int] | None = None


def scale_count(count: int | None, factor: float) -> int | None:
  """An iteration count (an operation's ``until``) in an octave scaled by ``factor``."""
  if count is None:
    return None
  return max(1, round(count * factor)) if count else 0


class Operation:
  """Base of the image operations: no draw, no region, nothing to scale."""

  stream: ClassVar[int | None] = None  # a fixed key stream (see the module doc)

  def draw(self, key: jax.Array, side: int, dtype: Any) -> Any:
    del key, side, dtype
    return None

  def __call__(self, image: jax.Array, params: Any, context: Context) -> jax.Array:
    raise NotImplementedError

  def region(self, params: Any, side: int) -> tuple[jax.Array, int] | None:
    """For view operations: the part of the canvas the view shows."""
    del params, side
    return None

  def output_side(self, side: int) -> int:
    """The side of the image this operation returns for a ``side`` px input."""
    return side

  def scaled(self, factor: float) -> Operation:
    """The operation in an octave whose iterations are scaled by ``factor``."""
    del factor
    return self

  def check(self, where: str, sizes: tuple[int, ...]) -> None:
    """Raises a ``ValueError`` naming ``where`` if the canvas sides don't fit."""
    del where, sizes
