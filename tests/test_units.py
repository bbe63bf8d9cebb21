"""Atlases of a layer's units (``classgen_jax.units``): the families, the
direction files, the help's layers, a unit atlas's files and rows, and its
resuming after a real kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import classgen_jax
from classgen_jax import folders, models, units
from classgen_jax import objectives as obj
from classgen_jax.images import load_image, read_png_metadata
from tests.helpers import QUICK, TINY_WIDTH, kill_once_rows_are_written, tiny

pytestmark = pytest.mark.xdist_group("units")  # one worker: the reference atlas once

ROOT = Path(__file__).resolve().parents[1]
LAYER = "layer2"  # the tiny ResNet's: 2 * TINY_WIDTH channels


def test_each_kind_is_its_family_and_other_settings_are_refused():
  assert units.family("channels", LAYER) == obj.channel(LAYER)
  assert units.family("neurons", LAYER, position=(1, 2)) == obj.neuron(LAYER, None, 1, 2)
  table = np.eye(3)
  assert units.family("directions", LAYER, directions=table) == obj.directions(LAYER, table)
  with pytest.raises(folders.AtlasError, match="unknown kind of unit 'filters'; choose one of "
                                               "channels, neurons, directions"):
    units.family("filters", LAYER)
  with pytest.raises(folders.AtlasError, match="a position is a neuron's"):
    units.family("channels", LAYER, position=(1, 1))
  with pytest.raises(folders.AtlasError, match="directions come from a file"):
    units.family("directions", LAYER)


def test_directions_load_from_npy_json_and_text(tmp_path):
  table = np.random.default_rng(0).standard_normal((3, 4))
  np.save(tmp_path / "d.npy", table)
  (tmp_path / "d.json").write_text(json.dumps(table.tolist()))
  lines = [[repr(float(v)) for v in row] for row in table]
  (tmp_path / "d.csv").write_text("\n".join(",".join(line) for line in lines))
  (tmp_path / "d.txt").write_text("\n".join(" ".join(line) for line in lines) + "\n\n")
  for name in ("d.npy", "d.json", "d.csv", "d.txt"):
    np.testing.assert_array_equal(units.load_directions(tmp_path / name), table, err_msg=name)


@pytest.mark.parametrize("content,message", [
    (None, r"could not be read \(No such file or directory\)"),
    ("1 2 3\n4 5\n", "could not be read"),  # ragged
    ("1 2 nan\n", "no table of finite numbers"),
    ("", "no table of finite numbers"),
    ("a b\n", "could not be read"),
])
def test_a_bad_directions_file_is_one_line(tmp_path, content, message):
  path = tmp_path / "d.txt"
  if content is not None:
    path.write_text(content)
  with pytest.raises(folders.AtlasError, match=message) as error:
    units.load_directions(path)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("model", [
    "efficientnet_lite0", "googlenet", "resnet18",
    pytest.param("inception_v3", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite1", marks=pytest.mark.slow),
    pytest.param("vit_b_16", marks=pytest.mark.slow)])
def test_the_help_names_layers_the_model_has(model):
  spec = models.MODELS[model]
  module = models.build(spec.architecture, spec.config)
  names = {layer.name for layer in classgen_jax.activations.layers(module, spec.input_size)}
  assert set(units.MAIN_LAYERS[model]) <= names
  assert set(units.MAIN_LAYERS) == set(models.MODELS)


def test_the_help_writes_numbered_runs_compactly():
  text = units.main_layers_help()
  assert "efficientnet_lite0: _conv_stem, _blocks.0-15, _conv_head" in text
  assert "resnet18, resnet34, resnet50, resnet101, resnet152: conv1, layer1, layer2" in text


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> Path:
  """Channels 0-3 of the tiny ResNet's layer2, two per batch: the atlas's folder."""
  out = tmp_path_factory.mktemp("units")
  units.make_units(tiny(), LAYER, "0-3", out, QUICK, batch_size=2)
  return out / LAYER


def test_a_unit_atlas_names_its_units_in_files_rows_and_metadata(channels):
  rows = folders.read_summary(channels)
  assert [r["target"] for r in rows] == [0, 1, 2, 3]
  assert [r["file"] for r in rows] == [f"000{c}_layer2_channel_{c}_r0.png" for c in range(4)]
  for row in rows:
    assert row["layer"] == LAYER and row["unit"] == "channel"
    assert row["name"] == f"{LAYER} channel {row['target']}"
    assert np.isfinite(row["activation"]) and 0 <= row["rank"] < 2 * TINY_WIDTH
    assert row["top_class_name"] == classgen_jax.imagenet.class_name(row["top_class"])
    assert "probability" not in row and "target_logit" not in row
    text = read_png_metadata(channels / row["file"])
    assert text["layer"] == LAYER and text["unit"] == "channel"
    assert json.loads(text["summary"]) == row
  header = (channels / folders.SUMMARY_CSV).read_text().splitlines()[0]
  assert header.split(",") == list(folders.UNIT_SUMMARY_FIELDS)
  config = json.loads((channels / folders.RUN_FILE).read_text())
  assert "Channel(layer='layer2', channel=None" in config["recipe"]


def test_units_out_of_their_layer_are_one_line(tmp_path):
  with pytest.raises(folders.AtlasError, match=f"channel {2 * TINY_WIDTH} is out of range: "
                                               f"--channels takes 0 to {2 * TINY_WIDTH - 1}"):
    units.make_units(tiny(), LAYER, f"0-{2 * TINY_WIDTH}", tmp_path, QUICK)
  with pytest.raises(classgen_jax.LayerError, match="no layer 'layer5'; did you mean"):
    units.make_units(tiny(), "layer5", "0", tmp_path, QUICK)
  with pytest.raises(classgen_jax.LayerError, match="a direction has 3 numbers"):
    units.make_units(tiny(), LAYER, "all", tmp_path, QUICK, kind="directions",
                     directions=np.ones((2, 3)))
  with pytest.raises(classgen_jax.LayerError, match=r"is 4x4 in the recipe's 32 px views; "
                                                    r"neuron \(4, 0\) is outside it"):
    units.make_units(tiny(), LAYER, "all", tmp_path, QUICK, kind="neurons", position=(4, 0))
  assert not list(tmp_path.iterdir())  # refused before the folder is touched


def test_neurons_and_directions_make_an_image_each(tmp_path):
  table = np.random.default_rng(1).standard_normal((2, 2 * TINY_WIDTH))
  done = units.make_units(tiny(), LAYER, "all", tmp_path, QUICK, kind="directions",
                          directions=table)
  assert [r["name"] for r in done.rows] == [f"{LAYER} direction 0", f"{LAYER} direction 1"]
  done = units.make_units(tiny(), "layer3", "5,7", tmp_path, QUICK, kind="neurons",
                          position=(1, 1))
  assert [r["name"] for r in done.rows] == ["layer3 neuron 5 at (1, 1)",
                                            "layer3 neuron 7 at (1, 1)"]
  assert {p.name for p in tmp_path.iterdir()} == {LAYER, "layer3"}


def test_a_unit_atlas_resumes_after_kill_with_no_partial_file(channels, tmp_path):
  """Killed (-9) once its first batch's rows are written, then resumed: the
  same images as the uninterrupted atlas, no partial file."""
  script = ("import sys\nfrom classgen_jax import units\nfrom tests.shared import QUICK, tiny\n"
            f"units.make_units(tiny(), {LAYER!r}, '0-3', sys.argv[1], QUICK, batch_size=2)\n")
  out = tmp_path / LAYER
  kill_once_rows_are_written(script, str(tmp_path), out)
  assert len(folders.read_summary(out)) == 2
  pngs = len(list(out.glob("*.png")))  # the second batch's may be written too
  resumed = units.make_units(tiny(), LAYER, "0-3", tmp_path, QUICK, batch_size=2)
  assert resumed.kept == pngs and resumed.made == 4 - pngs
  for name in sorted(p.name for p in channels.glob("*.png")):
    np.testing.assert_array_equal(np.asarray(load_image(out / name)),
                                  np.asarray(load_image(channels / name)),
                                  err_msg=name)
  assert [r["file"] for r in folders.read_summary(out)] == [
      r["file"] for r in folders.read_summary(channels)]
  assert not list(tmp_path.rglob(".*.tmp"))


def test_the_default_unit_recipe_is_registered():
  assert units.DEFAULT_RECIPE in classgen_jax.recipes.names()
