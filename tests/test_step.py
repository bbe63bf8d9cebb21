"""One step of an octave: its draws (replayed on the host for the torch
reference), several views a step, and the step's record."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import engine, plans, starts, step
from classgen_jax import transforms as T
from classgen_jax.operations import Blur, ColourJitter, Crop, Flip, Noise, Roll
from tests.helpers import quick, tiny


@pytest.mark.slow  # three compiles of the draws, ~5 s; the default pass's batch-independence
# test of the engine fails if a draw depends on the batch
def test_draws_depend_on_the_image_not_on_the_batch_nor_on_later_operations():
  recipe = quick(before=(ColourJitter(brightness=0.5),), view=(Crop(40), Roll(3), Flip()),
                 iterations=1)
  batch = step.random_draws(recipe, [9, 5], [0, 0], seed=1)
  alone = step.random_draws(recipe, [5], [0], seed=1)
  for ours, its in zip(batch[0][0], alone[0][0]):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[1], b[0]), ours, its)
  keys = step.octave_keys(plans.octave_plans(recipe)[0], starts.image_keys(1, [5], [0]))
  assert not np.array_equal(*(jax.random.key_data(step.iteration_keys(keys, i))
                              for i in (0, 1)))  # each iteration its own
  longer = dataclasses.replace(recipe, octaves=(dataclasses.replace(
      recipe.octaves[0], view=(Crop(40), Roll(3), Flip(), Noise(0.1))),))
  more = step.random_draws(longer, [9, 5], [0, 0], seed=1)
  for ours, its in zip(batch[0][0], more[0][0][:4]):
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, its)
  before, after = (step.streams(r.octaves[0].operations) for r in (recipe, longer))
  assert after[:len(before)] == before and after[-1] not in before


def test_the_step_records_a_trace_per_image():
  recipe = quick(view=(Crop(40),), after=(Blur((1.0, 0.5)),))
  plan = plans.plan(tiny(), recipe)[0]
  keys = starts.image_keys(0, [1, 2], [0, 0])
  canvas = starts.initial_images(recipe, keys)
  state = step.init_state(plan, step.embed(canvas, plan.buffer))
  new, trace = jax.eval_shape(step.make_step(plan, tiny(), jnp.asarray([1, 2]), keys), state)
  assert new.canvas.shape == (2, 48, 48, 3) and new.iteration.dtype == jnp.int32
  assert trace.objective.shape == trace.target_rank.shape == trace.finite.shape == (2,)
  embedded = step.embed(canvas[:, :40, :40], 48)
  np.testing.assert_array_equal(embedded[:, :40, :40], canvas[:, :40, :40])
  assert not np.asarray(embedded[:, 40:]).any()


@pytest.mark.slow  # a two-view program compiled, ~7 s
def test_several_views_average_the_objective_over_views():
  """views=1 is the single view; with 2 views the first view is the same
  draw, and the recorded objective is the mean over the two."""
  one = quick(view=(Crop(40), Roll(3), Flip()), iterations=1)
  three = dataclasses.replace(one, octaves=(dataclasses.replace(one.octaves[0], views=2),))
  draws_one = step.random_draws(one, [1, 2], [0, 0], 0)[0][0]
  draws_three = step.random_draws(three, [1, 2], [0, 0], 0)[0][0]
  for a, b in zip(draws_one, draws_three[:3]):
    np.testing.assert_array_equal(a, b)
  others = draws_three[3]
  assert len(others) == 1 and not np.array_equal(others[0][0], draws_one[0])
  clf = tiny()
  result = engine.generate(clf, [1, 2], three)
  start = starts.initial_images(three, starts.image_keys(0, [1, 2], [0, 0]))
  logits = []
  logits_of = jax.jit(lambda c, x: c(x)["logits"])  # one compile, not three eager passes
  for view_draws in (draws_one, *others):
    views = []
    for j in range(2):
      view = T.crop(start[j], view_draws[0][j], size=40)
      view = T.flip_horizontal(T.shift(view, view_draws[1][j]), view_draws[2][j])
      views.append(view)
    logits.append(logits_of(clf, jnp.stack(views))[np.arange(2), [1, 2]])
  # The engine runs the model on four views at once, this check on two: float32
  # rounding of the batched convolutions differs by about 1e-5 of the logit
  # (machine-dependent), far below the views' own difference.
  assert np.abs(logits[0] - logits[1]).min() > 1e-3 * np.abs(logits[0]).max()
  np.testing.assert_allclose(result.trace.objective[0], np.mean(logits, axis=0), rtol=1e-4)
  np.testing.assert_allclose(result.trace.target_logit[0], logits[0], rtol=1e-4)


def test_the_importance_map_sums_the_gradients_size_on_each_pixel():
  """One plain gradient step of size lr on the pixels moves each by lr times
  its gradient: the map is the step's size per pixel over lr."""
  from classgen_jax import objectives as obj
  from classgen_jax import updates
  from classgen_jax.recipe import Octave, Recipe
  from classgen_jax.starts import Uniform
  lr = 1e-3
  recipe = Recipe("importance", Uniform(4.0, 0.25), 32, (
      Octave(1, obj.class_logit(), updates.Gradient(), (lr, lr), importance=True),))
  result = engine.generate(tiny(), [1, 2], recipe)
  start = np.asarray(starts.initial_images(recipe, starts.image_keys(0, [1, 2], [0, 0])))
  assert result.importance.shape == (2, 32, 32)
  np.testing.assert_allclose(result.importance, np.abs(result.images - start).sum(-1) / lr,
                             rtol=2e-3, atol=1e-3)
