"""Torch twins of ``classgen_jax.updates``' rules, found by type.

``stepper(rule, count)`` returns ``step(grad, lr) -> delta`` (the change to
add to the image), with whatever state the rule keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from classgen_jax import updates
from converters.reference._registry import Twins

RULES = Twins("rule")


@RULES.register(updates.Gradient)
def _gradient(rule, count):
  return lambda grad, lr: -lr * grad


@RULES.register(updates.Sign)
def _sign(rule, count):
  return lambda grad, lr: -lr * torch.sign(grad)


@RULES.register(updates.L1Normalised)
def _l1(rule, count):
  def step(grad, lr):
    n = count() or grad[0].numel()
    mean = grad.abs().sum(dim=(1, 2, 3), keepdim=True) / n
    return -lr * grad / (mean + 1e-12)
  return step


@RULES.register(updates.Adam)
def _adam(rule, count):
  """Adam as ``optax.scale_by_adam`` computes it."""
  moments = {"t": 0, "mu": None, "nu": None}

  def step(grad, lr):
    m = moments
    m["t"] += 1
    if m["mu"] is None:
      m["mu"], m["nu"] = torch.zeros_like(grad), torch.zeros_like(grad)
    m["mu"] = rule.b1 * m["mu"] + (1 - rule.b1) * grad
    m["nu"] = rule.b2 * m["nu"] + (1 - rule.b2) * grad.square()
    mu_hat = m["mu"] / (1 - rule.b1 ** m["t"])
    nu_hat = m["nu"] / (1 - rule.b2 ** m["t"])
    return -lr * mu_hat / (nu_hat.sqrt() + rule.eps)

  return step


def stepper(rule: updates.Rule, count: Callable[[], int | None]):
  """The twin of ``rule``; ``count()`` gives the pixels per image the current
  gradient covers (None: all)."""
  return RULES(rule, count)
