"""How well a recipe shows a layer's units: unit atlases made with each
recipe, measured side by side.

  python scripts/evaluate_units.py --layers=_blocks.4,_blocks.10 --channels=0-7 \
      --recipes=units,lucid,maco --out=unit_eval

Per recipe, over every unit of every layer asked for (``units.make_units``
makes or resumes each atlas under ``<out>/<recipe>/<layer>``):

* ``activation``: the unit's value on the saved image at the model's native
  size, as a share of the best any recipe reached for that unit (1: the
  best);
* ``robust``: the same for the unit's mean value over ``views`` random
  crops of 70-100% of the image, each resized back: what survives a shift
  and a zoom, which pixel patterns tuned to one framing do not;
* ``top_unit``: the share of images where the unit is the layer's most
  active (``rank`` 0): the image is about that unit, not the layer;
* ``colourfulness`` and ``spectral_slope`` (``classgen_jax.naturalness``):
  photos sit near 33-110 and 2;
* ``seconds``: generation time per image.

The numbers come from the model that made the images, which such images can
fool; look at the sheet (``sheet``) before trusting them.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import gallery, naturalness, units
from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax.images import load_image

MEASURES = ("activation", "robust", "top_unit", "colourfulness", "spectral_slope", "seconds")


def robust_values(classifier: Classifier, images: np.ndarray, family, targets: Sequence[int],
                  *, views: int = 8, smallest: float = 0.7, seed: int = 0) -> np.ndarray:
  """Each target unit's mean value over ``views`` random square crops of
  ``smallest``-1 of each image's side, resized to the native size.

  Args:
    classifier: the model.
    images: ``(N, H, W, 3)`` in [0, 1].
    family: the units (``Recipe.units``), indexed by ``targets``.
    targets: ``(N,)`` each image's unit.
    views: crops per image.
    smallest: the smallest crop, as a share of the side.
    seed: the crops' draws.

  Returns:
    ``(N,)`` values.
  """
  images = jnp.asarray(images, jnp.float32)
  side, size = images.shape[1], classifier.input_size
  rng = np.random.default_rng(seed)
  sides = np.round(rng.uniform(smallest, 1.0, views) * side).astype(int)
  corners = [(rng.integers(0, side - s + 1), rng.integers(0, side - s + 1)) for s in sides]
  total = np.zeros(images.shape[0])
  for s, (y, x) in zip(sides, corners):
    crops = jax.vmap(lambda image, s=s, y=y, x=x: T.resize(image[y:y + s, x:x + s], size))(
        images)
    total += np.asarray(_values(classifier, crops, jnp.asarray(targets), family))
  return total / views


@functools.partial(jax.jit, static_argnames="family")
def _values(classifier: Classifier, images, targets, family):
  outputs = classifier.outputs(images, family.needs)
  return family(outputs, images, targets)


def evaluate(classifier: Classifier, recipe_names: Sequence[Any], layers: Sequence[str],
             spec: str, out: str | os.PathLike, *, views: int = 8, steps_scale: float = 1.0,
             **kwargs) -> dict[str, Any]:
  """Unit atlases of ``layers`` (``spec`` picks their channels) with each
  recipe (a name or a ``Recipe``) under ``out/<recipe>``, made or resumed,
  and measured.

  Returns:
    ``{"recipes": {name: {measure: value}}, "units": [per-image rows with
    their measures], ...}``, the record ``scripts/evaluate_units.py`` saves.
  """
  out, rows = Path(out), []
  for recipe in recipe_names:
    name = getattr(recipe, "name", recipe)
    for layer in layers:
      began = time.perf_counter()
      done = units.make_units(classifier, layer, spec, out / name, recipe,
                              steps_scale=steps_scale, **kwargs)
      family = units.family("channels", layer).terms[0][1]
      images = np.stack([load_image(done.out / row["file"]) for row in done.rows])
      targets = [row["target"] for row in done.rows]
      robust = robust_values(classifier, images, family, targets, views=views)
      seconds = (time.perf_counter() - began) / max(done.made, 1) if done.made else None
      for row, image, value in zip(done.rows, images, robust):
        rows.append(dict(recipe=name, layer=layer, target=row["target"], file=str(
            (done.out / row["file"]).relative_to(out)), activation=row["activation"],
            robust=float(value), rank=row["rank"], seconds=seconds,
            colourfulness=naturalness.colourfulness(image),
            spectral_slope=naturalness.spectral_slope(image)))
  return dict(model=classifier.name, layers=list(layers), units=spec, views=views,
              steps_scale=steps_scale, recipes=summarise(rows), rows=rows)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
  """Per recipe, the mean of each measure over its units (activations as a
  share of the best recipe's for the same unit)."""
  best: dict[tuple, dict[str, float]] = {}
  for row in rows:
    unit = (row["layer"], row["target"])
    for key in ("activation", "robust"):
      best.setdefault(unit, {})[key] = max(best.get(unit, {}).get(key, -np.inf), row[key])
  table: dict[str, dict[str, float | None]] = {}
  for name in dict.fromkeys(row["recipe"] for row in rows):
    mine = [row for row in rows if row["recipe"] == name]
    share = {key: [row[key] / best[(row["layer"], row["target"])][key] for row in mine
                   if best[(row["layer"], row["target"])][key] > 0]
             for key in ("activation", "robust")}
    slopes = [row["spectral_slope"] for row in mine if np.isfinite(row["spectral_slope"])]
    seconds = [row["seconds"] for row in mine if row["seconds"] is not None]
    table[name] = dict(
        activation=_mean(share["activation"]), robust=_mean(share["robust"]),
        top_unit=_mean([float(row["rank"] == 0) for row in mine]),
        colourfulness=_mean([row["colourfulness"] for row in mine]),
        spectral_slope=_mean(slopes), seconds=_mean(seconds))
  return table


def _mean(values: Sequence[float]) -> float | None:
  return float(np.mean(values)) if len(values) else None


def table(record: dict[str, Any]) -> str:
  """The record's per-recipe measures as a Markdown table."""
  lines = ["| recipe | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
  for name, values in record["recipes"].items():
    cells = ["—" if values[m] is None else f"{values[m]:.2f}" if m != "seconds"
             else f"{values[m]:.1f}" for m in MEASURES]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sheet(record: dict[str, Any], out: str | os.PathLike, *, thumbnail: int = 160) -> Path:
  """``out/units_<layer>.png`` per layer: a row per recipe, a column per
  unit, each captioned with its measures; returns the last written."""
  out, path = Path(out), None
  for layer in record["layers"]:
    rows = [row for row in record["rows"] if row["layer"] == layer]
    columns = len({row["target"] for row in rows})
    captions = [[(f"{row['recipe']} {row['target']}", "black"),
                 (f"a={row['activation']:.3g} r={row['robust']:.3g}", (90, 90, 90))]
                for row in rows]
    picture = gallery.sheet((load_image(out / row["file"]) for row in rows), captions,
                            thumbnail=thumbnail, columns=columns)
    path = out / f"units_{layer}.png"
    picture.save(path)
  return path


def save(record: dict[str, Any], path: str | os.PathLike) -> None:
  """The record as JSON."""
  Path(path).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


__all__ = ["MEASURES", "evaluate", "robust_values", "save", "sheet", "summarise", "table"]
