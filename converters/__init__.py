"""Converters from PyTorch models to classgen_jax classifiers (needs torch).

The only part of the project, with the torch reference path, that imports
torch: once converted and cached, classifiers load without it.
"""

from __future__ import annotations

from pathlib import Path

import classgen_jax
from converters._mapping import ConversionError, convert_state_dict, flax_path
from converters.efficientnet_lite import convert_efficientnet_lite
from converters.torchvision import (
    build_torch,
    from_torchvision,
    pretrained_torch,
    random_torch,
    randomize_batchnorm,
    read_state_dict,
)


def convert_named(name: str, *, source: str, path: Path | None = None,
                  transform_input: bool | None = None) -> classgen_jax.Classifier:
  """Convert the weights of a catalogue model (``classgen_jax.models.MODELS``).

  Args:
    name: catalogue name.
    source: ``"torchvision:<enum>"`` or ``"file:..."`` (from ``load_classifier``).
    path: the ``.pth`` file for file sources.
    transform_input: torchvision's flag, for file sources.
  """
  spec = classgen_jax.models.MODELS[name]
  if spec.architecture == "EfficientNetLite":
    module, variables = convert_efficientnet_lite(name, state_dict=(
        None if path is None else read_state_dict(path)))
    return classgen_jax.Classifier(module, variables, name, spec.input_size)
  if path is None:
    module = pretrained_torch(name, source.removeprefix("torchvision:"))
  else:
    module = build_torch(name, read_state_dict(path),
                         transform_input=transform_input)
  return from_torchvision(module, name=name)


__all__ = ["ConversionError", "build_torch", "convert_named", "convert_state_dict",
           "flax_path", "from_torchvision", "pretrained_torch", "random_torch",
           "randomize_batchnorm", "read_state_dict"]
