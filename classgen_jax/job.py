"""Several processes, one atlas job: who shares a folder, who makes what, and
how the job ends when one of them dies.

``start`` brings the processes together on a small message bus of their
own at the coordinator's address (``classgen_jax.job_bus``), which also tells
who is gone; JAX's distributed runtime is not started (``start`` says why).

Each process writes a token into ``--out`` and looks for the others'.
Processes that see each other's tokens share a folder and form a *group*;
the classes are split among the groups (every G-th from the group's index),
and within a group they are handed out as the work goes, through the
folder's claims (``classgen_jax.claims``), exactly as two runs started on
one folder share it: a member that dies leaves its classes to the others
(same host: at once; another host: once its claims go stale). So a job on
one shared folder ends complete while one process lives.

A group whose members all died leaves its classes unmade: every survivor
then ends with one line naming the dead processes and the classes they did
not make (``Job.finish``), and a rerun of every process makes them.

Test hook: ``$CLASSGEN_JAX_JOB_SILENCE`` (seconds) is how long a silent
connection lasts before its process counts as gone (default 60).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from classgen_jax import claims, job_bus
from classgen_jax.folders import AtlasError

# Seconds between looks for the other processes' tokens in a folder.
LOOK_AGAIN = (0.2, 0.8)


class JobError(RuntimeError):
  """The job's processes could not start together; one line."""


@dataclasses.dataclass
class Job:
  """This process's place in an atlas job.

  Attributes:
    index, count: this process and the job's number of processes.
    groups: the processes sharing each folder, by their first member.
    bus: the job's messages (None for a job of one process).
  """
  index: int
  count: int
  groups: tuple[tuple[int, ...], ...]
  bus: job_bus.Bus | None = None
  _made: set[int] = dataclasses.field(default_factory=set)

  @property
  def group(self) -> int:
    """The index of this process's group."""
    return next(g for g, members in enumerate(self.groups) if self.index in members)

  @property
  def shared(self) -> bool:
    """Whether every live process of the job works in this process's folder."""
    return len(self.groups) == 1

  def describe(self) -> str:
    """A line on how the work is split."""
    if self.count == 1:
      return "one process"
    head = f"process {self.index} of {self.count}"
    gone = sorted(set(range(self.count)) - {i for g in self.groups for i in g})
    if gone:
      head += f" ({_names(gone)} did not join)"
    members = self.groups[self.group]
    if self.shared:
      return f"{head}: the processes share --out and hand the classes out as they go"
    return (f"{head}: {len(self.groups)} separate folders, each with a fixed share of the "
            f"classes; this --out is {_names(members)}'s")

  def made(self, targets: Iterable[int]) -> None:
    """Tells the others that ``targets`` are complete in this process's folder."""
    new = sorted(set(targets) - self._made)
    self._made.update(new)
    if new and self.bus is not None and not self.shared:
      self.bus.send("made", classes=new)

  def finish(self, indices: Sequence[int] | None, log: Callable[[str], None]) -> str | None:
    """Once this process's share is complete: waits for the other processes
    to finish or die and returns None when the job's classes were all made,
    else the one line of what was not (the dead processes, the classes).

    Args:
      indices: every class of the job, in order (None: the line names none).
      log: hears once what it waits for.
    """
    bus = self.bus
    if bus is None or self.shared:
      return None
    bus.send("done")

    def done():
      return {m["from"] for m in bus.inbox if m["kind"] == "done"} | {self.index}

    def waiting():
      return sorted(set(range(self.count)) - done() - bus.gone)

    if not bus.wait(lambda: bus.cut_off or not waiting(), timeout=0):
      late = waiting()
      log(f"atlas: this process's share is complete; waiting for {_names(late)} to finish "
          + ("its share" if len(late) == 1 else "theirs"))
      bus.wait(lambda: bus.cut_off or not waiting())
    inbox, gone = bus.news()
    finished = {m["from"] for m in inbox if m["kind"] == "done"} | {self.index}
    made = {self.index: set(self._made)}
    for message in inbox:
      if message["kind"] == "made":
        made.setdefault(message["from"], set()).update(message["classes"])
    unknown = set(range(self.count)) - finished - gone
    return unmade(self.groups, indices, finished, made, gone, unknown, bus.who)


def unmade(groups: Sequence[Sequence[int]], indices: Sequence[int] | None, finished: set[int],
           made: Mapping[int, set[int]], gone: set[int], unknown: set[int],
           who: Mapping[int, Mapping[str, Any]]) -> str | None:
  """The one line on the classes of groups that no member finished, or None
  (``indices`` None: on those groups alone).

  >>> unmade([(0,), (1,)], [0, 1, 2, 3], {0}, {1: {1}}, {1}, set(),
  ...        {1: {"pid": 7, "host": "b"}})
  'process 1 (pid 7 on b) stopped before making its share: 1 of 4 classes not known to be made (3)'
  """
  missing, stopped = [], []
  for g, members in enumerate(groups):
    if finished & set(members):
      continue
    have = set().union(*(made.get(i, set()) for i in members))
    missing += [t for t in (indices or [])[g::len(groups)] if t not in have]
    stopped += [i for i in members if i not in finished]
  if not (missing if indices is not None else stopped):
    return None
  dead = [i for i in stopped if i in gone]
  lost = [i for i in stopped if i in unknown]
  parts = []
  if dead:
    parts.append(f"{_names(dead, who)} stopped before making "
                 f"{'its share' if len(dead) == 1 else 'their shares'}")
  if lost:
    parts.append(f"{_names(lost, who)} could not be followed after process 0 stopped")
  if indices is None:
    return "; ".join(parts)
  shown = ", ".join(str(t) for t in sorted(missing)[:20]) + (", ..." if len(missing) > 20 else "")
  return (f"{'; '.join(parts)}: {len(missing)} of {len(indices)} classes not known to be made "
          f"({shown})")


def processes(index: int | None, count: int | None) -> tuple[int, int]:
  """A process's ``(index, count)``: given, or JAX's processes."""
  if count is None:
    import jax  # pylint: disable=g-import-not-at-top
    index, count = jax.process_index(), jax.process_count()
  index = 0 if index is None else index
  if not 0 <= index < count:
    raise AtlasError(f"process index {index} is not in [0, {count})")
  return index, count


def share(indices: Sequence[int], index: int, count: int) -> list[int]:
  """Group ``index``'s classes of ``count`` groups: every ``count``-th."""
  return list(indices[index::count])


def folder_groups(views: Mapping[int, Iterable[int]]) -> tuple[tuple[int, ...], ...]:
  """The groups of processes sharing a folder, from what each live process
  saw (``views``: process -> the processes whose tokens it saw). Views that
  disagree (one sees another that does not see it: a network filesystem
  still caching) leave every process alone, which is always safe.

  >>> folder_groups({0: [0, 1], 1: [0, 1], 2: [2]})
  ((0, 1), (2,))
  """
  seen = {i: tuple(sorted(set(v) & set(views) | {i})) for i, v in views.items()}
  if all(seen[j] == seen[i] for i in seen for j in seen[i]):
    return tuple(sorted(set(seen.values())))
  return tuple((i,) for i in sorted(views))


def start(out: str | os.PathLike, *, coordinator: str | None = None,
          num_processes: int | None = None, process_id: int | None = None,
          timeout: float = 300, silence: float | None = None) -> Job:
  """Brings the job's processes together at ``coordinator`` (``host:port``
  of process 0; without it, read from the cluster as ``jax.distributed``
  does: SLURM, Open MPI, TPU pods) and finds which of them share ``out``.

  JAX's own distributed runtime is not started: an atlas computes on each
  process's own devices and needs none of it, and it ends every process
  with a C++ abort when one of them dies (missed heartbeats, the
  coordinator's lost connection, the shutdown barrier, a process that never
  came).

  Args:
    out: this process's output folder (created).
    coordinator, num_processes, process_id: the job, as for
      ``jax.distributed.initialize``.
    timeout: seconds to wait for the others to start; one that has not by
      then is left out (the others share its classes).
    silence: seconds of silence after which a process counts as gone.

  Raises:
    JobError: process 0 could not be reached or stopped during start-up,
      its port is taken, or the cluster could not be read.
  """
  if coordinator is None:
    coordinator, num_processes, process_id = _from_cluster(timeout)
  host, _, port = coordinator.rpartition(":")
  host, count = host.strip("[]"), num_processes or 0
  if not port.isdigit() or process_id is None or not 0 <= process_id < count:
    raise JobError(f"--coordinator must be host:port and --process_id in [0, {count}); got "
                   f"{coordinator} and {process_id}")
  silence = silence or float(os.environ.get("CLASSGEN_JAX_JOB_SILENCE", job_bus.SILENCE))
  if count == 1:
    return Job(0, 1, ((0,),))
  try:
    if process_id == 0:
      bus = job_bus.Bus.listen(count, int(port), silence=silence)
      bus.admit(timeout)
    else:
      bus = job_bus.Bus.join(host, int(port), process_id, count, timeout=timeout,
                          silence=silence)
  except job_bus.BusError as error:
    raise JobError(str(error)) from None
  views = _folder_views(Path(out), bus)
  if views is None:
    raise JobError("process 0 stopped while the job started; nothing was made: start "
                   "every process again")
  return Job(bus.index, count, folder_groups(views), bus)


def _from_cluster(timeout: float) -> tuple[str, int, int]:
  """The job's coordinator, size and this process's index from the cluster
  (JAX's detection), with the devices JAX would give this process."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, int(timeout))
  if None in found[:3]:
    raise JobError("--distributed found no cluster (SLURM, Open MPI, TPU pod) to read the "
                   "job from: give --coordinator, --num_processes and --process_id")
  if found[3]:  # one device per process, as jax.distributed.initialize sets it
    visible = ",".join(str(i) for i in found[3])
    jax.config.update("jax_cuda_visible_devices", visible)
    jax.config.update("jax_rocm_visible_devices", visible)
  return found[0], int(found[1]), int(found[2])


def _token(out: Path, token: str, index: int) -> Path:
  return out / claims.CLAIMS_DIR / f"{token}.p{index}.join"


def _folder_views(out: Path, bus: job_bus.Bus) -> dict[int, list[int]] | None:
  """Every live process's view of the folders: each writes its token into
  its ``out``, and once all have, says whose tokens it sees there (looked up
  by name, and again after each of ``LOOK_AGAIN``'s pauses: a network
  filesystem may be slow to show another host's new file). None when cut
  off from process 0."""
  path = _token(out, bus.token, bus.index)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(bus.index))
  except OSError:
    pass  # an unwritable --out: make_atlas says so in one line
  try:
    live = bus.gather("written", None)
    if live is None:
      return None
    seen = []
    for pause in (*LOOK_AGAIN, None):
      seen = [i for i in sorted(live) if _token(out, bus.token, i).exists()]
      if len(seen) == len(live) or pause is None:
        break
      time.sleep(pause)
    return bus.gather("folder", seen)
  finally:
    path.unlink(missing_ok=True)


def _names(indices: Sequence[int], who: Mapping[int, Mapping[str, Any]] | None = None) -> str:
  word = "process" if len(indices) == 1 else "processes"
  if who is None:
    return f"{word} {_list(indices)}"
  return f"{word} " + ", ".join(
      f"{i} (pid {who.get(i, {}).get('pid', '?')} on {who.get(i, {}).get('host', '?')})"
      for i in indices)


def _list(indices: Sequence[int]) -> str:
  return ", ".join(str(i) for i in indices)
