"""Writing an atlas's images: PNGs on worker threads, then their summary rows.

``BatchWrites`` takes one generated batch and the run's description
(``Run``, frozen): it submits the batch's new PNGs (and videos) to the
writer threads at once, and ``finish`` waits for them and appends their
summary rows under the folder's lock. PNG encoding (zlib, outside the GIL)
runs on every core while the next batch is generated: a 1000-class run
would otherwise spend longer writing than a GPU spends generating.

``WRITING`` is the gate a Ctrl-C handler closes before it stops the process,
so no file is left half-written and the summary has every row of its PNGs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from classgen_jax import folders, imagenet
from classgen_jax.images import save_png
from classgen_jax.results import Generation

# An image of a run: (start photo or None, target, restart).
Key = tuple[Path | None, int, int]


@dataclasses.dataclass(frozen=True)
class Run:
  """An atlas run, as its writer needs it.

  Attributes:
    out: the folder.
    run_id: ``folders.config_id`` of the run's configuration.
    model, recipe: as ``run.json`` names them (the PNG metadata's).
    weights: how the weights are identified.
    labels: the classifier's class names.
    seed: the run's seed.
    snapshot_every: with it, a video per image is written too.
    names: every image's file name, by key.
    jsonl, csv: the summary files this process appends to.
    lock: the folder lock the appends hold (``claims.Claims.lock``).
    units: the recipe's family of units (``Recipe.units``): the images are
      of its units, named by ``labels``, and their rows say so; None for
      classes.
  """
  out: Path
  run_id: str
  model: str
  recipe: str
  weights: str
  labels: tuple[str, ...]
  seed: int
  snapshot_every: int
  names: Mapping[Key, str]
  jsonl: Path
  csv: Path
  lock: Callable[[], Any] = contextlib.nullcontext
  units: Any = None


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


def importance_path(path: Path) -> Path:
  """``0015_robin_r0.importance.png`` beside ``0015_robin_r0.png``."""
  return path.with_suffix(".importance.png")


def importance_image(importance: np.ndarray) -> np.ndarray:
  """An importance map ``(H, W)`` as a grey image: scaled so that its 99th
  percentile is white (Horama's ``plot_maco`` clips at a percentile too)."""
  top = float(np.percentile(importance, 99))
  scaled = np.clip(importance / top, 0.0, 1.0) if top > 0 else np.zeros_like(importance)
  return np.repeat(scaled[..., None], 3, axis=-1).astype(np.float32)


def summary_row(run: Run, result: Generation, j: int, photo: Path | None) -> dict[str, Any]:
  """Image ``j`` of a generated batch's summary row.

  A class's row has its ``probability``, ``rank`` among the classes and
  ``target_logit``; a unit's (``Run.units``) its ``layer``, ``unit`` kind,
  ``activation`` (its value on the saved image at the native size), ``rank``
  among the layer's units, and the class the model sees first
  (``top_class``, ``top_class_name``, ``top_probability``). Both have the
  stability of the target's rank over the iterations (among the classes, or
  the units) and the file.
  """
  target, restart = int(result.targets[j]), int(result.restarts[j])
  stability = result.stability
  if run.units is None:
    scores = dict(probability=float(result.probability[j]), rank=int(result.rank[j]),
                  target_logit=float(result.target_logit[j]))
  else:
    top = int(result.top_class[j])
    scores = dict(layer=run.units.layer, unit=run.units.unit,
                  activation=float(result.target_logit[j]), rank=int(result.rank[j]),
                  top_class=top, top_class_name=imagenet.class_name(top),
                  top_probability=float(result.top_probability[j]))
  return dict(
      target=target, name=run.labels[target], restart=restart,
      init=None if photo is None else photo.name, **scores,
      top1_fraction=float(stability["top1_fraction"][j]),
      zscore_jitter=float(stability["zscore_jitter"][j]),
      top1_fraction_per_octave=[float(x) for x in stability["top1_fraction_per_octave"][j]],
      zscore_jitter_per_octave=[float(x) for x in stability["zscore_jitter_per_octave"][j]],
      seed=int(run.seed), file=run.names[(photo, target, restart)])


def png_metadata(run: Run, row: dict[str, Any]) -> dict[str, str]:
  """The PNG text of an image: the run's identity and its summary row (a
  unit's image names its layer and unit too)."""
  if "activation" in row:
    score = dict(layer=row["layer"], unit=row["unit"], activation=f"{row['activation']:.6g}")
  else:
    score = dict(probability=f"{row['probability']:.6g}")
  return dict(model=run.model, weights=run.weights, recipe=run.recipe, seed=str(run.seed),
              restart=str(row["restart"]), target=str(row["target"]), name=row["name"],
              **score, run_id=run.run_id, summary=json.dumps(row, sort_keys=True))


class BatchWrites:
  """A generated batch's new images, submitted to ``writers`` at once;
  ``finish`` waits for them, then appends their summary rows.

  Args:
    run: the run.
    result: the batch, generated.
    photo: its start photo, or None.
    skip: keys whose images are complete already (not written again).
    writers: the writer threads.
  """

  def __init__(self, run: Run, result: Generation, photo: Path | None,
               skip: Mapping[Key, Any], writers: concurrent.futures.Executor):
    self.run, self.seconds = run, 0.0
    self.rows: list[tuple[Key, dict[str, Any]]] = []
    self._pending = []
    for j, (target, restart) in enumerate(zip(result.targets, result.restarts)):
      key = (photo, int(target), int(restart))
      if key in skip:
        continue
      row = summary_row(run, result, j, photo)
      path = run.out / run.names[key]
      self._pending.append((path, writers.submit(
          self._timed, path, result, j, png_metadata(run, row), photo is not None)))
      self.rows.append((key, row))

  def _timed(self, path: Path, result: Generation, j: int, metadata: dict[str, str],
             transfigured: bool) -> OSError | None:
    began = time.perf_counter()
    try:
      with WRITING.writing():
        return _write_image(path, result, j, metadata, self.run, transfigured)
    finally:
      self.seconds += time.perf_counter() - began  # one += per file, under the GIL

  def finish(self) -> list[tuple[Key, dict[str, Any]]]:
    """Waits for the PNGs, then appends their rows; returns ``[(key, row)]``.

    Raises:
      StorageError: a PNG or the summary could not be written.
    """
    concurrent.futures.wait([written for _, written in self._pending])
    for path, written in self._pending:
      if (error := written.result()) is not None:
        raise folders.storage_error(path, error)
    try:
      with WRITING.writing(), self.run.lock():
        folders.append_rows(self.run.jsonl, self.run.csv, [row for _, row in self.rows])
    except OSError as error:
      raise folders.storage_error(self.run.jsonl, error) from None
    return self.rows


def _write_image(path: Path, result: Generation, j: int, metadata: dict[str, str], run: Run,
                 transfigured: bool) -> OSError | None:
  """Writes image ``j`` (its video, marking a transfigured photo's own class,
  and its importance map, where the run keeps them); the error, if the disk
  refused."""
  try:
    save_png(path, result.images[j], metadata)
    if result.importance is not None:
      save_png(importance_path(path), importance_image(result.importance[j]),
               {"run_id": metadata["run_id"], "of": path.name})
    if run.snapshot_every and result.snapshots is not None:
      from classgen_jax import video
      original = video.photo_class(result, j) if transfigured else None
      video.write_video(path.with_suffix(".gif"),
                        video.frames(result, j, run.labels, original=original))
  except OSError as error:
    return error
  return None
