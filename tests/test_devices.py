"""Tests of classgen_jax.devices: the batch mesh and its shardings, gathering to
the host, waiting, ``process_local`` and mixed precision."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from classgen_jax import devices

_ROOT = Path(__file__).resolve().parents[1]


def test_batch_mesh_spans_every_device_on_one_axis():
  mesh = devices.batch_mesh()
  assert mesh.axis_names == ("batch",)
  assert mesh.size == jax.device_count()
  assert list(mesh.devices.flat) == jax.devices()


def test_padded_size_rounds_up_to_a_multiple_of_the_devices():
  four = types.SimpleNamespace(size=4)  # padded_size reads only the mesh's size
  assert [devices.padded_size(n, four) for n in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
  assert devices.padded_size(3, four, at_least=6) == 8
  assert devices.padded_size(7, four, at_least=2) == 8
  assert devices.padded_size(0, four, at_least=1) == 4
  mesh = devices.batch_mesh()
  assert devices.padded_size(mesh.size * 2 + 1, mesh) == mesh.size * 3


def test_shardings_split_the_batch_or_copy_it():
  mesh = devices.batch_mesh()
  batch, replica = devices.batch_sharding(mesh), devices.replicated(mesh)
  assert batch.spec == P("batch") and replica.spec == P()
  assert batch.mesh == mesh and replica.mesh == mesh
  x = np.arange(mesh.size * 2 * 3, dtype=np.float32).reshape(mesh.size * 2, 3)
  split = jax.device_put(x, batch)
  assert [s.data.shape for s in split.addressable_shards] == [(2, 3)] * mesh.size
  copied = jax.device_put(x, replica)
  assert all(s.data.shape == x.shape for s in copied.addressable_shards)


def test_to_host_returns_numpy_copies_of_a_tree():
  mesh = devices.batch_mesh()
  x = np.arange(mesh.size * 4, dtype=np.float32).reshape(mesh.size * 2, 2)
  tree = {"images": jax.device_put(x, devices.batch_sharding(mesh)),
          "pair": (jnp.int32(3), jnp.array([True, False]))}
  host = devices.to_host(tree)
  assert set(host) == {"images", "pair"}
  for got, want in [(host["images"], x), (host["pair"][0], 3),
                    (host["pair"][1], [True, False])]:
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)
  assert host["images"].dtype == np.float32 and host["pair"][1].dtype == np.bool_


def test_wait_returns_once_the_array_is_computed():
  y = jnp.ones((64, 64)) @ jnp.ones((64, 64))
  devices.wait(y)
  assert y.is_ready() and float(y[0, 0]) == 64.0

  class Slow:  # ready on the third look
    looks = 0

    def is_ready(self):
      self.looks += 1
      return self.looks >= 3

  slow = Slow()
  devices.wait(slow, poll=0.001)
  assert slow.looks == 3


def test_spans_processes_is_false_in_one_process():
  assert jax.process_count() == 1
  assert not devices.spans_processes()


def test_process_local_nests_and_resets(monkeypatch):
  # As if after jax.distributed.initialize() on two hosts.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert devices.spans_processes()
  with devices.process_local():
    assert not devices.spans_processes()
    assert list(devices.batch_mesh().devices.flat) == jax.local_devices()
    with devices.process_local(False):  # an inner False does not undo the outer
      assert not devices.spans_processes()
    assert not devices.spans_processes()
  assert devices.spans_processes()
  with devices.process_local(False):
    assert devices.spans_processes()
  with pytest.raises(RuntimeError), devices.process_local():
    raise RuntimeError
  assert devices.spans_processes()  # reset on the way out of an error too


_FOUR_DEVICES = """
import jax, numpy as np
from classgen_jax import devices
mesh = devices.batch_mesh()
x = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)
n = devices.padded_size(len(x), mesh)
padded = np.concatenate([x, np.zeros((n - len(x), 2), np.float32)])
split = jax.device_put(padded, devices.batch_sharding(mesh))
host = devices.to_host(jax.jit(lambda a: 2 * a)(split))
print(mesh.size, n, len(split.addressable_shards), split.addressable_shards[1].data.shape,
      np.array_equal(host[:6], 2 * x))
"""


@pytest.mark.bit_exact
def test_four_devices_split_a_padded_batch():
  flags = f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4"
  env = dict(os.environ, XLA_FLAGS=flags,
             JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", _FOUR_DEVICES], cwd=_ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ["4", "8", "4", "(2,", "2)", "True"]


def test_mixed_precision_computes_in_bfloat16():
  from tests.helpers import tiny
  classifier = tiny()
  fast = devices.mixed_precision(classifier)
  assert fast.dtype == jnp.bfloat16 and fast.module.dtype == jnp.bfloat16
  assert classifier.dtype == jnp.float32 and classifier.module.dtype is None  # unchanged
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(fast.variables))
  logits = jax.jit(lambda c, x: c(x, heads=("logits",))["logits"])
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  want, got = logits(classifier, images), logits(fast, images.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  # bfloat16 keeps about 3 significant digits: close to the float32 logits, not equal.
  error = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)))
  assert 0 < error < 0.05 * float(jnp.max(jnp.abs(want)))
