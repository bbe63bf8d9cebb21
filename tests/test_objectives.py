"""Objectives compose, and a few ascent steps raise every one of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import objectives as obj
from tests.conftest import tiny

TARGETS = jnp.array([3, 250])


def _images(seed=0):
  return jax.random.uniform(jax.random.key(seed), (2, 40, 40, 3)) * 0.5 + 0.25


OBJECTIVES = {
    "class_logit": obj.class_logit(),
    "log_probability": obj.log_probability(),
    "logit_distance": obj.logit_distance(200.0),
    "l1": obj.l1(),
    "total_variation": obj.total_variation(),
    "l2": obj.l2(),
    "article_l1": obj.logit_distance(200.0) - 0.001 * obj.l1(),
    "smooth_logit": obj.class_logit() - 0.05 * obj.total_variation(),
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_a_few_ascent_steps_raise_it(name):
  objective, clf = OBJECTIVES[name], tiny()
  heads = objective.heads or ("logits",)

  def value(images):
    return objective(clf(images, heads=heads), images, TARGETS)

  grad = jax.jit(jax.grad(lambda x: jnp.sum(value(x))))
  images = _images()
  start = value(images)
  for _ in range(3):
    g = grad(images)
    images = images + 0.01 * g / (jnp.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
  end = value(images)
  assert np.all(np.asarray(end) > np.asarray(start)), (start, end)


def test_algebra():
  outputs = {"logits": jnp.arange(2000.0).reshape(2, 1000) / 100,
             "aux": -jnp.arange(2000.0).reshape(2, 1000) / 100}
  images = _images()
  combined = obj.class_logit() + 0.5 * obj.class_logit("aux") - 1e-3 * obj.l1()
  want = (outputs["logits"][jnp.arange(2), TARGETS] + 0.5 * outputs["aux"][jnp.arange(2), TARGETS]
          - 1e-3 * jnp.abs(images).sum(axis=(1, 2, 3)))
  np.testing.assert_allclose(combined(outputs, images, TARGETS), want, rtol=1e-6)
  np.testing.assert_allclose((-combined)(outputs, images, TARGETS), -want, rtol=1e-6)
  assert combined.heads == ("logits", "aux")
  mixture = obj.heads_mixture({"logits": 0.7, "aux": 0.3})
  np.testing.assert_allclose(
      mixture(outputs, images, TARGETS),
      0.7 * outputs["logits"][jnp.arange(2), TARGETS]
      + 0.3 * outputs["aux"][jnp.arange(2), TARGETS],
      rtol=1e-6)
  # Equal objectives are equal values: compiled programs are reused.
  assert obj.class_logit() == obj.class_logit() and hash(combined) == hash(
      obj.class_logit() + 0.5 * obj.class_logit("aux") - 1e-3 * obj.l1())


def test_abs_subgradient_is_zero_at_zero():
  grad = jax.grad(lambda x: obj.l1()({}, x, TARGETS).sum())(jnp.zeros((2, 4, 4, 3)))
  assert np.all(np.asarray(grad) == 0)
