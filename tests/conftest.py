"""Fixtures, and nothing heavy at import: pytest's controller process loads
this file too, and with ``-n 2`` every second it spends importing comes
before the workers start. What the test modules share is in
``tests/helpers.py`` and ``tests/shared.py``."""

from __future__ import annotations

import os

import pytest

# The image tests' shared checks report their values as the tests' own do.
pytest.register_assert_rewrite("tests.image_cases")


@pytest.fixture
def x64():
  """Run a test with ``jax_enable_x64`` on, restoring the setting after."""
  import jax  # pylint: disable=g-import-not-at-top
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True, scope="session")
def _slow_pass_workers_write_no_compile_cache():
  """In CI's slow pass (``CLASSGEN_JAX_TEST_OPT=default``) the xdist workers
  read JAX's persistent compile cache but do not write it: twice, after
  hundreds of compiles, a worker died of a segmentation fault inside
  jaxlib's ``executable.serialize()`` (jax 0.10.2, CPU), on programs that
  serialize fine in a fresh process. The scripts the tests start still
  write it, so their reruns read what their first run compiled."""
  if os.environ.get("CLASSGEN_JAX_TEST_OPT") == "default":
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
  yield
