"""Claims: which run is making which class of a shared atlas folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from classgen_jax import claims


def test_claims_are_exclusive_and_a_dead_run_is_taken_over(tmp_path, caplog):
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


def test_the_ledger_releases_what_it_holds_on_exit_and_the_lock_excludes(tmp_path):
  with claims.Claims(tmp_path) as ledger:
    assert ledger.take("0001_goldfish") and ledger.take("0002_great_white_shark")
    assert len(list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))) == 2
  assert not list((tmp_path / claims.CLAIMS_DIR).glob("*.claim"))
  inside, order = threading.Event(), []

  def other():
    inside.wait()
    with claims.folder_lock(tmp_path):
      order.append("other")

  thread = threading.Thread(target=other)
  thread.start()
  with claims.folder_lock(tmp_path):
    inside.set()
    time.sleep(0.2)  # the other thread is waiting on the lock meanwhile
    order.append("first")
  thread.join()
  assert order == ["first", "other"]
  assert claims.who({"pid": 7, "host": "h"}) == "process 7 on h"
