"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions"), as torchvision builds it.

Module names mirror ``torchvision.models.GoogLeNet`` so the generic converter
maps every tensor by name. Differences from the paper that the checkpoint
has, and that this port follows: BatchNorm after every conv, and a 3x3 conv
in ``branch3`` where the paper has 5x5 (torchvision issue 906).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from classgen_jax.models import _layers as L

# (in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj); `in` is implied.
_INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, name, p=0: L.BasicConv2d(  # noqa: E731
        f, k, padding=p, dtype=self.dtype, name=name)
    branch1 = conv(self.ch1x1, 1, "branch1")(x)
    branch2 = conv(self.ch3x3red, 1, "branch2_0")(x)
    branch2 = conv(self.ch3x3, 3, "branch2_1", 1)(branch2)
    branch3 = conv(self.ch5x5red, 1, "branch3_0")(x)
    branch3 = conv(self.ch5x5, 3, "branch3_1", 1)(branch3)
    branch4 = L.max_pool(x, 3, 1, 1, ceil_mode=True)
    branch4 = conv(self.pool_proj, 1, "branch4_1")(branch4)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary head; torchvision warns its checkpoint weights are untrained."""
  num_classes: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    x = L.adaptive_avg_pool(x, 4)
    x = L.BasicConv2d(128, 1, dtype=self.dtype, name="conv")(x)
    x = L.flatten_nchw(x)
    x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


class GoogLeNet(nn.Module):
  """Maps NHWC images in [0, 1] to ``{"logits", "aux1", "aux2"}``.

  Attributes:
    num_classes: size of every head.
    transform_input: torchvision's flag, on for the pretrained checkpoint.
    aux_logits: whether the ``aux1``/``aux2`` heads exist.
    dtype: computation dtype (None: from the inputs and parameters).
  """
  num_classes: int = 1000
  transform_input: bool = False
  aux_logits: bool = True
  dtype: Any = None

  @property
  def heads(self) -> tuple[str, ...]:
    return ("logits", "aux1", "aux2") if self.aux_logits else ("logits",)

  def spatial_size(self, size: int, head: str) -> int:
    """The side of the last feature map ``head`` pools, for an input side."""
    size = L.pool_output_size(size, 7, 2, 3)
    size = L.pool_output_size(size, 3, 2, 0, ceil_mode=True)
    size = L.pool_output_size(size, 3, 2, 0, ceil_mode=True)
    size = L.pool_output_size(size, 3, 2, 0, ceil_mode=True)
    if head in ("aux1", "aux2"):
      return size
    return L.pool_output_size(size, 2, 2, 0, ceil_mode=True)

  @nn.compact
  def __call__(self, images, heads: tuple[str, ...] = ("logits",)):
    x = L.normalize(images)
    if self.transform_input:
      x = L.transform_input(x)
    conv = lambda f, k, name, s=1, p=0: L.BasicConv2d(  # noqa: E731
        f, k, s, p, dtype=self.dtype, name=name)
    block = lambda name: Inception(  # noqa: E731
        *_INCEPTION[name], dtype=self.dtype, name=name)
    aux = lambda name: InceptionAux(  # noqa: E731
        self.num_classes, dtype=self.dtype, name=name)
    outputs = {}

    x = conv(64, 7, "conv1", 2, 3)(x)
    x = L.max_pool(x, 3, 2, ceil_mode=True)
    x = conv(64, 1, "conv2")(x)
    x = conv(192, 3, "conv3", 1, 1)(x)
    x = L.max_pool(x, 3, 2, ceil_mode=True)
    x = block("inception3b")(block("inception3a")(x))
    x = L.max_pool(x, 3, 2, ceil_mode=True)
    x = block("inception4a")(x)
    if "aux1" in heads:
      outputs["aux1"] = aux("aux1")(x)
    if heads == ("aux1",):
      return outputs
    for name in ("inception4b", "inception4c", "inception4d"):
      x = block(name)(x)
    if "aux2" in heads:
      outputs["aux2"] = aux("aux2")(x)
    if "logits" not in heads:
      return outputs
    x = block("inception4e")(x)
    x = L.max_pool(x, 2, 2, ceil_mode=True)
    x = block("inception5b")(block("inception5a")(x))
    x = jnp.mean(x, axis=(1, 2))
    outputs["logits"] = nn.Dense(self.num_classes, dtype=self.dtype,
                                 name="fc")(x)
    return outputs
