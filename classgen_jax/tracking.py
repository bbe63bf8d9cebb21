"""What a ``generate`` call tells its caller as it goes: one ``Tracker`` per call.

A tracker holds the caller's progress callback, the chunk policy (how many
iterations each compiled call runs), the seconds spent compiling, and the
report it has deferred. Chunks are reported one behind: the host waits for a
chunk only once the next is queued, so the device never idles between
chunks; the last chunk of a batch is reported once the next batch (or the
next call, ``Tracker.follow``) has queued its first.

The events themselves are ``Progress`` values; ``classgen_jax.progress``
turns them into a bar or log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax

from classgen_jax import devices
from classgen_jax.plans import Plan

# With progress reports and no chunk given, each octave runs in this many
# chunks: a report every few seconds on a CPU, negligible cost on any device.
CHUNKS_WITH_PROGRESS = 16


class Progress(NamedTuple):
  """Where a ``generate`` call is, for a progress report.

  Attributes:
    event: ``"compiling"`` (an octave's program is about to be compiled:
      its first use with these shapes), ``"compiled"`` (``seconds`` it
      took), or ``"iterations"`` (a chunk of iterations has run).
    octave: the octave (0-based) and ``octaves`` their number.
    done: iterations of the recipe done for the current batch.
    total: iterations of the recipe.
    batch: images in the current batch.
    seconds: with ``"compiled"``, the compile time.
  """
  event: str
  octave: int
  octaves: int
  done: int
  total: int
  batch: int
  seconds: float = 0.0


def chunk_length(plan: Plan, target: int | None) -> int:
  """The iterations per compiled call for about ``target`` per chunk (None:
  all of them); shorter than the octave, a multiple of the snapshot
  interval."""
  n, every = plan.octave.iterations, plan.snapshot_every
  if target is None or target >= n:
    return n
  length = max(1, target)
  return every * -(-length // every) if every else length


class Tracker:
  """One ``generate`` call's progress: the callback, the chunk policy, the
  compile time, and the deferred report (see the module doc).

  Args:
    callback: hears every ``Progress`` event (None: nothing is reported,
      and each octave runs in one call unless ``chunk`` is given).
    chunk: iterations per compiled call (default: all at once, or a
      sixteenth of the octave with a callback).
    octaves: the recipe's octave count; ``total`` its iterations.
  """

  def __init__(self, callback: Callable[[Progress], None] | None = None,
               chunk: int | None = None, *, octaves: int = 1, total: int = 0):
    self.callback, self.chunk = callback, chunk
    self.octaves, self.total = octaves, total
    self.compile_seconds = 0.0
    self._deferred: Callable[[], None] | None = None

  def chunk_length(self, plan: Plan) -> int:
    """Iterations per compiled call of ``plan``'s octave."""
    chunk = self.chunk
    if chunk is None and self.callback is not None:
      chunk = -(-plan.octave.iterations // CHUNKS_WITH_PROGRESS)
    return chunk_length(plan, chunk)

  def compiling(self, octave: int, batch: int) -> None:
    """An octave's program is about to be compiled (the deferred report,
    which the compile would hold up, is made first)."""
    self.flush()
    self._say("compiling", octave, 0, batch)

  def compiled(self, octave: int, batch: int, seconds: float) -> None:
    """An octave's program is compiled (``seconds`` its compile took); the
    deferred report is made first (a program compiled behind a run is
    reported as its octave starts, after the octave before)."""
    self.flush()
    self._say("compiled", octave, 0, batch, seconds)

  def add_compile_time(self, seconds: float) -> None:
    self.compile_seconds += seconds

  def queued(self, octave: int, done: int, batch: int, output: jax.Array) -> None:
    """A chunk is queued on the device: the previous chunk is reported now,
    this one (``done`` iterations of the recipe, once ``output`` is
    computed) when the next is queued or at ``flush``."""
    self.flush()
    if self.callback is not None:
      def report():
        devices.wait(output)
        self._say("iterations", octave, done, batch)
      self._deferred = report

  def flush(self) -> None:
    """Makes the deferred report, if any (waiting for its chunk)."""
    deferred, self._deferred = self._deferred, None
    if deferred is not None:
      deferred()

  def follow(self, previous: Tracker | None) -> None:
    """Takes over the deferred report of the call before this one, so that
    its last chunk is reported once this call's first is queued."""
    if previous is not None:
      self._deferred, previous._deferred = previous._deferred, None

  def _say(self, event: str, octave: int, done: int, batch: int, seconds: float = 0.0) -> None:
    if self.callback is not None:
      self.callback(Progress(event, octave, self.octaves, done, self.total, batch, seconds))
