"""Objectives: what the optimisation raises, as composable values.

An objective is a weighted sum of terms, each a pure function of one
forward pass's outputs (``Classifier.outputs``), the model's input image and
the target class, batched: ``outputs.heads[head]`` is ``(N, classes)``,
``images`` ``(N, H, W, 3)``, ``targets`` ``(N,)``; the result is ``(N,)``, one
value per image, **higher is better**. Each term declares what it reads of
the pass (``Term.needs``: heads, BatchNorm statistics), and the classifier
records only that. Terms compose with ``+``, ``-``, scalar ``*`` and unary ``-``
(as in lucid's ``objectives.py``)::

    objective = class_logit("logits") + 0.5 * class_logit("aux") - 1e-3 * l1()

Objectives are frozen data, not closures, so two equal objectives hash
equal and a compiled octave is reused instead of traced again.

The article's objectives (its recipe numbers, as in ``recipes.py``):
* recipes 1-2: cross-entropy to the target, minimised: ``log_probability()``;
* recipes 3-7: ``|C - O_y(a)| + lam * sum|a|``, minimised:
  ``logit_distance(200) - 0.001 * l1()``;
* recipes 8-9 (the article's octave code calls its ``layer_gradient``): as 3-7;
* recipe 10 and its ResNet variant (the optimised octaves, no L1): the target
  logit alone, ``class_logit()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp

from classgen_jax._classifier import Needs, Outputs
from classgen_jax._sums import pairwise_sum
from classgen_jax.activations import LayerError


def _abs(x):
  """``|x|`` whose derivative at 0 is 0 (``sign(0)``), as torch's ``abs``.

  ``jnp.abs`` differentiates to 1 at 0. Pixels sit at exactly 0 whenever
  clipping or colour jitter clamps them, so the L1 and TV gradients would
  otherwise push every clamped pixel and differ from the torch reference.
  """
  return x * jnp.sign(x)


def _target_logit(outputs, head, targets):
  logits = outputs.heads[head]
  return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


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
class Logit(Term):
  """The target class's logit on ``head``."""
  head: str = "logits"

  def __call__(self, outputs, images, targets):
    return _target_logit(outputs, self.head, targets)


@dataclasses.dataclass(frozen=True)
class LogProbability(Term):
  """log softmax of the target on ``head`` (minus the cross-entropy)."""
  head: str = "logits"

  def __call__(self, outputs, images, targets):
    logits = outputs.heads[self.head]
    log_p = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                               axis=-1)
    return jnp.take_along_axis(log_p, targets[:, None], axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class LogitDistance(Term):
  """``-|C - logit|``: the article's pull of the target logit towards ``C``."""
  constant: float = 200.0
  head: str = "logits"

  def __call__(self, outputs, images, targets):
    return -_abs(self.constant - _target_logit(outputs, self.head, targets))


@dataclasses.dataclass(frozen=True)
class L1(Term):
  """``sum |a|`` over the image."""
  penalty: ClassVar[bool] = True

  def __call__(self, outputs, images, targets):
    return jnp.sum(_abs(images), axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class TotalVariation(Term):
  """Anisotropic total variation of the image."""
  penalty: ClassVar[bool] = True

  def __call__(self, outputs, images, targets):
    dy = _abs(images[:, 1:, :, :] - images[:, :-1, :, :])
    dx = _abs(images[:, :, 1:, :] - images[:, :, :-1, :])
    return jnp.sum(dy, axis=(1, 2, 3)) + jnp.sum(dx, axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class L2(Term):
  """``sum (a - 0.5)^2`` over the image."""
  penalty: ClassVar[bool] = True

  def __call__(self, outputs, images, targets):
    return jnp.sum(jnp.square(images - 0.5), axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class TotalVariationL2(Term):
  """DeepInversion's total variation: the L2 norms of the image's
  differences to its right, lower, and two diagonal neighbours, summed
  (``get_image_prior_losses``' ``loss_var_l2``; there over the batch, here
  per image)."""
  penalty: ClassVar[bool] = True

  def __call__(self, outputs, images, targets):
    diffs = (images[:, :, :-1] - images[:, :, 1:],
             images[:, :-1, :] - images[:, 1:, :],
             images[:, 1:, :-1] - images[:, :-1, 1:],
             images[:, :-1, :-1] - images[:, 1:, 1:])
    return sum(_norm(d) for d in diffs)


@dataclasses.dataclass(frozen=True)
class L2Norm(Term):
  """``||a - 0.5||_2``, the image's distance from mid-grey (DeepInversion's
  ``loss_l2``, the norm of the normalised input, unsquared)."""
  penalty: ClassVar[bool] = True

  def __call__(self, outputs, images, targets):
    return _norm(images - 0.5)


def _norm(x):
  """Per-image L2 norm whose gradient at 0 is 0 (not NaN), summed in an
  order that does not depend on the batch (``_sums``)."""
  squares = pairwise_sum(jnp.square(x), tuple(range(1, x.ndim)))
  safe = jnp.where(squares > 0, squares, 1.0)
  return jnp.where(squares > 0, jnp.sqrt(safe), 0.0)


@dataclasses.dataclass(frozen=True)
class BatchNormStatistics(Term):
  """DeepInversion's feature prior (Yin et al. 2020): over every BatchNorm
  layer, ``||mean - running_mean||_2 + ||var - running_var||_2`` of the
  layer's input, the statistics taken over each image's own pixels (never
  over the batch, so an image does not depend on its batch mates).

  Reads every BatchNorm layer's input statistics (``Outputs.batchnorm``),
  which only models with BatchNorm have.

  Attributes:
    first_layer: the first layer's term is multiplied by this
      (DeepInversion's ``first_bn_multiplier``, 10).
  """
  first_layer: float = 10.0
  penalty: ClassVar[bool] = True

  @property
  def needs(self) -> Needs:
    return Needs(batchnorm=True)

  def __call__(self, outputs, images, targets):
    total = 0.0
    for index, (mean, var, running_mean, running_var) in enumerate(outputs.batchnorm):
      term = _norm(mean - running_mean) + _norm(var - running_var)
      total = total + (self.first_layer if index == 0 else 1.0) * term
    return total

  def check(self, where: str) -> None:
    if not (math.isfinite(self.first_layer) and self.first_layer >= 0):
      raise ValueError(f"{where}: BatchNormStatistics.first_layer must be finite and >= 0, "
                       f"got {self.first_layer}")


# ----------------------------------------------------------------------------
# What a layer sees (Olah et al., "Feature Visualization", Distill 2017): terms
# on named activations (``Classifier.layers()``), recorded during the pass.


def _activation(outputs: Outputs, layer: str, images) -> jax.Array:
  value = outputs.layers[layer]
  return value.astype(jnp.promote_types(images.dtype, jnp.float32))


def _check_unit(layer: str, value, channel: int, y: int | None = None,
                x: int | None = None) -> None:
  """Raises a ``LayerError`` for a unit outside the layer (at trace time: an
  index past the end would be clamped silently)."""
  channels = value.shape[-1]
  if not 0 <= channel < channels:
    raise LayerError(f"layer {layer!r} has {channels} channels (0-{channels - 1}); "
                     f"channel {channel} is outside it")
  if value.ndim == 4 and y is not None and not (0 <= y < value.shape[1]
                                                and 0 <= x < value.shape[2]):
    raise LayerError(f"layer {layer!r} is {value.shape[1]}x{value.shape[2]} here; neuron "
                     f"({y}, {x}) is outside it: give y and x inside, or leave them for "
                     "the centre")


class _LayerTerm(Term):
  """A term that reads the named activation ``layer``."""
  layer: str

  @property
  def needs(self) -> Needs:
    return Needs(layers=(self.layer,))


@dataclasses.dataclass(frozen=True)
class Channel(_LayerTerm):
  """The mean over positions of ``channel`` of ``layer`` (Lucid's
  ``objectives.channel``); a pooled layer's value itself."""
  layer: str
  channel: int

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    _check_unit(self.layer, value, self.channel)
    return jnp.mean(value[..., self.channel], axis=tuple(range(1, value.ndim - 1)))

  def check(self, where: str) -> None:
    if self.channel < 0:
      raise ValueError(f"{where}: a channel is >= 0, got {self.channel}")


@dataclasses.dataclass(frozen=True)
class Neuron(_LayerTerm):
  """One unit of ``layer``: ``channel`` at position ``(y, x)`` of its map,
  the centre by default (Lucid's ``objectives.neuron``)."""
  layer: str
  channel: int
  y: int | None = None
  x: int | None = None

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    if value.ndim == 2:
      _check_unit(self.layer, value, self.channel)
      return value[:, self.channel]
    y = value.shape[1] // 2 if self.y is None else self.y
    x = value.shape[2] // 2 if self.x is None else self.x
    _check_unit(self.layer, value, self.channel, y, x)
    return value[:, y, x, self.channel]

  def check(self, where: str) -> None:
    if self.channel < 0 or (self.y is None) != (self.x is None):
      raise ValueError(f"{where}: a neuron has a channel >= 0 and both y and x, or "
                       f"neither (the centre); got {self}")


@dataclasses.dataclass(frozen=True)
class Direction(_LayerTerm):
  """The mean over positions of the dot product of ``layer``'s activation
  with ``vector`` (Lucid's ``objectives.direction``); with ``cosine_power``
  p > 0, each position's dot product is weighted by ``max(cos, 0.1)^p``, the
  cosine of the angle between the two (Lucid's ``cossim_pow``), which favours
  the direction over sheer magnitude."""
  layer: str
  vector: tuple[float, ...]
  cosine_power: float = 0.0

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    if value.shape[-1] != len(self.vector):
      raise LayerError(f"layer {self.layer!r} has {value.shape[-1]} channels; the "
                       f"direction has {len(self.vector)}")
    vector = jnp.asarray(self.vector, value.dtype)
    dot = value @ vector
    if self.cosine_power:
      norms = jnp.sqrt(jnp.sum(jnp.square(value), axis=-1)) * jnp.sqrt(jnp.sum(vector**2))
      cosine = dot / (norms + 1e-6)
      dot = dot * jnp.maximum(cosine, 0.1) ** self.cosine_power
    return jnp.mean(dot, axis=tuple(range(1, dot.ndim)))

  def check(self, where: str) -> None:
    if not self.vector or not all(math.isfinite(v) for v in self.vector):
      raise ValueError(f"{where}: a direction is a non-empty vector of finite numbers")
    if not (math.isfinite(self.cosine_power) and self.cosine_power >= 0):
      raise ValueError(f"{where}: cosine_power must be finite and >= 0, got "
                       f"{self.cosine_power}")


@dataclasses.dataclass(frozen=True)
class MeanSquare(_LayerTerm):
  """DeepDream's objective: the mean square of ``layer``'s activation."""
  layer: str

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    return jnp.mean(jnp.square(value), axis=tuple(range(1, value.ndim)))


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


def _reads_class_head(term: Term) -> bool:
  return term.head is not None


def class_logit(head: str = "logits") -> Objective:
  """The target class's logit on ``head`` (Simonyan et al. 2013)."""
  return Objective(((1.0, Logit(head)),))


def log_probability(head: str = "logits") -> Objective:
  """log softmax of the target: minus the cross-entropy to the target."""
  return Objective(((1.0, LogProbability(head)),))


def logit_distance(constant: float = 200.0, head: str = "logits") -> Objective:
  """``-|C - logit|``: the article's pull of the target logit towards ``C``."""
  return Objective(((1.0, LogitDistance(float(constant), head)),))


def l1() -> Objective:
  """``sum |a|`` over the image (subtract it to penalise)."""
  return Objective(((1.0, L1()),))


def total_variation() -> Objective:
  """Anisotropic total variation of the image (subtract it to penalise)."""
  return Objective(((1.0, TotalVariation()),))


def l2() -> Objective:
  """``sum (a - 0.5)^2`` over the image (subtract it to penalise)."""
  return Objective(((1.0, L2()),))


def total_variation_l2() -> Objective:
  """DeepInversion's total variation (L2 norms of neighbour differences;
  subtract it to penalise)."""
  return Objective(((1.0, TotalVariationL2()),))


def l2_norm() -> Objective:
  """``||a - 0.5||_2`` per image, DeepInversion's L2 prior (subtract it)."""
  return Objective(((1.0, L2Norm()),))


def batchnorm_statistics(first_layer: float = 10.0) -> Objective:
  """DeepInversion's BatchNorm feature prior, per image (subtract it)."""
  return Objective(((1.0, BatchNormStatistics(float(first_layer))),))


def channel(layer: str, channel: int) -> Objective:
  """The mean of one channel of a layer over its positions (``Channel``)."""
  return Objective(((1.0, Channel(layer, int(channel))),))


def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None) -> Objective:
  """One unit of a layer, at the centre of its map by default (``Neuron``)."""
  return Objective(((1.0, Neuron(layer, int(channel), None if y is None else int(y),
                                 None if x is None else int(x))),))


def direction(layer: str, vector, cosine_power: float = 0.0) -> Objective:
  """A layer's activation along ``vector`` (one number per channel;
  ``Direction``)."""
  return Objective(((1.0, Direction(layer, tuple(float(v) for v in vector),
                                    float(cosine_power))),))


def layer(name: str) -> Objective:
  """DeepDream's objective on a layer: its mean square (``MeanSquare``)."""
  return Objective(((1.0, MeanSquare(name)),))


def heads_mixture(weights: Mapping[str, float]) -> Objective:
  """``sum_h w_h * logit_h``: the target logit on several heads at once."""
  total = None
  for head, weight in weights.items():
    part = weight * class_logit(head)
    total = part if total is None else total + part
  if total is None:
    raise ValueError("heads_mixture needs at least one head")
  return total
