"""Measuring how recipes show a layer's units (``classgen_jax.unit_quality``)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from classgen_jax import objectives as obj
from classgen_jax import transforms, unit_quality
from tests.helpers import QUICK, quick, tiny

pytestmark = pytest.mark.xdist_group("units")


@pytest.mark.slow  # 7 s of eager crops on the tiny model (a measure, not generation)
def test_whole_image_crops_give_the_units_value_at_the_native_size():
  clf, family = tiny(), obj.channel("layer2").terms[0][1]
  images = np.random.default_rng(0).random((2, 48, 48, 3)).astype(np.float32)
  robust = unit_quality.robust_values(clf, images, family, [3, 9], views=2, smallest=1.0)
  native = jax.vmap(lambda x: transforms.resize(x, clf.input_size))(images)
  values = family.values(clf.outputs(native, family.needs), native)
  np.testing.assert_allclose(robust, np.asarray(values)[[0, 1], [3, 9]], rtol=1e-5)
  shifted = unit_quality.robust_values(clf, images, family, [3, 9], views=4)
  assert not np.allclose(shifted, robust)  # smaller crops see other pixels


def test_summary_shares_of_the_best_recipe_and_top_units():
  row = dict(layer="l", seconds=1.0, colourfulness=10.0, spectral_slope=2.0)
  rows = [dict(row, recipe="a", target=0, activation=2.0, robust=1.0, rank=0),
          dict(row, recipe="a", target=1, activation=1.0, robust=1.0, rank=3),
          dict(row, recipe="b", target=0, activation=4.0, robust=0.5, rank=0),
          dict(row, recipe="b", target=1, activation=1.0, robust=2.0, rank=0, seconds=None)]
  table = unit_quality.summarise(rows)
  assert table["a"]["activation"] == pytest.approx((0.5 + 1.0) / 2)
  assert table["b"]["activation"] == pytest.approx(1.0)
  assert table["a"]["robust"] == pytest.approx((1.0 + 0.5) / 2)
  assert table["a"]["top_unit"] == 0.5 and table["b"]["top_unit"] == 1.0
  assert table["b"]["seconds"] == 1.0  # a resumed atlas's images have no time


@pytest.mark.slow  # 12 s: two recipes, two layers, the sheet (summary and table: above)
def test_evaluate_measures_each_recipe_on_the_same_units(tmp_path):
  other = dataclasses.replace(quick("adam", iterations=3), name="adam")
  record = unit_quality.evaluate(tiny(), [QUICK, other], ["layer2", "layer3"], "0-1", tmp_path,
                                 views=2)
  assert [(r["recipe"], r["layer"], r["target"]) for r in record["rows"]] == [
      (name, layer, c) for name in ("quick", "adam") for layer in ("layer2", "layer3")
      for c in (0, 1)]
  assert list(record["recipes"]) == ["quick", "adam"]
  for values in record["recipes"].values():
    assert set(values) == set(unit_quality.MEASURES) and 0 < values["activation"] <= 1
  assert max(v["activation"] for v in record["recipes"].values()) > 0.5
  again = unit_quality.evaluate(tiny(), [QUICK], ["layer2"], "0-1", tmp_path, views=2)
  assert again["recipes"]["quick"]["activation"] == 1.0  # resumed; the only recipe is the best
  assert again["recipes"]["quick"]["seconds"] is None
  assert unit_quality.table(again).splitlines()[2].startswith("| quick | 1.00 |")
  path = unit_quality.sheet(record, tmp_path, thumbnail=32)
  assert path.name == "units_layer3.png" and (tmp_path / "units_layer2.png").is_file()
