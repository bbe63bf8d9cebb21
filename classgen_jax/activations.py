"""Named activations: what a model's layers output, by their torch names.

Every submodule of a port is a layer whose output an objective can read
(``objectives.channel``, ``neuron``, ``direction``, ``layer``). Layers are
named as the torch model names its modules, so a name from a torchvision or
Lucent notebook works here: ``"inception4a"``, ``"inception4a.branch2.1"``
(GoogLeNet), ``"Mixed_6b"`` (Inception-v3), ``"layer3.1"``,
``"layer3.1.conv2"`` (ResNets), ``"_blocks.5"`` (EfficientNet-Lite, whose
torch package prefixes every module with ``_``). A torch ``Sequential`` is a
layer too, the output of its last member: ``"layer3"`` is ``"layer3.1"``'s
output on ResNet-18. Functional steps (ReLUs, pools) are not modules, so not
layers: a ResNet's ``"bn1"`` is before its ReLU, as in torch.

A Vision Transformer's token sequences ``(N, 1 + h * w, C)`` are read as
maps, so the terms treat them as a convolutional layer's: under a module's
name its patch tokens as an ``(N, h, w, C)`` map (one position per patch),
under the name plus ``.class_token`` its class token ``(N, C)``
(``"encoder.layers.encoder_layer_3"``,
``"encoder.layers.encoder_layer_3.class_token"``). Each attention head's
output before ``out_proj`` is a layer of its own,
``"encoder.layers.encoder_layer_3.self_attention.head_5"``
(``classgen_jax.models.vit``).

Outputs are recorded by intercepting the modules' calls during the one
forward pass, only for the layers asked for (``Needs.layers``); a pass that
asks for none is the bare model's. Under ``jax.jit``, XLA drops what comes
after the deepest layer and head an objective reads.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from classgen_jax.models import (
    EfficientNetLite,
    GoogLeNet,
    Inception3,
    ResNet,
    VisionTransformer,
    patch_map,
)

# Per architecture: the torch containers whose members are numbered
# (``layer1.0``; Flax ``layer1_0``), whether they are ``Sequential`` (their
# output is their last member's), and whether torch's names start with ``_``.
_NUMBERED = {ResNet: (r"layer\d+|downsample", True), GoogLeNet: (r"branch\d+", True),
             Inception3: (None, False), EfficientNetLite: (r"blocks", False),
             VisionTransformer: (r"mlp", True)}
_UNDERSCORED = (EfficientNetLite,)
CLASS_TOKEN = "class_token"


class Layer(NamedTuple):
  """A named activation: the torch name and the output's shape for one image
  at the model's native input size (``(H, W, C)``, or ``(C,)`` after pooling)."""
  name: str
  shape: tuple[int, ...]


class LayerError(ValueError):
  """A layer name the model does not have, or a unit outside its layer."""


class Source(NamedTuple):
  """Where a named activation is read: the module (by torch name) whose
  output is recorded, and the part of that output: ``""`` all of it;
  ``"patches"`` or ``"class_token"`` of a ViT's token sequence."""
  module: str
  part: str = ""


def _parts(module: nn.Module, out: Any) -> tuple[str, ...]:
  if isinstance(module, VisionTransformer) and out.ndim == 3:
    return ("patches", CLASS_TOKEN)
  return ("",)


def _layer_name(module_name: str, part: str) -> str:
  return f"{module_name}.{part}" if part == CLASS_TOKEN else module_name


def read(module: nn.Module, part: str, out: Any, image_shape: tuple[int, ...]) -> Any:
  """The ``part`` (``Source.part``) of a module's output, for images of
  ``image_shape`` (NHWC)."""
  if part == "patches":
    return patch_map(out, module.grid(*image_shape[1:3]))
  if part == CLASS_TOKEN:
    return out[:, 0]
  return out


def torch_name(module: nn.Module, path: tuple[str, ...]) -> str:
  """The torch module name of the Flax submodule at ``path``."""
  numbered, _ = _NUMBERED.get(type(module), (None, False))
  parts = []
  for part in path:
    match = re.fullmatch(rf"({numbered})_(\d+)", part) if numbered else None
    parts.extend(match.groups() if match else (part,))
  if isinstance(module, _UNDERSCORED):
    parts = [p if p.isdigit() else f"_{p}" for p in parts]
  return ".".join(parts)


def _containers(module: nn.Module, names: list[str]) -> dict[str, str]:
  """``{Sequential's name: its last member's name}`` among ``names``."""
  numbered, sequential = _NUMBERED.get(type(module), (None, False))
  if not sequential:
    return {}
  last: dict[str, tuple[int, str]] = {}
  for name in names:
    parts = name.split(".")
    for i, part in enumerate(parts):
      if part.isdigit() and re.fullmatch(numbered, parts[i - 1]) and i == len(parts) - 1:
        container = ".".join(parts[:i])
        if int(part) >= last.get(container, (-1, ""))[0]:
          last[container] = (int(part), name)
  return {container: name for container, (_, name) in last.items()}


@functools.lru_cache(maxsize=16)
def _table(module: nn.Module, input_size: int) -> tuple[tuple[Layer, ...], dict[str, Source]]:
  """The layers in the order the forward pass meets them, and ``{name:
  where it is read}`` (a Sequential's: its last member's output)."""
  shape = (1, input_size, input_size, 3)
  seen: dict[str, dict[str, tuple[int, ...]]] = {}

  def listen(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.path:
      name = torch_name(module, context.module.path)
      if name not in seen and hasattr(out, "shape"):
        seen[name] = {part: tuple(read(module, part, out, shape).shape[1:])
                      for part in _parts(module, out)}
    return out

  def forward(x):
    variables = module.init(jax.random.key(0), x, heads=tuple(module.heads))
    seen.clear()  # the init's own pass
    with nn.intercept_methods(listen):
      return module.apply(variables, x, heads=tuple(module.heads))

  jax.eval_shape(forward, jax.ShapeDtypeStruct(shape, jnp.float32))
  containers = _containers(module, list(seen))
  layers, resolve = [], {}
  for name, parts in seen.items():
    aliases = [c for c, member in containers.items() if member == name and c not in seen]
    for alias in (name, *aliases):
      for part, part_shape in parts.items():
        layers.append(Layer(_layer_name(alias, part), part_shape))
        resolve[_layer_name(alias, part)] = Source(name, part)
  return tuple(layers), resolve


def layers(module: nn.Module, input_size: int) -> tuple[Layer, ...]:
  """Every named activation of ``module`` (see the module doc)."""
  return _table(module, input_size)[0]


def resolve(module: nn.Module, input_size: int, name: str, model: str) -> Source:
  """Where layer ``name`` is read: a module's output, or a part of it.

  Raises:
    LayerError: ``model`` has no such layer; the message names the closest.
  """
  table, names = _table(module, input_size)
  if name in names:
    return names[name]
  close = difflib.get_close_matches(name, list(names), n=3)
  hint = f"did you mean {' or '.join(close)}? " if close else ""
  raise LayerError(f"{model} has no layer {name!r}; {hint}Classifier.layers() (or --layer=list) "
                   f"lists its {len(table)} layers, e.g. "
                   f"{', '.join(layer.name for layer in table[:4])}")


def recorder(module: nn.Module, wanted: dict[str, list[tuple[str, str]]],
             store: dict[str, Any], image_shape: tuple[int, ...]):
  """A Flax method interceptor that stores, under each asked-for name, the
  part of the output of the module ``wanted`` maps it from (``{module name:
  [(name, part)]}``, from ``resolve``), for images of ``image_shape``."""
  def intercept(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.path:
      for name, part in wanted.get(torch_name(module, context.module.path), ()):
        if name not in store:
          store[name] = read(module, part, out, image_shape)
    return out
  return intercept
