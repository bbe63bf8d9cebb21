"""Update rules as optax transformations, with per-iteration step-size schedules.

The engine gives optax the gradient of the *loss* (minus the objective), so
every rule here is a minimiser in optax's convention, and the image is
``optax.apply_updates(image, updates)``:

* ``gradient``: ``a -= lr * g`` (the article's recipes 1, 3-10);
* ``sign``: ``a -= lr * sign(g)`` (recipe 2, the fast gradient sign method);
* ``l1``: ``a -= lr * g / mean|g|`` per image (DeepDraw, Øygard 2015);
* ``adam``: Adam on the pixels (DeepInversion, Lucid).

Arrays are batches ``(N, H, W, 3)``; every rule treats each image alone, so
an image's trajectory does not depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

RULES = ("gradient", "sign", "l1", "adam")


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


@dataclasses.dataclass(frozen=True)
class Update:
  """An update rule and its settings (hashable, so compiled steps are reused).

  Attributes:
    rule: one of ``RULES``.
    b1, b2, eps: Adam's settings.
  """
  rule: str = "gradient"
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f"unknown update rule {self.rule!r}; choose one of {', '.join(RULES)}")

  def transformation(self, schedule: optax.Schedule, *,
                     count: int | None = None) -> optax.GradientTransformation:
    """The optax transformation with step size ``schedule(iteration)``."""
    step = optax.scale_by_learning_rate(schedule)
    if self.rule == "gradient":
      return step
    if self.rule == "sign":
      return optax.chain(optax.scale_by_sign(), step)
    if self.rule == "l1":
      return optax.chain(scale_by_mean_abs(count=count), step)
    return optax.chain(optax.scale_by_adam(self.b1, self.b2, self.eps), step)


def linear(start: float, end: float, iterations: int) -> optax.Schedule:
  """The article's in-octave decay: ``start*(n-i)/n + end*i/n`` at iteration i.

  Computed in the default float dtype (float64 under ``jax_enable_x64``), so
  a float64 run is not rounded through float32 step sizes.
  """
  n = max(iterations, 1)

  def schedule(count):
    return start + (end - start) * jnp.minimum(count, n) / n

  return schedule
