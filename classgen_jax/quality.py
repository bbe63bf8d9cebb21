"""The quality benchmark: generate with one model, judge with others, report.

``run`` is what ``scripts/evaluate_quality.py`` does: ``judging.evaluate``
each recipe, measure its images' ``naturalness`` beside the bundled photos',
and report it all as a text table, a JSON record (``record``), a markdown
table (``markdown_table``) and labelled contact sheets (``recipe_sheet``).
``table_from_files`` makes the markdown table of saved records, older ones
(without naturalness) included.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging
from PIL import Image

from classgen_jax import gallery, imagenet, judging, naturalness
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax._files import write_text
from classgen_jax.weights import load_classifier, model_spec

# 32 classes spread evenly over the 1000 (every 31.25th, from class 15):
# birds, dogs, insects, tools, vehicles, foods... fixed so runs compare.
DEFAULT_CLASSES: tuple[int, ...] = tuple(int(15 + 31.25 * i) for i in range(32))

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
_NATURALNESS = (("colourfulness", "colourfulness", ".0f"),
                ("spectral_slope", "spectral slope", ".2f"))
# The recognisability measures the table shows (``recognisability``; the
# worse judge's per image, averaged): those that agree best with the eye
# labels (docs/quality.md).
_RECOGNISABILITY = (("glance_top5", "glance top-5", ".0%"),
                    ("quarters_top5", "quarters top-5", ".0%"),
                    ("concentration", "concentration", ".2f"))


def recipe_record(score: judging.RecipeScore) -> dict[str, Any]:
  """One recipe's entry in ``record``: the judges' scores and its images' naturalness."""
  return {
      "self_top1": score.self_top1,
      "self_top1_as_optimised": score.self_top1_as_optimised,
      "judges": {name: {"top1": j.top1, "top5": j.top5,
                        "mean_target_prob": j.mean_target_prob,
                        "self_judging": j.self_judging}
                 for name, j in score.judges.items()},
      "seconds": score.seconds,
      **naturalness.measure(score.generation.images),
      **({} if score.recognisability is None else {"recognisability": score.recognisability}),
  }


def record(scores: Sequence[judging.RecipeScore], skipped: Mapping[str, str], *,
           generator: str, judges: Sequence[str], classes: Sequence[int | str], seed: int,
           steps_scale: float, dtype: str) -> dict[str, Any]:
  """The JSON record of a run (``--json_out``), which ``markdown_table`` reads.

  ``naturalness_reference`` holds ``naturalness.reference()``: the bundled
  photos' medians, to read each recipe's against.
  """
  return {
      "generator": generator, "judges": list(judges), "classes": list(classes),
      "seed": seed, "steps_scale": steps_scale, "dtype": dtype,
      "device": jax.devices()[0].device_kind,
      "recipes": {s.recipe: recipe_record(s) for s in scores},
      "skipped": dict(skipped),
      "naturalness_reference": naturalness.reference(),
  }


def console_table(scores: Sequence[judging.RecipeScore], skipped: Mapping[str, str]) -> str:
  """Self and judge top-1 / top-5, the worse judge's top-5 at a glance and
  seconds per recipe, then the skipped recipes."""
  names = list(scores[0].judges) if scores else []
  lines = [f"{'recipe':<18} {'self top1':>9}" + "".join(
      f" {name[-12:] + ' top1/top5':>24}" for name in names)
      + f" {'glance top5':>12} {'seconds':>8}"]
  for score in scores:
    cells = "".join(f" {j.top1:>11.0%} / {j.top5:>4.0%}{' (self)' if j.self_judging else '':>7}"
                    for j in score.judges.values())
    glance = "" if score.recognisability is None else (
        f"{score.recognisability['glance_top5']:.0%}")
    lines.append(f"{score.recipe:<18} {score.self_top1:>9.0%}{cells} {glance:>12} "
                 f"{score.seconds:>8.0f}")
  lines += [f"{name:<18} skipped: {reason}" for name, reason in skipped.items()]
  return "\n".join(lines)


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
  """A README table of ``record``s' recipes.

  One row per recipe (with its compute dtype where not float32, its steps
  scale where not 1, and its device where a recipe was run more than once),
  in the catalogue's order:
  the generator's top-1 on its raw canvas (as optimised; blank where not
  recorded) and on the saved image, each judge's top-1 / top-5 and mean
  target probability, where any record has them the recognisability
  measures (the worse judge's), then the median colourfulness and spectral
  slope of the images, each beside the bundled photos' (blank where a
  record has none), and the seconds.
  """
  judges = list(dict.fromkeys(name for r in results for name in r["judges"]))
  metrics = [m for m in _NATURALNESS
             if any(m[0] in score for r in results for score in r["recipes"].values())]
  recognised = [m for m in _RECOGNISABILITY
                if any(m[0] in score.get("recognisability", {})
                       for r in results for score in r["recipes"].values())]
  header = (["recipe", "self top-1 as optimised", "self top-1"]
            + [f"{name} top-1 / top-5 (mean p)" for name in judges]
            + [title for _, title, _ in recognised]
            + [title for _, name, _ in metrics for title in (name, f"photos' {name}")]
            + ["seconds"])
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  order = {name: i for i, name in enumerate(recipes_lib.names())}
  rows = sorted(((result, recipe, score) for result in results
                 for recipe, score in result["recipes"].items()),
                key=lambda row: (order.get(row[1], len(order)),
                                 row[0].get("dtype", "float32") != "float32"))
  runs = collections.Counter((recipe, r.get("dtype", "float32")) for r, recipe, _ in rows)
  for result, recipe, score in rows:
    dtype = result.get("dtype", "float32")
    notes = [dtype] if dtype != "float32" else []
    if result.get("steps_scale", 1.0) != 1.0:
      notes.append(f"{result['steps_scale']:g}x steps")
    if runs[recipe, dtype] > 1:  # the same recipe run twice: say where
      notes.append(result.get("device", "?"))
    cells = [f"`{recipe}`" + (f" ({', '.join(notes)})" if notes else ""),
             _cell(score.get("self_top1_as_optimised"), ".0%"),
             _cell(score["self_top1"], ".0%")]
    for name in judges:
      j = score["judges"].get(name)
      cells.append("" if j is None else
                   f"{j['top1']:.0%} / {j['top5']:.0%} ({j['mean_target_prob']:.2f})")
    for key, _, spec in recognised:
      cells.append(_cell(score.get("recognisability", {}).get(key), spec))
    reference = result.get("naturalness_reference", {})
    for key, _, spec in metrics:
      cells += [_cell(score.get(key), spec), _cell(reference.get(key), spec)]
    cells.append(f"{score['seconds']:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def load_records(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
  """``record``s saved as JSON (``--json_out`` files).

  Raises:
    ValueError: a file that cannot be read, or is not a record.
  """
  results = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        result = json.load(f)
    except (OSError, ValueError) as error:
      raise ValueError(f"cannot read quality results {path}: {error}") from None
    if not isinstance(result, dict) or not isinstance(result.get("recipes"), dict):
      raise ValueError(f"{path} is not a quality record (no 'recipes'): was it written by "
                       "--json_out without --adversarial?")
    results.append(result)
  return results


def table_from_files(paths: Sequence[str | os.PathLike]) -> str:
  """``markdown_table`` of saved records (``--from_json``)."""
  return markdown_table(load_records(paths))


def recipe_sheet(score: judging.RecipeScore, labels: Sequence[str], *, thumbnail: int = 160,
                 columns: int = 8) -> Image.Image:
  """A ``gallery.sheet`` of a recipe's images: target, then each judge's top-1.

  A judge's line is green where its top-1 is the target, red where not.
  """
  result = score.generation
  captions = []
  for i, target in enumerate(result.targets):
    lines = [(f"{target} {labels[target]}", "black")]
    for name, verdict in score.judges.items():
      cls, prob = verdict.predictions[i]
      lines.append((f"{name[-5:]}: {labels[cls]} {prob:.0%}",
                    (0, 120, 0) if cls == target else (170, 0, 0)))
    captions.append(lines)
  return gallery.sheet(result.images, captions, thumbnail=thumbnail, columns=columns, padding=2)


def run(generator: str | Classifier, judges: Sequence[str | Classifier],
        recipes: Sequence[str | recipes_lib.Recipe], classes: Sequence[int | str], *,
        seed: int = 0, steps_scale: float = 1.0, dtype: str = "float32",
        batch_size: int | None = None, photo: str | None = None,
        json_out: str | os.PathLike | None = None,
        grid_out: str | os.PathLike | None = None) -> str:
  """Evaluate recipes, write the record and contact sheets, return the report.

  Names are checked before any model loads, so a typo fails in a second.

  Args:
    generator: the model that makes the images: a name (``load_classifier``)
      or a classifier.
    judges: the models that classify them, names or classifiers; a judge
      named like the generator is the generator (its scores self-judging).
    recipes, classes, seed, steps_scale, batch_size, photo: as for
      ``judging.evaluate``.
    dtype: the generator's compute dtype, ``"float32"`` or ``"bfloat16"``
      (mixed precision; the judging stays float32).
    json_out: write ``record`` here.
    grid_out: write each recipe's ``recipe_sheet`` here (``NAME.png``, or
      ``NAME-RECIPE.png`` for several recipes).

  Returns:
    The text report: ``console_table``, then ``markdown_table`` where a recipe
    ran, then the files written.

  Raises:
    ValueError: no or unknown classes, judges, models, recipes or dtype.
  """
  if not imagenet.class_indices(classes):
    raise ValueError("the class list is empty: give class indices or names")
  if not judges:
    raise ValueError("no judges: give at least one model name")
  if dtype not in _DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(_DTYPES)}")
  for model in [generator, *judges]:
    if isinstance(model, str):
      model_spec(model)
  for recipe in recipes:
    recipes_lib.get(recipe)
  maker = load_classifier(generator) if isinstance(generator, str) else generator
  generator_name = generator if isinstance(generator, str) else generator.name
  classifiers = {}
  for judge in judges:
    name = judge if isinstance(judge, str) else judge.name
    if name == generator_name:
      logging.warning("judge %s is the generator: its scores are self-judging", name)
      judge = maker
    classifiers[name] = load_classifier(judge) if isinstance(judge, str) else judge
  scores, skipped = judging.evaluate(
      maker, classifiers, recipes, classes, seed=seed, steps_scale=steps_scale,
      batch_size=batch_size, photo=photo, compute_dtype=_DTYPES[dtype])
  report = [console_table(scores, skipped)]
  result = record(scores, skipped, generator=generator_name, judges=list(classifiers),
                  classes=classes, seed=seed, steps_scale=steps_scale, dtype=dtype)
  if scores:
    report.append(markdown_table([result]))
  if json_out:
    write_text(json_out, json.dumps(result, indent=2) + "\n")
  if grid_out:
    root, ext = os.path.splitext(os.fspath(grid_out))
    for score in scores:
      path = os.fspath(grid_out) if len(scores) == 1 else f"{root}-{score.recipe}{ext or '.png'}"
      recipe_sheet(score, maker.labels).save(path)
      report.append(f"wrote {path}")
  return "\n".join(report)


def _cell(value: float | None, spec: str) -> str:
  return "" if value is None else format(value, spec)
