"""Atlases: one image per class (and restart), made in batches, resumable.

``make_atlas`` works through a list of classes in batches, one
``engine.start`` call per batch, and writes each image as a PNG with its
summary row into an output folder (its format: ``classgen_jax.folders``).
A batch's PNGs are written (``classgen_jax.writing``) while the next batch
computes on the device.

Rerunning the same command resumes: images whose PNG is complete (it decodes
and its metadata names this run's configuration) are kept, the rest are
made. A different configuration in the same folder is refused rather than
mixed. Runs started together on one folder share the work: each claims a
class before making it (``classgen_jax.claims``), skips classes another live
run has claimed, and waits for them at the end, so no image is made twice
and no summary row is written twice. The processes of a job compute on
their own devices; on one folder they share the work so (``classgen_jax.job``),
on separate folders (``process_index``/``process_count``) each makes every
N-th class, writes its own summary part, and merges the parts when it ends.

Every image depends only on the seed, its class and its restart index
(``starts`` derives its keys from those), so a resumed run, whatever its
batches, makes the same images as an uninterrupted one.

Test hook: ``$CLASSGEN_JAX_ATLAS_SLEEP`` (seconds) sleeps after each batch is
written, so a test can kill the process mid-run at a known point.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from classgen_jax import batch_size as batch_size_lib
from classgen_jax import claims, devices, engine, folders, imagenet, job, plans
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax.folders import AtlasError
from classgen_jax.images import load_image
from classgen_jax.progress import describe_timings, duration  # noqa: F401  (describe_timings: atlas's API)
from classgen_jax.writing import BatchWrites, Key, Run

_SLEEP_ENV = "CLASSGEN_JAX_ATLAS_SLEEP"


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


class Interrupted(Exception):
  """A Ctrl-C: ``complete`` of ``planned`` images are written; rerun to resume."""

  def __init__(self, complete: int, planned: int):
    super().__init__(f"interrupted: {complete} of {planned} images complete, no partial files")
    self.complete, self.planned = complete, planned


def make_atlas(classifier: Classifier, classes: Sequence[int | str], out: str | os.PathLike,
               recipe: str | recipes_lib.Recipe | None = None, *, seed: int = 0,
               restarts: int = 1, batch_size: int | None = None,
               init: str | os.PathLike | None = None,
               steps_scale: float = 1.0, head: str | None = None, snapshot_every: int = 0,
               weights: str = "default", overwrite: bool = False,
               log: Callable[[str], None] = logging.info,
               progress: Callable[[engine.Progress], None] | None = None,
               process_index: int | None = None, process_count: int | None = None,
               made: Callable[[list[int]], None] | None = None,
               poll: float = 2.0, units: Any = None) -> AtlasResult:
  """Images of ``classes`` (``restarts`` each) in ``out``, resuming an earlier run.

  Args:
    classifier: the model.
    classes: class indices or names (``parse_classes`` reads a flag).
    out: the output folder (created).
    recipe: a recipe name or ``Recipe`` (default: ``recipes.default_for``).
    seed: the run's seed.
    restarts: images per class (and start photo).
    batch_size: images per ``engine.generate`` call; whole classes go in a
      batch, so at least ``restarts`` images. Does not change the images.
      Default: what fits the free device memory
      (``batch_size.choose``; 8 per device on CPUs).
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
      (``folders.merge_summaries`` does it again on demand). Default: JAX's
      processes (``jax.distributed.initialize``), else the whole list.
    made: hears of the classes complete in ``out`` (kept or made) as they become so.
    poll: seconds between looks at classes that another run is making.
    units: a family of a layer's units (``objectives.channel(layer)``,
      ``neuron(layer)``, ``directions(layer, table)``): ``classes`` are then
      unit indices, one image per unit (``Recipe.for_units``; see
      ``classgen_jax.units``).

  Returns:
    An ``AtlasResult``.

  Raises:
    Interrupted: a KeyboardInterrupt, once every image begun was written or
      left out whole (rerunning resumes).
    BatchSizeError: not one image fits the free device memory.
    AtlasError: bad classes or init, ``out`` unwritable or holding another
      run.
    StorageError: a write failed mid-run (disk full); rerunning resumes.
    engine.GenerationError: NaN or Inf in an image.
  """
  start = time.perf_counter()
  out = Path(out)
  recipe = recipes_lib.get(recipe or recipes_lib.default_for(classifier), steps_scale=steps_scale)
  recipe = recipe.with_head(head) if head else recipe
  recipe = recipe.for_units(units) if units is not None else recipe
  plans.plan(classifier, recipe, snapshot_every)  # its errors before the folder is touched
  labels = plans.target_labels(classifier, recipe)
  indices = (imagenet.class_indices(classes, labels) if recipe.units is None
             else engine.unit_indices(classes, labels, recipe.units))
  folders.check_request(indices, restarts, batch_size)
  part, parts = job.processes(process_index, process_count)
  if parts > 1:
    if overwrite:
      raise AtlasError("--overwrite with several processes would delete each other's "
                       "images: empty the folder first, then start the processes")
    indices = job.share(indices, part, parts)
  photos = folders.photo_paths(init) if init is not None else []
  config = folders.run_config(model=classifier.name, weights=weights, recipe=recipe, seed=seed,
                              restarts=restarts, steps_scale=steps_scale, head=head,
                              photos=photos, dtype=str(classifier.dtype))
  folders.prepare_folder(out, config, overwrite)
  part = part if parts > 1 else None
  jsonl, csv_path = folders.summary_files(out, part)
  planned = [(photo, t, r) for photo in (list(photos) or [None]) for t in indices
             for r in range(restarts)]
  # An atlas computes on this process's devices only, whatever the job.
  with claims.Claims(out) as ledger, devices.process_local():
    run = Run(out, folders.config_id(config), config["model"], config["recipe"], weights,
              labels, seed, snapshot_every,
              {key: folders.image_name(key[1], key[2], labels, key[0] and key[0].stem)
               for key in planned},
              jsonl, csv_path, ledger.lock, recipe.units)
    maker = _Maker(classifier, recipe, run, planned, ledger, part, restarts=restarts,
                   batch_size=batch_size, log=log, progress=progress, poll=poll, began=start,
                   made=made)
    return maker.make()


class _Maker:
  """``make_atlas`` once the folder is ready: claim a batch, start it, read
  the one before (while this one computes), write it, repeat.

  The pipeline holds at most one batch on the device (``queued``: its
  ``engine.Pending``, classes and photo) and one batch being written
  (``writing``). A class's claim is released once its PNGs and rows are
  written (``_release``); whatever an error or a Ctrl-C leaves claimed is
  released when ``make_atlas`` closes the ledger.
  """

  def __init__(self, classifier: Classifier, recipe: recipes_lib.Recipe, run: Run,
               planned: Sequence[Key], ledger: claims.Claims, part: int | None, *,
               restarts: int, batch_size: int | None, log: Callable[[str], None],
               progress, poll: float, began: float,
               made: Callable[[list[int]], None] | None = None):
    self.classifier, self.recipe, self.run, self.ledger = classifier, recipe, run, ledger
    self.planned, self.part, self.restarts = list(planned), part, restarts
    self.batch_size, self.log, self.progress, self.poll = batch_size, log, progress, poll
    self.began, self.heard = began, made
    self._heard: set[int] = set()
    self.done: dict[Key, dict[str, Any]] = {}  # the rows stored in complete PNGs (the truth)
    self.rows: dict[Key, dict[str, Any]] = {}  # and as the summary has them
    self.made = 0
    self.timings = dict.fromkeys(("compile", "generate", "write", "write_wait", "waiting"), 0.0)
    self.queued: tuple[engine.Pending, list, Path | None] | None = None
    self.writing: BatchWrites | None = None
    self._waiting_said: set[str] = set()
    self._sleep = float(os.environ.get(_SLEEP_ENV, 0) or 0)

  # -- the folder ---------------------------------------------------------------

  def collect(self, keys) -> None:
    """Rows of the complete PNGs among ``keys``, keeping fields that other
    tools added to summary rows (``classify --folder``)."""
    extra = {r.get("file"): r for r in folders.read_summary(self.run.out, self.part)}
    for key in keys:
      name = self.run.names[key]
      if key not in self.done and (
          row := folders.read_complete(self.run.out / name, self.run.run_id)) is not None:
        self.done[key] = row
        self.rows[key] = {**extra.get(name, {}), **row}

  def _keys(self, item) -> list[Key]:
    return [(item[0], item[1], r) for r in range(self.restarts)]

  def _complete(self, item) -> bool:
    return all(key in self.done for key in self._keys(item))

  def _claim_name(self, item) -> str:
    return self.run.names[(item[0], item[1], 0)].rsplit("_r0", 1)[0]

  def _release(self, items) -> None:
    for item in items:
      self.ledger.release(self._claim_name(item))

  def _tell(self) -> None:
    """Tells ``made`` of the classes newly complete (every photo, every restart)."""
    whole: dict[int, bool] = {}
    for photo, t, _ in self.planned if self.heard is not None else ():
      whole[t] = whole.get(t, True) and self._complete((photo, t))
    if new := [t for t, complete in whole.items() if complete and t not in self._heard]:
      self._heard.update(new)
      self.heard(new)

  # -- the run ------------------------------------------------------------------

  def make(self) -> AtlasResult:
    run = self.run
    try:
      with self.ledger.lock():  # another run may be appending
        self.collect(self.planned)
        folders.write_summary(run.out, [self.rows[k] for k in self.planned if k in self.rows],
                              self.part)
    except OSError as error:
      raise folders.storage_error(run.jsonl, error) from None
    kept = len(self.done)
    self._tell()
    # Classes to make, in order; a class is one claim (all its restarts).
    todo = list(dict.fromkeys((photo, t) for photo, t, _ in self.planned
                              if not self._complete((photo, t))))
    chosen = 0.0
    if self.batch_size is None and todo:
      compiling = time.perf_counter()
      self.batch_size = batch_size_lib.choose(
          self.classifier, self.recipe, len(todo) * self.restarts,
          snapshot_every=run.snapshot_every, progress=self.progress)
      chosen = time.perf_counter() - compiling
      self.log(f"atlas: batch size {self.batch_size} (what fits the free device memory)")
    if self.done:
      self.log(f"atlas: resuming in {run.out}: {len(self.done)} of {len(self.planned)} images "
               "already complete")
    self.total = len(todo) * self.restarts
    self.started = time.perf_counter()
    self.timings["setup"] = self.started - self.began - chosen
    self.timings["compile"] = self.timings["generate"] = chosen
    self.writers = concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1))
    try:
      self._loop(todo)
    except KeyboardInterrupt:
      writes, self.writing = self.writing, None
      with contextlib.suppress(Exception):  # the batch in hand is written whole
        self._finish(writes)
      self.writers.shutdown(wait=True)
      complete = sum(folders.read_complete(run.out / run.names[key], run.run_id) is not None
                     for key in self.planned)
      raise Interrupted(complete, len(self.planned)) from None
    finally:
      writes, self.writing = self.writing, None
      if writes is not None:  # an error: what was written stays, rows included
        with contextlib.suppress(Exception):
          self._finish(writes)
      self.writers.shutdown(wait=True)
    self._complete_summary()
    if self.part is not None:
      folders.merge_summaries(run.out)  # the last process to finish leaves the whole summary
    self.timings["wall"] = time.perf_counter() - self.began
    return AtlasResult(run.out, self.made, kept, [self.rows[k] for k in self.planned],
                       self.timings["wall"], self.timings, self.batch_size or 0)

  def _loop(self, todo: list) -> None:
    per_batch = max(1, (self.batch_size or self.restarts) // self.restarts)
    while todo:
      batch, others = self._claim(todo, per_batch)
      todo = [item for item in todo if item not in batch and not self._complete(item)]
      if batch:
        self._start(batch, per_batch)
      elif others:
        todo = self._wait_for(others, todo)
    self._read_queued()
    self._finish_writing()

  def _claim(self, todo: list, per_batch: int) -> tuple[list, dict]:
    """The next batch: unclaimed classes sharing one start photo, claimed
    now; and the classes other runs hold, with their holders."""
    batch, others = [], {}
    for item in todo:
      if len(batch) == per_batch or (batch and item[0] != batch[0][0]):
        break
      if not self.ledger.take(self._claim_name(item)):
        others[item] = self.ledger.holder(self._claim_name(item))
        continue
      self.collect(self._keys(item))  # made meanwhile?
      if self._complete(item):
        self._release([item])
      else:
        for key in self._keys(item):  # a killed run's half-written files
          folders.remove_partial(self.run.out / self.run.names[key])
        batch.append(item)
    return batch, others

  def _start(self, batch: list, per_batch: int) -> None:
    """Starts ``batch`` on the device, then reads the batch before it (NaN
    check, scores, PNGs) while this one computes."""
    photo = batch[0][0]
    generating = time.perf_counter()
    pending = engine.start(
        self.classifier, [t for _, t in batch], self.recipe, seed=self.run.seed,
        restarts=self.restarts, snapshot_every=self.run.snapshot_every,
        init=None if photo is None else load_image(photo), batch_size=self.batch_size,
        pad_to=per_batch * self.restarts, progress=self.progress,
        follows=None if self.queued is None else self.queued[0])
    self.timings["generate"] += time.perf_counter() - generating
    self._read_queued()
    self.queued = (pending, batch, photo)

  def _read_queued(self) -> None:
    """Reads the queued batch (waiting for the device), starts its writes,
    and finishes the writes before them."""
    if self.queued is None:
      return
    (pending, _, photo), self.queued = self.queued, None
    reading = time.perf_counter()
    result = pending.result()
    self.timings["generate"] += time.perf_counter() - reading
    self.timings["compile"] += result.compile_seconds
    previous, self.writing = self.writing, BatchWrites(self.run, result, photo, self.done,
                                                       self.writers)
    self._finish(previous)

  def _finish_writing(self) -> None:
    writes, self.writing = self.writing, None
    self._finish(writes)

  def _finish(self, writes: BatchWrites | None) -> None:
    """Waits for a batch's PNGs, appends its rows, releases its classes."""
    if writes is None:
      return
    waited = time.perf_counter()
    try:
      rows = writes.finish()
    finally:
      self._release(dict.fromkeys((key[0], key[1]) for key, _ in writes.rows))
      self.timings["write_wait"] += time.perf_counter() - waited
    self.timings["write"] += writes.seconds
    for key, row in rows:
      self.done[key] = self.rows[key] = row
    self.made += len(rows)
    self._tell()
    rate = self.made / max(time.perf_counter() - self.started, 1e-9)
    eta = (self.total - self.made) / rate if rate else float("inf")
    line = (f"atlas: {len(self.done)}/{len(self.planned)} images, {rate:.2f} images/s, "
            f"ETA {duration(eta)}")
    if self.progress is not None and hasattr(self.progress, "line"):
      self.progress.line(line)
    else:
      self.log(line)
    if self._sleep:
      time.sleep(self._sleep)

  def _complete_summary(self) -> None:
    """One summary row for every image of the run, whoever made it: a run
    killed between writing its PNGs and appending their rows left complete
    images that this run kept without rows; their rows are taken from the
    PNGs' metadata. Under the folder lock, and only for classes no live run
    holds (a live owner appends its own rows, then releases its claim); a
    dead run's claims of complete classes are cleared on the way."""
    classes = list(dict.fromkeys((photo, t) for photo, t, _ in self.planned))
    claimed, taken = self.ledger.claimed(), []
    try:
      with self.ledger.lock():
        present = {r.get("file") for r in folders.read_summary(self.run.out, self.part)}
        rows = {}
        for item in classes:
          name = self._claim_name(item)
          missing = [k for k in self._keys(item) if self.run.names[k] not in present]
          if (missing or name in claimed) and self.ledger.take(name):
            taken.append(item)
            rows.update((self.run.names[k], self.done[k]) for k in missing)
        added = folders.complete_summary(self.run.out, rows, self.part)
    except OSError as error:
      raise folders.storage_error(self.run.jsonl, error) from None
    finally:
      self._release(taken)
    if added:
      self.log(f"atlas: added the summary rows of {len(added)} images whose run stopped "
               "before writing them")

  def _wait_for(self, others: dict, todo: list) -> list:
    """Everything left is being made by other runs: our own batches are
    written first (another run may be waiting for them), then their PNGs
    are waited for; returns what is still to make."""
    self._read_queued()
    self._finish_writing()
    waited = time.perf_counter()
    holders = {claims.who(o) for o in others.values() if o} - self._waiting_said
    if holders:
      self.log(f"atlas: {len(others)} classes are being made by {', '.join(sorted(holders))}"
               f" in {self.run.out}; waiting for them (a run that died is taken over)")
      self._waiting_said |= holders
    time.sleep(self.poll)
    self.collect([key for item in todo for key in self._keys(item)])
    self.timings["waiting"] += time.perf_counter() - waited
    return [item for item in todo if not self._complete(item)]
