"""Which process is making which image of an atlas folder.

Two runs started on one folder by mistake (or on purpose, on several hosts
sharing a disk) must not make the same image twice nor write its summary
row twice. Before making a class, a run *claims* it: it creates
``.claims/<name>.claim`` exclusively (``O_CREAT | O_EXCL``, atomic on local
and network filesystems alike), holding its host, process id and start
time, and deletes it once the class's PNGs and summary rows are written.
Another run skips a class that is claimed, and waits for it at the end.

A claim whose owner died is taken over: on the same host when its process
no longer exists, from another host when the owner stopped refreshing it
(a heartbeat thread touches every claim it holds every ``heartbeat``
seconds; a claim untouched for ``stale_after`` seconds is stale).

``lock()`` serialises the short sections where runs rewrite or append to the
shared summary files (``fcntl.flock`` on ``.claims/lock``; a no-op where
there is none). ``.claims/`` stays in the folder, empty but for that file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

try:
  import fcntl
except ImportError:  # pragma: no cover - not POSIX
  fcntl = None

CLAIMS_DIR = ".claims"  # the claims, and the lock file
LOCK_FILE = "lock"


def _alive(pid: int) -> bool:
  """Whether process ``pid`` of this host runs (a zombie, dead but not yet
  reaped by its parent, does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
      return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


class Claims:
  """The claims this process holds in ``folder`` (see the module docstring)."""

  def __init__(self, folder: Path, *, stale_after: float = 300.0, heartbeat: float = 30.0):
    self.folder = Path(folder)
    self.dir = self.folder / CLAIMS_DIR
    self.dir.mkdir(exist_ok=True)
    self.stale_after, self.heartbeat = stale_after, heartbeat
    self.me = {"host": socket.gethostname(), "pid": os.getpid()}
    self.held: set[str] = set()
    self._guard = threading.Lock()
    self._stop = threading.Event()
    self._beat = threading.Thread(target=self._refresh, daemon=True, name="atlas-claims")
    self._beat.start()

  def _path(self, name: str) -> Path:
    return self.dir / f"{name}.claim"

  def holder(self, name: str) -> dict[str, Any] | None:
    """Who holds ``name``'s claim, if a live run other than this one does."""
    path = self._path(name)
    try:
      text, age = path.read_text(encoding="utf-8"), time.time() - path.stat().st_mtime
      owner = json.loads(text)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):  # being written: treat as live for now
      return {"host": "?", "pid": "?"}
    if owner.get("host") == self.me["host"]:
      if owner.get("pid") == self.me["pid"] or not _alive(int(owner.get("pid", 0))):
        return None
    elif age > self.stale_after:
      return None
    return owner

  def claimed(self) -> set[str]:
    """The names claimed in the folder now, by any run, live or dead."""
    try:
      return {path.stem for path in self.dir.glob("*.claim")}
    except OSError:
      return set()

  def take(self, name: str) -> bool:
    """Claims ``name``; False if a live run holds it. A stale claim is taken over."""
    path = self._path(name)
    for _ in range(2):
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self.holder(name)
        if owner is not None:
          return False
        logging.warning("atlas: taking over %s's claim of %s (its run is gone)",
                        who(_read(path)), name)
        with contextlib.suppress(FileNotFoundError):
          path.unlink()
        continue
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({**self.me, "time": time.time()}, f)
      with self._guard:
        self.held.add(name)
      return True
    return False

  def release(self, name: str) -> None:
    with self._guard:
      self.held.discard(name)
    with contextlib.suppress(FileNotFoundError):
      self._path(name).unlink()

  def close(self) -> None:
    """Releases every claim still held and stops the heartbeat."""
    self._stop.set()
    for name in list(self.held):
      self.release(name)

  def __enter__(self) -> Claims:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _refresh(self) -> None:
    while not self._stop.wait(self.heartbeat):
      with self._guard:
        names = list(self.held)
      for name in names:
        with contextlib.suppress(OSError):
          os.utime(self._path(name))

  @contextlib.contextmanager
  def lock(self):
    """Exclusive access to the folder's shared files among cooperating runs."""
    with folder_lock(self.folder):
      yield


@contextlib.contextmanager
def folder_lock(folder: Path):
  """``flock`` on ``folder/.claims/lock`` (a no-op without ``fcntl``)."""
  if fcntl is None:  # pragma: no cover
    yield
    return
  (Path(folder) / CLAIMS_DIR).mkdir(exist_ok=True)
  with open(Path(folder) / CLAIMS_DIR / LOCK_FILE, "a+b") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return {}


def who(owner: dict[str, Any] | None) -> str:
  """``process 123 on host`` for a claim's owner."""
  owner = owner or {}
  return f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
