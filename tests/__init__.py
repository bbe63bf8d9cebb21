"""The test suite.

Imported before any test module or conftest (and by the child processes that
import ``tests.shared``), so the environment set here is in place before JAX
starts, and every child inherits it:

* The test run's own folder (``CLASSGEN_JAX_TEST_RUN`` names it), and
  JAX's persistent compile cache shared by all its processes (the xdist
  workers, and the scripts and atlases the tests start): under the run's
  weights cache (CI: a fresh folder per run), else in the run's folder.
* One torch thread per process: the xdist workers already use every core.
* XLA compiles each program as one LLVM module rather than splitting it for
  parallel codegen, since the xdist workers already use every core (the
  contract runs' compile 9.6 s rather than 10.8 s). (XLA's Eigen ops run on
  one thread each, as ``classgen_jax.xla_flags`` sets when the package is
  imported, before any test computes; the processes the tests start
  inherit it.)
* XLA compiles the tests' programs with LLVM at ``-O0``: compiling is about
  two thirds of the default pass's time, and at ``-O0`` it takes half as long
  (the pass, 160 s -> 129 s on 2 idle cores). Results move by float rounding
  only (FMA contraction), and images are compared within one setting. Set
  ``CLASSGEN_JAX_TEST_OPT=default`` to compile as users' runs do: CI's slow
  pass does, and runs the bit-exactness tests (marked ``bit_exact``) again
  there.
"""

import os
import tempfile

_RUN = os.environ.setdefault("CLASSGEN_JAX_TEST_RUN",
                             os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("CLASSGEN_JAX_CACHE")
    or os.path.join(tempfile.gettempdir(), f"classgen_jax_tests_{_RUN}"), "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _add_xla_flag(name: str, value: str) -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if name not in flags:
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [flags, f"--{name}={value}"]))


_add_xla_flag("xla_cpu_parallel_codegen_split_count", "1")
if os.environ.get("CLASSGEN_JAX_TEST_OPT", "0") != "default":
  _add_xla_flag("xla_backend_optimization_level", os.environ.get("CLASSGEN_JAX_TEST_OPT", "0"))
