"""The quality benchmark: judges, scores, contact sheet, adversarial rates, errors."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import quality
from classgen_jax.classify import class_probabilities
from classgen_jax.recipes import Octave, Recipe
from classgen_jax.updates import Update
from tests.conftest import tiny

QUICK = Recipe("quick", "uniform", 48, (Octave(3, update=Update("sign"), step_size=(0.02, 0.02)),))


def test_default_classes_are_32_spread_over_imagenet():
  classes = quality.DEFAULT_CLASSES
  assert len(set(classes)) == 32 and min(classes) >= 0 and max(classes) < 1000
  assert np.all(np.diff(classes) >= 31)


def test_judge_scores():
  clf = tiny()
  images = np.random.default_rng(0).random((4, 48, 48, 3)).astype(np.float32)
  probabilities = np.asarray(class_probabilities(clf, images))
  top = probabilities.argmax(1)
  targets = [int(top[0]), int(top[1]), (int(top[2]) + 1) % 1000, int(top[3])]
  score = quality.judge(clf, images, targets, batch_size=3)
  assert score.top1 == pytest.approx(0.75)
  assert score.top5 >= score.top1
  assert score.predictions[2][0] == top[2]
  expected = probabilities[np.arange(4), targets].mean()
  assert score.mean_target_prob == pytest.approx(expected, rel=1e-5)


def test_evaluate_and_contact_sheet():
  clf = tiny()
  scores, skipped = quality.evaluate(clf, {"tiny": clf}, [QUICK, "deepdraw"], [1, "tabby", 7])
  (score,) = scores
  assert "has no head aux2" in skipped["deepdraw"]
  assert score.recipe == "quick" and score.judges["tiny"].self_judging
  assert score.self_top1 == score.judges["tiny"].top1
  data = score.as_json()
  assert set(data) == {"self_top1", "self_top1_as_optimised", "judges", "seconds"}
  assert 0 <= data["self_top1_as_optimised"] <= 1
  assert set(data["judges"]["tiny"]) == {"top1", "top5", "mean_target_prob", "self_judging"}
  sheet = quality.contact_sheet(score, clf.labels, thumb=64, columns=2)
  assert sheet.size == (128, 2 * (64 + 12 * 2 + 2))


def test_bfloat16_generation_is_judged_in_float32():
  clf = tiny()
  (f32,), _ = quality.evaluate(clf, {"tiny": clf}, [QUICK], [1, 7])
  (bf16,), _ = quality.evaluate(clf, {"tiny": clf}, [QUICK], [1, 7],
                                compute_dtype=jnp.bfloat16)
  assert bf16.generation.images.dtype == np.float32
  assert not np.array_equal(bf16.generation.images, f32.generation.images)
  # Three sign steps of 0.02: bf16 may flip a pixel's sign, never more than that.
  np.testing.assert_allclose(bf16.generation.images, f32.generation.images, atol=0.12 + 1e-6)


def test_markdown_table_of_several_runs():
  def run(recipe, dtype, top1):
    judges = {"lite1": {"top1": top1, "top5": 1.0, "mean_target_prob": 0.5,
                        "self_judging": False}}
    raw = {} if recipe == "sign" else {"self_top1_as_optimised": 0.5}
    return {"dtype": dtype, "judges": ["lite1"],
            "recipes": {recipe: {"self_top1": 1.0, "judges": judges, "seconds": 12.4, **raw}}}
  # Rows come in the catalogue's order, whatever the files' order.
  table = quality.markdown_table([run("recognisable", "bfloat16", 0.9375),
                                  run("sign", "float32", 0.0625)])
  lines = table.splitlines()
  assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
  assert lines[2] == "| `sign` |  | 100% | 6% / 100% (0.50) | 12 |"  # no raw rank recorded
  assert lines[3].startswith("| `recognisable` (bfloat16) | 50% | 100% | 94% / 100%")
  again = dict(run("sign", "float32", 0.0), device="cpu", steps_scale=0.2)
  lines = quality.markdown_table([run("sign", "float32", 0.0625), again]).splitlines()
  assert lines[2].startswith("| `sign` (?) |")
  assert lines[3].startswith("| `sign` (0.2x steps, cpu) |")


def test_empty_classes_and_judges():
  clf = tiny()
  with pytest.raises(ValueError, match="class list is empty"):
    quality.evaluate(clf, {"t": clf}, [QUICK], [])
  with pytest.raises(ValueError, match="no judges"):
    quality.evaluate(clf, {}, [QUICK], [1])


def test_adversarial_rates_structure():
  photos = {"a": np.full((40, 40, 3), 0.3, np.float32),
            "b": np.random.default_rng(0).random((30, 50, 3)).astype(np.float32)}
  rates = quality.adversarial_flip_rates(tiny(), photos, [0.0, 0.5], random_draws=2)
  assert rates["random_sign"][0] == rates["gradient_sign"][0] == 0.0
  assert len(rates["gradient_sign"]) == 2 and rates["photos"] == ["a", "b"]


@pytest.mark.parametrize("flags,message", [
    (["--classes="], "--classes is empty"),
    (["--classes=chikadee"], "did you mean 'chickadee'"),
    (["--judges=efficientnet_lite9"], "unknown model 'efficientnet_lite9'"),
])
def test_script_errors_are_one_line(flags, message):
  result = subprocess.run([sys.executable, "scripts/evaluate_quality.py", *flags],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
