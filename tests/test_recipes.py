"""Recipes: the article's numbers, names and aliases, scaling, and the
refusals of a recipe that cannot run."""

from __future__ import annotations

import pytest

from classgen_jax import objectives as obj
from classgen_jax import recipes
from classgen_jax.operations import Blur, Clip, Crop, Operation
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform


def test_steps_scale_shortens_every_octave():
  recipe = recipes.get("octaves", steps_scale=0.1)
  assert [o.iterations for o in recipe.octaves] == [10, 10, 10]
  assert recipes.get("smooth", steps_scale=0.5).octaves[0].before[0].until == 38
  assert recipes.get("resilient", steps_scale=2).octaves[0].resize.until == 152
  with pytest.raises(ValueError, match="did you mean octaves"):
    recipes.get("octave")
  with pytest.raises(ValueError, match="steps_scale must be positive"):
    recipes.get("octaves", steps_scale=0)
  assert recipes.get("recognisable") is recipes.get("jittered_adam")  # its earlier name
  assert recipes.DEFAULT in recipes.names()
  for name in recipes.names():
    assert recipes.get(name).description, name


def test_octave_recipes_read_the_article():
  """Recipes 8-9 step on the article's layer_gradient (logit towards 200 and
  L1 on the input); recipe 10 and the ResNet recipe, the optimised octaves,
  on the plain logit. All start from the article's scaled noise."""
  l1 = obj.logit_distance(200.0) - 0.001 * obj.l1()
  for name in ("octaves", "octaves_coherent"):
    recipe = recipes.get(name)
    assert all(o.objective == l1 for o in recipe.octaves), name
  for name in ("octaves_padded", "octaves_750"):
    recipe = recipes.get(name)
    assert all(o.objective == obj.class_logit() for o in recipe.octaves), name
    assert not any(isinstance(t, obj.L1) for o in recipe.octaves for _, t in o.objective.terms)
  for name in ("octaves", "octaves_coherent", "octaves_padded", "octaves_750"):
    assert recipes.get(name).start == Uniform(25.0, 0.5)
  last = recipes.get("octaves_750").octaves[-1]
  assert last.canvas == 750 and last.view == (Crop(720),)
  # DeepDraw's make_step: the step, then clip, then blur.
  for octave in recipes.get("deepdraw").octaves:
    assert [type(op) for op in octave.after] == [Clip, Blur]


def test_what_a_recipe_reads_and_how_it_moves_heads():
  recipe = recipes.get("deepdraw")
  assert recipe.heads == ("logits", "aux2", "aux1")
  assert recipe.with_head("logits").heads == ("logits",)
  natural = recipes.get("natural")
  assert natural.heads == ("logits",) and natural.octaves[0].objective.needs.batchnorm
  assert recipe.iterations == sum(o.iterations for o in recipe.octaves)
  ops = recipes.get("lucid").octaves[0].operations
  assert all(isinstance(op, Operation) for op in ops) and len(ops) == 6


def test_bad_octaves_and_recipes_are_refused():
  with pytest.raises(ValueError, match="at least 1 iteration"):
    Octave(0)
  with pytest.raises(ValueError, match="views must be at least 1"):
    Octave(1, views=0)
  with pytest.raises(ValueError, match="a ResizeCycle goes in Octave.resize"):
    Octave(1, view=("crop",))
  with pytest.raises(ValueError, match="needs at least one octave"):
    Recipe("empty", Uniform(), 8, ())
