"""The generation engine: recipes run, reproducibility, batch independence,
snapshots, errors, and parity with the torch reference path."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import classgen_jax
import converters
from classgen_jax import engine, octave, recipes, step, updates
from classgen_jax import objectives as obj
from classgen_jax import parameterisations as P
from classgen_jax import transforms as T
from classgen_jax.operations import (
  Blur,
  Clip,
  ColourJitter,
  Crop,
  Flip,
  Noise,
  Pad,
  ResizeCycle,
  Roll,
  Rotate,
  Scale,
)
from classgen_jax.recipes import Octave, Recipe
from converters.reference.loop import torch_generate
from tests.conftest import model_for, quick, runnable, small, tiny

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
  init = np.random.default_rng(0).random((40, 50, 3)) if recipe.init == "photo" else None
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
  if recipe.init != "photo":
    assert not np.array_equal(result.images[0], result.images[1])


def test_steps_scale_shortens_every_octave():
  recipe = recipes.get("octaves", steps_scale=0.1)
  assert [o.iterations for o in recipe.octaves] == [10, 10, 10]
  assert recipes.get("smooth", steps_scale=0.5).octaves[0].before[0].until == 38
  assert recipes.get("resilient", steps_scale=2).octaves[0].resize.until == 152
  with pytest.raises(ValueError, match="did you mean octaves"):
    recipes.get("octave")
  assert recipes.get("recognisable") is recipes.get("jittered_adam")  # its earlier name
  assert recipes.DEFAULT == "natural"


# The image priors: Lucid's parameterisation, several views a step with
# scale, rotation and noise, and the BatchNorm statistics prior.
_PRIORS = Recipe(
    "priors", "parameters", 32,
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


def test_reproducible_and_independent_of_the_batch():
  recipe = quick("sign", 0.02, before=(ColourJitter(brightness=0.05),),
                 view=(Crop(40), Roll(3), Flip()), after=(Blur((1.0, 0.5)),))
  alone = engine.generate(tiny(), [5], recipe, seed=11)
  again = engine.generate(tiny(), [5], recipe, seed=11)
  batch = engine.generate(tiny(), [9, 5, 2], recipe, seed=11, restarts=2)
  np.testing.assert_array_equal(alone.images[0], again.images[0])
  np.testing.assert_array_equal(alone.images[0], batch.images[2])  # target 5, restart 0
  other_seed = engine.generate(tiny(), [5], recipe, seed=12)
  assert not np.array_equal(alone.images[0], other_seed.images[0])


@pytest.mark.slow
def test_second_call_reuses_the_compiled_octave():
  recipe = quick(iterations=2, after=(Blur((1.0, 0.5)),))
  assert engine.generate(tiny(), [1, 2], recipe).compile_seconds > 0
  compiled = octave.compiled(step.plan(tiny(), recipe)[0])
  # An equal recipe built anew (equal objectives, rules and operations hash
  # equal) runs the same program, compiled once.
  again = quick(iterations=2, after=(Blur((1.0, 0.5)),))
  assert octave.compiled(step.plan(tiny(), again)[0]) is compiled
  assert engine.generate(tiny(), [3, 4], again, seed=5).compile_seconds == 0.0
  before = compiled._cache_size()  # the same through jit's own cache
  engine.generate(tiny(), [3, 4], again, seed=5, batch_size=1)
  engine.generate(tiny(), [5, 6], again, seed=5, batch_size=1)
  assert compiled._cache_size() == before + 1
  other = quick(iterations=2, after=(Blur((1.0, 0.4)),))
  assert octave.compiled(step.plan(tiny(), other)[0]) is not compiled


@pytest.mark.slow
def test_snapshots_and_stability():
  recipe = quick(iterations=7)
  result = engine.generate(tiny(), [1, 2], recipe, snapshot_every=3)
  snaps = result.snapshots
  assert snaps.images[0].shape == (2, 2, 48, 48, 3)
  assert snaps.logits[0].shape == (2, 2, 1000)
  assert list(snaps.iterations[0]) == [0, 3]
  # Frame 0 is the starting image; its logits are the first iteration's.
  start = engine.initial_images(recipe, engine.image_keys(0, [1, 2], [0, 0]))
  np.testing.assert_allclose(snaps.images[0][:, 0], start, rtol=0, atol=0)
  np.testing.assert_allclose(snaps.logits[0][:, 0, :][np.arange(2), [1, 2]],
                             result.trace.target_logit[0], rtol=1e-6)
  # Snapshots do not change the run, nor does running it in chunks (with a
  # scheduled blur, whose iteration must not be folded into constants).
  plain = engine.generate(tiny(), [1, 2], recipe)
  np.testing.assert_array_equal(plain.images, result.images)
  blurred = quick(iterations=7, after=(Blur((1.5, 0.5)),))
  plain = engine.generate(tiny(), [1, 2], blurred)
  for kwargs in (dict(snapshot_every=3),):  # chunks: tests/test_progress.py
    other = engine.generate(tiny(), [1, 2], blurred, **kwargs)
    np.testing.assert_array_equal(plain.images, other.images, err_msg=str(kwargs))
    np.testing.assert_array_equal(plain.trace.objective, other.trace.objective)
  s = result.stability
  top1 = s["top1_fraction"]
  assert top1.shape == (2,) and np.all((top1 >= 0) & (top1 <= 1))
  expected = np.abs(np.diff(result.trace.target_zscore, axis=0)).mean(axis=0)
  np.testing.assert_allclose(s["zscore_jitter"], expected)
  # Per octave: each octave's own iterations, no change across a boundary.
  from classgen_jax import metrics
  split = metrics.stability(result.trace, [3, 4])
  z, rank = result.trace.target_zscore, result.trace.target_rank
  np.testing.assert_allclose(split["zscore_jitter_per_octave"][:, 1],
                             np.abs(np.diff(z[3:], axis=0)).mean(axis=0))
  np.testing.assert_allclose(split["top1_fraction_per_octave"][:, 0], (rank[:3] == 0).mean(0))
  with pytest.raises(ValueError, match="do not cover a trace of 7"):
    metrics.stability(result.trace, [3, 3])


def test_nan_stops_with_the_class_and_iteration():
  recipe = quick("gradient", 1e38, iterations=6)
  with pytest.raises(engine.GenerationError, match=r"class 7 \('cock'\).*iteration \d"):
    engine.generate(tiny(), [7], recipe)


def test_bad_inputs_give_clear_errors(tmp_path):
  clf = tiny()
  with pytest.raises(ValueError, match="did you mean"):
    engine.generate(clf, [1], "octavs")
  with pytest.raises(classgen_jax.UnknownClassError, match="did you mean 'chickadee'"):
    engine.generate(clf, ["chikadee"], quick())
  with pytest.raises(classgen_jax.InputError,
                     match=r"^recipe 'aux' octave 1 uses head 'aux', which .* does not have "
                           r"\(its heads: logits\)[^\n]*$"):
    engine.generate(clf, [1], "aux")
  with pytest.raises(ValueError, match="crop 60 is larger than the canvas 48"):
    engine.generate(clf, [1], quick(view=(Crop(60),)))
  with pytest.raises(ValueError, match="starts from a photo"):
    engine.generate(clf, [1], small(recipes.get("transfigure")))
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(classgen_jax.images.ImageError, match="cannot read"):
    engine.generate(clf, [1], quick(), init=bad)
  with pytest.raises(ValueError, match="no targets"):
    engine.generate(clf, [], quick())
  with pytest.raises(classgen_jax.InputError, match=r"^Classifier.normalisation must be one "
                     r"of imagenet, none; got 'article'$"):
    clf.with_normalisation("article")
  inception = classgen_jax.Classifier(
      classgen_jax.models.Inception3(), None, "inception_v3", 299)
  with pytest.raises(classgen_jax.InputError, match="needs at least 299 px"):
    engine.generate(inception, [1], dataclasses.replace(recipes.get("aux"), size=256))


def _one_octave(objective):
  return Recipe("quick", "uniform", 48, (Octave(1, objective),))


def test_bad_priors_give_one_line_errors_naming_recipe_and_field():
  clf = tiny()
  lucid = P.Sigmoid(P.Decorrelated(P.Fourier()))
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1: Octave.after acts on the "
                                       r"canvas's pixels, but the recipe optimises Sigmoid"):
    dataclasses.replace(quick(after=(Clip(),)), image=lucid)
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1: Octave.resize"):
    Recipe("quick", "parameters", 48, (Octave(2, obj.class_logit(), resize=ResizeCycle(
        (40,), until=1)),), image=lucid)
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1 objective: the weight of "
                                       r"total_variation_l2\(\) is -inf"):
    _one_octave(obj.class_logit() - float("inf") * obj.total_variation_l2())
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1 objective: "
                                       r"batch_norm_statistics\(10.0\) is a prior"):
    _one_octave(obj.class_logit() + 0.01 * obj.batchnorm_statistics())
  no_batchnorm = dataclasses.replace(clf, variables={"params": clf.variables["params"]})
  assert clf.has_batchnorm and not no_batchnorm.has_batchnorm
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1 objective: the BatchNorm "
                                       r"statistics prior needs .* has none"):
    engine.generate(no_batchnorm, [1], _one_octave(
        obj.class_logit() - 0.01 * obj.batchnorm_statistics()))
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 2: Maco's photo spectrum .* "
                                       r"canvas is 240 px"):
    engine.generate(clf, [1], Recipe("quick", "parameters", 48, (
        Octave(1, obj.class_logit()), Octave(1, obj.class_logit(), canvas=240)),
        image=P.Sigmoid(P.Decorrelated(P.Maco()))))


@pytest.mark.slow  # a two-view program compiled, ~7 s
def test_several_views_average_the_objective_over_views():
  """views=1 is the single view; with 2 views the first view is the same
  draw, and the recorded objective is the mean over the two."""
  one = quick(view=(Crop(40), Roll(3), Flip()), iterations=1)
  three = dataclasses.replace(one, octaves=(dataclasses.replace(one.octaves[0], views=2),))
  draws_one = engine.random_draws(one, [1, 2], [0, 0], 0)[0][0]
  draws_three = engine.random_draws(three, [1, 2], [0, 0], 0)[0][0]
  for a, b in zip(draws_one, draws_three[:3]):
    np.testing.assert_array_equal(a, b)
  others = draws_three[3]
  assert len(others) == 1 and not np.array_equal(others[0][0], draws_one[0])
  clf = tiny()
  result = engine.generate(clf, [1, 2], three)
  start = engine.initial_images(three, engine.image_keys(0, [1, 2], [0, 0]))
  logits = []
  logits_of = jax.jit(lambda c, x: c(x)["logits"])  # one compile, not three eager passes
  for view_draws in (draws_one, *others):
    views = []
    for j in range(2):
      view = T.crop(start[j], view_draws[0][j], size=40)
      view = T.flip_horizontal(T.shift(view, view_draws[1][j]), view_draws[2][j])
      views.append(view)
    logits.append(logits_of(clf, jnp.stack(views))[np.arange(2), [1, 2]])
  np.testing.assert_allclose(result.trace.objective[0], np.mean(logits, axis=0), rtol=1e-5)
  np.testing.assert_allclose(result.trace.target_logit[0], logits[0], rtol=1e-5)


def test_transfiguration_starts_from_the_antialiased_photo():
  """A photo start is resized as torchvision's ``Resize`` (antialiased), as the
  article loads its photos."""
  import torch
  import torchvision.transforms.functional as TF
  photo = np.random.default_rng(0).random((120, 90, 3)).astype(np.float32)
  recipe = small(recipes.get("transfigure"), 1)
  start = np.asarray(engine.initial_images(recipe, engine.image_keys(0, [1], [0]), [photo]))
  want = TF.resize(torch.from_numpy(photo).permute(2, 0, 1), [recipe.size] * 2,
                   antialias=True).permute(1, 2, 0).numpy()
  np.testing.assert_allclose(start[0], want, atol=1e-5)
  from classgen_jax import transforms
  aliased = np.asarray(transforms.resize(jnp.asarray(photo), recipe.size))
  assert np.abs(aliased - want).max() > 0.1


@pytest.mark.slow
def test_colour_jitter_comes_before_the_cyclic_resize():
  """The article's resilience loop jitters, then resizes. With bilinear
  resizing and values outside [0, 1] (which the jitter clamps) the other
  order gives another image; the engine and the torch loop follow the
  article's."""
  from classgen_jax import operations, transforms
  from tests.conftest import tiny_torch
  jitter = ColourJitter(brightness=0.5)
  recipe = Recipe("order", "photo", 40, (Octave(
      1, obj.class_logit(), updates.Gradient(), (0.0, 0.0), before_resize=(jitter,),
      resize=operations.ResizeCycle((30,), until=1, interpolation="bilinear")),))
  photo = np.random.default_rng(1).uniform(-0.5, 1.5, (40, 40, 3)).astype(np.float32)
  result = engine.generate(tiny(), [3], recipe, seed=2, init=photo)
  draws = engine.random_draws(recipe, [3], [0], seed=2)
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


@pytest.mark.slow
def test_a_repeated_target_continues_its_restarts():
  recipe = quick("sign", 0.05, iterations=2, view=(Roll(3),))
  twice = engine.generate(tiny(), [5, 7, 5], recipe, seed=4)
  assert list(twice.targets) == [5, 7, 5] and list(twice.restarts) == [0, 0, 1]
  assert not np.array_equal(twice.images[0], twice.images[2])
  restarts = engine.generate(tiny(), [5], recipe, seed=4, restarts=2)
  np.testing.assert_array_equal(twice.images[[0, 2]], restarts.images)


def test_octave_recipes_read_the_article():
  """Recipes 8-9 step on the article's layer_gradient (logit towards 200 and
  L1 on the input); recipe 10 and the ResNet recipe, the optimised octaves,
  on the plain logit. All start from the article's scaled noise."""
  l1 = obj.logit_distance(200.0) - 0.001 * obj.l1()
  for name in ("octaves", "octaves_coherent"):
    recipe = recipes.get(name)
    assert all(o.objective == l1 for o in recipe.octaves), name
    assert any(isinstance(t, obj.L1) for o in recipe.octaves for _, t in o.objective.terms)
  for name in ("octaves_padded", "octaves_750"):
    recipe = recipes.get(name)
    assert all(o.objective == obj.class_logit() for o in recipe.octaves), name
    assert not any(isinstance(t, obj.L1) for o in recipe.octaves for _, t in o.objective.terms)
  for name in ("octaves", "octaves_coherent", "octaves_padded", "octaves_750"):
    assert recipes.get(name).init == "scaled_uniform"
  last = recipes.get("octaves_750").octaves[-1]
  assert last.canvas == 750 and last.view == (Crop(720),)
  # DeepDraw's make_step: the step, then clip, then blur.
  for octave_ in recipes.get("deepdraw").octaves:
    assert [type(op) for op in octave_.after] == [Clip, Blur]


# A representative few in the default run (sign steps, the cyclic resize,
# padding and crops, Adam with jitter and flips); every recipe, the aux-headed
# ones with L1 steps (deepdraw, aux) and the image priors (Fourier and phase
# images, several views, the BatchNorm prior) included, in the slow pass.
_PARITY_DEFAULT = ("sign",)


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
  if name == "maco":
    # At maco's rate (1.0) the paths differ by 9e-15, 8e-13, then 5e-4 after
    # 1, 2, 3 steps: Adam turns a phase whose gradient is at rounding size
    # into a step of up to the rate, so rounding decides it (as a sign does
    # for the sign recipe). Same renderer and rule at any rate: compare at 0.05.
    recipe = dataclasses.replace(recipe, octaves=tuple(
        dataclasses.replace(o, step_size=(0.05, 0.05)) for o in recipe.octaves))
  module = model_for(recipe).double()
  try:
    clf = converters.from_torchvision(module, dtype=jnp.float64)
    clf = clf.with_normalisation(normalisation)
    targets, restarts = [1, 281], [0, 0]
    init = np.asarray(engine.initial_images(recipe, engine.image_keys(0, targets, restarts),
                                            np.random.default_rng(0).random((2, 40, 50, 3))
                                            if recipe.init == "photo" else None))
    init = init.astype(np.float64)
    draws = engine.random_draws(recipe, targets, restarts, seed=0, dtype=jnp.float64)
    ours = engine.generate(clf, targets, recipe, seed=0, init=list(init))
    theirs = torch_generate(module, targets, recipe, init, draws,
                            normalisation).detach().numpy()
  finally:
    module.float()
  diff = np.abs(np.clip(theirs, 0, 1) - ours.images).max()
  print(f"{name}: max abs diff {diff:.1e}")
  assert diff <= 1e-8


@pytest.mark.slow
def test_final_metrics_describe_the_returned_image_and_the_raw_canvas():
  clf = tiny()  # input_size 224: a 64 px canvas is upsampled for the metrics
  wild = Recipe("wild", "uniform", 64,
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
  native = Recipe("native", "uniform", 224, (Octave(
      2, obj.log_probability(), updates.Sign(), (0.3, 0.3), after=(Clip(),)),))
  result = engine.generate(clf, [3, 500], native, seed=1)
  np.testing.assert_array_equal(result.rank_as_optimised, result.rank)


@pytest.mark.slow
def test_chunks_share_one_compiled_octave_and_change_no_image():
  recipe = quick("sign", 0.02, iterations=2, view=(Crop(40), Roll(3)))
  whole = engine.generate(tiny(), [1, 2, 3, 4, 5], recipe, seed=3)
  plan = step.plan(tiny(), recipe)[0]
  compiled = octave.compiled(plan)
  before = compiled._cache_size()
  chunked = engine.generate(tiny(), [1, 2, 3, 4, 5], recipe, seed=3, batch_size=2)
  # Chunks of 2, 2 and 1 padded to 2: one new program, not two.
  assert compiled._cache_size() == before + 1
  np.testing.assert_array_equal(whole.images, chunked.images)
  assert len(chunked.images) == len(chunked.rank_as_optimised) == 5
  # A caller's last, smaller batch padded to its full ones: no new program.
  tail = engine.generate(tiny(), [4, 5], recipe, seed=3, batch_size=3, pad_to=3)
  engine.generate(tiny(), [1, 2, 3], recipe, seed=3, batch_size=3)
  assert compiled._cache_size() == before + 2  # batches of 2 (above) and of 3
  np.testing.assert_array_equal(tail.images, whole.images[3:])


@pytest.mark.slow  # three compiles, ~20 s
def test_precompile_compiles_every_octave_before_the_first_runs():
  recipe = dataclasses.replace(small(recipes.get("octaves_padded"), iterations=2),
                               name="precompiled")
  clf = tiny()
  plans = step.plan(clf, recipe)
  assert len(plans) == 3
  heard = []  # with progress, octaves run in chunks: programs of their own
  seconds = engine.precompile(clf, plans, 2, progress=heard.append)
  assert seconds > 0 and [e.event for e in heard] == ["compiling"] * 3 + ["compiled"] * 3
  assert engine.precompile(clf, plans, 2, progress=heard.append) == 0.0  # done already
  events = []
  result = engine.generate(clf, [1, 2], recipe, progress=events.append)
  assert not [e for e in events if e.event == "compiling"]  # the first calls found them
  assert result.compile_seconds == 0.0 and np.isfinite(result.images).all()


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


def _program_bytes(clf, recipe, size):
  """Device memory of the recipe's (one) octave program at ``size`` images,
  as XLA's memory analysis counts it."""
  plan = step.plan(clf, recipe)[0]
  state = step.init_state(plan, jnp.zeros((size, plan.buffer, plan.buffer, 3)))
  zeros = np.zeros(size, np.int32)
  stats = octave.compiled(plan).lower(clf, state, jnp.asarray(zeros),
                                      engine.image_keys(0, zeros, zeros)).compile()
  stats = stats.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


@pytest.mark.slow  # eight small compiles, ~12 s
def test_the_batch_size_fits_the_free_memory():
  clf, recipe = tiny(), quick(iterations=2, view=(Crop(40),))
  assert engine.choose_batch_size(clf, recipe, 5, free_bytes=2**40) == 5  # all
  assert engine.choose_batch_size(clf, recipe, 48, free_bytes=2**40) == 8  # a CPU's guess
  assert engine.choose_batch_size(clf, recipe, 10, free_bytes=2**40) == 5  # 5 + 5, not 8 + 2
  # Room for fewer than 8: the tiny model's programs have a large fixed part
  # (63 MB at 1 image, 20 MB of it weights), which the second try measures.
  one, eight = _program_bytes(clf, recipe, 1), _program_bytes(clf, recipe, 8)
  free = int((one + eight) / 2 / 0.8)
  chosen = engine.choose_batch_size(clf, recipe, 50, free_bytes=free)
  assert 2 <= chosen < 8
  assert _program_bytes(clf, recipe, chosen) <= 0.8 * free < _program_bytes(clf, recipe, 8)
  with pytest.raises(engine.BatchSizeError, match=r"'quick' needs about .* GiB .* is free"):
    engine.choose_batch_size(clf, recipe, 50, free_bytes=1000)
  assert engine.free_memory() > 0  # a CPU: the host's available memory
