"""Atlases: class parsing, the run's files and metadata, resuming after a real
kill, refusals, and the disk filling up mid-run."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classgen_jax import atlas, claims, imagenet
from classgen_jax.images import read_png_metadata
from tests.conftest import CLASSES, QUICK, tiny

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


# ----------------------------------------------------------------------------
# Classes.


def test_parse_classes_mixes_names_indices_and_ranges():
  assert atlas.parse_classes("0-2, tabby,19") == [0, 1, 2, 281, 19]
  assert atlas.parse_classes("all") == list(range(1000))
  assert atlas.parse_classes("black_and_gold_garden_spider") == [
      imagenet.class_index("black and gold garden spider")]


@pytest.mark.parametrize("spec, message", [
    ("5-3", "is empty"),
    ("0-5,3-7", "given twice"),
    ("tabby,281", "given twice"),
    ("1,,2", "empty class"),
    ("", "empty class"),
    ("990-1000", "out of range"),
    ("tabbby", "did you mean 'tabby'"),
])
def test_parse_classes_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    atlas.parse_classes(spec)


def test_image_name():
  assert atlas.image_name(19, 0) == "0019_chickadee_r0.png"
  assert atlas.image_name(281, 2, photo="my cat") == "0281_tabby_my_cat_r2.png"


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
  names = [atlas.image_name(t, 0) for t in CLASSES]
  assert sorted(p.name for p in reference.glob("*.png")) == sorted(names)
  rows = atlas.read_summary(reference)
  assert [r["file"] for r in rows] == names
  csv_lines = (reference / atlas.SUMMARY_CSV).read_text().splitlines()
  assert csv_lines[0].split(",") == list(atlas.SUMMARY_FIELDS) and len(csv_lines) == 5
  meta = read_png_metadata(reference / names[1])
  assert meta["model"] == tiny().name and meta["seed"] == "0" and meta["restart"] == "0"
  assert meta["target"] == "1" and "'name': 'quick'" in meta["recipe"]
  assert meta["weights"] == "default"
  assert float(meta["probability"]) == pytest.approx(rows[1]["probability"], rel=1e-5)
  assert json.loads(meta["summary"]) == rows[1]
  run = json.loads((reference / atlas.RUN_FILE).read_text())
  assert run["seed"] == 0 and run["restarts"] == 1 and run["recipe"] == meta["recipe"]
  for row in rows:
    assert 0.0 <= row["probability"] <= 1.0 and 0 <= row["rank"] < 1000
    assert set(atlas.SUMMARY_FIELDS) <= set(row)
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


def test_rerun_does_nothing_and_other_batches_make_the_same_images(reference, tmp_path):
  again = atlas.make_atlas(tiny(), CLASSES, reference, QUICK, batch_size=3)
  assert again.made == 0 and again.kept == 4
  said = []  # no batch size: what fits (all 4 here, on a CPU)
  other = atlas.make_atlas(tiny(), CLASSES[::-1], tmp_path, QUICK, log=said.append)
  assert other.made == 4 and "atlas: batch size 4 (what fits the free device memory)" in said
  expected, got = images_of(reference), images_of(tmp_path)
  assert expected.keys() == got.keys()
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_resume_after_kill_matches_uninterrupted_run(reference, tmp_path):
  out = tmp_path / "killed"
  script = ("import sys\nfrom classgen_jax import atlas\nfrom tests.conftest import QUICK, "
            "CLASSES, tiny\n"
            "atlas.make_atlas(tiny(), CLASSES, sys.argv[1], QUICK, batch_size=1)\n")
  env = dict(os.environ, CLASSGEN_JAX_ATLAS_SLEEP="120", JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 120
    while not atlas.read_summary(out):
      assert child.poll() is None, child.stderr.read().decode()[-2000:]
      assert time.monotonic() < deadline, "the child wrote no batch in time"
      time.sleep(0.2)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  assert child.returncode == -signal.SIGKILL
  # Killed mid-run, once the first batch's row was written; the second
  # batch's PNG (encoded while a batch is generated) may be there too.
  pngs = len(list(out.glob("*.png")))
  assert 1 <= pngs <= 2 and len(atlas.read_summary(out)) == 1
  resumed = atlas.make_atlas(tiny(), CLASSES, out, QUICK, batch_size=2)
  assert resumed.kept == pngs and resumed.made == 4 - pngs
  expected, got = images_of(reference), images_of(out)
  assert expected.keys() == got.keys()
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  # Pixels are bit-equal; the float metrics of a batch of 2 and of 1 may
  # differ in the last bits (XLA's batched reductions).
  for row, want in zip(atlas.read_summary(out), atlas.read_summary(reference), strict=True):
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
  name = atlas.image_name(1, 0)
  data = (out / name).read_bytes()
  (out / name).write_bytes(data[:len(data) // 2])
  result = atlas.make_atlas(tiny(), CLASSES[:2], out, QUICK)
  assert result.made == 1 and result.kept == 1
  np.testing.assert_array_equal(pixels(out / name), pixels(reference / name))
  assert [r["file"] for r in atlas.read_summary(out)] == [atlas.image_name(t, 0)
                                                         for t in CLASSES[:2]]


# ----------------------------------------------------------------------------
# Refusals and failures.


@pytest.mark.slow
def test_changed_config_is_refused_and_overwrite_replaces(tmp_path):
  atlas.make_atlas(tiny(), [5], tmp_path, QUICK)
  with pytest.raises(atlas.AtlasError, match=r"seed differ\); use a new --out or --overwrite"):
    atlas.make_atlas(tiny(), [5], tmp_path, QUICK, seed=1)
  result = atlas.make_atlas(tiny(), [6], tmp_path, QUICK, seed=1, overwrite=True)
  assert result.made == 1
  assert [p.name for p in tmp_path.glob("*.png")] == [atlas.image_name(6, 0)]


def test_folder_with_foreign_images_is_refused(tmp_path):
  Image.new("RGB", (8, 8)).save(tmp_path / "0007_stingray_r0.png")
  with pytest.raises(atlas.AtlasError, match="holds another run's images"):
    atlas.make_atlas(tiny(), [5], tmp_path, QUICK)


def test_unwritable_folder_is_refused(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(atlas.AtlasError, match="cannot write to --out"):
    atlas.make_atlas(tiny(), [5], tmp_path / "file" / "out", QUICK)


def test_disk_full_stops_cleanly_and_resume_completes(reference, tmp_path, monkeypatch):
  calls = []
  real = atlas.save_png

  def save_until_full(path, image, metadata):
    calls.append(path)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    real(path, image, metadata)

  monkeypatch.setattr(atlas, "save_png", save_until_full)
  with pytest.raises(atlas.StorageError, match="the disk is full; stopped cleanly"):
    atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2)
  assert len(atlas.read_summary(tmp_path)) == 2
  monkeypatch.setattr(atlas, "save_png", real)
  result = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2)
  # The failed write's batch-mate may have been written (in parallel) and is kept.
  assert result.kept in (2, 3) and result.made + result.kept == 4
  assert images_of(tmp_path).keys() == images_of(reference).keys()


def test_init_folder_skips_unreadable_files_with_a_warning(tmp_path, caplog):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(photos / "grey.png")
  (photos / "notes.txt").write_text("not an image")
  with caplog.at_level("WARNING"):
    assert [p.name for p in atlas.photo_paths(photos)] == ["grey.png"]
  assert "notes.txt" in caplog.text
  result = atlas.make_atlas(tiny(), [5], tmp_path / "out", QUICK, init=photos)
  assert [r["file"] for r in result.rows] == ["0005_electric_ray_grey_r0.png"]
  assert result.rows[0]["init"] == "grey.png"
  with pytest.raises(atlas.AtlasError, match="no readable image"):
    atlas.photo_paths(_unreadable_only(tmp_path))


def _unreadable_only(tmp_path: Path) -> Path:
  folder = tmp_path / "unreadable"
  folder.mkdir()
  (folder / "bad.jpg").write_bytes(b"nope")
  return folder


# ----------------------------------------------------------------------------
# Several runs on one folder, several processes in one job.


def testclaims_are_exclusive_and_a_dead_run_is_taken_over(tmp_path, caplog):
  ours = claims.Claims(tmp_path, heartbeat=0.05)
  other = claims.Claims(tmp_path)
  other.me = {"host": other.me["host"], "pid": os.getppid()}  # a live process, not us
  try:
    assert other.take("0019_chickadee")
    assert not ours.take("0019_chickadee")
    assert ours.holder("0019_chickadee")["pid"] == os.getppid()
    other.release("0019_chickadee")
    assert ours.take("0019_chickadee") and ours.holder("0019_chickadee") is None
    # A claim left by a process that no longer exists is taken over, with a warning.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = tmp_path / claims.CLAIMS_DIR / "0001_goldfish.claim"
    path.write_text(json.dumps({"host": ours.me["host"], "pid": int(dead.stdout)}))
    assert ours.take("0001_goldfish")
    assert "taking over process" in caplog.text
    # Another host's claim is live while refreshed, stale once it is not.
    path = tmp_path / claims.CLAIMS_DIR / "0002_great_white_shark.claim"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not ours.take("0002_great_white_shark")
    os.utime(path, (time.time() - 3600,) * 2)
    assert ours.take("0002_great_white_shark")
    before = (tmp_path / claims.CLAIMS_DIR / "0019_chickadee.claim").stat().st_mtime
    time.sleep(0.3)  # the heartbeat refreshes what we hold
    assert (tmp_path / claims.CLAIMS_DIR / "0019_chickadee.claim").stat().st_mtime > before
  finally:
    ours.close()
    other.close()
  assert not list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))


def test_processes_make_their_share_and_merge_the_summary(reference, tmp_path):
  first = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2,
                           process_index=1, process_count=2)
  assert first.made == 2 and [r["target"] for r in first.rows] == CLASSES[1::2]
  assert [r["target"] for r in atlas.read_summary(tmp_path, 1)] == CLASSES[1::2]
  second = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, batch_size=2,
                            process_index=0, process_count=2)
  assert second.made == 2
  # The last to finish merged both parts: the summary of a one-process run.
  assert [r["file"] for r in atlas.read_summary(tmp_path)] == [
      r["file"] for r in atlas.read_summary(reference)]
  assert_same_images(reference, tmp_path)
  # Each process resumes its own share.
  again = atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, process_index=1, process_count=2)
  assert again.made == 0 and again.kept == 2
  with pytest.raises(atlas.AtlasError, match="empty the folder first"):
    atlas.make_atlas(tiny(), CLASSES, tmp_path, QUICK, process_index=0, process_count=2,
                     overwrite=True)


_RUN = ("import sys\nfrom classgen_jax import atlas\nfrom tests.conftest import QUICK, "
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
  rows = atlas.read_summary(tmp_path)
  assert sorted(r["file"] for r in rows) == sorted(atlas.image_name(t, 0) for t in CLASSES)
  assert_same_images(reference, tmp_path)
  assert not list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))


_DISTRIBUTED = (
    "import sys, jax\n"
    "jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, "
    "process_id=int(sys.argv[3]), initialization_timeout=120)\n"
    "from classgen_jax import atlas\nfrom tests.conftest import QUICK, CLASSES, tiny\n"
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
  assert [r["file"] for r in atlas.read_summary(tmp_path)] == [
      r["file"] for r in atlas.read_summary(reference)]
  assert_same_images(reference, tmp_path)
