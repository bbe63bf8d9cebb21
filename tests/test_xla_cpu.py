"""The XLA:CPU flag the package sets at import (``classgen_jax.xla_flags``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from classgen_jax import xla_flags
from tests.helpers import ROOT

# A 512 px Fourier image (MACO's phase, two images) rendered again and again
# by one compiled program, and its gradient: XLA:CPU's FFT, split over its
# thread pool or not depending on which thread runs it, gave two or three
# different results in 24 calls (jaxlib 0.10.2, 2 cores) without the flag.
_RENDERS = textwrap.dedent("""
    import hashlib, os, sys
    import classgen_jax
    import jax, jax.numpy as jnp, numpy as np
    from classgen_jax.parameterisations import Maco
    image = Maco(alpha=1.4)
    params = jax.vmap(lambda k: image.init(k, 512, jnp.float32))(
        jax.random.split(jax.random.key(0), 2))
    render = jax.jit(jax.vmap(image.render))
    grad = jax.jit(jax.vmap(jax.grad(lambda p: jnp.sum(jnp.sin(30 * image.render(p))))))
    digest = lambda x: hashlib.md5(np.asarray(x).tobytes()).hexdigest()
    print(os.environ.get("XLA_FLAGS", ""))
    print(len({digest(render(params)) for _ in range(24)}),
          len({digest(grad(params)) for _ in range(24)}))
    """)


@pytest.mark.slow  # a fresh process and 48 calls at 512 px: 7-9 s
def test_a_large_fourier_image_renders_the_same_every_call_in_a_users_process():
  # A user's process: no XLA_FLAGS but what the package sets.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  child = subprocess.run([sys.executable, "-c", _RENDERS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
  flags, counts = child.stdout.rstrip("\n").split("\n")[-2:]
  assert counts == "1 1", "renders, gradients: distinct results in 24 calls"
  assert flags == xla_flags.FLAG


def test_the_users_own_setting_is_kept(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/x")
  xla_flags.set_flags()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/x"


def test_imported_after_jax_started_it_says_so_and_how_to_fix_it(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(1)  # this process's backends have started
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/x")
  with pytest.warns(RuntimeWarning, match="import classgen_jax first, or set XLA_FLAGS="
                    "--xla_cpu_multi_thread_eigen=false"):
    xla_flags.set_flags()
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/x"  # too late to matter: not changed
