"""ImageNet-1k class labels: look a class up by index or by name.

Names are torchvision's (``torchvision.models._meta._IMAGENET_CATEGORIES``),
which are unique. Name lookup ignores case, surrounding blanks and the
difference between ``_``/``-`` and a space, and suggests close matches on a
miss:

>>> class_index("Tabby")
281
>>> class_name(281)
'tabby'
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
from collections.abc import Iterable


@functools.cache
def _labels() -> tuple[str, ...]:
  text = importlib.resources.files(__package__).joinpath(
      "imagenet_classes.txt").read_text(encoding="utf-8")
  return tuple(line for line in text.splitlines() if line)


LABELS: tuple[str, ...] = _labels()


def _canonical(name: str) -> str:
  return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


@functools.cache
def _by_name() -> dict[str, int]:
  return {_canonical(label): index for index, label in enumerate(LABELS)}


class UnknownClassError(ValueError):
  """A class name or index that ImageNet-1k does not have."""


def class_name(index: int, labels: tuple[str, ...] = LABELS) -> str:
  """The label of class ``index``."""
  if not 0 <= int(index) < len(labels):
    raise UnknownClassError(
        f"class index {index} is out of range: use 0 to {len(labels) - 1}")
  return labels[int(index)]


def class_index(target: int | str, labels: tuple[str, ...] = LABELS) -> int:
  """The index of a class given by index (int or digit string) or by name.

  Raises:
    UnknownClassError: with close matches when the name is unknown.
  """
  if isinstance(target, str) and target.strip().isdigit():
    target = int(target)
  if not isinstance(target, str):
    class_name(target, labels)
    return int(target)
  table = _by_name() if labels is LABELS else {
      _canonical(label): i for i, label in enumerate(labels)}
  key = _canonical(target)
  if key in table:
    return table[key]
  close = difflib.get_close_matches(key, table, n=4, cutoff=0.6)
  close += [k for k in table if key and key in k and k not in close][:4 - len(close)]
  hint = (f"; did you mean {', '.join(repr(labels[table[c]]) for c in close)}?"
          if close else "; pass an index 0-999 or an ImageNet name such as 'tabby'")
  raise UnknownClassError(f"unknown class {target!r}{hint}")


def class_indices(targets: Iterable[int | str],
                  labels: tuple[str, ...] = LABELS) -> list[int]:
  """``class_index`` of each target, in order."""
  return [class_index(t, labels) for t in targets]
