"""Update rules: what each step does, per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from classgen_jax import updates
from classgen_jax.updates import linear


def _grads():
  g = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
  return g * jnp.array([1.0, 10.0, 0.1])[:, None, None, None]


def _step(rule, grads, lr=0.5, count=None, steps=1):
  tx = updates.get(rule).transformation(linear(lr, lr, 10), count=count)
  state = tx.init(grads)
  for _ in range(steps):
    deltas, state = tx.update(grads, state, grads)
  return deltas


def test_gradient_and_sign():
  g = _grads()
  np.testing.assert_allclose(_step("gradient", g), -0.5 * g, rtol=1e-6)
  np.testing.assert_allclose(_step("sign", g), -0.5 * jnp.sign(g))


def test_l1_normalises_each_image_alone():
  g = _grads()
  updates = _step("l1", g)
  np.testing.assert_allclose(jnp.abs(updates).mean(axis=(1, 2, 3)), [0.5] * 3, rtol=1e-5)
  # A crop's gradient: zeros outside, the mean taken over the crop only.
  cropped = g.at[:, 4:].set(0)
  updates = _step("l1", cropped, count=4 * 8 * 3)
  np.testing.assert_allclose(jnp.abs(updates[:, :4]).mean(axis=(1, 2, 3)), [0.5] * 3, rtol=1e-5)


def test_adam_matches_optax():
  g = _grads()
  np.testing.assert_allclose(_step("adam", g, steps=3),
                             _adam_reference(g, 0.5, 3), rtol=1e-5, atol=1e-7)


def _adam_reference(g, lr, steps):
  tx = optax.adam(lr)
  state = tx.init(g)
  for _ in range(steps):
    updates, state = tx.update(g, state)
  return updates


def test_linear_schedule_is_the_articles():
  schedule = linear(1.5, 1.0, 100)
  for i in (0, 37, 99):
    assert float(schedule(i)) == pytest.approx(1.5 * (100 - i) / 100 + 1.0 * i / 100)


def test_unknown_rule():
  with pytest.raises(ValueError, match="choose one of gradient, sign, l1, adam"):
    updates.get("sgd")
