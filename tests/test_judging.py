"""Judging: scores against a hand count, skipped recipes, self-judging, and
bfloat16 generation judged in float32."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import judging, recognisability
from classgen_jax.classify import class_probabilities
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform
from classgen_jax.updates import Sign
from tests.helpers import tiny
from tests.shared import red_judge

QUICK = Recipe("quick", Uniform(), 48, (Octave(3, update=Sign(), step_size=(0.02, 0.02)),))


def test_judge_scores():
  clf = tiny()
  images = np.random.default_rng(0).random((4, 48, 48, 3)).astype(np.float32)
  probabilities = np.asarray(class_probabilities(clf, images))
  top = probabilities.argmax(1)
  targets = [int(top[0]), int(top[1]), (int(top[2]) + 1) % 1000, int(top[3])]
  score = judging.judge(clf, images, targets, batch_size=3)
  assert score.top1 == pytest.approx(0.75)
  assert score.top5 >= score.top1
  assert score.predictions[2][0] == top[2]
  expected = probabilities[np.arange(4), targets].mean()
  assert score.mean_target_prob == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # 10 s; test_comparison measures a judge's views by default
def test_judges_other_than_the_generator_also_see_the_views_of_a_glance():
  # The judges see 24 views of each image at their native size: 64 px here.
  clf = dataclasses.replace(tiny(), input_size=64)
  scores, _ = judging.evaluate(clf, {"self": clf, "red": red_judge()}, [QUICK],
                               [0, 1, 2], batch_size=3)
  (score,) = scores
  assert score.judges["self"].self_judging and not score.judges["red"].self_judging
  assert set(score.recognisability) == set(recognisability.MEASURES)
  # Only the red judge's: its top-1 whole is the recorded one.
  assert score.recognisability["full_top1"] == pytest.approx(score.judges["red"].top1)


@pytest.mark.slow
def test_evaluate_skips_missing_heads_and_marks_self_judging():
  clf = tiny()
  scores, skipped = judging.evaluate(clf, {"tiny": clf}, [QUICK, "deepdraw"], [1, "tabby", 7])
  (score,) = scores
  assert "has no head aux2" in skipped["deepdraw"]
  assert score.recipe == "quick" and score.judges["tiny"].self_judging
  assert score.self_top1 == score.judges["tiny"].top1
  assert 0 <= score.self_top1_as_optimised <= 1
  assert list(score.generation.targets) == [1, 281, 7]
  assert score.generation.images.shape == (3, 48, 48, 3)


@pytest.mark.slow  # compiles the octave twice more (float32 and bfloat16): 12 s
def test_bfloat16_generation_is_judged_in_float32():
  clf = tiny()
  (f32,), _ = judging.evaluate(clf, {"tiny": clf}, [QUICK], [1, 7])
  (bf16,), _ = judging.evaluate(clf, {"tiny": clf}, [QUICK], [1, 7],
                                compute_dtype=jnp.bfloat16)
  assert bf16.generation.images.dtype == np.float32
  assert not np.array_equal(bf16.generation.images, f32.generation.images)
  # Three sign steps of 0.02: bf16 may flip a pixel's sign, never more than that.
  np.testing.assert_allclose(bf16.generation.images, f32.generation.images, atol=0.12 + 1e-6)


def test_empty_classes_and_judges():
  clf = tiny()
  with pytest.raises(ValueError, match="class list is empty"):
    judging.evaluate(clf, {"t": clf}, [QUICK], [])
  with pytest.raises(ValueError, match="no judges"):
    judging.evaluate(clf, {}, [QUICK], [1])
