"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture"), torchvision's.

Module names mirror ``torchvision.models.Inception3`` (``Conv2d_1a_3x3``,
``Mixed_6e``, ``AuxLogits``, ...). The auxiliary head is computed in
inference mode (BatchNorm with running statistics), which torchvision never
does: it only runs ``AuxLogits`` in training mode.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from classgen_jax.models import _layers as L


class _Block(nn.Module):
  dtype: Any = None

  def conv(self, features, kernel, name, stride=1, padding=0):
    return L.BasicConv2d(features, kernel, stride, padding, dtype=self.dtype,
                         name=name)

  def pool_branch(self, x, features):
    x = L.avg_pool(x, 3, 1, 1)
    return self.conv(features, 1, "branch_pool")(x)


class InceptionA(_Block):
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.conv(64, 1, "branch1x1")(x)
    b5 = self.conv(48, 1, "branch5x5_1")(x)
    b5 = self.conv(64, 5, "branch5x5_2", padding=2)(b5)
    b3 = self.conv(64, 1, "branch3x3dbl_1")(x)
    b3 = self.conv(96, 3, "branch3x3dbl_2", padding=1)(b3)
    b3 = self.conv(96, 3, "branch3x3dbl_3", padding=1)(b3)
    return jnp.concatenate([b1, b5, b3, self.pool_branch(x, self.pool_features)], -1)


class InceptionB(_Block):

  @nn.compact
  def __call__(self, x):
    b3 = self.conv(384, 3, "branch3x3", stride=2)(x)
    bd = self.conv(64, 1, "branch3x3dbl_1")(x)
    bd = self.conv(96, 3, "branch3x3dbl_2", padding=1)(bd)
    bd = self.conv(96, 3, "branch3x3dbl_3", stride=2)(bd)
    return jnp.concatenate([b3, bd, L.max_pool(x, 3, 2)], -1)


class InceptionC(_Block):
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = self.conv(192, 1, "branch1x1")(x)
    b7 = self.conv(c7, 1, "branch7x7_1")(x)
    b7 = self.conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))(b7)
    b7 = self.conv(192, (7, 1), "branch7x7_3", padding=(3, 0))(b7)
    bd = self.conv(c7, 1, "branch7x7dbl_1")(x)
    bd = self.conv(c7, (7, 1), "branch7x7dbl_2", padding=(3, 0))(bd)
    bd = self.conv(c7, (1, 7), "branch7x7dbl_3", padding=(0, 3))(bd)
    bd = self.conv(c7, (7, 1), "branch7x7dbl_4", padding=(3, 0))(bd)
    bd = self.conv(192, (1, 7), "branch7x7dbl_5", padding=(0, 3))(bd)
    return jnp.concatenate([b1, b7, bd, self.pool_branch(x, 192)], -1)


class InceptionD(_Block):

  @nn.compact
  def __call__(self, x):
    b3 = self.conv(192, 1, "branch3x3_1")(x)
    b3 = self.conv(320, 3, "branch3x3_2", stride=2)(b3)
    b7 = self.conv(192, 1, "branch7x7x3_1")(x)
    b7 = self.conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))(b7)
    b7 = self.conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))(b7)
    b7 = self.conv(192, 3, "branch7x7x3_4", stride=2)(b7)
    return jnp.concatenate([b3, b7, L.max_pool(x, 3, 2)], -1)


class InceptionE(_Block):

  @nn.compact
  def __call__(self, x):
    b1 = self.conv(320, 1, "branch1x1")(x)
    b3 = self.conv(384, 1, "branch3x3_1")(x)
    b3 = jnp.concatenate([
        self.conv(384, (1, 3), "branch3x3_2a", padding=(0, 1))(b3),
        self.conv(384, (3, 1), "branch3x3_2b", padding=(1, 0))(b3),
    ], -1)
    bd = self.conv(448, 1, "branch3x3dbl_1")(x)
    bd = self.conv(384, 3, "branch3x3dbl_2", padding=1)(bd)
    bd = jnp.concatenate([
        self.conv(384, (1, 3), "branch3x3dbl_3a", padding=(0, 1))(bd),
        self.conv(384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))(bd),
    ], -1)
    return jnp.concatenate([b1, b3, bd, self.pool_branch(x, 192)], -1)


class InceptionAux(_Block):
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x):
    x = L.avg_pool(x, 5, 3)
    x = self.conv(128, 1, "conv0")(x)
    x = self.conv(768, 5, "conv1")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


class Inception3(nn.Module):
  """Maps NHWC images in [0, 1] to ``{"logits", "aux"}``.

  Attributes:
    num_classes: size of both heads.
    transform_input: torchvision's flag, on for the pretrained checkpoint.
    aux_logits: whether the ``aux`` head (torch ``AuxLogits``) exists.
    dtype: computation dtype (None: from the inputs and parameters).
  """
  num_classes: int = 1000
  transform_input: bool = False
  aux_logits: bool = True
  dtype: Any = None

  @property
  def heads(self) -> tuple[str, ...]:
    return ("logits", "aux") if self.aux_logits else ("logits",)

  def spatial_size(self, size: int, head: str) -> int:
    """The side of the last feature map ``head`` pools, for an input side."""
    for kernel, stride, padding in ((3, 2, 0), (3, 1, 0), (3, 1, 1), (3, 2, 0),
                                    (3, 1, 0), (3, 2, 0), (3, 2, 0)):
      size = L.pool_output_size(size, kernel, stride, padding)
    if head == "aux":  # avg_pool2d(5, 3), then the 5x5 conv1.
      return L.pool_output_size(L.pool_output_size(size, 5, 3), 5, 1)
    return L.pool_output_size(size, 3, 2)  # Mixed_7a

  @nn.compact
  def __call__(self, images, heads: tuple[str, ...] = ("logits",)):
    x = L.normalize(images)
    if self.transform_input:
      x = L.transform_input(x)
    conv = lambda f, k, name, s=1, p=0: L.BasicConv2d(  # noqa: E731
        f, k, s, p, dtype=self.dtype, name=name)
    d = self.dtype
    x = conv(32, 3, "Conv2d_1a_3x3", 2)(x)
    x = conv(32, 3, "Conv2d_2a_3x3")(x)
    x = conv(64, 3, "Conv2d_2b_3x3", 1, 1)(x)
    x = L.max_pool(x, 3, 2)
    x = conv(80, 1, "Conv2d_3b_1x1")(x)
    x = conv(192, 3, "Conv2d_4a_3x3")(x)
    x = L.max_pool(x, 3, 2)
    x = InceptionA(d, pool_features=32, name="Mixed_5b")(x)
    x = InceptionA(d, pool_features=64, name="Mixed_5c")(x)
    x = InceptionA(d, pool_features=64, name="Mixed_5d")(x)
    x = InceptionB(d, name="Mixed_6a")(x)
    x = InceptionC(d, channels_7x7=128, name="Mixed_6b")(x)
    x = InceptionC(d, channels_7x7=160, name="Mixed_6c")(x)
    x = InceptionC(d, channels_7x7=160, name="Mixed_6d")(x)
    x = InceptionC(d, channels_7x7=192, name="Mixed_6e")(x)
    outputs = {}
    if "aux" in heads:
      outputs["aux"] = InceptionAux(d, num_classes=self.num_classes,
                                    name="AuxLogits")(x)
    if "logits" not in heads:
      return outputs
    x = InceptionD(d, name="Mixed_7a")(x)
    x = InceptionE(d, name="Mixed_7b")(x)
    x = InceptionE(d, name="Mixed_7c")(x)
    x = jnp.mean(x, axis=(1, 2))
    outputs["logits"] = nn.Dense(self.num_classes, dtype=d, name="fc")(x)
    return outputs
