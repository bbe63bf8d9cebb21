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

from classgen_jax._classifier import Needs
from classgen_jax._sums import pairwise_sum
from classgen_jax.layer_objectives import (  # noqa: F401  (what a layer sees, here too)
  Channel,
  Direction,
  Directions,
  Diversity,
  MeanSquare,
  Neuron,
  channel,
  direction,
  directions,
  diversity,
  layer,
  neuron,
)
from classgen_jax.terms import Objective, Term  # noqa: F401  (the algebra, here too)


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


def _norm(x, axes=None):
  """Per-image L2 norm (over ``axes``, by default all but the first) whose
  gradient at 0 is 0 (not NaN), summed in an order that does not depend on
  the batch (``_sums``)."""
  squares = pairwise_sum(jnp.square(x), tuple(range(1, x.ndim)) if axes is None else axes)
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
    # Every layer's two distances at once: the differences zero-padded to
    # the widest layer and stacked, one pairwise sum of their squares (a
    # sum per layer and statistic apiece would be a hundred trees in the
    # compiled program), then the layers' terms summed pairwise too.
    diffs = [d for mean, var, running_mean, running_var in outputs.batchnorm
             for d in (mean - running_mean, var - running_var)]
    width = max(d.shape[-1] for d in diffs)
    stacked = jnp.stack([jnp.pad(d, ((0, 0), (0, width - d.shape[-1]))) for d in diffs], axis=1)
    norms = _norm(stacked, axes=(2,)).reshape(stacked.shape[0], -1, 2)
    weights = jnp.ones(norms.shape[1], norms.dtype).at[0].set(self.first_layer)
    return pairwise_sum((norms[..., 0] + norms[..., 1]) * weights, (1,))

  def check(self, where: str) -> None:
    if not (math.isfinite(self.first_layer) and self.first_layer >= 0):
      raise ValueError(f"{where}: BatchNormStatistics.first_layer must be finite and >= 0, "
                       f"got {self.first_layer}")


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


def heads_mixture(weights: Mapping[str, float]) -> Objective:
  """``sum_h w_h * logit_h``: the target logit on several heads at once."""
  total = None
  for head, weight in weights.items():
    part = weight * class_logit(head)
    total = part if total is None else total + part
  if total is None:
    raise ValueError("heads_mixture needs at least one head")
  return total
