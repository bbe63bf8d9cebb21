"""The torch reference path: what the article's PyTorch code computes, batched.

``torch_outputs`` runs a torchvision module on NHWC images in [0, 1] and
returns the same named outputs as ``classgen_jax.Classifier`` (aux heads in
inference mode, which torchvision never runs: the article does the same by
calling the submodules one by one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def to_nchw(images) -> torch.Tensor:
  """NHWC (numpy, jax or torch) to a torch NCHW tensor, dtype kept."""
  if not isinstance(images, torch.Tensor):
    import numpy as np
    images = torch.from_numpy(np.array(images))
  return images.permute(0, 3, 1, 2)


def normalize(x: torch.Tensor) -> torch.Tensor:
  mean = torch.tensor(_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
  std = torch.tensor(_STD, dtype=x.dtype).view(1, 3, 1, 1)
  return (x - mean) / std


def torch_outputs(module: torch.nn.Module, x: torch.Tensor,
                  heads: Sequence[str] = ("logits",)) -> dict[str, torch.Tensor]:
  """Named outputs of an eval-mode torchvision classifier.

  Args:
    module: torchvision ``GoogLeNet``, ``Inception3`` or ``ResNet``, in eval
      mode.
    x: NCHW images in [0, 1] (normalised here, as torchvision's transforms do).
    heads: outputs to compute.
  """
  x = normalize(x)
  out: dict[str, torch.Tensor] = {}
  m = module
  if isinstance(m, torchvision.models.GoogLeNet):
    x = m._transform_input(x)
    x = m.maxpool1(m.conv1(x))
    x = m.maxpool2(m.conv3(m.conv2(x)))
    x = m.maxpool3(m.inception3b(m.inception3a(x)))
    x = m.inception4a(x)
    if "aux1" in heads:
      out["aux1"] = m.aux1(x)
    x = m.inception4d(m.inception4c(m.inception4b(x)))
    if "aux2" in heads:
      out["aux2"] = m.aux2(x)
    if "logits" in heads:
      x = m.maxpool4(m.inception4e(x))
      x = m.inception5b(m.inception5a(x))
      out["logits"] = m.fc(torch.flatten(m.avgpool(x), 1))
    return out
  if isinstance(m, torchvision.models.Inception3):
    x = m._transform_input(x)
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                 "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2", "Mixed_5b",
                 "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                 "Mixed_6d", "Mixed_6e"):
      x = getattr(m, name)(x)
    if "aux" in heads:
      out["aux"] = m.AuxLogits(x)
    if "logits" in heads:
      x = m.Mixed_7c(m.Mixed_7b(m.Mixed_7a(x)))
      out["logits"] = m.fc(torch.flatten(m.avgpool(x), 1))
    return out
  out["logits"] = m(x)
  return out
