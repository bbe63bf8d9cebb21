"""Recipes side by side, at full size, with every measure: for looking.

``compare`` makes (or resumes) an atlas per recipe of the same classes and
seed (``out/<recipe>/``), measures every image (``measure_folder``: each
judge's verdict on the image and on the views of ``recognisability``, and
its naturalness), and writes, for each group of classes, a sheet with one
row per recipe and one column per class, every image at full size and
captioned with its measures (``compare_<k>.png``), and a *blind* sheet of the
same images shuffled and uncaptioned (``blind_<k>.png``, with
``blind_key.json`` saying which is which), for a person to name the classes
of before reading the key (``docs/eye_labels.json``'s rule).

A folder's measures are kept in ``out/<recipe>/measures.json`` and only the
images it lacks are measured again.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classgen_jax import atlas, eye, folders, gallery, imagenet, naturalness, recognisability
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax._files import write_text
from classgen_jax.images import load_image

MEASURES_FILE = "measures.json"
# The measures a caption shows, in order, with their format.
CAPTIONED = (("full_top1", "judges", ".0%"), ("glance_top5", "glance", ".0%"),
             ("quarters_top5", "quarters", ".0%"), ("concentration", "conc.", ".2f"))


def measure_folder(folder: str | os.PathLike, judges: Mapping[str, Classifier]
                   ) -> dict[str, dict[str, Any]]:
  """Every image of an atlas folder, measured: ``{file: {"target", "restart",
  judge: {measure: value}, "worst": {...}, "colourfulness", "spectral_slope"}}``.

  Kept in the folder's ``measures.json``; images already measured under the
  same judges are not measured again.
  """
  folder = Path(folder)
  rows = [r for r in folders.read_summary(folder) if (folder / r["file"]).is_file()]
  path = folder / MEASURES_FILE
  kept = {}
  if path.exists():
    stored = json.loads(path.read_text(encoding="utf-8"))
    if sorted(stored.get("judges", [])) == sorted(judges):
      kept = stored["images"]
  todo = [r for r in rows if r["file"] not in kept]
  if todo:
    images = np.stack([load_image(folder / r["file"]) for r in todo])
    targets = [r["target"] for r in todo]
    per_judge = {name: recognisability.measure(clf, images, targets)
                 for name, clf in judges.items()}
    worst = recognisability.worst(per_judge)
    for i, row in enumerate(todo):
      kept[row["file"]] = {
          "target": row["target"], "restart": row["restart"],
          **{name: {k: float(v[i]) for k, v in values.items()}
             for name, values in per_judge.items()},
          "worst": {k: float(v[i]) for k, v in worst.items()},
          "colourfulness": naturalness.colourfulness(images[i]),
          "spectral_slope": naturalness.spectral_slope(images[i])}
    write_text(path, json.dumps({"judges": sorted(judges), "images": kept}, indent=1) + "\n")
  return {r["file"]: kept[r["file"]] for r in rows}


def recipe_summary(measured: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """The means of a folder's worst-judge measures, and its median naturalness."""
  worst = [m["worst"] for m in measured.values()]
  result = {k: float(np.mean([w[k] for w in worst])) for k in worst[0]}
  for key in ("colourfulness", "spectral_slope"):
    values = [m[key] for m in measured.values() if np.isfinite(m[key])]
    result[key] = float(np.median(values)) if values else float("nan")
  return result


def _caption(recipe: str, target: int, entry: Mapping[str, Any],
             judges: Sequence[str]) -> list[tuple[str, Any]]:
  worst = entry["worst"]
  lines = [(f"{recipe}: {target} {imagenet.LABELS[target]}"[:40], "black")]
  for key, title, spec in CAPTIONED:
    lines.append((f"{title} {format(worst[key], spec)} (worst of {len(judges)})",
                  (0, 110, 0) if worst[key] >= 0.5 and key != "quarters_top5" else
                  (60, 60, 60)))
  lines.append((f"colour {entry['colourfulness']:.0f}, slope {entry['spectral_slope']:.2f}",
                (60, 60, 60)))
  return lines


def compare(generator: Classifier, judges: Mapping[str, Classifier],
            recipes: Sequence[str | recipes_lib.Recipe], classes: Sequence[int], out: str |
            os.PathLike, *, seed: int = 0, steps_scale: float = 1.0, per_sheet: int = 4,
            batch_size: int | None = None, log=print) -> dict[str, dict[str, float]]:
  """Makes, measures and shows ``recipes`` on ``classes`` (see the module doc).

  Returns:
    Per recipe, ``recipe_summary`` of its images.
  """
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  chosen = [recipes_lib.get(r, steps_scale=steps_scale) for r in recipes]
  measured = {}
  for recipe, given in zip(chosen, recipes):
    folder = out / recipe.name
    made = atlas.make_atlas(generator, classes, folder, given, seed=seed,
                            steps_scale=steps_scale, batch_size=batch_size, log=lambda _: None)
    log(f"{recipe.name}: {made.made} made, {made.kept} kept, {made.seconds:.0f} s")
    measured[recipe.name] = measure_folder(folder, judges)
  by_class = {name: {m["target"]: (file, m) for file, m in entries.items() if m["restart"] == 0}
              for name, entries in measured.items()}
  side = max(recipe.size for recipe in chosen)  # every image at its own size, or larger
  key = []
  for k, start in enumerate(range(0, len(classes), per_sheet)):
    group = classes[start:start + per_sheet]
    cells, captions = [], []
    for recipe in chosen:
      for target in group:
        file, entry = by_class[recipe.name][target]
        with Image.open(out / recipe.name / file) as image:
          cells.append(image.convert("RGB"))
        captions.append(_caption(recipe.name, target, entry, list(judges)))
    gallery.sheet(cells, captions, thumbnail=side + 4, columns=len(group), padding=2).save(
        out / f"compare_{k}.png")
    order = list(range(len(cells)))
    random.Random(f"{seed}-{k}").shuffle(order)
    gallery.sheet([cells[i] for i in order], [[] for _ in order], thumbnail=side + 4,
                  columns=len(group), padding=2).save(out / f"blind_{k}.png")
    for position, i in enumerate(order):
      recipe, target = chosen[i // len(group)].name, group[i % len(group)]
      key.append({"sheet": f"blind_{k}.png", "position": position, "recipe": recipe,
                  "class": target, "name": imagenet.LABELS[target], "seed": seed})
  write_text(out / "blind_key.json", json.dumps(key, indent=1) + "\n")
  return {name: recipe_summary(entries) for name, entries in measured.items()}


def summary_table(summaries: Mapping[str, Mapping[str, float]]) -> str:
  """A markdown table of ``compare``'s summaries: one row per recipe."""
  keys = [k for k in recognisability.MEASURES if k in next(iter(summaries.values()))]
  header = ["recipe", *keys, "colourfulness", "spectral slope"]
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  for recipe, values in summaries.items():
    cells = [f"`{recipe}`", *(f"{values[k]:.2f}" for k in keys),
             f"{values['colourfulness']:.0f}", f"{values['spectral_slope']:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


_RECIPE_NAME = re.compile(r"^Recipe\(name='([^']*)'")


def folder_identity(folder: str | os.PathLike) -> tuple[str, str, int, float]:
  """``(generator, recipe name, seed, steps scale)`` of an atlas folder's run."""
  path = Path(folder) / folders.RUN_FILE
  try:
    run = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as error:
    raise ValueError(f"{folder} is not an atlas folder ({path}: {error})") from None
  match = _RECIPE_NAME.match(str(run.get("recipe", "")))
  if match is None:
    raise ValueError(f"{path} names no recipe this version reads: make the atlas again")
  return run["model"], match.group(1), int(run["seed"]), float(run["steps_scale"])


def agreement_report(labels_path: str | os.PathLike, atlas_folders: Sequence[str | os.PathLike],
                     judges: Mapping[str, Classifier], *,
                     json_out: str | os.PathLike | None = None) -> str:
  """Each measure's agreement with the eye labels whose images the folders
  hold (``eye.agreement``), as a table, best first (by AUC)."""
  identities = {folder_identity(f): Path(f) for f in atlas_folders}
  labels = eye.load(labels_path, recipes=sorted({*recipes_lib.names(),
                                                 *(i[1] for i in identities)}))
  found, values = [], {}
  for label in labels:
    folder = identities.get((label.generator, label.recipe, label.seed, label.steps_scale))
    if folder is None:
      continue
    measured = measure_folder(folder, judges)
    entry = measured.get(folders.image_name(label.target, label.restart))
    if entry is None:
      continue
    found.append(label)
    for key, value in entry["worst"].items():
      values.setdefault(key, []).append(value)
    for key in ("colourfulness", "spectral_slope"):
      values.setdefault(key, []).append(entry[key])
    for name in judges:
      values.setdefault(f"{name}:full_top1", []).append(entry[name]["full_top1"])
  if not found:
    raise ValueError(f"none of the {len(labels)} labels' images is in the folders given; "
                     "give the atlas folders of the labelled recipes (scripts/compare_recipes.py "
                     "makes them)")
  rows = {}
  for key, column in values.items():
    direction = recognisability.MEASURES.get(key.split(":")[-1], 1)
    rows[key] = eye.agreement(column, found, direction)
  ordered = sorted(rows.items(), key=lambda kv: -np.nan_to_num(kv[1]["auc"], nan=-1))
  counts = eye.named(found)
  lines = [f"{len(found)} of {len(labels)} labelled images found; named by eye: " + ", ".join(
      f"{r} {c['yes']} yes / {c['maybe']} maybe / {c['no']} no" for r, c in counts.items()),
      "", "| measure | AUC (yes vs no) | Spearman (images) | Spearman (recipes) |",
      "|---|---|---|---|"]
  for key, row in ordered:
    lines.append(f"| {key} | {row['auc']:.2f} | {row['spearman']:.2f} | "
                 f"{row['recipe_spearman']:.2f} ({row['recipes']} recipes) |")
  if json_out:
    write_text(json_out, json.dumps({"labels": str(labels_path), "found": len(found),
                                     "named": counts, "measures": rows}, indent=1) + "\n")
  return "\n".join(lines)
