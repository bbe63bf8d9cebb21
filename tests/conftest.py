"""Fixtures, and nothing heavy at import: pytest's controller process loads
this file too, and with ``-n 2`` every second it spends importing comes
before the workers start. What the test modules share is in
``tests/helpers.py`` and ``tests/shared.py``."""

from __future__ import annotations

import gc
import os
import sys

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


@pytest.fixture(autouse=True, scope="module")
def _slow_pass_forgets_compiled_programs_after_each_module():
  """In CI's slow pass (``CLASSGEN_JAX_TEST_OPT=default``, every deep model
  in float64) each module's compiled programs are dropped after it: a worker
  that kept them all grew to 7-9 GB, and three slow passes in a row lost a
  worker to a segmentation fault inside XLA's compile or serialize (jax
  0.10.2, CPU), on programs that compile fine in a fresh process; xdist then
  hung."""
  yield
  if os.environ.get("CLASSGEN_JAX_TEST_OPT") == "default" and "jax" in sys.modules:
    import jax  # pylint: disable=g-import-not-at-top

    from classgen_jax import programs  # pylint: disable=g-import-not-at-top
    programs.clear()
    jax.clear_caches()
    gc.collect()
