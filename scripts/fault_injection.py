r"""Kill atlas runs at random moments and check that nothing is lost.

  python scripts/fault_injection.py --scenario=shared --trials=20
  python scripts/fault_injection.py --scenario=distributed --trials=20

First one clean run of the job (--classes, --recipe, --steps_scale,
--batch_size) into --work/clean. Then each trial:

* shared: two scripts/generate.py runs on one folder, the second
  started a moment after the first; the first is killed (kill -9 or a
  Ctrl-C, in turn) at a random moment; the survivor is waited for.
* distributed: a two-process jax.distributed job on one folder;
  process 1 is killed at a random moment; process 0 is waited for.

Then the same command is run once more (it resumes; both processes again for
distributed), and the invariants are checked: every PNG of the job
decodes and names the run, the summary has exactly one row per image, each
row equal to the clean run's (floats to 1e-5), no claim is left behind, and
no process printed a traceback or ended other than cleanly (0, 130 after a
Ctrl-C, or the kill). What the survivors left before the resume is counted
too: images missing, rows missing or repeated, endings that were not one
line. Prints a line per trial and the totals; --json_out keeps them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from classgen_jax import claims, folders, imagenet
from scripts import _cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("scenario", "shared", ["shared", "distributed"], "What is killed (above).")
flags.DEFINE_integer("trials", 20, "Kills.")
flags.DEFINE_string("work", "fault_injection", "Folder for the runs (emptied first).")
flags.DEFINE_string("model", "efficientnet_lite0", _cli.MODEL_HELP)
flags.DEFINE_string("recipe", "sign", _cli.RECIPE_HELP)
flags.DEFINE_string("classes", "0-7", _cli.CLASSES_HELP)
flags.DEFINE_float("steps_scale", 0.1, "Scale every octave's iterations (short runs).")
flags.DEFINE_integer("batch_size", 2, "Images per batch.")
flags.DEFINE_float("kill_after", 0.0, "Kill at a moment uniform in [1 s, this] after the start "
                   "(default: 0.8 of the clean run's duration, so most kills land mid-run).")
flags.DEFINE_integer("seed", 0, "Seed of the kill moments and signals.")
flags.DEFINE_string("json_out", None, "Write the trials and totals as JSON here.")

ROOT = Path(__file__).resolve().parents[1]


def _command(out: Path, *extra: str) -> list[str]:
  return [sys.executable, str(ROOT / "scripts" / "generate.py"), f"--out={out}",
          f"--model={FLAGS.model}", f"--recipe={FLAGS.recipe}", f"--classes={FLAGS.classes}",
          f"--steps_scale={FLAGS.steps_scale}", f"--batch_size={FLAGS.batch_size}",
          "--noprogress", *extra]


def _start(command: list[str], log: Path) -> subprocess.Popen:
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
         "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
  with open(log, "w", encoding="utf-8") as f:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, timeout: float = 600) -> int:
  try:
    return process.wait(timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    return process.wait()


def _ending(log: Path, rc: int, killed: bool) -> str | None:
  """What was wrong with how a process ended, or None."""
  text = log.read_text(encoding="utf-8", errors="replace")
  if "Traceback" in text or "Fatal Python error" in text or "Check failure" in text:
    return f"rc {rc}, traceback or abort: {log}"
  if killed and rc in (-signal.SIGKILL, 130):
    return None
  if rc != 0:
    last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    return f"rc {rc}: {last[0][:200]}"
  return None


def _port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _check(out: Path, clean: dict[str, dict]) -> dict[str, int]:
  """The invariants of a finished job's folder, as counts of what is wrong."""
  run_id = folders.config_id(json.loads((out / folders.RUN_FILE).read_text()))
  lost = sum(folders.read_complete(out / name, run_id) is None for name in clean)
  rows = folders.read_summary(out)
  files = [r.get("file") for r in rows]
  missing = sum(name not in files for name in clean)
  repeated = len(files) - len(set(files)) + sum(f not in clean for f in set(files))
  differing = sum(not _same_row(r, clean[r["file"]]) for r in rows if r.get("file") in clean)
  claims_left = len(list((out / claims.CLAIMS_DIR).glob("*.claim")))
  return dict(images_lost=lost, rows_missing=missing, rows_repeated=repeated,
              rows_differing=differing, claims_left=claims_left)


def _same_row(a: dict, b: dict) -> bool:
  if a.keys() != b.keys():
    return False
  for key, value in a.items():
    other = b[key]
    if isinstance(value, float) and isinstance(other, float):
      if abs(value - other) > 1e-5 * max(1.0, abs(other)):
        return False
    elif isinstance(value, list) and isinstance(other, list):
      if len(value) != len(other) or any(abs(x - y) > 1e-5 * max(1.0, abs(y))
                                         for x, y in zip(value, other)):
        return False
    elif value != other:
      return False
  return True


def _trial(index: int, work: Path, clean: dict[str, dict], rng: random.Random,
           kill_after: float) -> dict:
  out = work / f"trial{index:02d}"
  logs = work / "logs"
  delay = rng.uniform(1.0, kill_after)
  how = "SIGKILL" if index % 2 == 0 else "SIGINT"
  endings = []
  if FLAGS.scenario == "shared":
    first = _start(_command(out), logs / f"{index:02d}_a.log")
    time.sleep(rng.uniform(0.5, 3.0))
    second = _start(_command(out), logs / f"{index:02d}_b.log")
    victim, survivors = first, [(second, logs / f"{index:02d}_b.log")]
    victim_log = logs / f"{index:02d}_a.log"
  else:
    address = f"127.0.0.1:{_port()}"
    started = [_start(_command(out, f"--coordinator={address}", "--num_processes=2",
                               f"--process_id={i}"), logs / f"{index:02d}_p{i}.log")
               for i in range(2)]
    victim, survivors = started[1], [(started[0], logs / f"{index:02d}_p0.log")]
    victim_log = logs / f"{index:02d}_p1.log"
    how = "SIGKILL"
  time.sleep(delay)
  killed = victim.poll() is None
  if killed:
    victim.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
  endings.append(_ending(victim_log, _wait(victim), True))
  for process, log in survivors:
    endings.append(_ending(log, _wait(process), False))
  before = _check(out, clean) if (out / folders.RUN_FILE).exists() else None
  # Resume: the same command(s) again.
  if FLAGS.scenario == "shared":
    resumes = [(_start(_command(out), logs / f"{index:02d}_resume.log"),
                logs / f"{index:02d}_resume.log")]
  else:
    address = f"127.0.0.1:{_port()}"
    resumes = [(_start(_command(out, f"--coordinator={address}", "--num_processes=2",
                                f"--process_id={i}"), logs / f"{index:02d}_resume{i}.log"),
                logs / f"{index:02d}_resume{i}.log") for i in range(2)]
  resume_endings = [_ending(log, _wait(p), False) for p, log in resumes]
  after = _check(out, clean)
  return dict(trial=index, signal=how if killed else "none (ended first)",
              kill_after_s=round(delay, 1), endings=[e for e in endings if e],
              resume_endings=[e for e in resume_endings if e], before_resume=before,
              after_resume=after)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    folders.parse_classes(FLAGS.classes, imagenet.LABELS)
  except ValueError as error:
    sys.exit(f"error: {error}")
  work = Path(FLAGS.work)
  shutil.rmtree(work, ignore_errors=True)
  (work / "logs").mkdir(parents=True)
  began = time.perf_counter()
  rc = _wait(_start(_command(work / "clean"), work / "logs" / "clean.log"))
  kill_after = FLAGS.kill_after or 0.8 * (time.perf_counter() - began)
  if rc != 0:
    sys.exit(f"error: the clean run failed (rc {rc}); see {work / 'logs' / 'clean.log'}")
  clean = {r["file"]: r for r in folders.read_summary(work / "clean")}
  rng = random.Random(FLAGS.seed)
  trials = []
  for index in range(FLAGS.trials):
    trial = _trial(index, work, clean, rng, kill_after)
    trials.append(trial)
    print(f"trial {index:2d}: {trial['signal']} after {trial['kill_after_s']} s; before resume "
          f"{trial['before_resume']}; after {trial['after_resume']}; bad endings "
          f"{len(trial['endings'])} + {len(trial['resume_endings'])}", flush=True)
  totals = {key: sum(t["after_resume"][key] for t in trials) for key in trials[0]["after_resume"]}
  survivors = {key: sum((t["before_resume"] or {}).get(key, 0) for t in trials)
               for key in trials[0]["after_resume"]}
  bad = sum(len(t["endings"]) + len(t["resume_endings"]) for t in trials)
  kills = sum(t["signal"] != "none (ended first)" for t in trials)
  print(f"{FLAGS.scenario}: {len(trials)} trials, {kills} kills; after the resume: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items())
        + "; as the survivors left it: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in survivors.items())
        + f"; endings not clean or not one line: {bad}")
  if FLAGS.json_out:
    Path(FLAGS.json_out).write_text(json.dumps(dict(
        scenario=FLAGS.scenario, command=" ".join(sys.argv), trials=trials, kills=kills,
        after_resume=totals, as_survivors_left=survivors, bad_endings=bad), indent=1))
  if any(totals.values()) or bad:
    sys.exit(1)


if __name__ == "__main__":
  _cli.run(main)
