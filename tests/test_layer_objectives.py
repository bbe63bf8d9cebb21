"""The layer terms (``classgen_jax.layer_objectives``): each against its torch
twin through forward hooks, values and input gradients in float64, on the
tiny ResNet and on each model family; a unit outside its layer, or a layer
the model lacks, is one clear error."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import classgen_jax
import converters
from classgen_jax import engine
from classgen_jax import objectives as obj
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform
from classgen_jax.updates import Sign
from converters.reference import loop
from converters.reference import objectives as torch_objectives
from tests.helpers import TINY_WIDTH, random_torch_model, tiny, tiny_torch

_VECTOR = tuple(np.random.default_rng(3).standard_normal(2 * TINY_WIDTH).round(3))  # layer2
_TABLE = np.random.default_rng(4).standard_normal((64, 2 * TINY_WIDTH)).round(3)  # 64 rows
TERMS = {
    "channel": obj.channel("layer2.0.conv2", 5),
    "channel_of_target": obj.channel("layer3.0"),
    "neuron": obj.neuron("layer1", 7),
    "neuron_at": obj.neuron("layer1.0.bn1", 3, y=2, x=9),
    "direction": obj.direction("layer2", _VECTOR),
    "direction_cosine": obj.direction("layer2", _VECTOR, cosine_power=1.0),
    "neuron_of_target": obj.neuron("layer3.0.bn2"),
    "neuron_of_target_at": obj.neuron("layer3.0.conv2", None, y=1, x=2),  # before any ReLU
    "directions": obj.directions("layer2", _TABLE),
    "directions_cosine": obj.directions("layer2.0", _TABLE, cosine_power=2.0),
    "layer": obj.layer("layer3.0"),
    "fc": obj.channel("fc", 9) - 0.5 * obj.layer("layer1.0.conv1"),
    "diversity": obj.diversity("layer2.0", 2),
    "diversity_of_a_vector": obj.diversity("fc", 2),
}
# The default pass checks every kind of term at once (one compile); the slow
# pass each alone.
ALL = "all"
TERMS[ALL] = (TERMS["channel"] + TERMS["neuron_at"] + 0.1 * TERMS["direction_cosine"]
              - TERMS["layer"] + TERMS["fc"] + obj.channel("layer3.0") + TERMS["diversity"]
              + TERMS["neuron_of_target_at"] + 0.1 * TERMS["directions_cosine"])


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n == ALL else [pytest.mark.slow])
                                  for n in TERMS])
def test_each_term_matches_its_torch_twin_through_forward_hooks(name, x64):
  """Values and input gradients, float64, on the tiny ResNet."""
  _parity(tiny_torch(), TERMS[name], size=64)


@pytest.mark.slow
@pytest.mark.parametrize("model,objective", [
    ("googlenet", obj.channel("inception4a", 11) + obj.neuron("inception3b.branch2", 2)
     + 0.1 * obj.layer("conv2.bn") + obj.diversity("inception3a", 2)),
    ("inception_v3", obj.channel("Mixed_6b", 30) + obj.layer("Mixed_5d.branch_pool")
     + obj.direction("Conv2d_4a_3x3", tuple(np.linspace(-1, 1, 192)), cosine_power=2.0)),
    ("resnet50", obj.channel("layer3.2.conv3", 100) + obj.neuron("layer4", 2047)),
    ("efficientnet_lite0", obj.channel("_blocks.8", 11) + obj.neuron("_blocks.4._bn1", None)
     + 0.1 * obj.layer("_conv_stem")
     + obj.directions("_blocks.10", np.random.default_rng(7).standard_normal((64, 112)), 1.0)
     + obj.diversity("_blocks.3", 2))])
def test_terms_match_torch_on_each_family(model, objective, x64):
  """Random weights for torchvision's models; the real ones for
  EfficientNet-Lite, behind its own input scaling on both sides."""
  if model.startswith("efficientnet_lite"):
    from converters.efficientnet_lite import torch_efficientnet_lite
    module = torch_efficientnet_lite(model, dynamic_padding=True)
    _parity(module, objective, 96, classgen_jax.load_classifier(model, dtype=jnp.float64))
    return
  _parity(random_torch_model(model), objective, size=96 if model != "inception_v3" else 128)


def _parity(module, objective, size, clf=None):
  images = np.random.default_rng(5).random((2, size, size, 3))
  targets = np.array([3, 50])  # channel() of the target: layer3 of the tiny ResNet has 64
  module = module.double()
  try:
    clf = clf or converters.from_torchvision(module, dtype=jnp.float64)

    def value(x, c):
      values = objective(c.outputs(x, objective.needs), x, jnp.asarray(targets))
      return values.sum(), values

    (_, ours), grad = jax.jit(jax.value_and_grad(value, has_aux=True))(jnp.asarray(images), clf)
    x = loop.to_nchw(images).requires_grad_(True)
    outputs = loop.torch_pass(module, x, objective.needs)
    theirs = torch_objectives.objective(objective, outputs, x, torch.as_tensor(targets))
    (their_grad,) = torch.autograd.grad(theirs.sum(), x)
  finally:
    module.float()
  np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-9, atol=1e-10)
  their_grad = their_grad.permute(0, 2, 3, 1).numpy()
  assert np.abs(their_grad).max() > 1e-8, "trivial gradient"
  np.testing.assert_allclose(np.asarray(grad), their_grad, rtol=0,
                             atol=1e-9 * np.abs(their_grad).max())


def test_bad_layers_and_units_are_one_clear_error():
  clf, x = tiny(), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

  def trace(objective):  # the errors come while tracing, before any compile
    return jax.eval_shape(lambda c, x: objective(c.outputs(x, objective.needs), x, None),
                          clf, x)

  with pytest.raises(classgen_jax.LayerError, match="no layer 'layer2.0.conv3'; did you mean"):
    trace(obj.layer("layer2.0.conv3"))
  with pytest.raises(classgen_jax.LayerError,
                     match=f"{TINY_WIDTH} channels .* channel {TINY_WIDTH} is outside"):
    trace(obj.channel("layer1", TINY_WIDTH))
  with pytest.raises(classgen_jax.LayerError, match=r"16x16 here; neuron \(16, 0\)"):
    trace(obj.neuron("layer1", 0, y=16, x=0))
  with pytest.raises(classgen_jax.LayerError, match=f"{TINY_WIDTH} channels; the direction has 3"):
    trace(obj.direction("layer1", (1, 2, 3)))
  with pytest.raises(ValueError, match="both y and x"):
    obj.neuron("layer1", 0, y=3).check("here")
  recipe = Recipe("unit", Uniform(), 32, (Octave(2, obj.channel("layer9", 0), Sign(),
                                                 (0.02, 0.02)),))
  with pytest.raises(classgen_jax.LayerError, match="octave 1 objective: .* no layer 'layer9'"):
    engine.generate(clf, [0], recipe)


def test_diversity_ascent_makes_a_group_differ():
  base = jax.random.uniform(jax.random.key(0), (1, 48, 48, 3)) * 0.5 + 0.25
  images = base + 0.01 * jax.random.normal(jax.random.key(1), (3, 48, 48, 3))  # near copies
  term = obj.diversity("layer2", 3)  # the three images, one group

  def total(x, c):
    values = term(c.outputs(x, term.needs), x, None)
    return values.sum(), -values  # each image's mean Gram similarity with the others

  step = jax.jit(jax.grad(total, has_aux=True))
  g, before = step(images, tiny())
  assert np.asarray(before).min() > 0.99  # a group of near copies: near 1
  for _ in range(5):
    images = images + 0.02 * g / (jnp.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
    g, after = step(images, tiny())
  before, after = np.asarray(before), np.asarray(after)
  assert np.all(after < before - 0.01), (before, after)


_DIVERSE = Recipe("diverse", Uniform(), 32, (Octave(
    3, obj.class_logit() + 5.0 * obj.diversity("layer2", 2), Sign(), (0.02, 0.02)),))


@pytest.mark.slow  # ~15 s: three programs that run the model one image at a time
def test_a_group_is_reproducible_whatever_else_is_in_its_batch():
  """Target 5's two restarts are one group: the same images alone, beside
  another target's group, or one group per batch; coupled, so not the
  images the same recipe makes without diversity."""
  alone = engine.generate(tiny(), [5], _DIVERSE, seed=4, restarts=2)
  beside = engine.generate(tiny(), [9, 5], _DIVERSE, seed=4, restarts=2)
  split = engine.generate(tiny(), [9, 5], _DIVERSE, seed=4, restarts=2, batch_size=3)
  np.testing.assert_array_equal(alone.images, beside.images[2:])
  np.testing.assert_array_equal(alone.images, split.images[2:])
  assert list(beside.targets) == [9, 9, 5, 5] and list(beside.restarts) == [0, 1, 0, 1]
  plain = dataclasses.replace(_DIVERSE, octaves=(dataclasses.replace(
      _DIVERSE.octaves[0], objective=obj.class_logit()),))
  uncoupled = engine.generate(tiny(), [5], plain, seed=4, restarts=2)
  assert not np.array_equal(uncoupled.images, alone.images)


def test_diversity_settings_are_one_clear_error():
  clf = tiny()
  with pytest.raises(ValueError, match="diversity needs a group of at least 2 images, got "
                                       "group=1"):
    engine.generate(clf, [1], dataclasses.replace(_DIVERSE, octaves=(dataclasses.replace(
        _DIVERSE.octaves[0], objective=obj.diversity("layer2", 1)),)), restarts=2)
  with pytest.raises(ValueError, match="restarts must be a multiple of 2, got 3"):
    engine.generate(clf, [1], _DIVERSE, restarts=3)
  with pytest.raises(ValueError, match="one view each, and the octave shows 2; set views=1"):
    engine.generate(clf, [1], dataclasses.replace(_DIVERSE, octaves=(dataclasses.replace(
        _DIVERSE.octaves[0], views=2),)), restarts=2)
  with pytest.raises(ValueError, match="groups of 2 and 3 images"):
    (obj.diversity("layer1", 2) + obj.diversity("layer2", 3)).check("here")


@pytest.mark.parametrize("family,units", [
    (obj.channel("layer2"), 2 * TINY_WIDTH),
    # The neurons' and directions' cases are the channels' with another
    # family (7 s each): the slow pass.
    pytest.param(obj.neuron("layer3.0", None, 1, 1), 4 * TINY_WIDTH, marks=pytest.mark.slow),
    pytest.param(obj.directions("layer2", _TABLE), 64, marks=pytest.mark.slow)])
def test_a_family_gives_every_unit_and_names_them(family, units, x64):
  """``values`` holds every unit of the family; the term is the target's."""
  term, clf = family.terms[0][1], tiny()
  images = jnp.asarray(np.random.default_rng(6).random((2, 64, 64, 3)))
  outputs = clf.outputs(images, term.needs)
  values = term.values(outputs, images)
  targets = jnp.array([units - 1, 3])
  assert values.shape == (2, units)
  np.testing.assert_array_equal(term(outputs, images, targets), values[jnp.arange(2), targets])
  shape = dict(clf.layers())[term.layer]
  names = term.unit_names(shape)
  assert len(names) == units and names[3].startswith(f"{term.layer} {term.unit} 3")


def test_a_direction_table_is_named_by_its_size_and_digest():
  table = obj.directions("layer2", _TABLE).terms[0][1]
  assert repr(table) == str(table) and "64 x 32, sha256:" in repr(table)
  assert str(_TABLE[0, 0]) not in repr(table)  # not its numbers
  other = obj.directions("layer2", _TABLE + 1e-3).terms[0][1]
  assert table.digest() != other.digest() and hash(table) != hash(other)


def test_units_that_do_not_fit_their_layer_are_one_error_before_tracing():
  clf = tiny()

  def recipe(objective):
    return Recipe("unit", Uniform(), 32, (Octave(2, objective, Sign(), (0.02, 0.02)),))

  with pytest.raises(classgen_jax.LayerError, match=f"octave 1 objective: layer 'layer1' has "
                                                    f"{TINY_WIDTH} channels; a direction has 3"):
    engine.generate(clf, [0], recipe(obj.directions("layer1", [(1, 2, 3)])))
  with pytest.raises(classgen_jax.LayerError, match=f"has {TINY_WIDTH} channels .* channel "
                                                    f"{TINY_WIDTH + 2} is outside"):
    engine.generate(clf, [0], recipe(obj.neuron("layer1", TINY_WIDTH + 2)))
  with pytest.raises(ValueError, match="one table of vectors of one length"):
    obj.directions("layer2", [(1, 2), (1, 2, 3)]).check("here")
