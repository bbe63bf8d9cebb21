"""Objectives: what the optimisation raises, as composable values.

An objective is a weighted sum of terms, each a pure function of the
classifier's named outputs, the model's input image and the target class,
batched: ``outputs[head]`` is ``(N, classes)``, ``images`` ``(N, H, W, 3)``,
``targets`` ``(N,)``; the result is ``(N,)``, one value per image, **higher
is better**. Terms compose with ``+``, ``-``, scalar ``*`` and unary ``-``
(as in lucid's ``objectives.py``)::

    objective = class_logit("logits") + 0.5 * class_logit("aux") - 1e-3 * l1()

Objectives are frozen data, not closures, so two equal objectives hash
equal and a compiled octave is reused instead of traced again.

The article's objectives (``../shared/docs/RECIPES.md``):
* recipes 1-2: cross-entropy to the target, minimised: ``log_probability()``;
* recipes 3-7: ``|C - O_y(a)| + lam * sum|a|``, minimised:
  ``logit_distance(200) - 0.001 * l1()``;
* recipes 8-10: the target logit alone: ``class_logit()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Term:
  """One term: ``kind`` with its parameters, on one head (if it reads one)."""
  kind: str
  head: str | None = None
  constant: float = 0.0


def _abs(x):
  """``|x|`` whose derivative at 0 is 0 (``sign(0)``), as torch's ``abs``.

  ``jnp.abs`` differentiates to 1 at 0. Pixels sit at exactly 0 whenever
  clipping or colour jitter clamps them, so the L1 and TV gradients would
  otherwise push every clamped pixel and differ from the torch reference.
  """
  return x * jnp.sign(x)


def _target_logit(outputs, head, targets):
  logits = outputs[head]
  return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def _evaluate(term: Term, outputs, images, targets):
  if term.kind == "logit":
    return _target_logit(outputs, term.head, targets)
  if term.kind == "log_probability":
    logits = outputs[term.head]
    log_p = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                               axis=-1)
    return jnp.take_along_axis(log_p, targets[:, None], axis=1)[:, 0]
  if term.kind == "logit_distance":
    return -_abs(term.constant - _target_logit(outputs, term.head, targets))
  if term.kind == "l1":
    return jnp.sum(_abs(images), axis=(1, 2, 3))
  if term.kind == "total_variation":
    dy = _abs(images[:, 1:, :, :] - images[:, :-1, :, :])
    dx = _abs(images[:, :, 1:, :] - images[:, :, :-1, :])
    return jnp.sum(dy, axis=(1, 2, 3)) + jnp.sum(dx, axis=(1, 2, 3))
  if term.kind == "l2":
    return jnp.sum(jnp.square(images - 0.5), axis=(1, 2, 3))
  raise ValueError(f"unknown objective term {term.kind!r}")


@dataclasses.dataclass(frozen=True)
class Objective:
  """A weighted sum of terms, raised by the optimisation.

  Attributes:
    terms: ``((weight, Term), ...)``.
  """
  terms: tuple[tuple[float, Term], ...]

  @property
  def heads(self) -> tuple[str, ...]:
    """The classifier outputs the objective reads, in first-use order."""
    heads = []
    for _, term in self.terms:
      if term.head is not None and term.head not in heads:
        heads.append(term.head)
    return tuple(heads)

  def __call__(self, outputs: Mapping[str, jax.Array], images: jax.Array,
               targets: jax.Array) -> jax.Array:
    """Per-image values, ``(N,)``."""
    dtype = jnp.promote_types(images.dtype, jnp.float32)  # float64 stays float64
    total = jnp.zeros(images.shape[0], dtype)
    for weight, term in self.terms:
      total = total + weight * _evaluate(term, outputs, images, targets).astype(dtype)
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
    parts = []
    for weight, term in self.terms:
      args = ", ".join(str(a) for a in (
          term.head, term.constant if term.kind == "logit_distance" else None) if a is not None)
      parts.append(f"{weight:+g} * {term.kind}({args})")
    return " ".join(parts)


def class_logit(head: str = "logits") -> Objective:
  """The target class's logit on ``head`` (Simonyan et al. 2013)."""
  return Objective(((1.0, Term("logit", head)),))


def log_probability(head: str = "logits") -> Objective:
  """log softmax of the target: minus the cross-entropy to the target."""
  return Objective(((1.0, Term("log_probability", head)),))


def logit_distance(constant: float = 200.0, head: str = "logits") -> Objective:
  """``-|C - logit|``: the article's pull of the target logit towards ``C``."""
  return Objective(((1.0, Term("logit_distance", head, float(constant))),))


def l1() -> Objective:
  """``sum |a|`` over the image (subtract it to penalise)."""
  return Objective(((1.0, Term("l1")),))


def total_variation() -> Objective:
  """Anisotropic total variation of the image (subtract it to penalise)."""
  return Objective(((1.0, Term("total_variation")),))


def l2() -> Objective:
  """``sum (a - 0.5)^2`` over the image (subtract it to penalise)."""
  return Objective(((1.0, Term("l2")),))


def heads_mixture(weights: Mapping[str, float]) -> Objective:
  """``sum_h w_h * logit_h``: the target logit on several heads at once."""
  total = None
  for head, weight in weights.items():
    part = weight * class_logit(head)
    total = part if total is None else total + part
  if total is None:
    raise ValueError("heads_mixture needs at least one head")
  return total
