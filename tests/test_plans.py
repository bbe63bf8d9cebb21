"""Plans: a recipe's octaves checked against a classifier, with their canvas
sides; every refusal is one line naming the recipe, the octave and the field."""

from __future__ import annotations

import dataclasses

import pytest

import classgen_jax
from classgen_jax import objectives as obj
from classgen_jax import parameterisations as P
from classgen_jax import plans, recipes, updates
from classgen_jax.operations import Clip, Crop, ResizeCycle
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Parameters, Uniform
from tests.helpers import quick, tiny


def test_plans_follow_the_canvas_through_the_octaves():
  octaves = plans.octave_plans(recipes.get("octaves"))
  assert [p.sides for p in octaves] == [(299,), (340,), (390,)]
  assert [p.index for p in octaves] == [0, 1, 2] and octaves[1].buffer == 340
  resilient = plans.octave_plans(recipes.get("resilient"))[0]
  # The canvas's side at the start, then every side of the cycle.
  assert resilient.sides == (256, 256, 198, 160, 180, 200) and resilient.buffer == 256
  assert resilient.final_side() == 256  # the cycle stops at step 76, back at 256
  assert plans.canvas_sides(recipes.get("resilient")) == [resilient.sides]
  assert plans.view_side(recipes.get("octaves").octaves[1], 340) == 320
  checked = plans.plan(tiny(), recipes.get("octaves"), snapshot_every=5)
  assert [dataclasses.replace(p, snapshot_every=0) for p in checked] == octaves
  assert all(p.snapshot_every == 5 for p in checked)


def test_bad_heads_and_sizes_are_one_line_errors():
  clf = tiny()
  with pytest.raises(classgen_jax.InputError,
                     match=r"^recipe 'aux' octave 1 uses head 'aux', which .* does not have "
                           r"\(its heads: logits\)[^\n]*$"):
    plans.plan(clf, recipes.get("aux"))
  with pytest.raises(ValueError, match="crop 60 is larger than the canvas 48"):
    plans.plan(clf, quick(view=(Crop(60),)))
  inception = classgen_jax.Classifier(
      classgen_jax.models.Inception3(), None, "inception_v3", 299)
  with pytest.raises(classgen_jax.InputError, match="needs at least 299 px"):
    plans.plan(inception, dataclasses.replace(recipes.get("aux"), size=256))
  with pytest.raises(ValueError, match="per-pixel state cannot follow"):
    plans.plan(clf, Recipe("quick", Uniform(), 48, (Octave(
        2, update=updates.Adam(), resize=ResizeCycle((40, 48), until=2)),)))


def _one_octave(objective):
  return Recipe("quick", Uniform(), 48, (Octave(1, objective),))


def test_bad_priors_give_one_line_errors_naming_recipe_and_field():
  clf = tiny()
  lucid = P.Sigmoid(P.Decorrelated(P.Fourier()))
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1: Octave.after acts on the "
                                       r"canvas's pixels, but the recipe optimises Sigmoid"):
    dataclasses.replace(quick(after=(Clip(),)), image=lucid)
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 1: Octave.resize"):
    Recipe("quick", Parameters(), 48, (Octave(2, obj.class_logit(), resize=ResizeCycle(
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
    plans.plan(no_batchnorm, _one_octave(obj.class_logit() - 0.01 * obj.batchnorm_statistics()))
  with pytest.raises(ValueError, match=r"^recipe 'quick' octave 2: Maco's photo spectrum .* "
                                       r"canvas is 240 px"):
    plans.plan(clf, Recipe("quick", Parameters(), 48, (
        Octave(1, obj.class_logit()), Octave(1, obj.class_logit(), canvas=240)),
        image=P.Sigmoid(P.Decorrelated(P.Maco()))))


def test_an_octave_may_change_what_the_steps_change():
  lucid = P.Sigmoid(P.Decorrelated(P.Fourier()))
  recipe = Recipe("two", Parameters(), 48, (
      Octave(1, obj.class_logit()), Octave(1, obj.class_logit(), image=P.Pixels(),
                                           after=(Clip(),))), image=lucid)
  assert [p.image for p in plans.plan(tiny(), recipe)] == [lucid, P.Pixels()]
  assert recipe.image_of(0) == lucid and recipe.image_of(1) == P.Pixels()
  with pytest.raises(ValueError, match=r"^recipe 'two' octave 1: Octave.after acts on the "
                                       r"canvas's pixels"):
    dataclasses.replace(recipe, octaves=(dataclasses.replace(recipe.octaves[0],
                                                             after=(Clip(),)),
                                         recipe.octaves[1]))
