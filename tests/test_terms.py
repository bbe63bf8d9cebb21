"""The objective algebra (``classgen_jax.terms``): sums, scalings and negation
of terms, what they read of the pass, equal values hashing equal, and the
checks of weights and priors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import Needs, Outputs
from classgen_jax import objectives as obj

TARGETS = jnp.array([3, 250])


def _images(seed=0):
  return jax.random.uniform(jax.random.key(seed), (2, 40, 40, 3)) * 0.5 + 0.25


def test_algebra():
  outputs = Outputs({"logits": jnp.arange(2000.0).reshape(2, 1000) / 100,
                     "aux": -jnp.arange(2000.0).reshape(2, 1000) / 100})
  images = _images()
  combined = obj.class_logit() + 0.5 * obj.class_logit("aux") - 1e-3 * obj.l1()
  heads = outputs.heads
  want = (heads["logits"][jnp.arange(2), TARGETS] + 0.5 * heads["aux"][jnp.arange(2), TARGETS]
          - 1e-3 * jnp.abs(images).sum(axis=(1, 2, 3)))
  np.testing.assert_allclose(combined(outputs, images, TARGETS), want, rtol=1e-6)
  np.testing.assert_allclose((-combined)(outputs, images, TARGETS), -want, rtol=1e-6)
  assert combined.heads == ("logits", "aux")
  mixture = obj.heads_mixture({"logits": 0.7, "aux": 0.3})
  np.testing.assert_allclose(
      mixture(outputs, images, TARGETS),
      0.7 * heads["logits"][jnp.arange(2), TARGETS]
      + 0.3 * heads["aux"][jnp.arange(2), TARGETS],
      rtol=1e-6)
  # Equal objectives are equal values: compiled programs are reused.
  assert obj.class_logit() == obj.class_logit() and hash(combined) == hash(
      obj.class_logit() + 0.5 * obj.class_logit("aux") - 1e-3 * obj.l1())


def test_weights_must_be_finite_and_priors_subtracted():
  where = "recipe 'mine' octave 1 objective"
  (obj.class_logit() - 0.01 * obj.batchnorm_statistics()).check(where)
  with pytest.raises(ValueError, match=r"recipe 'mine' octave 1 objective: the weight of "
                                       r"logit\(logits\) is nan"):
    (float("nan") * obj.class_logit()).check(where)
  with pytest.raises(ValueError, match=r"recipe 'mine' .*batch_norm_statistics.* is a prior"):
    (obj.class_logit() + 0.01 * obj.batchnorm_statistics()).check(where)
  with pytest.raises(ValueError, match=r"first_layer must be finite and >= 0"):
    (-obj.batchnorm_statistics(first_layer=-1.0)).check(where)
  # The prior reads no head: it stays as it is when the class terms move.
  moved = (obj.class_logit() - obj.batchnorm_statistics()).with_head("aux")
  assert moved.heads == ("aux",) and moved.needs == Needs(("aux",), batchnorm=True)
  assert obj.l1().needs == Needs() and obj.class_logit("aux1").needs == Needs(("aux1",))
  # Layer terms read layers, not heads: they merge in first-use order and
  # stay when the class terms move.
  units = obj.channel("layer1", 2) - obj.layer("fc") + obj.neuron("layer1", 0) + obj.class_logit()
  assert units.needs == Needs(("logits",), layers=("layer1", "fc"))
  assert units.with_head("aux").needs == Needs(("aux",), layers=("layer1", "fc"))
