"""Writing a generated batch: PNGs with their metadata, then summary rows;
disk errors; the gate a Ctrl-C closes."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import threading
import time

import numpy as np
import pytest

from classgen_jax import folders, imagenet, writing
from classgen_jax.images import read_png_metadata
from classgen_jax.results import Generation


def _result(targets) -> Generation:
  n = len(targets)
  rng = np.random.default_rng(0)
  stability = {"top1_fraction": np.full(n, 0.5), "zscore_jitter": np.full(n, 0.1),
               "top1_fraction_per_octave": np.full((n, 2), 0.5),
               "zscore_jitter_per_octave": np.full((n, 2), 0.1)}
  return Generation(images=rng.random((n, 8, 8, 3), dtype=np.float32),
                    targets=np.asarray(targets), restarts=np.zeros(n, int),
                    target_logit=np.arange(n, dtype=float), probability=np.full(n, 0.25),
                    rank=np.arange(n), trace=None, stability=stability)


def _run(tmp_path, targets) -> writing.Run:
  keys = [(None, t, 0) for t in targets]
  jsonl, csv_path = folders.summary_files(tmp_path)
  return writing.Run(tmp_path, "run1", "tiny", "Recipe(name='quick')", "default",
                     imagenet.LABELS, 7, 0, {k: folders.image_name(k[1], k[2]) for k in keys},
                     jsonl, csv_path)


def test_a_batch_writes_its_new_pngs_then_their_rows(tmp_path):
  run, result = _run(tmp_path, [3, 5, 9]), _result([3, 5, 9])
  with concurrent.futures.ThreadPoolExecutor(2) as writers:
    writes = writing.BatchWrites(run, result, None, {(None, 5, 0): {}}, writers)
    rows = writes.finish()
  assert [key for key, _ in rows] == [(None, 3, 0), (None, 9, 0)]  # 5 was complete
  assert sorted(p.name for p in tmp_path.glob("*.png")) == [
      folders.image_name(3, 0), folders.image_name(9, 0)]
  assert folders.read_summary(tmp_path) == [row for _, row in rows]
  row = rows[1][1]
  assert row["target"] == 9 and row["rank"] == 2 and row["seed"] == 7
  assert row["top1_fraction_per_octave"] == [0.5, 0.5]
  meta = read_png_metadata(tmp_path / row["file"])
  assert meta["run_id"] == "run1" and meta["recipe"] == "Recipe(name='quick')"
  assert meta["target"] == "9" and json.loads(meta["summary"]) == row
  assert folders.read_complete(tmp_path / row["file"], "run1") == row
  assert writes.seconds > 0


def test_a_full_disk_is_one_storage_error_and_no_row(tmp_path, monkeypatch):
  run, result = _run(tmp_path, [3, 5]), _result([3, 5])

  def full(path, image, metadata):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(writing, "save_png", full)
  with concurrent.futures.ThreadPoolExecutor(2) as writers:
    writes = writing.BatchWrites(run, result, None, {}, writers)
    with pytest.raises(folders.StorageError, match="the disk is full; stopped cleanly"):
      writes.finish()
  assert not folders.read_summary(tmp_path) and not list(tmp_path.glob("*.png"))


def test_the_gate_waits_for_writers_and_holds_new_ones():
  gate, events = writing.WriteGate(), []
  started = threading.Event()

  def write():
    with gate.writing():
      started.set()
      time.sleep(0.2)
      events.append("written")

  def late_write():
    with gate.writing():
      events.append("late")

  thread = threading.Thread(target=write)
  thread.start()
  started.wait()
  with gate:  # waits for the write in progress
    events.append("closed")
    late = threading.Thread(target=late_write)
    late.start()
    time.sleep(0.1)
    assert "late" not in events  # none starts while closed
  late.join()
  thread.join()
  assert events == ["written", "closed", "late"]
