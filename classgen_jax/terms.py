"""Terms and objectives: the algebra (``objectives`` has the terms themselves).

A ``Term`` is one frozen function of a forward pass's outputs, the image and
the targets, ``(N,)`` per image, higher is better; an ``Objective`` a
weighted sum of terms, composed with ``+``, ``-``, scalar ``*`` and unary ``-``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from classgen_jax._classifier import Needs, Outputs


class Term:
  """One term of an objective: a frozen value, ``term(outputs, images,
  targets) -> (N,)``. Its torch twin is in ``converters/reference/objectives.py``.

  ``head`` is the class output it reads (None for the image and feature
  priors); ``needs`` all it reads of the forward pass.
  """

  head: str | None = None
  # A prior that the objective subtracts (its weight must be <= 0).
  penalty: ClassVar[bool] = False

  @property
  def needs(self) -> Needs:
    """What the term reads of the forward pass."""
    return Needs(() if self.head is None else (self.head,))

  @property
  def indexes_units(self) -> bool:
    """Whether each image's target picks its unit of a layer (a family of
    units, ``layer_objectives``) rather than a class."""
    return False

  @property
  def couples(self) -> int:
    """The size of the groups of images whose values depend on each other
    (1: each image's value is its own)."""
    return 1

  def __call__(self, outputs: Outputs, images: jax.Array, targets: jax.Array) -> jax.Array:
    raise NotImplementedError

  def check(self, where: str) -> None:
    """Raises a ``ValueError`` naming ``where`` for settings out of range."""
    del where

  def __str__(self) -> str:
    fields = [str(getattr(self, f.name)) for f in dataclasses.fields(self)]
    return f"{_snake(type(self).__name__)}({', '.join(fields)})"


def _snake(name: str) -> str:
  return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")




@dataclasses.dataclass(frozen=True)
class Objective:
  """A weighted sum of terms, raised by the optimisation.

  Attributes:
    terms: ``((weight, Term), ...)``.
  """
  terms: tuple[tuple[float, Term], ...]

  @property
  def needs(self) -> Needs:
    """What the objective's terms read of the forward pass."""
    needs = Needs()
    for _, term in self.terms:
      needs = needs | term.needs
    return needs

  @property
  def group(self) -> int:
    """The images that the objective couples: every ``group`` consecutive
    images of a target (1: none; ``layer_objectives.Diversity``)."""
    return max([term.couples for _, term in self.terms], default=1)

  @property
  def heads(self) -> tuple[str, ...]:
    """The class outputs the objective reads, in first-use order."""
    return self.needs.heads

  def __call__(self, outputs: Outputs, images: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-image values, ``(N,)``."""
    dtype = jnp.promote_types(images.dtype, jnp.float32)  # float64 stays float64
    total = jnp.zeros(images.shape[0], dtype)
    for weight, term in self.terms:
      total = total + weight * term(outputs, images, targets).astype(dtype)
    return total

  def __add__(self, other: Objective) -> Objective:
    if not isinstance(other, Objective):
      return NotImplemented
    return Objective(self.terms + other.terms)

  def __sub__(self, other: Objective) -> Objective:
    return self + (-other)

  def __mul__(self, scale: float) -> Objective:
    if isinstance(scale, Objective):
      return NotImplemented
    return Objective(tuple((float(scale) * w, t) for w, t in self.terms))

  __rmul__ = __mul__

  def __neg__(self) -> Objective:
    return -1.0 * self

  def __str__(self) -> str:
    return " ".join(f"{weight:+g} * {term}" for weight, term in self.terms)

  def with_head(self, head: str) -> Objective:
    """Every term that reads a head moved to ``head``."""
    return Objective(tuple(
        (w, dataclasses.replace(t, head=head) if _reads_class_head(t) else t)
        for w, t in self.terms))

  def check(self, where: str) -> None:
    """Raises a ``ValueError`` naming ``where`` for a weight that is not finite,
    a prior added instead of subtracted, or a term's setting out of range."""
    for weight, term in self.terms:
      if not math.isfinite(weight):
        raise ValueError(f"{where}: the weight of {term} is {weight}; weights must be finite")
      if term.penalty and weight > 0:
        raise ValueError(f"{where}: {term} is a prior, subtracted with a positive strength "
                         f"(write '- {weight:g} * ...'), but its weight is +{weight:g}")
      term.check(where)
    groups = sorted({term.couples for _, term in self.terms} - {1})
    if len(groups) > 1:
      raise ValueError(f"{where}: terms couple groups of {groups[0]} and {groups[1]} images; "
                       "give every diversity term the same group")


def _reads_class_head(term: Term) -> bool:
  return term.head is not None
