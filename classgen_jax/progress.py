"""Progress a person can follow: a bar on a terminal, plain lines in a log.

``Reporter`` takes ``engine.Progress`` events (compiling, compiled, chunks of
iterations) and the atlas's per-batch lines. On a terminal it redraws one
status line in place; elsewhere (a log file, CI) it writes plain lines, at
most one every ``every`` seconds for iterations. Either way a heartbeat
repeats the status when nothing was said for ``every`` seconds, so a long
compile or a slow chunk never looks like a hang.

The compiled loop is not slowed: events come between chunks of iterations
(``generate(chunk=...)``), which the host waits for anyway.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from classgen_jax.tracking import Progress


def duration(seconds: float) -> str:
  """``1:02:03`` / ``2:03`` / ``--`` (unknown)."""
  if seconds != seconds or seconds == float("inf"):
    return "--"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Reporter:
  """Turns progress events into lines.

  Args:
    stream: where the bar goes (default: standard error).
    bar: redraw one line in place (default: when ``stream`` is a terminal).
    log: where plain lines go when there is no bar.
    every: seconds between plain iteration lines, and of the heartbeat.
    clock: for tests.
  """

  def __init__(self, stream: TextIO | None = None, *, bar: bool | None = None,
               log: Callable[[str], None] = logging.info, every: float = 5.0,
               clock: Callable[[], float] = time.monotonic):
    self.stream = stream or sys.stderr
    self.bar = bool(self.stream.isatty()) if bar is None else bar
    self.log, self.every, self.clock = log, every, clock
    self._lock = threading.Lock()
    self._status = ""
    self._status_said = True  # the status as it is now has been shown
    self._status_since = self._said_at = clock()
    self._mark: tuple[float, int] | None = None  # (time, iterations) since the last compile
    self._stop = threading.Event()
    self._heartbeat = None

  # -- lines ------------------------------------------------------------------

  def _emit(self, text: str, *, permanent: bool) -> None:
    with self._lock:
      self._said_at = self.clock()
      if self.bar:
        end = "\n" if permanent else ""
        self.stream.write(f"\r\033[K{text}{end}")
        self.stream.flush()
      else:
        self.log(text)

  def line(self, text: str) -> None:
    """A line that stays (the atlas's per-batch line, a compile time)."""
    self._emit(text, permanent=True)
    if self.bar and self._status:
      self._emit(self._status, permanent=False)

  def _set_status(self, text: str, *, force: bool = False) -> None:
    now = self.clock()
    if text != self._status:
      self._status_since = now
    self._status, self._status_said = text, False
    if self.bar or force or now - self._said_at >= self.every:
      self._status_said = True
      self._emit(text, permanent=False)

  # -- events ----------------------------------------------------------------

  def __call__(self, event: Progress) -> None:
    where = f"octave {event.octave + 1}/{event.octaves}"
    if event.event == "compiling":
      self._mark = None
      self._set_status(f"{where}: compiling (once per shape; later batches reuse it)",
                       force=True)
    elif event.event == "compiled":
      self._status, self._status_said = f"{where}: running the first iterations", True
      self._status_since = self.clock()
      self.line(f"{where}: compiled in {event.seconds:.1f} s")
    else:
      now = self.clock()
      if self._mark is None or event.done < self._mark[1]:  # a new batch starts over
        self._mark = (now, event.done)
        rate = None
      else:
        elapsed = now - self._mark[0]
        rate = (event.done - self._mark[1]) / elapsed if elapsed > 0 else None
      eta = (event.total - event.done) / rate if rate else float("nan")
      speed = f"{rate:.2f} it/s" if rate else "-- it/s"
      fraction = event.done / max(event.total, 1)
      bar = ""
      if self.bar:
        filled = int(round(20 * fraction))
        bar = "[" + "#" * filled + "." * (20 - filled) + "] "
      self._set_status(f"{bar}{where}: iteration {event.done}/{event.total} "
                       f"({event.batch} images), {speed}, ETA {duration(eta)}")

  # -- heartbeat -------------------------------------------------------------

  def _beat(self) -> None:
    while not self._stop.wait(min(1.0, self.every / 2)):
      if not self._status or self.clock() - self._said_at < self.every:
        continue
      if self._status_said:  # nothing new: say that it is still at it
        since = self.clock() - self._status_since
        self._emit(f"{self._status} (still working: {duration(since)})", permanent=False)
      else:
        self._status_said = True
        self._emit(self._status, permanent=False)

  def __enter__(self) -> Reporter:
    self._heartbeat = threading.Thread(target=self._beat, daemon=True)
    self._heartbeat.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self.bar and self._status:
      with self._lock:
        self.stream.write("\n")
        self.stream.flush()
    self._status = ""


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
