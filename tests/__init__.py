"""The test suite.

Imported before any test module or conftest (and by the child processes that
import ``tests.shared``), so the environment set here is in place before JAX
starts: XLA's CPU ops run on one thread each, since the xdist workers already
use every core (the default pass took 153 s rather than 167 s on 2 idle
cores). Images are compared within one setting, which every child inherits.
"""

import os

if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"]))
