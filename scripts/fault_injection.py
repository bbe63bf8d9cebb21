r"""Kill atlas runs at random moments and check that nothing is lost.

  python scripts/fault_injection.py --scenario=shared --trials=20
  python scripts/fault_injection.py --scenario=distributed --trials=20
  python scripts/fault_injection.py --scenario=distributed --separate_folders --trials=20

First one clean run of the job (--classes, --recipe, --steps_scale,
--batch_size) into --work/clean. Then each trial:

* shared: two scripts/generate.py runs on one folder, the second
  started a moment after the first; the first is killed (kill -9 or a
  Ctrl-C, in turn) at a random moment; the survivor is waited for.
* distributed: a two-process job (--coordinator on 127.0.0.1) on one
  folder (--separate_folders: each process its own); process 1 or process 0
  (the coordinator) in turn, by kill -9 or a Ctrl-C in turn, is killed at a
  random moment; the survivor is waited for.

Then the same command is run once more (it resumes; both processes again for
distributed), and the invariants are checked: every PNG of the job
decodes and names the run (in one of the folders), the summary has exactly
one row per image (per folder, for the images there), each row equal to the
clean run's (floats to 1e-5), no claim is left behind, and no process
printed a traceback or an abort. Every ending must be clean: 0; the kill, or
130 with the one "interrupted..." line after a Ctrl-C; or a nonzero status
whose last line is one "error: ..." line (a survivor whose job could not be
completed, naming what was not made and how to resume). What the survivors
left before the resume is counted too: images missing, rows missing or
repeated; and how each survivor ended. Prints a line per trial and the
totals; --json_out keeps them.
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
                   "(default: 0.8 of the clean run's duration, or of a clean job's for "
                   "distributed, so most kills land mid-run).")
flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
flags.DEFINE_bool("separate_folders", False, "distributed: each process writes its own --out.")
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


def _ending(log: Path, rc: int, killed: bool, may_fail: bool = False) -> str | None:
  """What was wrong with how a process ended, or None: a traceback or an
  abort always; else anything but 0, the kill, 130 with the one
  "interrupted..." line after a Ctrl-C (or SIGINT's own status, silent, if
  it came while Python was exiting), or (``may_fail``) one "error: ..."
  line."""
  text = log.read_text(encoding="utf-8", errors="replace")
  if "Traceback" in text or "Fatal Python error" in text or "Check failure" in text:
    return f"rc {rc}, traceback or abort: {log}"
  last = _last_line(text)
  if rc == 0 or (killed and rc == -signal.SIGKILL):
    return None
  if killed and rc == 130 and last.startswith("interrupted"):  # Ctrl-C's one line
    return None
  if killed and rc == -signal.SIGINT:  # Ctrl-C where Python has no handler (exiting): silent
    return None
  if may_fail and rc > 0 and last.startswith("error: "):
    return None
  return f"rc {rc}: {last[:200]}"


def _last_line(text: str) -> str:
  return ([line for line in text.splitlines() if line.strip()] or [""])[-1]


def _port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _check(outs: list[Path], clean: dict[str, dict]) -> dict[str, int]:
  """The invariants of a finished job's folders, as counts of what is wrong:
  images complete in none of them, images without a row in any summary,
  rows repeated in a summary or naming no complete image there, rows unlike
  the clean run's, claims left."""
  have, listed = set(), set()
  repeated = differing = claims_left = 0
  for out in dict.fromkeys(outs):
    if not (out / folders.RUN_FILE).exists():
      continue
    run_id = folders.config_id(json.loads((out / folders.RUN_FILE).read_text()))
    here = {name for name in clean if folders.read_complete(out / name, run_id) is not None}
    rows = folders.read_summary(out)
    files = [r.get("file") for r in rows]
    have |= here
    listed |= set(files) & here
    repeated += len(files) - len(set(files)) + sum(f not in here for f in set(files))
    differing += sum(not _same_row(r, clean[r["file"]]) for r in rows if r.get("file") in clean)
    claims_left += len(list((out / claims.CLAIMS_DIR).glob("*.claim")))
  return dict(images_lost=len(clean) - len(have), rows_missing=len(clean) - len(listed),
              rows_repeated=repeated, rows_differing=differing, claims_left=claims_left)


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
  if FLAGS.scenario == "shared":
    outs, victim = [out, out], 0
    first = _start(_command(out), logs / f"{index:02d}_a.log")
    time.sleep(rng.uniform(0.5, 3.0))
    started = [first, _start(_command(out), logs / f"{index:02d}_b.log")]
    names = ["a", "b"]
  else:  # process 1, process 0, in turn; kill -9 twice, then a Ctrl-C twice
    outs = [out / f"p{i}" for i in range(2)] if FLAGS.separate_folders else [out, out]
    victim, how = 1 - index % 2, "SIGKILL" if index // 2 % 2 == 0 else "SIGINT"
    started, names = _job(outs, logs, f"{index:02d}_p"), ["p0", "p1"]
  time.sleep(delay)
  killed = started[victim].poll() is None
  at_kill = len({q.name for o in outs for q in o.glob("[0-9]*.png")})  # renamed whole
  if killed:
    started[victim].send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
  endings, survivors = [], []
  for i in sorted(range(2), key=lambda i: i != victim):  # the victim first: no zombie
    log, rc = logs / f"{index:02d}_{names[i]}.log", _wait(started[i])
    endings.append(_ending(log, rc, i == victim, FLAGS.scenario == "distributed"))
    if i != victim:
      survivors.append(dict(process=i, rc=rc, last_line=_last_line(log.read_text())[:400]))
  before = _check(outs, clean)
  # Resume: the same command(s) again.
  if FLAGS.scenario == "shared":
    resumes = [_start(_command(out), logs / f"{index:02d}_resume.log")]
    resume_logs = [logs / f"{index:02d}_resume.log"]
  else:
    resumes = _job(outs, logs, f"{index:02d}_resume")
    resume_logs = [logs / f"{index:02d}_resume{i}.log" for i in range(2)]
  resume_endings = [_ending(log, _wait(p), False) for p, log in zip(resumes, resume_logs)]
  after = _check(outs, clean)
  return dict(trial=index, victim=names[victim], signal=how if killed else "none (ended first)",
              kill_after_s=round(delay, 1), images_at_kill=at_kill, survivors=survivors,
              endings=[e for e in endings if e], resume_endings=[e for e in resume_endings if e],
              before_resume=before, after_resume=after)


def _job(outs: list[Path], logs: Path, name: str) -> list[subprocess.Popen]:
  """The two processes of a job on ``outs``."""
  address = f"127.0.0.1:{_port()}"
  return [_start(_command(outs[i], f"--coordinator={address}", "--num_processes=2",
                          f"--process_id={i}", "--startup_timeout=60"), logs / f"{name}{i}.log")
          for i in range(2)]


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
  if FLAGS.scenario == "distributed" and not FLAGS.kill_after:
    # A job's two processes start up side by side: it takes longer than one run.
    began = time.perf_counter()
    outs = [work / "clean_job"] * 2
    if any(_wait(p) for p in _job(outs, work / "logs", "clean_job")):
      sys.exit(f"error: the clean job failed; see {work / 'logs'}/clean_job*.log")
    kill_after = 0.8 * (time.perf_counter() - began)
  rng = random.Random(FLAGS.seed)
  trials = []
  for index in range(FLAGS.trials):
    trial = _trial(index, work, clean, rng, kill_after)
    trials.append(trial)
    print(f"trial {index:2d}: {trial['victim']} {trial['signal']} after "
          f"{trial['kill_after_s']} s ({trial['images_at_kill']} images); survivor rc "
          f"{[x['rc'] for x in trial['survivors']]}; before resume "
          f"{trial['before_resume']}; after {trial['after_resume']}; bad endings "
          f"{len(trial['endings'])} + {len(trial['resume_endings'])}", flush=True)
  totals = {key: sum(t["after_resume"][key] for t in trials) for key in trials[0]["after_resume"]}
  survivors = {key: sum((t["before_resume"] or {}).get(key, 0) for t in trials)
               for key in trials[0]["after_resume"]}
  bad = sum(len(t["endings"]) + len(t["resume_endings"]) for t in trials)
  kills = sum(t["signal"] != "none (ended first)" for t in trials)
  ended = [s for t in trials for s in t["survivors"]]
  complete = sum(s["rc"] == 0 for s in ended)
  mid_run = sum(t["images_at_kill"] > 0 for t in trials)
  scenario = FLAGS.scenario + (" (separate folders)" if FLAGS.separate_folders else "")
  print(f"{scenario}: {len(trials)} trials, {kills} kills; after the resume: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items())
        + "; as the survivors left it: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in survivors.items())
        + f"; survivors ending complete (rc 0) {complete}, with one error line "
        f"{len(ended) - complete}; endings not clean or not one line: {bad}; kills after the "
        f"first image {mid_run}, in [1, {kill_after:.1f}] s")
  if FLAGS.json_out:
    Path(FLAGS.json_out).write_text(json.dumps(dict(
        scenario=scenario, command=" ".join(["python", *sys.argv]), trials=trials, kills=kills,
        after_resume=totals, as_survivors_left=survivors, survivors_complete=complete,
        survivors_one_error_line=len(ended) - complete, bad_endings=bad,
        kill_window_s=[1.0, round(kill_after, 1)], kills_after_first_image=mid_run), indent=1))
  if any(totals.values()) or bad:
    sys.exit(1)


if __name__ == "__main__":
  _cli.run(main)
