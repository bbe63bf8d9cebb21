"""Fixtures, and nothing heavy at import: pytest's controller process loads
this file too, and with ``-n 2`` every second it spends importing comes
before the workers start. What the test modules share is in
``tests/helpers.py`` and ``tests/shared.py``."""

from __future__ import annotations

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
