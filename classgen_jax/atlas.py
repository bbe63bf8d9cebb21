"""Atlases: one image per class (and restart), made in batches, resumable.

``make_atlas`` works through a list of classes in batches, one
``engine.generate`` call per batch, and writes into an output folder:

* one PNG per image, ``0019_chickadee_r0.png`` (``0019_chickadee_<photo>_r0.png``
  for a transfiguration of ``<photo>``), carrying its summary row and the
  run's configuration as PNG text metadata;
* ``summary.jsonl`` and ``summary.csv``: one row of metrics per image,
  appended (and fsynced) as each batch finishes;
* ``run.json``: the run's configuration (model, weights, recipe, seed,
  restarts, steps scale, head, start photos).

Rerunning the same command resumes: images whose PNG is complete (it decodes
and its metadata names this run's configuration) are kept, the rest are
made. A different configuration in the same folder is refused rather than
mixed. Runs started together on one folder share the work: each claims a
class before making it (``classgen_jax.claims``), skips classes another live run has
claimed, and waits for them at the end, so no image is made twice and no
summary row is written twice. Several processes of one job
(``jax.distributed``, or ``process_index``/``process_count``) each make
their share of the classes on their own devices, write their own summary
part, and merge the parts when they finish (``merge_summaries``).

Every image depends only on the seed, its class and its restart index
(``engine`` derives its keys from those), so a resumed run, whatever its
batches, makes the same images as an uninterrupted one.

Test hook: ``$CLASSGEN_JAX_ATLAS_SLEEP`` (seconds) sleeps after each batch is
written, so a test can kill the process mid-run at a known point.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from PIL import Image

from classgen_jax import claims, devices, engine, imagenet
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax._files import write_text
from classgen_jax.images import ImageError, load_image, save_png
from classgen_jax.progress import duration

RUN_FILE = "run.json"
SUMMARY_JSONL = "summary.jsonl"
SUMMARY_CSV = "summary.csv"
SUMMARY_FIELDS = ("target", "name", "restart", "init", "probability", "rank", "target_logit",
                  "top1_fraction", "zscore_jitter", "top1_fraction_per_octave",
                  "zscore_jitter_per_octave", "seed", "file")
_IMAGE_NAME = re.compile(r"^\d{4}_.+_r\d+\.(png|gif)$")
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SLEEP_ENV = "CLASSGEN_JAX_ATLAS_SLEEP"


class AtlasError(ValueError):
  """A request the atlas cannot carry out (bad classes, folder in use ...)."""


class StorageError(RuntimeError):
  """Writing to the output folder failed (disk full, permissions) mid-run."""


# ----------------------------------------------------------------------------
# Classes.


def parse_classes(spec: str, labels: tuple[str, ...] = imagenet.LABELS) -> list[int]:
  """Class indices from ``"all"``, or comma-separated names, indices and ranges.

  >>> parse_classes("0-2, tabby")
  [0, 1, 2, 281]

  Raises:
    AtlasError: empty spec or range, a class given twice (by overlapping
      ranges, say), or an unknown name (``imagenet.UnknownClassError``, with
      suggestions).
  """
  spec = (spec or "").strip()
  if spec.lower() == "all":
    return list(range(len(labels)))
  indices: list[int] = []
  seen: dict[int, str] = {}
  for token in spec.split(","):
    token = token.strip()
    if not token:
      raise AtlasError(f"empty class in --classes={spec!r}: give names, indices or ranges "
                       "such as 0-99, separated by commas")
    bounds = re.fullmatch(r"(\d+)\s*-\s*(\d+)", token)
    if bounds:
      first, last = int(bounds[1]), int(bounds[2])
      if first > last:
        raise AtlasError(f"class range {token!r} is empty: write it low-high, e.g. "
                         f"{last}-{first}")
      imagenet.class_name(last, labels)  # range check, with its message
      found = list(range(first, last + 1))
    else:
      found = [imagenet.class_index(token, labels)]
    for index in found:
      if index in seen:
        raise AtlasError(f"class {index} ({labels[index]!r}) is given twice in --classes, by "
                         f"{seen[index]!r} and {token!r}; ranges must not overlap")
      seen[index] = token
      indices.append(index)
  return indices


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
# Names, configuration, completeness.


def image_name(target: int, restart: int, labels: tuple[str, ...] = imagenet.LABELS,
               photo: str | None = None) -> str:
  """``0019_chickadee_r0.png``: index, filesystem-safe name, [photo], restart."""
  name = re.sub(r"[^A-Za-z0-9]+", "_", labels[target]).strip("_").lower() or "class"
  middle = f"_{re.sub(r'[^A-Za-z0-9]+', '_', photo).strip('_')}" if photo else ""
  return f"{target:04d}_{name}{middle}_r{restart}.png"


def recipe_config(recipe: recipes_lib.Recipe) -> str:
  """A recipe's full configuration as one deterministic string."""
  return repr(dataclasses.asdict(recipe))


def run_config(*, model: str, weights: str, recipe: recipes_lib.Recipe, seed: int,
               restarts: int, steps_scale: float, head: str | None,
               photos: Sequence[Path] = (), dtype: str = "float32") -> dict[str, Any]:
  """What determines a run's images (``run.json``); batch size does not."""
  config = dict(model=model, weights=weights, recipe=recipe_config(recipe), seed=int(seed),
                restarts=int(restarts), steps_scale=float(steps_scale), head=head,
                init=[dict(name=p.name, sha256=_sha256(p)) for p in photos])
  if dtype != "float32":  # float32 runs keep the run.json they always had
    config["dtype"] = dtype
  return config


def config_id(config: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
  from classgen_jax.weights import file_sha256
  return file_sha256(path)


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


# ----------------------------------------------------------------------------
# Writing.


def _fsync_append(path: Path, text: str) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def _csv_text(rows: Sequence[dict[str, Any]], header: bool) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, SUMMARY_FIELDS, extrasaction="ignore", lineterminator="\n")
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


def _storage_error(path: Path, error: OSError) -> StorageError:
  reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
  return StorageError(f"could not write {path}: {reason}; stopped cleanly, every image "
                      "written so far is complete: free space and rerun the same command "
                      "to resume")


# ----------------------------------------------------------------------------
# The run.


@dataclasses.dataclass
class AtlasResult:
  """What ``make_atlas`` did.

  Attributes:
    out: the output folder.
    made: images made by this call.
    kept: complete images found from an earlier run and kept.
    rows: the summary rows of every image of the run, in class order.
    seconds: wall-clock time.
    timings: where the wall time went, in seconds: ``compile`` (the
      octaves' programs, all at once before the first batch), ``generate`` (the ``engine.generate``
      calls, compiling included: the device's work and the host's NaN
      checks and final metrics), ``write`` (PNG encoding and writing, on
      worker threads, overlapping the next batch's generation),
      ``write_wait`` (the part of it the run waited for), ``setup``
      (reading the folder, before the first batch) and ``waiting`` (for
      classes other runs were making).
    batch_size: images per batch (given, or chosen to fit the memory; 0
      when none was given and nothing was left to make).
  """
  out: Path
  made: int
  kept: int
  rows: list[dict[str, Any]]
  seconds: float
  timings: dict[str, float] = dataclasses.field(default_factory=dict)
  batch_size: int = 0


def _prepare_folder(out: Path, config: dict[str, Any], overwrite: bool) -> None:
  try:
    out.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
    os.close(fd)
    os.remove(probe)
  except OSError as error:
    raise AtlasError(f"cannot write to --out {out}: {error.strerror or error}") from None
  run_file = out / RUN_FILE
  ours = sorted(p for p in out.iterdir() if _IMAGE_NAME.match(p.name))
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


class WriteGate:
  """Files being written, by any number of threads at once (``writing()``);
  ``with gate:`` waits until none is and lets none start until it exits.

  Whoever must stop the process at once (a Ctrl-C during compiling, see
  ``scripts/_cli.interruptible``) enters it first, so no file is left
  half-written and the summary has every row of its PNGs.
  """

  def __init__(self):
    self._changed = threading.Condition()
    self._active, self._closed = 0, False

  @contextlib.contextmanager
  def writing(self):
    with self._changed:
      self._changed.wait_for(lambda: not self._closed)
      self._active += 1
    try:
      yield
    finally:
      with self._changed:
        self._active -= 1
        self._changed.notify_all()

  def __enter__(self):
    with self._changed:
      self._closed = True
      self._changed.wait_for(lambda: not self._active)
    return self

  def __exit__(self, *exc_info):
    with self._changed:
      self._closed = False
      self._changed.notify_all()


WRITING = WriteGate()


class Interrupted(Exception):
  """A Ctrl-C: ``complete`` of ``planned`` images are written; rerun to resume."""

  def __init__(self, complete: int, planned: int):
    super().__init__(f"interrupted: {complete} of {planned} images complete, no partial files")
    self.complete, self.planned = complete, planned


def make_atlas(classifier: Classifier, classes: Sequence[int | str], out: str | os.PathLike,
               recipe: str | recipes_lib.Recipe = recipes_lib.DEFAULT, *, seed: int = 0,
               restarts: int = 1, batch_size: int | None = None,
               init: str | os.PathLike | None = None,
               steps_scale: float = 1.0, head: str | None = None, snapshot_every: int = 0,
               weights: str = "default", overwrite: bool = False,
               log: Callable[[str], None] = logging.info,
               progress: Callable[[engine.Progress], None] | None = None,
               process_index: int | None = None, process_count: int | None = None,
               poll: float = 2.0) -> AtlasResult:
  """Images of ``classes`` (``restarts`` each) in ``out``, resuming an earlier run.

  Args:
    classifier: the model.
    classes: class indices or names (``parse_classes`` reads a flag).
    out: the output folder (created).
    recipe: a recipe name or ``Recipe``.
    seed: the run's seed.
    restarts: images per class (and start photo).
    batch_size: images per ``engine.generate`` call; whole classes go in a
      batch, so at least ``restarts`` images. Does not change the images.
      Default: what fits the free device memory
      (``engine.choose_batch_size``; 8 per device on CPUs).
    init: a photo, or a folder of photos, to transfigure (each photo into
      every class); unreadable files in a folder are skipped with a warning.
    steps_scale: scales every octave's iterations.
    head: move the recipe's objectives to this head (``Recipe.with_head``).
    snapshot_every: also write a video per image (``video.write_video``)
      from snapshots every this many iterations.
    weights: how the weights are identified in ``run.json`` and the PNGs
      (a checksum or a source).
    overwrite: delete another run's images and summary in ``out`` first.
    log: where the per-batch lines go.
    progress: hears of compiling and of iterations within each batch
      (``classgen_jax.progress.Reporter``; with it, each octave runs in
      chunks and a Ctrl-C lands between them at once).
    process_index, process_count: this process's share of the classes
      (every ``process_count``-th from ``process_index``), made on its own
      devices, with its own summary part ``summary.p<index>.jsonl``; the
      last process to finish merges the parts into ``summary.jsonl``
      (``merge_summaries`` does it again on demand). Default: JAX's
      processes (``jax.distributed.initialize``), else the whole list.
    poll: seconds between looks at classes that another run is making.

  Returns:
    An ``AtlasResult``.

  Raises:
    Interrupted: a KeyboardInterrupt, once every image begun was written or
      left out whole (rerunning resumes).
    AtlasError: bad classes or init, ``out`` unwritable or holding another
      run.
    StorageError: a write failed mid-run (disk full); rerunning resumes.
    engine.GenerationError: NaN or Inf in an image.
  """
  start = time.perf_counter()
  out = Path(out)
  indices = imagenet.class_indices(classes, classifier.labels)
  if not indices:
    raise AtlasError("no classes given")
  if len(set(indices)) != len(indices):
    raise AtlasError("a class is given twice")
  if restarts < 1:
    raise AtlasError(f"restarts must be at least 1, got {restarts}")
  if batch_size is not None and batch_size < 1:
    raise AtlasError(f"batch_size must be at least 1, got {batch_size}")
  part, parts = _share(process_index, process_count)
  if parts > 1:
    if overwrite:
      raise AtlasError("--overwrite with several processes would delete each other's "
                       "images: empty the folder first, then start the processes")
    indices = indices[part::parts]  # this process's share
  recipe = recipes_lib.get(recipe, steps_scale=steps_scale)
  if head:
    recipe = recipe.with_head(head)
  photos = photo_paths(init) if init is not None else []
  config = run_config(model=classifier.name, weights=weights, recipe=recipe, seed=seed,
                      restarts=restarts, steps_scale=steps_scale, head=head, photos=photos,
                      dtype=str(classifier.dtype))
  run_id = config_id(config)
  _prepare_folder(out, config, overwrite)
  part = part if parts > 1 else None
  jsonl, csv_path = summary_files(out, part)
  ledger = claims.Claims(out)
  try:
    with devices.process_local(parts > 1):
      return _make(classifier, out, recipe, config, run_id, indices, photos, ledger, part,
                   seed=seed, restarts=restarts, batch_size=batch_size,
                   snapshot_every=snapshot_every, weights=weights, log=log,
                   progress=progress, poll=poll, start=start, jsonl=jsonl, csv_path=csv_path)
  finally:
    ledger.close()


def describe_timings(timings: dict[str, float]) -> str:
  """One line: where an atlas's wall time went (``AtlasResult.timings``)."""
  wall = timings.get("wall", 0.0)
  generating = timings.get("generate", 0.0)
  compiling = min(timings.get("compile", 0.0), generating)
  accounted = timings.get("setup", 0.0) + generating + timings.get("write_wait", 0.0) + (
      timings.get("waiting", 0.0))
  parts = [f"setup {timings.get('setup', 0.0):.1f} s",
           f"compiling {compiling:.1f} s",
           f"generating {generating - compiling:.1f} s (device, NaN checks, final metrics)",
           f"writing PNGs {timings.get('write', 0.0):.1f} s on worker threads, "
           f"{timings.get('write_wait', 0.0):.1f} s of it waited for"]
  if timings.get("waiting"):
    parts.append(f"waiting for other runs {timings['waiting']:.1f} s")
  parts.append(f"other {max(wall - accounted, 0.0):.1f} s")
  return f"wall {wall:.1f} s: " + ", ".join(parts)


def _share(index: int | None, count: int | None) -> tuple[int, int]:
  """This process's ``(index, count)``: given, or JAX's processes."""
  if count is None:
    import jax  # pylint: disable=g-import-not-at-top
    index, count = jax.process_index(), jax.process_count()
  index = 0 if index is None else index
  if not 0 <= index < count:
    raise AtlasError(f"process index {index} is not in [0, {count})")
  return index, count


def _make(classifier, out, recipe, config, run_id, indices, photos, ledger, part, *, seed,
          restarts, batch_size, snapshot_every, weights, log, progress, poll, start, jsonl,
          csv_path) -> AtlasResult:
  """``make_atlas`` once the folder is ready: claim, make, write, repeat."""
  # Every image of the run, and which of them a complete PNG already holds.
  photo_keys: list[Path | None] = list(photos) or [None]
  labels = classifier.labels
  planned = [(photo, t, r) for photo in photo_keys for t in indices for r in range(restarts)]
  names = {key: image_name(key[1], key[2], labels, key[0] and key[0].stem) for key in planned}
  done: dict[tuple, dict[str, Any]] = {}
  rows: dict[tuple, dict[str, Any]] = {}

  def collect(keys) -> None:
    """Rows of the complete PNGs among ``keys`` (the truth), keeping fields
    that other tools added to summary rows (``classify --folder``)."""
    extra = {r.get("file"): r for r in read_summary(out, part)}
    for key in keys:
      if key not in done and (row := read_complete(out / names[key], run_id)) is not None:
        done[key] = row
        rows[key] = {**extra.get(names[key], {}), **row}

  try:
    with ledger.lock():  # another run may be appending
      collect(planned)
      write_summary(out, [rows[k] for k in planned if k in rows], part)
  except OSError as error:
    raise _storage_error(jsonl, error) from None

  kept, chosen = len(done), 0.0
  # Classes to make, in order; a class is one claim (all its restarts).
  todo = [(photo, t) for photo in photo_keys for t in indices
          if any((photo, t, r) not in done for r in range(restarts))]
  if batch_size is None and todo:
    compiling = time.perf_counter()
    batch_size = engine.choose_batch_size(classifier, recipe, len(todo) * restarts,
                                          snapshot_every=snapshot_every, progress=progress)
    chosen = time.perf_counter() - compiling
    log(f"atlas: batch size {batch_size} (what fits the free device memory)")
  per_batch = max(1, (batch_size or restarts) // restarts)
  claim_name = {item: names[(item[0], item[1], 0)].rsplit("_r0", 1)[0] for item in todo}
  total = len(todo) * restarts
  if done:
    log(f"atlas: resuming in {out}: {len(done)} of {len(planned)} images already complete")
  made, began, sleep = 0, time.perf_counter(), float(os.environ.get(_SLEEP_ENV, 0) or 0)
  timings = dict.fromkeys(("compile", "generate", "write", "write_wait", "waiting"), 0.0)
  timings["setup"] = began - start - chosen
  timings["compile"] = timings["generate"] = chosen
  waiting_said: set[str] = set()
  writers = concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1))
  in_flight = None  # the previous batch's writes, finished after the next batch is made
  queued = None  # the batch on the device: (engine.Pending, classes, photo)

  def finish(pending) -> int:
    """Waits for a batch's PNGs, appends its rows, releases its classes."""
    nonlocal made
    if pending is None:
      return 0
    waited = time.perf_counter()
    try:
      new_rows = pending.finish()
    finally:
      for item in pending.batch:
        ledger.release(claim_name[item])
      timings["write_wait"] += time.perf_counter() - waited
    timings["write"] += pending.seconds
    made += len(new_rows)
    rate = made / max(time.perf_counter() - began, 1e-9)
    eta = (total - made) / rate if rate else float("inf")
    line = (f"atlas: {len(done)}/{len(planned)} images, {rate:.2f} images/s, "
            f"ETA {duration(eta)}")
    if progress is not None and hasattr(progress, "line"):
      progress.line(line)
    else:
      log(line)
    if sleep:
      time.sleep(sleep)
    return len(new_rows)

  def read(entry) -> None:
    """Reads a queued batch (waiting for the device), then starts its
    writes and finishes the previous batch's."""
    nonlocal in_flight
    if entry is None:
      return
    pending, batch, photo = entry
    try:
      reading = time.perf_counter()
      result = pending.result()
      timings["generate"] += time.perf_counter() - reading
      timings["compile"] += result.compile_seconds
    except BaseException:
      for item in batch:
        ledger.release(claim_name[item])
      raise
    # This batch's PNGs are encoded while the next batch is generated.
    previous, in_flight = in_flight, _Writes(
        result, batch, photo, out, names, run_id, config, labels, seed, weights,
        snapshot_every, writers, ledger, jsonl, csv_path, done, rows)
    finish(previous)

  def complete(item) -> bool:
    return all((item[0], item[1], r) in done for r in range(restarts))

  try:
    while todo:
      # The next batch: unclaimed classes sharing one start photo, claimed now.
      batch, others = [], {}
      for item in todo:
        if len(batch) == per_batch or (batch and item[0] != batch[0][0]):
          break
        if ledger.take(claim_name[item]):
          collect([(item[0], item[1], r) for r in range(restarts)])  # made meanwhile?
          if complete(item):
            ledger.release(claim_name[item])
          else:
            batch.append(item)
        else:
          others[item] = ledger.holder(claim_name[item])
      todo = [item for item in todo if item not in batch and not complete(item)]
      if not batch:
        if not others:
          continue
        entry, queued = queued, None
        read(entry)  # ours first: another run may be waiting for them
        finish(in_flight)
        in_flight = None
        waited = time.perf_counter()
        # Everything left is being made by other runs: wait for their PNGs.
        holders = {claims.who(o) for o in others.values() if o} - waiting_said
        if holders:
          log(f"atlas: {len(others)} classes are being made by {', '.join(sorted(holders))}"
              f" in {out}; waiting for them (a run that died is taken over)")
          waiting_said |= holders
        time.sleep(poll)
        collect([(photo, t, r) for photo, t in todo for r in range(restarts)])
        todo = [item for item in todo if not complete(item)]
        timings["waiting"] += time.perf_counter() - waited
        continue
      photo = batch[0][0]
      try:
        generating = time.perf_counter()
        pending = engine.start(classifier, [t for _, t in batch], recipe, seed=seed,
                               restarts=restarts, snapshot_every=snapshot_every,
                               init=None if photo is None else load_image(photo),
                               batch_size=batch_size, pad_to=per_batch * restarts,
                               progress=progress,
                               follows=None if queued is None else queued[0])
        timings["generate"] += time.perf_counter() - generating
      except BaseException:
        for item in batch:
          ledger.release(claim_name[item])
        raise
      # The previous batch is read (NaN check, scores, PNGs) while this one
      # computes on the device.
      entry, queued = queued, (pending, batch, photo)
      read(entry)
    entry, queued = queued, None
    read(entry)
    finish(in_flight)
    in_flight = None
  except KeyboardInterrupt:
    # The writes of the batch in hand finish (each file is atomic anyway).
    pending, in_flight = in_flight, None
    with contextlib.suppress(Exception):
      finish(pending)
    writers.shutdown(wait=True)
    finished = sum(read_complete(out / names[key], run_id) is not None for key in planned)
    raise Interrupted(finished, len(planned)) from None
  finally:
    if queued is not None:  # generated, never read: its classes are free again
      for item in queued[1]:
        ledger.release(claim_name[item])
    if in_flight is not None:  # an error: what was written stays, rows included
      pending, in_flight = in_flight, None
      with contextlib.suppress(Exception):
        finish(pending)
    writers.shutdown(wait=True)
  if part is not None:
    merge_summaries(out)  # the last process to finish leaves the whole summary
  timings["wall"] = time.perf_counter() - start
  return AtlasResult(out, made, kept, [rows[k] for k in planned], timings["wall"], timings,
                     batch_size or 0)


class _Writes:
  """A generated batch's PNGs, submitted to the writer threads at once;
  ``finish`` waits for them, then appends their summary rows.

  PNG encoding (zlib, outside the GIL) runs on every core, and while the
  next batch is generated: a 1000-class run would otherwise spend longer
  writing than a GPU spends generating.
  """

  def __init__(self, result, batch, photo, out, names, run_id, config, labels, seed, weights,
               snapshot_every, writers, ledger, jsonl, csv_path, done, rows):
    self.batch, self.seconds = batch, 0.0
    self._ledger, self._jsonl, self._csv = ledger, jsonl, csv_path
    self._done, self._rows = done, rows
    self._new_rows, self._pending = _summary_rows(
        result, photo, out, names, run_id, config, labels, seed, weights, done)
    self._pending = [
        (path, writers.submit(self._timed, path, result, j, metadata, labels, snapshot_every,
                              photo is not None))
        for path, j, metadata in self._pending]

  def _timed(self, *args) -> OSError | None:
    began = time.perf_counter()
    try:
      with WRITING.writing():
        return _write_image(*args)
    finally:
      self.seconds += time.perf_counter() - began  # one += per file, under the GIL

  def finish(self) -> list[dict[str, Any]]:
    concurrent.futures.wait([written for _, written in self._pending])
    for path, written in self._pending:
      if (error := written.result()) is not None:
        raise _storage_error(path, error)
    try:
      with WRITING.writing(), self._ledger.lock():
        _fsync_append(self._jsonl, "".join(json.dumps(r, sort_keys=True) + "\n"
                                           for _, r in self._new_rows))
        _fsync_append(self._csv, _csv_text([r for _, r in self._new_rows], header=False))
    except OSError as error:
      raise _storage_error(self._jsonl, error) from None
    for key, row in self._new_rows:
      self._done[key] = self._rows[key] = row
    return [row for _, row in self._new_rows]


def _summary_rows(result, photo, out, names, run_id, config, labels, seed, weights, done):
  """``([(key, summary row)], [(png path, index in batch, PNG metadata)])``
  of a generated batch's new images."""
  new_rows, writes = [], []
  for j, (target, restart) in enumerate(zip(result.targets, result.restarts)):
    key = (photo, int(target), int(restart))
    if key in done:
      continue
    row = dict(
        target=int(target), name=labels[int(target)], restart=int(restart),
        init=None if photo is None else photo.name,
        probability=float(result.probability[j]), rank=int(result.rank[j]),
        target_logit=float(result.target_logit[j]),
        top1_fraction=float(result.stability["top1_fraction"][j]),
        zscore_jitter=float(result.stability["zscore_jitter"][j]),
        top1_fraction_per_octave=[
            float(x) for x in result.stability["top1_fraction_per_octave"][j]],
        zscore_jitter_per_octave=[
            float(x) for x in result.stability["zscore_jitter_per_octave"][j]],
        seed=int(seed), file=names[key])
    metadata = dict(model=config["model"], weights=weights, recipe=config["recipe"],
                    seed=str(seed), restart=str(int(restart)), target=str(int(target)),
                    name=labels[int(target)], probability=f"{row['probability']:.6g}",
                    run_id=run_id, summary=json.dumps(row, sort_keys=True))
    writes.append((out / names[key], j, metadata))
    new_rows.append((key, row))
  return new_rows, writes


def _write_image(path: Path, result: engine.Generation, j: int, metadata: dict[str, str],
                 labels: Sequence[str], snapshot_every: int,
                 transfigured: bool = False) -> OSError | None:
  """Writes image ``j`` (and its video, marking a transfigured photo's own
  class); the error, if the disk refused."""
  try:
    save_png(path, result.images[j], metadata)
    if snapshot_every and result.snapshots is not None:
      from classgen_jax import video
      original = video.photo_class(result, j) if transfigured else None
      video.write_video(path.with_suffix(".gif"),
                        video.frames(result, j, labels, original=original))
  except OSError as error:
    return error
  return None


def weights_identity(model: str, weights: str | None) -> str:
  """How a run names its weights: ``sha256:<digest>`` of a file, else the source."""
  if weights and Path(weights).expanduser().is_file():
    return f"sha256:{_sha256(Path(weights).expanduser())}"
  return f"{model}:{weights or 'default'}"


def run(*, model: str, weights: str | None, classes: str, out: str,
        recipe: str = recipes_lib.DEFAULT, dtype: str = "float32", **kwargs) -> AtlasResult:
  """``make_atlas`` from flag values: loads the model (computing in ``dtype``:
  ``"bfloat16"`` for ``devices.mixed_precision``), parses ``classes``."""
  from classgen_jax.weights import load_classifier
  indices = parse_classes(classes)
  identity = weights_identity(model, weights)
  classifier = load_classifier(model, weights=weights)
  if dtype != "float32":
    classifier = devices.mixed_precision(classifier, jnp.dtype(dtype))
  return make_atlas(classifier, indices, out, recipe, weights=identity, **kwargs)
