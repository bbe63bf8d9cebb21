"""Atomic files: a block that fails leaves the old file and no temporary one;
one that succeeds replaces it, readable by all."""

from __future__ import annotations

import os

import pytest

from classgen_jax._files import atomic_path, file_sha256, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "summary.txt"
  write_text(path, "old\n")
  with pytest.raises(OSError, match="disk full"):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
      f.write("half")
      raise OSError("disk full")
  assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["summary.txt"]


def test_a_write_replaces_the_file_readable_by_all(tmp_path):
  path = tmp_path / "a.txt"
  write_text(path, "one")
  write_text(path, "two")
  assert path.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]
  assert path.stat().st_mode & 0o777 == 0o644
  assert file_sha256(path) == "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3"
