"""Atlases of a layer's units: one image per channel, neuron or direction.

  python scripts/generate.py --layer=_blocks.8 --channels=0-31 --out=units
  python scripts/generate.py --model=googlenet --layer=inception4a,inception4b --channels=all
  python scripts/generate.py --layer=_blocks.8 --neurons=0-15 --position=3,3
  python scripts/generate.py --layer=_blocks.8 --directions=nmf.npy

Each layer is an atlas of its own (``classgen_jax.atlas``) in
``<out>/<layer>``, made with a recipe for units (``Recipe.for_units``): a
PNG per unit whose metadata names the layer and the unit, a summary row per
unit (its activation on the saved image at the native size, its rank among
the layer's units, the class the model sees first), resumable like any
atlas. ``scripts/make_gallery.py`` makes a page per layer and an index of
them (``gallery.make_galleries``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from classgen_jax import atlas, atlas_flags, folders, plans
from classgen_jax import objectives as obj
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax.folders import AtlasError

KINDS = ("channels", "neurons", "directions")
DEFAULT_RECIPE = "units"

_RESNET = ("conv1", "layer1", "layer2", "layer3", "layer4")
_LITE = ("_conv_stem", *(f"_blocks.{i}" for i in range(16)), "_conv_head")
# Each model's main layers, for the scripts' help (``Classifier.layers()``
# lists every layer, with its shape; a test checks these are among them).
MAIN_LAYERS: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": _LITE,
    **{f"efficientnet_lite{k}": (*_LITE[:-1], *(f"_blocks.{i}" for i in range(16, 21)),
                                 "_conv_head") for k in (1, 2)},
    "googlenet": ("conv1", "conv2", "conv3", "inception3a", "inception3b",
                  *(f"inception4{c}" for c in "abcde"), "inception5a", "inception5b"),
    "inception_v3": ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     *(f"Mixed_6{c}" for c in "bcde"), "Mixed_7a", "Mixed_7b", "Mixed_7c"),
    **{f"resnet{depth}": _RESNET for depth in (18, 34, 50, 101, 152)},
    "vit_b_16": ("conv_proj", *(f"encoder.layers.encoder_layer_{i}" for i in range(12)),
                 "encoder.ln"),
}


def main_layers_help() -> str:
  """Each model's main layers, compactly (``_blocks.0-15``), for ``--help``."""
  lines = {}
  for model, names in MAIN_LAYERS.items():
    lines.setdefault(_compact(names), []).append(model)
  return "; ".join(f"{', '.join(models)}: {layers}" for layers, models in lines.items())


def _compact(names: tuple[str, ...]) -> str:
  """``a.0, a.1, a.2, b`` as ``a.0-2, b`` (``layer_0 ... layer_11``: ``layer_0-11``)."""
  parts: list[list] = []  # [stem, first name, last number]
  for name in names:
    numbered = re.fullmatch(r"(.*[._])(\d+)", name)
    stem, number = numbered.groups() if numbered else (None, None)
    if stem is not None and parts and parts[-1][0] == stem and parts[-1][2] == int(number) - 1:
      parts[-1][2] = int(number)
    else:
      parts.append([stem, name, None if number is None else int(number)])
  return ", ".join(name if stem is None or name == f"{stem}{last}" else f"{name}-{last}"
                   for stem, name, last in parts)


def family(kind: str, layer: str, *, position: tuple[int, int] | None = None,
           directions: np.ndarray | None = None,
           cosine_power: float = 0.0) -> obj.Objective:
  """The family of ``layer``'s units whose targets index them.

  Args:
    kind: ``"channels"`` (each channel's mean over the positions),
      ``"neurons"`` (each channel at ``position``, default the centre) or
      ``"directions"`` (each row of ``directions``, ``(D, channels)``).
    layer: the layer's name (``Classifier.layers()``).
    position: ``(y, x)`` of the neurons.
    directions: the table of directions.
    cosine_power: directions' cosine weighting (``objectives.Direction``).

  Raises:
    AtlasError: an unknown kind, or settings of another kind.
  """
  if kind not in KINDS:
    raise AtlasError(f"unknown kind of unit {kind!r}; choose one of {', '.join(KINDS)}")
  if position is not None and kind != "neurons":
    raise AtlasError("a position is a neuron's: use it with --neurons")
  if (directions is None) != (kind != "directions"):
    raise AtlasError("directions come from a file: --directions=FILE, and only then")
  if kind == "channels":
    return obj.channel(layer)
  if kind == "neurons":
    y, x = position if position is not None else (None, None)
    return obj.neuron(layer, None, y, x)
  return obj.directions(layer, directions, cosine_power)


def load_directions(path: str | os.PathLike) -> np.ndarray:
  """A table of directions, ``(D, channels)``, one per row: a ``.npy`` array,
  a ``.json`` list of lists, or text (``.txt``, ``.csv``) with one direction
  a line, its numbers separated by commas or spaces.

  Raises:
    AtlasError: unreadable, not a 2-D table of finite numbers, or empty.
  """
  path = Path(path).expanduser()
  try:
    if path.suffix == ".npy":
      table = np.load(path, allow_pickle=False)
    elif path.suffix == ".json":
      table = np.asarray(json.loads(path.read_text(encoding="utf-8")), np.float64)
    else:
      lines = path.read_text(encoding="utf-8").splitlines()
      table = np.asarray([[float(v) for v in line.replace(",", " ").split()]
                          for line in lines if line.strip()], np.float64)
  except (OSError, ValueError) as error:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else error
    raise AtlasError(f"--directions {path} could not be read ({reason}); give a .npy array, "
                     "a .json list of lists, or a text file with one direction a line") from None
  if table.ndim == 1 and table.size:
    table = table[None]
  if table.ndim != 2 or not table.size or not np.isfinite(table).all():
    raise AtlasError(f"--directions {path} holds no table of finite numbers (shape "
                     f"{table.shape}); give one direction a row, one number per channel")
  return table.astype(np.float64)


def layer_table(classifier: Classifier) -> str:
  """Every layer of ``classifier`` with its output shape, a line each."""
  return "\n".join(f"{layer.name:40} {layer.shape}" for layer in classifier.layers())


def make_units(classifier: Classifier, layer: str, spec: str, out: str | os.PathLike,
               recipe: str | recipes_lib.Recipe = DEFAULT_RECIPE, *, kind: str = "channels",
               position: tuple[int, int] | None = None, directions: np.ndarray | None = None,
               cosine_power: float = 0.0, steps_scale: float = 1.0,
               **kwargs) -> atlas.AtlasResult:
  """One layer's atlas of units in ``<out>/<layer>``: ``spec`` (``"0-63"``,
  ``"all"``...) picks the units of ``kind``; the rest as ``atlas.make_atlas``.

  Raises:
    AtlasError: bad units or settings; LayerError: an unknown layer.
  """
  units = family(kind, layer, position=position, directions=directions,
                 cosine_power=cosine_power)
  resolved = recipes_lib.get(recipe, steps_scale=steps_scale).for_units(units)
  labels = plans.target_labels(classifier, resolved)
  term = units.terms[0][1]
  indices = folders.parse_classes(spec, labels, flag=f"--{kind}", what=term.unit)
  return atlas.make_atlas(classifier, indices, Path(out) / layer, recipe, units=units,
                          steps_scale=steps_scale, **kwargs)


def run(*, model: str, weights: str | None, layers: str, kind: str, spec: str, out: str,
        recipe: str = DEFAULT_RECIPE, dtype: str = "float32", directions: str | None = None,
        **kwargs) -> list[atlas.AtlasResult]:
  """``make_units`` for each of the comma-separated ``layers``, from flag
  values (the model loaded once; ``directions`` a file's path)."""
  names = [name.strip() for name in layers.split(",") if name.strip()]
  if not names:
    raise AtlasError("--layer names no layer; --layer=list prints the model's layers")
  table = load_directions(directions) if directions else None
  classifier, identity = atlas_flags.load(model, weights, dtype)
  return [make_units(classifier, name, spec, out, recipe, kind=kind, directions=table,
                     weights=identity, **kwargs) for name in names]


__all__ = ["DEFAULT_RECIPE", "KINDS", "MAIN_LAYERS", "family", "layer_table", "load_directions",
           "main_layers_help", "make_units", "run"]
