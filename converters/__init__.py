"""Converters from PyTorch models to classgen_jax classifiers (needs torch).

The only part of the project, with the torch reference path, that imports
torch: once converted and cached, classifiers load without it.

``classgen_jax`` never imports this package; ``load_classifier`` finds
``convert_named`` through the ``classgen_jax.converters`` entry point that
``pyproject.toml`` declares, and importing this package registers it too
(for a source tree on ``sys.path`` that is not installed).
"""

from __future__ import annotations

from pathlib import Path

import classgen_jax
from classgen_jax._mapping import ConversionError, convert_state_dict, flax_path
from converters.efficientnet_lite import convert_efficientnet_lite
from converters.torchvision import (
    build_torch,
    from_torchvision,
    pretrained_torch,
    random_torch,
    randomize_batchnorm,
    randomize_constants,
    read_state_dict,
)


def convert_named(name: str, *, source: str, path: Path | None = None,
                  transform_input: bool | None = None) -> classgen_jax.Classifier:
  """Convert the torch weights of a catalogue model (``classgen_jax.models.MODELS``).

  ``load_classifier`` calls this for torchvision's models; it converts the
  EfficientNet-Lite checkpoints itself, without torch.

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


classgen_jax.weights.register_converter("torchvision", convert_named)

__all__ = ["ConversionError", "build_torch", "convert_named", "convert_state_dict",
           "flax_path", "from_torchvision", "pretrained_torch", "random_torch",
           "randomize_batchnorm", "randomize_constants", "read_state_dict"]
