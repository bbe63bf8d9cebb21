"""Atlases end to end: the run's files, resuming after a real kill, other
batches making the same images, the disk filling up mid-run, several runs
and processes on one folder. (The folder's format alone: test_folders.py.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classgen_jax import atlas, claims, folders, writing
from classgen_jax.images import read_png_metadata
from tests.helpers import CLASSES, QUICK, kill_once_rows_are_written, plant_partial_files, tiny

# Its tests share the module's fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("atlas")

ROOT = Path(__file__).resolve().parents[1]


def pixels(path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def images_of(out: Path) -> dict[str, np.ndarray]:
  return {p.name: pixels(p) for p in sorted(out.glob("*.png"))}


def assert_same_images(reference: Path, out: Path) -> None:
  expected, got = images_of(reference), images_of(out)
  assert expected.keys() == got.keys()
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def run_together(script: str, argvs: list[list[str]], **env: str) -> list[str]:
  """``script`` in one process per argument list, all at once; their stdouts."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env)
  runs = [subprocess.Popen([sys.executable, "-c", script, *argv], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for argv in argvs]
  outputs = [run.communicate(timeout=300) for run in runs]
  for run, (_, err) in zip(runs, outputs):
    assert run.returncode == 0, err[-2000:]
  return [out for out, _ in outputs]


_REFERENCE: dict[str, atlas.AtlasResult] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
  """An uninterrupted run, 2 images per batch."""
  out = tmp_path_factory.mktemp("reference")
  _REFERENCE["result"] = atlas.make_atlas(tiny(), CLASSES, out, QUICK, restarts=1,
                                          batch_size=2, seed=0)
  return out


def test_generate_script_reports_bad_classes_in_one_line(tmp_path):
  from absl import flags

  from scripts import generate
  flags.FLAGS(["generate", "--classes=tabbby", f"--out={tmp_path}"])
  try:
    with pytest.raises(SystemExit) as exit_info:
      generate.main(["generate"])
  finally:
    flags.FLAGS.unparse_flags()
  assert str(exit_info.value).startswith("error: unknown class 'tabbby'; did you mean")


# ----------------------------------------------------------------------------
# A run's files.


def test_run_writes_pngs_metadata_and_summary(reference):
  names = [folders.image_name(t, 0) for t in CLASSES]
  assert sorted(p.name for p in reference.glob("*.png")) == sorted(names)
  rows = folders.read_summary(reference)
  assert [r["file"] for r in rows] == names
  csv_lines = (reference / folders.SUMMARY_CSV).read_text().splitlines()
  assert csv_lines[0].split(",") == list(folders.SUMMARY_FIELDS) and len(csv_lines) == 5
  meta = read_png_metadata(reference / names[1])
  assert meta["model"] == tiny().name and meta["seed"] == "0" and meta["restart"] == "0"
  assert meta["target"] == "1" and meta["recipe"].startswith("Recipe(name='quick'")
  assert meta["weights"] == "default"
  assert float(meta["probability"]) == pytest.approx(rows[1]["probability"], rel=1e-5)
  assert json.loads(meta["summary"]) == rows[1]
  run = json.loads((reference / folders.RUN_FILE).read_text())
  assert run["seed"] == 0 and run["restarts"] == 1 and run["recipe"] == meta["recipe"]
  for row in rows:
    assert 0.0 <= row["probability"] <= 1.0 and 0 <= row["rank"] < 1000
    assert set(folders.SUMMARY_FIELDS) <= set(row)
    assert len(row["top1_fraction_per_octave"]) == len(row["zscore_jitter_per_octave"]) == 1


def test_timings_say_where_the_wall_time_went(reference):
  result = _REFERENCE["result"]
  t = result.timings
  assert set(t) == {"compile", "generate", "write", "write_wait", "waiting", "setup", "wall"}
  assert t["generate"] > 0 and t["write"] > 0 and t["wall"] == result.seconds
  assert t["setup"] + t["generate"] + t["write_wait"] <= t["wall"]
  assert 0 <= t["compile"] <= t["generate"]
  line = atlas.describe_timings(t)
  assert line.startswith(f"wall {t['wall']:.1f} s: setup") and "writing PNGs" in line


def test_images_of_a_run_killed_before_its_rows_get_rows(reference, tmp_path):
  """Another run held class 3 and died between writing its PNG and appending
  its row: this run waits for the class, keeps the PNG, and ends with one row
  per image, equal to an uninterrupted run's, and no claim left behind."""
  name = folders.image_name(CLASSES[-1], 0)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  claim = tmp_path / claims.CLAIMS_DIR / f"{name.rsplit('_r0', 1)[0]}.claim"
  claim.parent.mkdir()
  claim.write_text(json.dumps({"host": claims.Claims(tmp_path).me["host"], "pid": sleeper.pid}))
  said = []

  def log(line):
    said.append(line)
    if "waiting for them" in line:  # the other run writes its PNG and dies
      (tmp_path / name).write_bytes((reference / name).read_bytes())
      sleeper.kill()
      sleeper.wait()

  try:
    result = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2, seed=0,
                              log=log, poll=0.05)
  finally:
    sleeper.kill()
  by_file = {r["file"]: r for r in folders.read_summary(reference)}
  rows = folders.read_summary(tmp_path)
  assert sorted(r["file"] for r in rows) == sorted(by_file)
  assert all(r == by_file[r["file"]] for r in rows)
  assert result.made == 3 and any("added the summary rows of 1 images" in s for s in said)
  assert len((tmp_path / folders.SUMMARY_CSV).read_text().splitlines()) == 1 + len(CLASSES)
  assert not list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))


@pytest.mark.bit_exact
def test_rerun_does_nothing_and_other_batches_make_the_same_images(reference, tmp_path):
  again = atlas.make_atlas(tiny(), CLASSES, reference, QUICK, batch_size=3)
  assert again.made == 0 and again.kept == 4
  said = []  # no batch size: what fits (both classes here, on a CPU)
  # What a run killed mid-write leaves: the run that claims those images
  # removes it; another class's (a live run may be writing it) stays.
  names = [folders.image_name(t, 0) for t in CLASSES[:3]]
  plant_partial_files(tmp_path, names)
  other = atlas.make_atlas(tiny(), CLASSES[1::-1], tmp_path, QUICK, log=said.append)
  assert other.made == 2 and "atlas: batch size 2 (what fits the free device memory)" in said
  assert [p.name for p in tmp_path.glob(".*.tmp")] == [f".{names[2]}.k1ll3d.tmp"]
  # The same images, made in another order (the reference's first batch was 0, 1).
  expected, got = images_of(reference), images_of(tmp_path)
  assert sorted(got) == sorted(folders.image_name(t, 0) for t in CLASSES[:2])
  for name in got:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_resume_after_kill_matches_uninterrupted_run(reference, tmp_path):
  out = tmp_path / "killed"
  script = ("import sys\nfrom classgen_jax import atlas\nfrom tests.shared import QUICK, "
            "CLASSES, tiny\n"
            "atlas.make_atlas(tiny(), CLASSES, sys.argv[1], QUICK, batch_size=2)\n")
  kill_once_rows_are_written(script, str(out), out)
  # Killed mid-run, once the first batch's rows were written; the second
  # batch's PNGs (encoded while a batch is generated) may be there too. The
  # batches are the reference run's, whose compiled programs the child reads
  # from the compile cache.
  pngs = len(list(out.glob("*.png")))
  assert 2 <= pngs <= 4 and len(folders.read_summary(out)) == 2
  resumed = atlas.make_atlas(tiny(), CLASSES, out, QUICK, batch_size=2)
  assert resumed.kept == pngs and resumed.made == 4 - pngs
  expected, got = images_of(reference), images_of(out)
  assert expected.keys() == got.keys()
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  # Pixels are bit-equal; the float metrics of batches of other images may
  # differ in the last bits (XLA's batched reductions).
  for row, want in zip(folders.read_summary(out), folders.read_summary(reference), strict=True):
    floats = {k for k, v in want.items() if isinstance(v, float | list)}  # lists: per octave
    assert {k: v for k, v in row.items() if k not in floats} == {
        k: v for k, v in want.items() if k not in floats}
    for k in floats:
      assert row[k] == pytest.approx(want[k], rel=1e-4), k
  assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_truncated_png_is_redone(reference, tmp_path):
  out = tmp_path / "run"
  atlas.make_atlas(tiny(), CLASSES[:2], out, QUICK)
  name = folders.image_name(1, 0)
  data = (out / name).read_bytes()
  (out / name).write_bytes(data[:len(data) // 2])
  result = atlas.make_atlas(tiny(), CLASSES[:2], out, QUICK)
  assert result.made == 1 and result.kept == 1
  np.testing.assert_array_equal(pixels(out / name), pixels(reference / name))
  assert [r["file"] for r in folders.read_summary(out)] == [folders.image_name(t, 0)
                                                         for t in CLASSES[:2]]


# ----------------------------------------------------------------------------
# Refusals and failures.


@pytest.mark.slow
def test_changed_config_is_refused_and_overwrite_replaces(tmp_path):
  atlas.make_atlas(tiny(), [5], tmp_path, QUICK)
  with pytest.raises(folders.AtlasError, match=r"seed differ\); use a new --out or --overwrite"):
    atlas.make_atlas(tiny(), [5], tmp_path, QUICK, seed=1)
  result = atlas.make_atlas(tiny(), [6], tmp_path, QUICK, seed=1, overwrite=True)
  assert result.made == 1
  assert [p.name for p in tmp_path.glob("*.png")] == [folders.image_name(6, 0)]


def test_disk_full_stops_cleanly_and_resume_completes(reference, tmp_path, monkeypatch):
  calls = []
  real = writing.save_png

  def save_until_full(path, image, metadata):
    calls.append(path)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    real(path, image, metadata)

  monkeypatch.setattr(writing, "save_png", save_until_full)
  with pytest.raises(folders.StorageError, match="the disk is full; stopped cleanly"):
    atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2)
  assert len(folders.read_summary(tmp_path)) == 2
  monkeypatch.setattr(writing, "save_png", real)
  result = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2)
  # The failed write's batch-mate may have been written (in parallel) and is kept.
  assert result.kept in (2, 3) and result.made + result.kept == 4
  assert images_of(tmp_path).keys() == images_of(reference).keys()


def test_an_init_folder_transfigures_each_photo_into_every_class(tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(photos / "grey.png")
  (photos / "notes.txt").write_text("not an image")
  result = atlas.make_atlas(tiny(), [5], tmp_path / "out", QUICK, init=photos, batch_size=2)
  assert [r["file"] for r in result.rows] == ["0005_electric_ray_grey_r0.png"]
  assert result.rows[0]["init"] == "grey.png"


# ----------------------------------------------------------------------------
# Several runs on one folder, several processes in one job.


def test_processes_make_their_share_and_merge_the_summary(reference, tmp_path):
  first = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2,
                           process_index=1, process_count=2)
  assert first.made == 2 and [r["target"] for r in first.rows] == CLASSES[1::2]
  assert [r["target"] for r in folders.read_summary(tmp_path, 1)] == CLASSES[1::2]
  second = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2,
                            process_index=0, process_count=2)
  assert second.made == 2
  # The last to finish merged both parts: the summary of a one-process run.
  assert [r["file"] for r in folders.read_summary(tmp_path)] == [
      r["file"] for r in folders.read_summary(reference)]
  assert_same_images(reference, tmp_path)
  # Each process resumes its own share.
  again = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, process_index=1, process_count=2)
  assert again.made == 0 and again.kept == 2
  with pytest.raises(folders.AtlasError, match="empty the folder first"):
    atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, process_index=0, process_count=2,
                     overwrite=True)


_RUN = ("import sys\nfrom classgen_jax import atlas\nfrom tests.shared import QUICK, "
        "CLASSES, tiny\n"
        "r = atlas.make_atlas(tiny(), CLASSES, sys.argv[1], QUICK, batch_size=1, poll=0.2)\n"
        "print('made', r.made, 'rows', len(r.rows))\n")


@pytest.mark.slow  # two processes, ~30 s
def test_two_runs_on_one_folder_share_the_work(reference, tmp_path):
  """Started together by mistake: no image made twice, no row written twice,
  and both end with the whole atlas."""
  outputs = run_together(_RUN, [[str(tmp_path)]] * 2, CLASSGEN_JAX_ATLAS_SLEEP="1")
  made = [int(out.split()[1]) for out in outputs]
  assert sum(made) == len(CLASSES) and [out.split()[3] for out in outputs] == ["4", "4"]
  rows = folders.read_summary(tmp_path)
  assert sorted(r["file"] for r in rows) == sorted(folders.image_name(t, 0) for t in CLASSES)
  assert_same_images(reference, tmp_path)
  assert not list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))


_DISTRIBUTED = (
    "import sys, jax\n"
    "jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, "
    "process_id=int(sys.argv[3]), initialization_timeout=120)\n"
    "from classgen_jax import atlas\nfrom tests.shared import QUICK, CLASSES, tiny\n"
    "r = atlas.make_atlas(tiny(), CLASSES, sys.argv[1], QUICK, batch_size=2)\n"
    "print('made', r.made)\njax.distributed.shutdown()\n")


@pytest.mark.slow  # two processes, ~40 s
def test_jax_distributed_processes_equal_a_single_process_run(reference, tmp_path):
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  outputs = run_together(_DISTRIBUTED,
                         [[str(tmp_path), f"127.0.0.1:{port}", str(i)] for i in range(2)])
  assert [out.split() for out in outputs] == [["made", "2"], ["made", "2"]]
  assert {p.name for p in tmp_path.glob("summary.p*.jsonl")} == {
      "summary.p0.jsonl", "summary.p1.jsonl"}
  assert [r["file"] for r in folders.read_summary(tmp_path)] == [
      r["file"] for r in folders.read_summary(reference)]
  assert_same_images(reference, tmp_path)


@pytest.mark.slow  # seven or nine runs of scripts/generate.py on Lite0, ~2 min each
@pytest.mark.parametrize("scenario", ["shared", "distributed"])
def test_fault_injection_kills_and_finds_nothing_lost(tmp_path, scenario):
  """Two kills at random moments: of one of two runs on a folder (-9, then a
  Ctrl-C), or of process 1, then process 0, of a two-process job on one
  folder (-9 both). After the resume no image is lost, no row is missing,
  repeated or different, no claim is left and every ending is clean (the
  script exits 1 otherwise)."""
  out = tmp_path / "injection.json"
  done = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "fault_injection.py"), f"--scenario={scenario}",
       "--trials=2", "--classes=0-3", "--steps_scale=0.05",
       f"--work={tmp_path / 'work'}", f"--json_out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  record = json.loads(out.read_text())
  assert len(record["trials"]) == 2 and record["bad_endings"] == 0
  assert not any(record["after_resume"].values())
  assert f"{scenario}: 2 trials" in done.stdout
  if scenario == "distributed":
    assert [t["victim"] for t in record["trials"]] == ["p1", "p0"]
