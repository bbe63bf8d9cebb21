"""An atlas folder on disk: image names, the run's identity, its summary.

An atlas folder holds:

* one PNG per image, ``0019_chickadee_r0.png`` (``0019_chickadee_<photo>_r0.png``
  for a transfiguration of ``<photo>``), carrying its summary row and the
  run's identity as PNG text metadata;
* ``summary.jsonl`` and ``summary.csv``: one row of metrics per image
  (``summary.p<i>.jsonl`` per share of a job on separate folders, merged by
  ``merge_summaries``);
* ``run.json``: the run's configuration (model, weights, recipe, seed,
  restarts, steps scale, head, start photos); ``config_id`` of it is the run
  id every PNG of the run carries;
* ``.claims/``: which run is making which class (``classgen_jax.claims``).

A PNG is complete when it decodes and its metadata names this run
(``read_complete``); that is what a resumed run keeps. Nothing here imports
JAX: the format is read and checked without a model.
"""

from __future__ import annotations

import csv
import errno
import glob
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from classgen_jax import claims, imagenet
from classgen_jax._files import file_sha256, write_text
from classgen_jax.images import ImageError, load_image

RUN_FILE = "run.json"
SUMMARY_JSONL = "summary.jsonl"
SUMMARY_CSV = "summary.csv"
SUMMARY_FIELDS = ("target", "name", "restart", "init", "probability", "rank", "target_logit",
                  "top1_fraction", "zscore_jitter", "top1_fraction_per_octave",
                  "zscore_jitter_per_octave", "seed", "file")
# A unit atlas's (``classgen_jax.units``).
UNIT_SUMMARY_FIELDS = ("target", "name", "layer", "unit", "restart", "init", "activation", "rank",
                       "top_class", "top_class_name", "top_probability", "top1_fraction",
                       "zscore_jitter", "top1_fraction_per_octave", "zscore_jitter_per_octave",
                       "seed", "file")
IMAGE_NAME = re.compile(r"^\d{4}_.+_r\d+(\.importance)?\.(png|gif)$")


class AtlasError(ValueError):
  """A request the atlas cannot carry out (bad classes, folder in use ...)."""


class StorageError(RuntimeError):
  """Writing to the output folder failed (disk full, permissions) mid-run."""


# ----------------------------------------------------------------------------
# What to make.


def parse_classes(spec: str, labels: tuple[str, ...] = imagenet.LABELS, *,
                  flag: str = "--classes", what: str = "class") -> list[int]:
  """Class indices from ``"all"``, or comma-separated names, indices and ranges.

  >>> parse_classes("0-2, tabby")
  [0, 1, 2, 281]

  ``labels`` names what the indices index (a layer's units, say: ``flag``
  and ``what`` then name them in the errors).

  Raises:
    AtlasError: empty spec or range, an index out of range, a class given
      twice (by overlapping ranges, say), or an unknown name
      (``imagenet.UnknownClassError``, with suggestions).
  """
  spec = (spec or "").strip()
  if spec.lower() == "all":
    return list(range(len(labels)))
  indices: list[int] = []
  seen: dict[int, str] = {}
  for token in spec.split(","):
    token = token.strip()
    if not token:
      raise AtlasError(f"empty {what} in {flag}={spec!r}: give names, indices or ranges "
                       "such as 0-99, separated by commas")
    bounds = re.fullmatch(r"(\d+)\s*-\s*(\d+)", token)
    if bounds:
      first, last = int(bounds[1]), int(bounds[2])
      if first > last:
        raise AtlasError(f"{what} range {token!r} is empty: write it low-high, e.g. "
                         f"{last}-{first}")
      found = list(range(first, last + 1))
    else:
      found = [imagenet.class_index(token, labels) if not token.isdigit()
               or int(token) < len(labels) else int(token)]
    if found[-1] >= len(labels):
      raise AtlasError(f"{what} {found[-1]} is out of range: {flag} takes 0 to "
                       f"{len(labels) - 1} (or all)")
    for index in found:
      if index in seen:
        raise AtlasError(f"{what} {index} ({labels[index]!r}) is given twice in {flag}, by "
                         f"{seen[index]!r} and {token!r}; ranges must not overlap")
      seen[index] = token
      indices.append(index)
  return indices


def check_request(indices: Sequence[int], restarts: int, batch_size: int | None) -> None:
  """Refuses, with ``AtlasError``, an atlas of no or repeated classes, or
  sizes below 1."""
  if not indices:
    raise AtlasError("no classes given")
  if len(set(indices)) != len(indices):
    raise AtlasError("a class is given twice")
  if restarts < 1:
    raise AtlasError(f"restarts must be at least 1, got {restarts}")
  if batch_size is not None and batch_size < 1:
    raise AtlasError(f"batch_size must be at least 1, got {batch_size}")


def photo_paths(path: str | os.PathLike) -> list[Path]:
  """The start photos: ``path`` itself, or the readable images in a folder.

  Unreadable files in a folder are skipped with a warning naming them.

  Raises:
    AtlasError: no such file or folder, or a folder without readable images.
  """
  path = Path(path).expanduser()
  if path.is_file():
    load_image(path, 8)  # fails early, with ImageError, on an unreadable photo
    return [path]
  if not path.is_dir():
    raise AtlasError(f"--init_image {path} does not exist; give a photo or a folder of photos")
  photos, skipped = [], []
  for child in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
    try:
      load_image(child, 8)
      photos.append(child)
    except ImageError:
      skipped.append(child.name)
  if skipped:
    logging.warning("skipping %d unreadable file(s) in %s: %s", len(skipped), path,
                    ", ".join(skipped))
  if not photos:
    raise AtlasError(f"--init_image folder {path} holds no readable image")
  return photos


# ----------------------------------------------------------------------------
# Names and the run's identity.


def image_name(target: int, restart: int, labels: tuple[str, ...] = imagenet.LABELS,
               photo: str | None = None) -> str:
  """``0019_chickadee_r0.png``: index, filesystem-safe name, [photo], restart."""
  name = re.sub(r"[^A-Za-z0-9]+", "_", labels[target]).strip("_").lower() or "class"
  middle = f"_{re.sub(r'[^A-Za-z0-9]+', '_', photo).strip('_')}" if photo else ""
  return f"{target:04d}_{name}{middle}_r{restart}.png"


def recipe_config(recipe: Any) -> str:
  """A recipe's full configuration as one deterministic string: its repr,
  which names every value's type and field."""
  return repr(recipe)


def run_config(*, model: str, weights: str, recipe: Any, seed: int,
               restarts: int, steps_scale: float, head: str | None,
               photos: Sequence[Path] = (), dtype: str = "float32") -> dict[str, Any]:
  """What determines a run's images (``run.json``); batch size does not."""
  config = dict(model=model, weights=weights, recipe=recipe_config(recipe), seed=int(seed),
                restarts=int(restarts), steps_scale=float(steps_scale), head=head,
                init=[dict(name=p.name, sha256=file_sha256(p)) for p in photos])
  if dtype != "float32":  # float32 runs keep the run.json they always had
    config["dtype"] = dtype
  return config


def config_id(config: dict[str, Any]) -> str:
  """The run id: a digest of ``run_config``'s value."""
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def remove_partial(path: Path) -> None:
  """Removes what a killed writer left of ``path`` and its video (their
  temporary files). Only for an image this run has claimed: no live writer
  can be writing it."""
  for name in (path.name, path.with_suffix(".gif").name):
    for stale in path.parent.glob(f".{glob.escape(name)}.*.tmp"):
      stale.unlink(missing_ok=True)


def read_complete(path: Path, run_id: str) -> dict[str, Any] | None:
  """The summary row stored in a PNG, or None if it is missing, truncated or another run's."""
  try:
    with Image.open(path) as image:
      image.load()  # decodes every byte: a truncated file fails here
      text = dict(getattr(image, "text", {}))
    if text.get("run_id") != run_id:
      return None
    return json.loads(text["summary"])
  except (OSError, ValueError, KeyError, SyntaxError):
    return None


def weights_identity(model: str, weights: str | None) -> str:
  """How a run names its weights: ``sha256:<digest>`` of a file, else the source."""
  if weights and Path(weights).expanduser().is_file():
    return f"sha256:{file_sha256(Path(weights).expanduser())}"
  return f"{model}:{weights or 'default'}"


# ----------------------------------------------------------------------------
# The folder and its summary.


def prepare_folder(out: Path, config: dict[str, Any], overwrite: bool) -> None:
  """Makes ``out`` ready for the run ``config``: created, writable, holding
  no other run (``overwrite`` deletes another run's images and summary),
  with ``run.json`` written.

  Raises:
    AtlasError: ``out`` unwritable, or holding another run.
  """
  try:
    out.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
    os.close(fd)
    os.remove(probe)
  except OSError as error:
    raise AtlasError(f"cannot write to --out {out}: {error.strerror or error}") from None
  run_file = out / RUN_FILE
  ours = sorted(p for p in out.iterdir() if IMAGE_NAME.match(p.name))
  if overwrite:
    for path in [*ours, run_file, out / SUMMARY_JSONL, out / SUMMARY_CSV]:
      if path.exists():
        path.unlink()
  elif run_file.exists():
    try:
      previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
      previous = None
    if previous != config:
      changed = sorted(k for k in config if not isinstance(previous, dict)
                       or previous.get(k) != config[k])
      raise AtlasError(f"--out {out} holds a run with another configuration ("
                       f"{', '.join(changed) or 'run.json unreadable'} differ); use a new "
                       "--out or --overwrite")
  elif ours:
    raise AtlasError(f"--out {out} holds another run's images ({ours[0].name} ...) but no "
                     f"{RUN_FILE}; use a new --out or --overwrite")
  write_text(run_file, json.dumps(config, indent=2, sort_keys=True) + "\n")


def append_rows(jsonl: Path, csv_path: Path, rows: Sequence[dict[str, Any]]) -> None:
  """Appends summary rows to both files, each synced to disk."""
  _fsync_append(jsonl, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
  _fsync_append(csv_path, _csv_text(rows, header=False), _csv_text(rows, header=True))


def _fsync_append(path: Path, text: str, first: str | None = None) -> None:
  """Appends ``text`` (``first`` instead, to an empty file: with its header)."""
  with open(path, "a+b") as f:
    if f.tell():  # a line cut short by a kill stays a line of its own
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        text = "\n" + text
    elif first is not None:
      text = first
    f.write(text.encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())


def _csv_text(rows: Sequence[dict[str, Any]], header: bool) -> str:
  """The rows as CSV (a unit atlas's columns for its rows), with the header
  if asked; no rows: nothing, header or not (the first rows appended bring
  theirs)."""
  if not rows:
    return ""
  buffer = io.StringIO()
  fields = UNIT_SUMMARY_FIELDS if rows and "activation" in rows[0] else SUMMARY_FIELDS
  writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
  if header:
    writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def summary_files(out: str | os.PathLike, part: int | None = None) -> tuple[Path, Path]:
  """``(jsonl, csv)`` of the summary, or of process ``part``'s share of it."""
  out = Path(out)
  if part is None:
    return out / SUMMARY_JSONL, out / SUMMARY_CSV
  return out / f"summary.p{part}.jsonl", out / f"summary.p{part}.csv"


def read_summary(out: str | os.PathLike, part: int | None = None) -> list[dict[str, Any]]:
  """The rows of ``summary.jsonl`` (or of a process's part; a line cut short
  by a kill is ignored)."""
  path = summary_files(out, part)[0]
  rows = []
  if path.exists():
    for line in path.read_text(encoding="utf-8").splitlines():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def complete_summary(out: str | os.PathLike, rows: Mapping[str, dict[str, Any]],
                     part: int | None = None) -> list[str]:
  """Makes the summary (or process ``part``'s) hold exactly one row for each
  image of ``rows`` (file name -> the row its PNG carries), and returns the
  files whose rows it added.

  A run killed between writing its PNGs and appending their rows leaves
  complete images without rows; a kill during an append, a line cut short.
  The rows already there are kept (with fields other tools added), and
  every other image's; a repeated row is dropped, a cut line too. The files
  are rewritten atomically, and only when something was wrong. Call it
  under the folder lock.
  """
  path = summary_files(out, part)[0]
  lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
  kept: dict[str, dict[str, Any]] = {}
  broken = 0
  for line in lines:
    try:
      row = json.loads(line)
      file = row["file"]
    except (json.JSONDecodeError, TypeError, KeyError):
      broken += 1
      continue
    if file in kept:
      broken += 1
    else:
      kept[file] = row
  added = [file for file in rows if file not in kept]
  if added or broken:
    write_summary(out, [*kept.values(), *(rows[f] for f in added)], part)
  return added


def write_summary(out: str | os.PathLike, rows: Sequence[dict[str, Any]],
                  part: int | None = None) -> None:
  """Replace ``summary.jsonl`` and ``summary.csv`` (or a process's part) with
  ``rows``, atomically."""
  jsonl, csv_path = summary_files(out, part)
  write_text(jsonl, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
  write_text(csv_path, _csv_text(rows, header=True))


def merge_summaries(out: str | os.PathLike) -> list[dict[str, Any]]:
  """Merges the processes' summary parts (``summary.p<i>.jsonl``) of a
  several-process run into ``summary.jsonl`` and ``summary.csv``, one row
  per image in class order (rows already there are kept), and returns them."""
  out = Path(out)
  rows = {r["file"]: r for r in read_summary(out)}
  for path in sorted(out.glob("summary.p*.jsonl")):
    part = re.fullmatch(r"summary\.p(\d+)\.jsonl", path.name)
    if part:
      rows.update((r["file"], r) for r in read_summary(out, int(part.group(1))))
  merged = sorted(rows.values(), key=lambda r: (r.get("init") or "", r["target"], r["restart"]))
  with claims.folder_lock(out):
    write_summary(out, merged)
  return merged


def storage_error(path: Path, error: OSError) -> StorageError:
  """The one-line error for a failed write of ``path``."""
  reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
  return StorageError(f"could not write {path}: {reason}; stopped cleanly, every image "
                      "written so far is complete: free space and rerun the same command "
                      "to resume")
