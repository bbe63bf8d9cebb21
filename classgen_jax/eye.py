"""What a person named, and how well an automatic measure agrees with it.

Eye labels (``docs/eye_labels.json``) record, for images of the tool, whether a
person named the class: ``yes`` (named without being told the class, at full
size), ``maybe`` (the class fits once told, or only a part of it shows), or
``no``. Each label names the image by what makes it: generator, recipe,
class, seed, restart and steps scale (and the recipe's run id, so a label of
a recipe since changed can be told apart).

``agreement`` tells how well a measure's per-image values follow the labels:
Spearman's rank correlation with ``yes = 1, maybe = 0.5, no = 0`` over the
images, the area under the curve of ``yes`` against ``no`` (the chance that a
named image scores higher than an unnamed one), and over recipes the rank
correlation of the measure's mean with the share named. Numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from classgen_jax import imagenet

VERDICTS = {"yes": 1.0, "maybe": 0.5, "no": 0.0}
RULE = ("named without being told the class, at full size: yes; the class fits once told, "
        "or only a part of it shows: maybe; no")


class LabelError(ValueError):
  """An eye-label file that cannot be read, or a label with a bad field."""


@dataclasses.dataclass(frozen=True)
class Label:
  """One image's verdict (see the module doc)."""
  recipe: str
  target: int
  verdict: str
  seed: int = 0
  restart: int = 0
  generator: str = "efficientnet_lite0"
  steps_scale: float = 1.0
  run_id: str | None = None
  note: str = ""
  source: str = ""

  @property
  def key(self) -> tuple:
    """What identifies the image: generator, recipe, class, seed, restart, steps scale."""
    return (self.generator, self.recipe, self.target, self.seed, self.restart,
            float(self.steps_scale))

  @property
  def score(self) -> float:
    return VERDICTS[self.verdict]


def load(path: str | os.PathLike, recipes: Sequence[str] | None = None) -> list[Label]:
  """The labels of an eye-label file.

  Args:
    path: the JSON file: ``{"rule": ..., "labels": [{"recipe", "class",
      "verdict", ...}, ...]}``; ``class`` an index or a name.
    recipes: the recipe names a label may name (default: any).

  Raises:
    LabelError: unreadable, or a label whose class, recipe or verdict is
      unknown (one line naming the field and the choices).
  """
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as error:
    raise LabelError(f"cannot read eye labels {path}: {error}") from None
  if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
    raise LabelError(f"{path} holds no 'labels' list")
  return [_label(entry, i, path, recipes) for i, entry in enumerate(data["labels"])]


def _label(entry: Any, index: int, path, recipes) -> Label:
  where = f"{path}: label {index}"
  if not isinstance(entry, dict):
    raise LabelError(f"{where} is not an object")
  verdict = entry.get("verdict")
  if verdict not in VERDICTS:
    raise LabelError(f"{where}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
  recipe = entry.get("recipe")
  if recipes is not None and recipe not in recipes:
    raise LabelError(f"{where}: recipe {recipe!r} is not one of {', '.join(recipes)}")
  try:
    target = imagenet.class_index(entry.get("class"))
  except (ValueError, TypeError) as error:
    raise LabelError(f"{where}: class: {error}") from None
  name = entry.get("name")
  if name is not None and name != imagenet.LABELS[target]:
    raise LabelError(f"{where}: name {name!r} is not class {target}'s "
                     f"({imagenet.LABELS[target]!r}); fix the class or the name")
  known = {f.name for f in dataclasses.fields(Label)} - {"target"} | {"class", "name"}
  extra = sorted(set(entry) - known)
  if extra:
    raise LabelError(f"{where}: unknown field {extra[0]!r}; fields: {', '.join(sorted(known))}")
  fields = {k: v for k, v in entry.items() if k not in ("class", "name")}
  return Label(target=target, **fields)


def dump(labels: Sequence[Label], path: str | os.PathLike) -> None:
  """Writes ``labels`` with the rule, in the order given."""
  from classgen_jax._files import write_text
  entries = []
  for label in labels:
    entry = {"recipe": label.recipe, "class": label.target,
             "name": imagenet.LABELS[label.target], "verdict": label.verdict}
    for field in ("seed", "restart", "generator", "steps_scale", "run_id", "note", "source"):
      value = getattr(label, field)
      if value != Label.__dataclass_fields__[field].default:
        entry[field] = value
    entries.append(entry)
  lines = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in entries)
  write_text(path, f'{{\n "rule": {json.dumps(RULE)},\n "labels": [\n{lines}\n ]\n}}\n')


def _ranks(values: np.ndarray) -> np.ndarray:
  """Average ranks (ties share the mean of their ranks)."""
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values))
  ranks[order] = np.arange(len(values))
  for value in np.unique(values):
    tied = values == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman's rank correlation; NaN where either side is constant."""
  a, b = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
  if len(a) < 2 or a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
  """The chance that a positive scores above a negative (ties count half)."""
  positive, negative = np.asarray(positive, float), np.asarray(negative, float)
  if not len(positive) or not len(negative):
    return float("nan")
  greater = (positive[:, None] > negative[None, :]).mean()
  ties = (positive[:, None] == negative[None, :]).mean()
  return float(greater + ties / 2)


def agreement(values: Sequence[float], labels: Sequence[Label], direction: int = 1) -> dict:
  """How well a measure's per-image ``values`` follow ``labels``.

  Args:
    values: the measure, one per label's image.
    labels: the labels, in the same order.
    direction: +1 where higher is better, -1 where lower is.

  Returns:
    ``{"spearman", "auc", "recipe_spearman", "images", "recipes"}``: see the
    module doc (``recipe_spearman`` over recipes with at least 4 labels, NaN
    for fewer than 3 such recipes).
  """
  values = direction * np.asarray(values, float)
  scores = np.asarray([label.score for label in labels])
  yes, no = values[scores == 1.0], values[scores == 0.0]
  by_recipe: dict[str, list[int]] = {}
  for i, label in enumerate(labels):
    by_recipe.setdefault(label.recipe, []).append(i)
  kept = {r: idx for r, idx in by_recipe.items() if len(idx) >= 4}
  recipe_values = [values[idx].mean() for idx in kept.values()]
  recipe_scores = [scores[idx].mean() for idx in kept.values()]
  return {"spearman": spearman(values, scores), "auc": auc(yes, no),
          "recipe_spearman": spearman(recipe_values, recipe_scores) if len(kept) >= 3
          else float("nan"),
          "images": len(labels), "recipes": len(kept)}


def named(labels: Sequence[Label]) -> Mapping[str, dict[str, int]]:
  """Per recipe, how many of its labelled images are yes, maybe and no."""
  counts: dict[str, dict[str, int]] = {}
  for label in labels:
    counts.setdefault(label.recipe, dict.fromkeys(VERDICTS, 0))[label.verdict] += 1
  return counts
