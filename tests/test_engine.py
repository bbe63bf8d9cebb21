"""The generation engine end to end: every recipe runs, images are
reproducible and independent of their batch, errors name the class and
iteration, batches are read while the next computes, and the engine agrees
with the torch reference path."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import classgen_jax
import converters
from classgen_jax import engine, recipes, starts, step, updates
from classgen_jax import objectives as obj
from classgen_jax import parameterisations as P
from classgen_jax.operations import (
  Clip,
  ColourJitter,
  Crop,
  Flip,
  Noise,
  Pad,
  Roll,
  Rotate,
  Scale,
)
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Parameters, Photo, Uniform
from converters.reference.loop import torch_generate
from tests.helpers import CONTRACT_GROUP, contract_runs, model_for, quick, runnable, small, tiny

# Every recipe runs in the slow pass; the default pass runs the engine end to
# end through "sign"'s parity test and the batch-independence tests.
_RUNS_DEFAULT = ()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[] if n in _RUNS_DEFAULT else [pytest.mark.slow])
    for n in recipes.names()])
def test_every_recipe_runs(name):
  recipe = runnable(name)
  module = model_for(recipe)
  clf = converters.from_torchvision(module)
  init = np.random.default_rng(0).random((40, 50, 3)) if recipe.start.photo else None
  result = engine.generate(clf, [1, "tabby"], recipe, seed=3, restarts=2, init=init)
  assert result.images.shape[0] == 4 and result.images.dtype == np.float32
  assert 0.0 <= result.images.min() and result.images.max() <= 1.0
  assert list(result.targets) == [1, 1, 281, 281] and list(result.restarts) == [0, 1, 0, 1]
  assert result.trace.objective.shape == (recipe.iterations, 4)
  assert np.isfinite(result.trace.objective).all()
  assert result.rank.shape == result.probability.shape == (4,)
  per_octave = result.stability["top1_fraction_per_octave"]
  assert per_octave.shape == result.stability["zscore_jitter_per_octave"].shape == (
      4, len(recipe.octaves))
  # Restarts differ (own random draws), a photo start aside.
  if not recipe.start.photo:
    assert not np.array_equal(result.images[0], result.images[1])


@CONTRACT_GROUP
@pytest.mark.bit_exact
def test_reproducible_and_independent_of_the_batch():
  """An image depends on its seed, target and restart only: alone, in a batch
  of two, or as a target's second restart, it is the same bit for bit.
  (Sign steps; a plain gradient step passes a batched convolution's
  last-bit rounding on, which the BatchNorm prior's recipes avoid by
  running the model one image at a time: test_priors_are_independent...)"""
  runs = contract_runs()
  alone = runs.alone.images[0]
  np.testing.assert_array_equal(alone, runs.plain.images[1])  # batch [1, 2]
  np.testing.assert_array_equal(alone, runs.repeated.images[0])  # restart 0 of [2, 2]
  assert not np.array_equal(alone, runs.repeated.images[1])  # restart 1: its own start
  # A target given again continues its restarts.
  assert list(runs.twice.restarts) == [0, 1]
  np.testing.assert_array_equal(runs.twice.images, runs.repeated.images)
  assert not np.array_equal(alone, runs.other_seed.images[0])
  np.testing.assert_array_equal(runs.chunked.images, runs.plain.images)



# The image priors: Lucid's parameterisation, several views a step with
# scale, rotation and noise, and the BatchNorm statistics prior.
_PRIORS = Recipe(
    "priors", Parameters(), 32,
    (Octave(2, obj.class_logit() - 0.01 * obj.batchnorm_statistics()
            - 1e-3 * obj.total_variation_l2() - 1e-3 * obj.l2_norm(), updates.Adam(),
            (0.05, 0.05), view=(Pad(2), Crop(32), Scale(), Rotate(), Flip(), Noise(0.02)),
            views=2),),
    image=P.Sigmoid(P.Decorrelated(P.Maco(alpha=1.4))))


# Slow (two compiles of a two-view step with the BatchNorm prior); the
# default pass checks each parameterisation's gradient alone
# (test_parameterisations.py).
@pytest.mark.slow
@pytest.mark.parametrize("image", [P.Sigmoid(P.Decorrelated(P.Maco(alpha=1.4))),
                                   P.Sigmoid(P.Decorrelated(P.Fourier()))])
def test_priors_are_independent_of_the_batch(image):
  """Several views, scale, rotation, noise, a Fourier image and the
  BatchNorm statistics prior (which runs the model one image at a time:
  ``step.make_step``): an image is the same alone and in a batch, bit for bit."""
  recipe = dataclasses.replace(_PRIORS, image=image)
  alone = engine.generate(tiny(), [5], recipe, seed=11)
  batch = engine.generate(tiny(), [9, 5], recipe, seed=11, restarts=2)
  np.testing.assert_array_equal(alone.images[0], batch.images[2])  # target 5, restart 0
  assert not np.array_equal(batch.images[2], batch.images[3])


# Slow: at the default pass's -O0 a batch of one rounded as a batch did even
# before make_step ran it as one of two; compiled as users' runs are (the
# slow pass), it did not.
@pytest.mark.slow
def test_a_gradient_with_the_batchnorm_prior_is_the_same_alone_and_in_a_batch():
  """One plain gradient step (no Adam to round a gradient's last bits away)
  with the BatchNorm prior, a zoom and two views: an image's step is the
  same bit for bit alone (``make_step`` runs it as one of two), in a batch
  of two and in a batch of three."""
  recipe = Recipe("one_gradient", Parameters(), 32,
                  (Octave(1, obj.class_logit() - 0.01 * obj.batchnorm_statistics(),
                          updates.Gradient(), (1.0, 1.0), view=(Scale(),), views=2),))
  alone = engine.generate(tiny(), [5], recipe, seed=11)
  two = engine.generate(tiny(), [9, 5], recipe, seed=11)
  three = engine.generate(tiny(), [9, 5, 7], recipe, seed=11)
  np.testing.assert_array_equal(alone.images[0], two.images[1])
  np.testing.assert_array_equal(two.images[1], three.images[1])
  start = starts.initial_images(recipe, starts.image_keys(11, [5], [0]))
  assert np.abs(alone.images[0] - start[0]).max() > 1e-3  # the step moved it


# Slow (two compiles on Lite0). The tiny ResNet rounds a loop of one pass as
# it rounds the loop of two: only a real model catches the difference.
@pytest.mark.slow
def test_a_lone_image_with_the_batchnorm_prior_is_its_batch_twin_on_lite0():
  """A batch of one runs as one of two whose per-image loop runs once
  (``step.make_step``), and is the same bit for bit as in a batch."""
  clf = classgen_jax.load_classifier("efficientnet_lite0")
  recipe = recipes.get("natural", steps_scale=0.02)
  alone = engine.generate(clf, [5], recipe, seed=3)
  batch = engine.generate(clf, [9, 5], recipe, seed=3)
  np.testing.assert_array_equal(alone.images[0], batch.images[1])


def test_bad_inputs_give_clear_errors(tmp_path):
  clf = tiny()
  with pytest.raises(ValueError, match="did you mean"):
    engine.generate(clf, [1], "octavs")
  with pytest.raises(classgen_jax.UnknownClassError, match="did you mean 'chickadee'"):
    engine.generate(clf, ["chikadee"], quick())
  with pytest.raises(ValueError, match=r"^recipe 'transfigure' starts from a photo: pass init="):
    engine.generate(clf, [1], small(recipes.get("transfigure")))
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(classgen_jax.images.ImageError, match="cannot read"):
    engine.generate(clf, [1], quick(), init=bad)
  with pytest.raises(ValueError, match="no targets"):
    engine.generate(clf, [], quick())
  with pytest.raises(ValueError, match="restarts must be at least 1"):
    engine.generate(clf, [1], quick(), restarts=0)


@pytest.mark.slow  # ~9 s; the atlas reference run (two batches) covers start/result by default
def test_start_reads_each_batch_while_the_next_computes():
  recipe = quick("sign", 0.02, iterations=3, view=(Crop(40), Roll(3)))
  events = []

  def done():
    return [e.done for e in events if e.event == "iterations"]

  pending = engine.start(tiny(), [1, 2, 3, 4], recipe, seed=3, batch_size=2, chunk=1,
                         progress=events.append)
  # Queued, not read: each chunk is reported once the next is queued, and
  # the last one once the host reads the batch.
  assert done() == [1, 2]
  result = pending.result()
  assert done() == [1, 2, 3, 1, 2, 3] and pending.result() is result
  assert result.images.shape[0] == len(result.probability) == 4
  # A call that follows an unread one reports that one's last chunk first.
  events.clear()
  first = engine.start(tiny(), [1, 2], recipe, seed=3, chunk=1, progress=events.append)
  second = engine.start(tiny(), [3, 4], recipe, seed=3, chunk=1, progress=events.append,
                        follows=first)
  assert done() == [1, 2, 3, 1, 2]
  np.testing.assert_array_equal(first.result().images, result.images[:2])
  np.testing.assert_array_equal(second.result().images, result.images[2:])
  np.testing.assert_array_equal(second.result().rank, result.rank[2:])
  assert done() == [1, 2, 3, 1, 2, 3]


@pytest.mark.slow
def test_final_metrics_describe_the_returned_image_and_the_raw_canvas():
  clf = tiny()  # input_size 224: a 64 px canvas is upsampled for the metrics
  wild = Recipe("wild", Uniform(), 64,
                (Octave(10, obj.log_probability(), updates.Sign(), (0.1, 0.1)),))
  result = engine.generate(clf, [3, 500, 901], wild, seed=1)
  assert result.images.min() >= 0 and result.images.max() <= 1
  from classgen_jax.classify import class_probabilities
  probabilities = np.asarray(class_probabilities(clf, result.images))
  np.testing.assert_allclose(result.probability, probabilities[np.arange(3), [3, 500, 901]],
                             rtol=1e-4, atol=1e-7)
  # The raw canvas, far outside [0, 1] after ten 0.1 sign steps, at 64 px:
  # the view the steps optimised, where the targets win; clipped and resized,
  # the adversarial pattern is gone.
  np.testing.assert_array_equal(result.rank_as_optimised, [0, 0, 0])
  assert (result.rank > 0).all()
  # Clipped at every step and made at the native size, the two views agree.
  native = Recipe("native", Uniform(), 224, (Octave(
      2, obj.log_probability(), updates.Sign(), (0.3, 0.3), after=(Clip(),)),))
  result = engine.generate(clf, [3, 500], native, seed=1)
  np.testing.assert_array_equal(result.rank_as_optimised, result.rank)


@pytest.mark.slow
def test_colour_jitter_comes_before_the_cyclic_resize():
  """The article's resilience loop jitters, then resizes. With bilinear
  resizing and values outside [0, 1] (which the jitter clamps) the other
  order gives another image; the engine and the torch loop follow the
  article's."""
  from classgen_jax import operations, transforms
  from tests.helpers import tiny_torch
  jitter = ColourJitter(brightness=0.5)
  recipe = Recipe("order", Photo(), 40, (Octave(
      1, obj.class_logit(), updates.Gradient(), (0.0, 0.0), before_resize=(jitter,),
      resize=operations.ResizeCycle((30,), until=1, interpolation="bilinear")),))
  photo = np.random.default_rng(1).uniform(-0.5, 1.5, (40, 40, 3)).astype(np.float32)
  result = engine.generate(tiny(), [3], recipe, seed=2, init=photo)
  draws = step.random_draws(recipe, [3], [0], seed=2)
  (params,) = draws[0][0]
  one = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[0], params)  # the only image's
  context = operations.Context(jnp.int32(0), 1)
  jittered = jitter(jnp.asarray(photo), one, context)
  article = transforms.clip(transforms.resize(jittered, 30))
  other = transforms.clip(jitter(transforms.resize(jnp.asarray(photo), 30), one, context))
  assert np.abs(np.asarray(article) - np.asarray(other)).max() > 0.05
  np.testing.assert_allclose(result.images[0], article, atol=1e-6)
  theirs = torch_generate(tiny_torch(), [3], recipe, photo[None], draws).detach().numpy()
  np.testing.assert_allclose(np.clip(theirs[0], 0, 1), article, atol=1e-6)


# A representative few in the default run (sign steps, the cyclic resize,
# padding and crops, Adam with jitter and flips); every recipe, the aux-headed
# ones with L1 steps (deepdraw, aux) and the image priors (Fourier and phase
# images, several views, the BatchNorm prior) included, in the slow pass.
_PARITY_DEFAULT = ("sign",)


def _changes_maco(image) -> bool:
  """Whether a parameterisation is MACO's, or wraps it."""
  while not isinstance(image, P.Maco):
    if not hasattr(image, "inner"):
      return False
    image = image.inner
  return True


@pytest.mark.parametrize("name,normalisation", [
    *(pytest.param(n, "imagenet", marks=[] if n in _PARITY_DEFAULT else [pytest.mark.slow])
      for n in recipes.names()),
    pytest.param("octaves", "none", marks=[pytest.mark.slow]),
    pytest.param("aux", "none", marks=[pytest.mark.slow])])
def test_parity_with_torch_reference(name, normalisation, x64):
  """Same start, same draws: the JAX engine and the torch loop agree in float64.

  The sign recipe agrees too: a sign could only flip where a gradient entry
  is within ~1e-13 of zero, and the entries that are exactly zero (outside a
  crop) are zero on both sides. Both input normalisations: the article's
  ("none", GoogLeNet's transform_input kept) and ImageNet's.
  """
  recipe = runnable(name)
  # Adam's first step is g / (|g| + eps): a phase entry of a MACO image whose
  # gradient is at rounding size (1e-13) takes a step of up to the rate, so
  # rounding decides it (as a sign does for the sign recipe), and the paths
  # part by 1e-4 in three steps of maco and object. With eps 1e-5 such
  # entries barely move and the rest step as before: the octaves that change
  # a MACO image (maco, object, maco_reference) compare so, at their rates.
  recipe = dataclasses.replace(recipe, octaves=tuple(
      dataclasses.replace(o, update=updates.Adam(eps=1e-5))
      if _changes_maco(recipe.image_of(i)) else o
      for i, o in enumerate(recipe.octaves)))
  module = model_for(recipe).double()
  try:
    clf = converters.from_torchvision(module, dtype=jnp.float64)
    clf = clf.with_normalisation(normalisation)
    targets, restarts = [1, 281], [0, 0]
    init = np.asarray(starts.initial_images(recipe, starts.image_keys(0, targets, restarts),
                                            np.random.default_rng(0).random((2, 40, 50, 3))
                                            if recipe.start.photo else None))
    init = init.astype(np.float64)
    draws = step.random_draws(recipe, targets, restarts, seed=0, dtype=jnp.float64)
    ours = engine.generate(clf, targets, recipe, seed=0, init=list(init))
    theirs = torch_generate(module, targets, recipe, init, draws,
                            normalisation).detach().numpy()
  finally:
    module.float()
  diff = np.abs(np.clip(theirs, 0, 1) - ours.images).max()
  print(f"{name}: max abs diff {diff:.1e}")
  assert diff <= 1e-8


_UNITS = Recipe("units", Uniform(), 48, (Octave(
    6, obj.class_logit() - 1e-4 * obj.l2(), updates.Adam(), (0.05, 0.05), view=(Crop(40),)),))


def test_a_recipe_for_units_makes_and_scores_one_image_per_unit():
  """Channels of a layer as targets: the trace ranks each among the layer's
  channels, the final scores are its mean on the saved image at the native
  size, its rank there, NaN for a probability, and the model's top class."""
  clf, layer = tiny(), "layer2.0"
  recipe = _UNITS.for_units(obj.channel(layer))
  assert recipe.octaves[0].objective.terms[1:] == _UNITS.octaves[0].objective.terms[1:]
  result = engine.generate(clf, [3, 30], recipe, seed=1)
  assert list(result.targets) == [3, 30]
  trace = result.trace
  assert np.all(trace.objective[-1] > trace.objective[0])  # ascent
  units = np.asarray(trace.target_logit)  # the channel's mean on the view
  assert units.shape == (6, 2) and np.all(units[-1] > units[0])
  assert np.all(np.asarray(trace.target_rank)[-1] < 2 * 16)
  native = jax.vmap(lambda x: classgen_jax.transforms.resize(x, clf.input_size))(
      jnp.asarray(result.images))
  outputs = clf.outputs(native, obj.channel(layer).needs | classgen_jax.Needs(("logits",)))
  means = np.asarray(outputs.layers[layer]).mean(axis=(1, 2))
  np.testing.assert_allclose(result.target_logit, means[[0, 1], [3, 30]], rtol=2e-5)
  np.testing.assert_array_equal(result.rank, (means > means[[0, 1], [3, 30]][:, None]).sum(1))
  assert np.isnan(result.probability).all()
  np.testing.assert_array_equal(result.top_class, np.argmax(outputs.heads["logits"], axis=1))
  with pytest.raises(ValueError, match=f"channel 99 is not one of the {2 * 16} channels of "
                                       "layer 'layer2.0': use 0 to 31"):
    engine.generate(clf, [99], recipe)


def test_for_units_takes_one_family_and_replaces_the_class_terms():
  with pytest.raises(ValueError, match="one family of units whose targets index them"):
    _UNITS.for_units(obj.channel("layer2", 3))
  with pytest.raises(ValueError, match="one family of units"):
    _UNITS.for_units(obj.channel("layer2") + obj.channel("layer3"))
  plain = dataclasses.replace(_UNITS, octaves=(dataclasses.replace(
      _UNITS.octaves[0], objective=-obj.l2()),))
  with pytest.raises(ValueError, match="octave 1 reads no class to replace"):
    plain.for_units(obj.channel("layer2"))
  with pytest.raises(ValueError, match="Recipe.units takes a family of units"):
    dataclasses.replace(_UNITS, units=obj.Neuron("layer2", 3))
