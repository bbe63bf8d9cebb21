"""Adversarial flip rates: on the tiny model, the gradient-sign direction flips
photos that random sign directions of the same size leave alone."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from classgen_jax import adversarial, images
from tests.helpers import tiny


def _tiny():
  """The tiny model, its photos resized to 96 px (a fifth of the work of 224)."""
  return dataclasses.replace(tiny(), input_size=96)

# Its tests share the module's fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("adversarial")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
  """Four photos: the left and right squares of each bundled one."""
  crops = {}
  for name, photo in images.bundled_photos().items():
    side = min(photo.shape[:2])
    crops[f"{name}_left"] = photo[:side, :side]
    crops[f"{name}_right"] = photo[:side, -side:]
  return crops


def test_gradient_sign_flips_more_photos_than_random_sign(photos):
  # One grey level: the tiny model's top-1 (the same class, at 10-70%, for
  # every photo) survives random signs, and falls to the loss's gradient sign.
  rates = adversarial.flip_rates(_tiny(), photos, [1 / 255], random_draws=3, confident=0.0)
  assert rates["photos"] == list(photos)
  assert rates["gradient_sign"][0] >= 0.75
  assert rates["random_sign"][0] <= 0.25
  # Every photo counts as recognised at confident=0: the two views agree.
  assert rates["confident_photos"] == 4
  assert rates["confident_gradient_sign"] == rates["gradient_sign"]
  assert rates["confident_random_sign"] == rates["random_sign"]


def test_run_prints_a_table_and_writes_json(photos, tmp_path):
  path = tmp_path / "adversarial.json"
  table = adversarial.run(_tiny(), photos, ["0.5", 2], json_out=path).splitlines()
  assert table[0].startswith("top-1 changed, all 4 photos / the ")
  assert [line.split()[0] for line in table[2:]] == ["0.5/255", "2/255"]
  data = json.loads(path.read_text())
  assert data["model"] == "resnet" and data["epsilons_255"] == ["0.5", "2"]
  assert len(data["random_sign"]) == len(data["confident_gradient_sign"]) == 2
  assert data["gradient_sign"][1] > data["random_sign"][1]


def test_run_errors(photos):
  with pytest.raises(ValueError, match="no photos"):
    adversarial.run(tiny(), {}, ["1"])
  with pytest.raises(ValueError, match="must be numbers"):
    adversarial.run(tiny(), photos, ["one"])
