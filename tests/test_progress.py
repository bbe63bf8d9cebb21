"""Progress reports: lines a person can follow, on a terminal or in a log."""

from __future__ import annotations

import io

from classgen_jax import progress
from classgen_jax.tracking import Progress


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_log_lines_compile_time_rate_and_eta():
  clock, lines = _Clock(), []
  reporter = progress.Reporter(io.StringIO(), bar=False, log=lines.append, every=5.0,
                               clock=clock)
  reporter(Progress("compiling", 0, 2, 0, 100, 4))
  clock.now = 20.0
  reporter(Progress("compiled", 0, 2, 0, 100, 4, seconds=20.0))
  reporter(Progress("iterations", 0, 2, 10, 100, 4))
  clock.now = 30.0
  reporter(Progress("iterations", 0, 2, 30, 100, 4))  # 20 iterations in 10 s
  assert lines[0].startswith("octave 1/2: compiling")
  assert lines[1] == "octave 1/2: compiled in 20.0 s"
  assert lines[-1] == "octave 1/2: iteration 30/100 (4 images), 2.00 it/s, ETA 0:35"
  clock.now = 31.0
  reporter(Progress("iterations", 0, 2, 32, 100, 4))  # within `every`: not logged
  assert len(lines) == 3
  clock.now = 40.0  # the next batch starts over: no negative rate
  reporter(Progress("iterations", 0, 2, 5, 100, 4))
  assert lines[-1] == "octave 1/2: iteration 5/100 (4 images), -- it/s, ETA --"
  clock.now = 50.0
  reporter(Progress("iterations", 0, 2, 25, 100, 4))
  assert lines[-1].endswith("2.00 it/s, ETA 0:38")


def test_bar_redraws_one_line_and_keeps_permanent_lines():
  stream, clock = io.StringIO(), _Clock()
  reporter = progress.Reporter(stream, bar=True, clock=clock)
  reporter(Progress("iterations", 1, 2, 50, 100, 4))
  clock.now = 5.0
  reporter(Progress("iterations", 1, 2, 75, 100, 4))
  reporter.line("atlas: 4/8 images")
  text = stream.getvalue()
  assert "\r\x1b[K[##########..........] octave 2/2: iteration 50/100" in text
  assert "[###############.....] octave 2/2: iteration 75/100 (4 images), 5.00 it/s" in text
  assert "\r\x1b[Katlas: 4/8 images\n" in text
  assert text.endswith("ETA 0:05")  # the status is redrawn under the permanent line


def test_heartbeat_says_it_is_still_working():
  clock, lines = _Clock(), []
  with progress.Reporter(io.StringIO(), bar=False, log=lines.append, every=0.2,
                         clock=clock) as reporter:
    reporter(Progress("compiling", 0, 1, 0, 10, 1))
    clock.now = 61.0
    import time
    time.sleep(0.6)
  assert any("compiling" in line and "still working: 1:01" in line for line in lines[1:]), lines
