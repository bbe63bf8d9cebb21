"""Atomic file writes (a file is either absent, the old one, or complete),
and file checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
  """A temporary path beside ``path``, renamed onto it when the block succeeds.

  The data is synced to disk before the rename, and the file made readable by
  all (``mkstemp`` makes it 0600). If the block raises, the temporary file is
  removed and ``path`` is untouched: a killed run or a full disk never leaves
  a half-written file.

  Args:
    path: the final file.
    suffix: of the temporary file (writers that pick a format by extension
      need the real one).
  """
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Write ``text`` to ``path`` atomically."""
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)


def file_sha256(path: str | os.PathLike) -> str:
  """The SHA-256 of a file's bytes, as hex."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()
