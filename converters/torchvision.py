"""Convert torchvision's GoogLeNet, Inception-v3, ResNet and ViT modules to Flax.

The configuration (depth and block type, ``transform_input``, aux heads,
number of classes, a ViT's sizes) is read off the torch module; the tensors
are mapped by the one generic name mapper in ``classgen_jax._mapping``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import torch
import torchvision

import classgen_jax
from classgen_jax import models
from classgen_jax._mapping import ConversionError, convert_state_dict


def torchvision_config(module: torch.nn.Module) -> tuple[str, dict[str, Any], str, int]:
  """``(architecture, config, name, input_size)`` read off a torch module."""
  tv = torchvision.models
  if isinstance(module, tv.GoogLeNet):
    config = dict(num_classes=module.fc.out_features,
                  transform_input=bool(module.transform_input),
                  aux_logits=module.aux1 is not None)
    return "GoogLeNet", config, "googlenet", 224
  if isinstance(module, tv.Inception3):
    config = dict(num_classes=module.fc.out_features,
                  transform_input=bool(module.transform_input),
                  aux_logits=module.AuxLogits is not None)
    return "Inception3", config, "inception_v3", 299
  if isinstance(module, tv.ResNet):
    block = type(module.layer1[0]).__name__
    if block not in ("BasicBlock", "Bottleneck"):
      raise ConversionError(f"unsupported ResNet block type {block}")
    dilated = [n for n, m in module.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.dilation != (1, 1)]
    if dilated:
      raise ConversionError(
          "ResNets built with replace_stride_with_dilation are not supported "
          f"(dilated conv {dilated[0]})")
    layers = [len(getattr(module, f"layer{i}")) for i in range(1, 5)]
    config = dict(layers=layers, bottleneck=block == "Bottleneck",
                  num_classes=module.fc.out_features, groups=module.groups,
                  width_per_group=module.base_width)
    if module.conv1.out_channels != 64:  # a narrowed ResNet (the tests' tiny one)
      config["width"] = module.conv1.out_channels
    depth = {v: k for k, v in models.DEPTHS.items()}.get(
        ("bottleneck" if config["bottleneck"] else "basic", tuple(layers)))
    plain = module.groups == 1 and module.base_width == 64 and "width" not in config
    name = f"resnet{depth}" if depth and plain else "resnet"
    return "ResNet", config, name, 224
  if isinstance(module, tv.VisionTransformer):
    return _vit_config(module)
  raise ConversionError(
      "from_torchvision takes a torchvision GoogLeNet, Inception3, ResNet or "
      f"VisionTransformer, got {type(module).__name__}")


def _vit_config(module: torch.nn.Module) -> tuple[str, dict[str, Any], str, int]:
  if not isinstance(module.conv_proj, torch.nn.Conv2d):
    raise ConversionError("ViTs with a convolutional stem (conv_stem_configs) are not supported")
  if hasattr(module.heads, "pre_logits"):
    raise ConversionError("ViTs with a pre-logits layer (representation_size) are not supported")
  norms = {m.eps for m in module.modules() if isinstance(m, torch.nn.LayerNorm)}
  if norms != {1e-6}:
    raise ConversionError(f"ViT LayerNorms with eps {sorted(norms)}; the port has 1e-6")
  config = dict(image_size=module.image_size, patch_size=module.patch_size,
                num_layers=len(module.encoder.layers),
                num_heads=module.encoder.layers[0].num_heads, hidden_dim=module.hidden_dim,
                mlp_dim=module.mlp_dim, num_classes=module.num_classes)
  sizes = ("patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")
  named = [name for name, spec in models.MODELS.items()
           if spec.architecture == "VisionTransformer"
           and all(spec.config[k] == config[k] for k in sizes)]
  return "VisionTransformer", config, (named or ["vit"])[0], module.image_size


def from_torchvision(module: torch.nn.Module, *, dtype: Any = jnp.float32,
                     name: str | None = None) -> classgen_jax.Classifier:
  """A Flax ``Classifier`` equal to a torchvision module, random or pretrained.

  Args:
    module: a torchvision ``GoogLeNet``, ``Inception3``, ``ResNet`` or
      ``VisionTransformer``.
    dtype: dtype of the weights (``jnp.float64`` needs ``jax_enable_x64``).
    name: the classifier's name (default: from the architecture).

  Raises:
    ConversionError: an unsupported module, or tensors that do not map.
  """
  architecture, config, default_name, input_size = torchvision_config(module)
  flax_module = models.build(architecture, config)
  variables = convert_state_dict(
      module.state_dict(), flax_module,
      input_size=input_size, dtype=dtype)
  return classgen_jax.Classifier(flax_module, variables, name or default_name,
                                 input_size)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
  """A state dict from a ``.pth`` file (also a pickled module or a checkpoint dict).

  Raises:
    classgen_jax.WeightsError: unreadable, corrupt or not a state dict.
  """
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise classgen_jax.WeightsError(f"weights file {path} does not exist") from None
  except Exception as error:  # torch raises many types for a corrupt file.
    raise classgen_jax.WeightsError(
        f"cannot read weights file {path} ({type(error).__name__}); is it a "
        "complete .pth saved with torch.save(model.state_dict(), path)?") from None
  for key in ("state_dict", "model_state_dict", "model"):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
      loaded = loaded[key]
  if not isinstance(loaded, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in loaded.values()):
    raise classgen_jax.WeightsError(
        f"{path} is not a state dict of tensors; save one with "
        "torch.save(model.state_dict(), path)")
  return {k.removeprefix("module."): v for k, v in loaded.items()}


def build_torch(name: str, state_dict: Mapping[str, torch.Tensor] | None = None,
                *, transform_input: bool | None = None) -> torch.nn.Module:
  """The torchvision module ``name``, random or loaded from ``state_dict``.

  The configuration that a state dict does not record is taken from it where
  it can be (number of classes, aux heads) and otherwise matches torchvision's
  pretrained models (``transform_input=True`` for GoogLeNet and Inception-v3).
  """
  spec = models.MODELS[name]
  kwargs: dict[str, Any] = {"weights": None}
  for head in ("fc.weight", "heads.head.weight"):
    if state_dict is not None and head in state_dict:
      kwargs["num_classes"] = state_dict[head].shape[0]
  if spec.architecture == "VisionTransformer" and state_dict is not None and (
      "encoder.pos_embedding" in state_dict):
    # Checkpoints made at another side (torchvision's SWAG weights: 384).
    patches = state_dict["encoder.pos_embedding"].shape[1] - 1
    kwargs["image_size"] = math.isqrt(patches) * spec.config["patch_size"]
  if spec.architecture in ("GoogLeNet", "Inception3"):
    aux_prefix = "aux1." if spec.architecture == "GoogLeNet" else "AuxLogits."
    kwargs["aux_logits"] = state_dict is None or any(
        k.startswith(aux_prefix) for k in state_dict)
    kwargs["transform_input"] = (spec.config["transform_input"]
                                 if transform_input is None else transform_input)
    kwargs["init_weights"] = False
  module = torchvision.models.get_model(name, **kwargs)
  if state_dict is not None:
    try:
      module.load_state_dict(state_dict)
    except RuntimeError as error:
      first = str(error).splitlines()
      detail = " ".join(line.strip() for line in first[1:3])[:300]
      raise ConversionError(
          f"the weights do not fit torchvision's {name}: {detail}") from None
  return module.eval()


def pretrained_torch(name: str, weights: str | None = None) -> torch.nn.Module:
  """torchvision's pretrained module; raises one line when it can't be fetched."""
  enum_name = weights or models.MODELS[name].default_weights
  if "." not in enum_name:
    enum_name = f"{models.MODELS[name].default_weights.split('.')[0]}.{enum_name}"
  try:
    enum = torchvision.models.get_weight(enum_name)
  except (ValueError, KeyError, AttributeError):
    raise classgen_jax.WeightsError(
        f"torchvision has no weights {enum_name!r} for {name}") from None
  try:
    state_dict = enum.get_state_dict(progress=False, check_hash=True)
  except Exception as error:  # urllib, hash or OS errors alike.
    filename = enum.url.rsplit("/", 1)[-1]
    raise classgen_jax.WeightsError(
        f"cannot fetch torchvision's {name} weights {enum_name} "
        f"({type(error).__name__}); offline? get {enum.url} elsewhere and pass "
        f"weights='/path/to/{filename}' (--weights=...), or put it in "
        f"{torch.hub.get_dir()}/checkpoints/") from None
  return build_torch(name, state_dict)



def randomize_batchnorm(module: torch.nn.Module, size: int, *, seed: int = 0,
                        batches: int = 2) -> torch.nn.Module:
  """Random affine BatchNorm parameters and running statistics of real batches.

  torchvision's fresh BatchNorm (mean 0, var 1, identity affine) would hide
  a swapped mapping; parity checks on random weights need these instead.
  """
  generator = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.uniform_(0.5, 1.5, generator=generator)
        m.bias.normal_(0.0, 0.2, generator=generator)
      m.reset_running_stats()
      m.momentum = None  # cumulative average over the batches below
  module.train()
  with torch.no_grad():
    for _ in range(batches):
      module(torch.rand(2, 3, size, size, generator=generator) * 2 - 1)
  return module.eval()


def randomize_constants(module: torch.nn.Module, *, seed: int = 0) -> torch.nn.Module:
  """Random values where torchvision's ViT starts from constants: LayerNorm
  scales and biases, every bias, the class token and the (zero) head.

  Ones and zeros would hide a swapped mapping (a LayerNorm's scale for its
  bias, q's bias for k's), and a zero head gives zero logits.
  """
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, torch.nn.LayerNorm):
        m.weight.uniform_(0.5, 1.5, generator=generator)
    for name, parameter in module.named_parameters():
      if name.endswith("bias") or name == "class_token":
        parameter.normal_(0.0, 0.2, generator=generator)
    module.heads.head.weight.normal_(0.0, 0.05, generator=generator)
  return module.eval()


def random_torch(name: str, *, seed: int = 0,
                 transform_input: bool | None = None) -> torch.nn.Module:
  """A torchvision model with random weights and randomised BatchNorm, eval mode."""
  torch.manual_seed(seed)
  module = build_torch(name, transform_input=transform_input)
  if isinstance(module, torchvision.models.VisionTransformer):
    return randomize_constants(module, seed=seed)
  for m in module.modules():  # init_weights=False leaves torch's default init
    if isinstance(m, torch.nn.Linear):
      torch.nn.init.normal_(m.weight, std=0.05)
  return randomize_batchnorm(module, 299 if name == "inception_v3" else 224, seed=seed)
