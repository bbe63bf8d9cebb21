"""Objectives compose, and a few ascent steps raise every one of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import converters
from classgen_jax import Needs
from classgen_jax import objectives as obj
from converters.reference import loop
from converters.reference import objectives as torch_objectives
from tests.helpers import TINY_WIDTH, random_torch_model, tiny, tiny_torch

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
    "total_variation_l2": obj.total_variation_l2(),
    "l2_norm": obj.l2_norm(),
    "batchnorm_prior": -obj.batchnorm_statistics(),
    # What a layer sees (tests/test_activations.py checks them against torch).
    "channel": obj.channel("layer2.0", 17),
    "neuron": obj.neuron("layer3.0.conv1", 40),
    "direction": obj.direction("layer1", np.random.default_rng(0).standard_normal(TINY_WIDTH),
                               cosine_power=1.0),
    "deepdream_layer": obj.layer("layer2"),
    "negative_channel": -obj.channel("layer1.0.bn2", 3),
    "diversity": obj.diversity("layer2", 2),  # the two images, a group
    # Families of units: each image's target picks its unit.
    "channel_of_target": obj.channel("layer2"),
    "neuron_of_target": obj.neuron("layer2.0.bn2", None, 2, 3),  # before its ReLU
    "directions": obj.directions("layer2", np.random.default_rng(1).standard_normal(
        (8, 2 * TINY_WIDTH)), cosine_power=1.0),
}


# The logit and the BatchNorm prior in the default pass (the sums of squares
# are checked against their torch twins there; their ascent in the slow pass).
_ASCENT_DEFAULT = ("class_logit", "batchnorm_prior")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[] if n in _ASCENT_DEFAULT else [pytest.mark.slow])
    for n in OBJECTIVES])
def test_a_few_ascent_steps_raise_it(name):
  objective, clf = OBJECTIVES[name], tiny()
  # A family's targets are its units: channels 3 and 7 (directions 3 and 7).
  targets = jnp.array([3, 7]) if objective.terms[0][1].indexes_units else TARGETS

  needs = objective.needs | Needs(("logits",))  # as the engine asks (a prior reads no head)

  def total(x, clf):
    values = objective(clf.outputs(x, needs), x, targets)
    return values.sum(), values

  # One program: the per-image values and their gradient (eager, every op
  # would compile on its own), the weights an argument (as constants, XLA
  # would fold them while compiling, 8x longer).
  step = jax.jit(jax.grad(total, has_aux=True))
  images = _images()
  g, start = step(images, clf)
  for _ in range(3):
    images = images + 0.01 * g / (jnp.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
    g, end = step(images, clf)
  assert np.all(np.asarray(end) > np.asarray(start)), (start, end)


def test_abs_subgradient_is_zero_at_zero():
  grad = jax.grad(lambda x: obj.l1()({}, x, TARGETS).sum())(jnp.zeros((2, 4, 4, 3)))
  assert np.all(np.asarray(grad) == 0)


def test_batchnorm_prior_gradient_matches_torchs_autograd(x64):
  """The prior's input gradient (the statistics' own backward pass,
  ``_classifier._moments``, and every layer's distances in one stack)
  against torch's autograd through DeepInversion's hooks, float64."""
  module = tiny_torch().double()
  try:
    clf = converters.from_torchvision(module, dtype=jnp.float64)
    images = np.asarray(_images(3), np.float64)[:2]
    needs = Needs(("logits",), batchnorm=True)
    prior = obj.batchnorm_statistics()
    ours = jax.jit(jax.grad(lambda c, x: jnp.sum(prior(c.outputs(x, needs), x, None)),
                            argnums=1))(clf, jnp.asarray(images))
    x = torch.from_numpy(loop.to_nchw(images).numpy()).requires_grad_()
    torch_objectives.objective(prior, loop.torch_pass(module, x, needs), x, None).sum().backward()
  finally:
    module.float()
  theirs = x.grad.permute(0, 2, 3, 1).numpy()
  assert np.abs(theirs).max() > 0
  np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max())


@pytest.mark.parametrize("model", ["tiny", pytest.param("googlenet", marks=pytest.mark.slow)])
def test_batchnorm_prior_matches_torch_forward_hooks(model, x64):
  """The statistics the Flax interceptor records are those DeepInversion's
  forward hooks see: every BatchNorm2d's input, per image, float64."""
  module = (tiny_torch() if model == "tiny" else random_torch_model("googlenet")).double()
  try:
    clf = converters.from_torchvision(module, dtype=jnp.float64)
    images = np.asarray(_images(3), np.float64)[:2]
    needs = Needs(("logits",), batchnorm=True)
    outputs = jax.jit(lambda c, x: c.outputs(x, needs))  # (eager, every op compiles)
    ours = outputs(clf, jnp.asarray(images))
    with torch.no_grad():
      theirs = loop.torch_pass(module, loop.to_nchw(images), needs)
  finally:
    module.float()
  recorded = theirs.batchnorm
  layers = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  # GoogLeNet's two aux heads (one BatchNorm each) are not run for the logits.
  assert len(ours.batchnorm) == len(recorded) == len(layers) - (0 if model == "tiny" else 2)
  for (mean, var, _, running_var), (x, layer) in zip(ours.batchnorm, recorded):
    np.testing.assert_allclose(mean, x.mean(dim=(2, 3)).numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(var, x.var(dim=(2, 3), unbiased=False).numpy(), rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_allclose(running_var[1], layer.running_var.numpy(), rtol=1e-12)
  prior = obj.batchnorm_statistics()
  value = jax.jit(prior)(ours, jnp.asarray(images), jnp.asarray(TARGETS[:2]))
  torch_value = torch_objectives.objective(prior, theirs, loop.to_nchw(images), None)
  np.testing.assert_allclose(value, torch_value.numpy(), rtol=1e-10)
  # Per image: the second image's value does not depend on the first.
  alone = jax.jit(prior)(outputs(clf, jnp.asarray(images[1:])), jnp.asarray(images[1:]), None)
  np.testing.assert_allclose(alone, value[1:], rtol=1e-10)


def test_image_priors_match_deepinversion_and_their_twins(x64):
  images = np.asarray(_images(), np.float64)
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  values = jax.jit(lambda term, x: term({}, x, None), static_argnums=0)
  for term in (obj.total_variation_l2(), obj.l2_norm()):
    np.testing.assert_allclose(values(term, jnp.asarray(images)),
                               torch_objectives.objective(term, {}, x, None).numpy(),
                               rtol=1e-12)
  # DeepInversion's get_image_prior_losses, on one image (its norms run over the batch).
  one = x[:1]
  d1 = one[:, :, :, :-1] - one[:, :, :, 1:]
  d2 = one[:, :, :-1, :] - one[:, :, 1:, :]
  d3 = one[:, :, 1:, :-1] - one[:, :, :-1, 1:]
  d4 = one[:, :, :-1, :-1] - one[:, :, 1:, 1:]
  want = torch.norm(d1) + torch.norm(d2) + torch.norm(d3) + torch.norm(d4)
  np.testing.assert_allclose(values(obj.total_variation_l2(), jnp.asarray(images[:1]))[0],
                             want.item(), rtol=1e-12)
  np.testing.assert_allclose(values(obj.l2_norm(), jnp.asarray(images[:1]))[0],
                             torch.norm((one - 0.5).reshape(1, -1), dim=1).item(), rtol=1e-12)
