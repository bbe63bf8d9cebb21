"""Update rules as frozen values that build optax transformations.

The engine gives optax the gradient of the *loss* (minus the objective), so
every rule here is a minimiser in optax's convention, and the image is
``optax.apply_updates(image, updates)``:

* ``Gradient()``: ``a -= lr * g`` (the article's recipes 1, 3-10);
* ``Sign()``: ``a -= lr * sign(g)`` (recipe 2, the fast gradient sign method);
* ``L1Normalised()``: ``a -= lr * g / mean|g|`` per image (DeepDraw, Øygard 2015);
* ``Adam()``: Adam on the pixels (DeepInversion, Lucid).

Arrays are batches ``(N, H, W, 3)``; every rule treats each image alone, so
an image's trajectory does not depend on the rest of the batch. Rules are
frozen dataclasses, so equal rules hash equal and compiled octaves are
reused; their torch twins are in ``converters/reference/updates.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax


def linear(start: float, end: float, iterations: int) -> optax.Schedule:
  """The article's in-octave decay: ``start*(n-i)/n + end*i/n`` at iteration i.

  Computed in the default float dtype (float64 under ``jax_enable_x64``), so
  a float64 run is not rounded through float32 step sizes.
  """
  n = max(iterations, 1)

  def schedule(count):
    return start + (end - start) * jnp.minimum(count, n) / n

  return schedule


def scale_by_mean_abs(*, count: int | None = None, eps: float = 1e-12
                      ) -> optax.GradientTransformation:
  """Divide each image's gradient by its mean absolute value.

  Args:
    count: the number of pixels the mean runs over per image (default: all
      of them). When the gradient comes from a crop of the canvas, it is zero
      outside the crop, and DeepDraw's mean runs over the crop alone.
    eps: guards a zero gradient.
  """
  def update_fn(updates, state, params=None):
    del params

    def normalise(g):
      n = count if count is not None else g[0].size
      mean = jnp.sum(jnp.abs(g), axis=tuple(range(1, g.ndim)), keepdims=True) / n
      return g / (mean + eps)

    return jax.tree_util.tree_map(normalise, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class Rule:
  """Base of the update rules."""

  name: ClassVar[str]
  # Whether the rule keeps a state per pixel (Adam's moments): such a state
  # cannot follow a canvas whose size changes within the octave.
  per_pixel_state: ClassVar[bool] = False

  def direction(self, *, count: int | None) -> optax.GradientTransformation:
    raise NotImplementedError

  def transformation(self, schedule: optax.Schedule, *,
                     count: int | None = None) -> optax.GradientTransformation:
    """The optax transformation with step size ``schedule(iteration)``.

    Args:
      schedule: step size per iteration.
      count: pixels per image the gradient covers (a crop's, when the view
        is a crop), for the rules that average over them.
    """
    return optax.chain(self.direction(count=count), optax.scale_by_learning_rate(schedule))


@dataclasses.dataclass(frozen=True)
class Gradient(Rule):
  """Plain gradient steps."""
  name: ClassVar[str] = "gradient"

  def transformation(self, schedule, *, count=None):
    del count
    return optax.scale_by_learning_rate(schedule)


@dataclasses.dataclass(frozen=True)
class Sign(Rule):
  """Gradient-sign steps (Goodfellow et al. 2014)."""
  name: ClassVar[str] = "sign"

  def direction(self, *, count):
    del count
    return optax.scale_by_sign()


@dataclasses.dataclass(frozen=True)
class L1Normalised(Rule):
  """Steps of the gradient over its mean absolute value (DeepDraw)."""
  name: ClassVar[str] = "l1"

  def direction(self, *, count):
    return scale_by_mean_abs(count=count)


@dataclasses.dataclass(frozen=True)
class Adam(Rule):
  """Adam on the pixels (Kingma & Ba 2015; DeepInversion, Lucid)."""
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  name: ClassVar[str] = "adam"
  per_pixel_state: ClassVar[bool] = True

  def direction(self, *, count):
    del count
    return optax.scale_by_adam(self.b1, self.b2, self.eps)


RULES: dict[str, type[Rule]] = {r.name: r for r in (Gradient, Sign, L1Normalised, Adam)}


def get(name: str) -> Rule:
  """The rule called ``name`` (``RULES``), with its default settings.

  Raises:
    ValueError: unknown name (with close matches).
  """
  if name not in RULES:
    close = difflib.get_close_matches(str(name), RULES, n=2)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown update rule {name!r}; {hint}choose one of {', '.join(RULES)}")
  return RULES[name]()
