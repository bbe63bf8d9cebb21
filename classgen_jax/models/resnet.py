"""ResNet v1.5 (He et al. 2015), as torchvision builds it: stride on the 3x3 conv.

Module names mirror ``torchvision.models.ResNet`` (``layer1_0`` for
``layer1.0``, ``downsample_0``/``downsample_1``), so the generic converter
maps every tensor by name. ``groups`` and ``width_per_group`` cover
torchvision's ResNeXt and Wide ResNet too.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from classgen_jax.models import _layers as L

_EPS = 1e-5

DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class Block(nn.Module):
  """``BasicBlock`` (two 3x3 convs) or ``Bottleneck`` (1x1, 3x3, 1x1)."""
  planes: int
  stride: int = 1
  bottleneck: bool = False
  downsample: bool = False
  groups: int = 1
  width_per_group: int = 64
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, name, s=1, p=0, g=1: L.conv(  # noqa: E731
        f, k, stride=s, padding=p, groups=g, use_bias=False, dtype=self.dtype,
        name=name)
    bn = lambda name: L.batch_norm(_EPS, dtype=self.dtype, name=name)  # noqa: E731
    if self.bottleneck:
      width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
      out_features = self.planes * 4
      y = nn.relu(bn("bn1")(conv(width, 1, "conv1")(x)))
      y = nn.relu(bn("bn2")(conv(width, 3, "conv2", self.stride, 1,
                                 self.groups)(y)))
      y = bn("bn3")(conv(out_features, 1, "conv3")(y))
    else:
      out_features = self.planes
      y = nn.relu(bn("bn1")(conv(self.planes, 3, "conv1", self.stride, 1)(x)))
      y = bn("bn2")(conv(self.planes, 3, "conv2", 1, 1)(y))
    if self.downsample:
      x = bn("downsample_1")(conv(out_features, 1, "downsample_0",
                                  self.stride)(x))
    return nn.relu(y + x)


class ResNet(nn.Module):
  """Maps NHWC images in [0, 1] to ``{"logits"}``.

  Attributes:
    layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
    bottleneck: ``Bottleneck`` blocks (ResNet-50 and deeper) or ``BasicBlock``.
    num_classes: size of the head.
    groups, width_per_group: ResNeXt / Wide ResNet widths.
    width: channels of the stem and of the first stage's blocks, doubled at
      each stage (torchvision: 64; narrower ResNets make fast test models).
    dtype: computation dtype (None: from the inputs and parameters).
  """
  layers: tuple[int, ...] = (2, 2, 2, 2)
  bottleneck: bool = False
  num_classes: int = 1000
  groups: int = 1
  width_per_group: int = 64
  width: int = 64
  dtype: Any = None

  @property
  def heads(self) -> tuple[str, ...]:
    return ("logits",)

  def spatial_size(self, size: int, head: str) -> int:
    """The side of the last feature map ``head`` pools, for an input side."""
    size = L.pool_output_size(size, 7, 2, 3)
    size = L.pool_output_size(size, 3, 2, 1)
    for _ in range(3):
      size = L.pool_output_size(size, 3, 2, 1)
    return size

  @nn.compact
  def __call__(self, images, heads: tuple[str, ...] = ("logits",)):
    x = L.normalize(images)
    x = L.conv(self.width, 7, stride=2, padding=3, use_bias=False, dtype=self.dtype,
               name="conv1")(x)
    x = nn.relu(L.batch_norm(_EPS, dtype=self.dtype, name="bn1")(x))
    x = L.max_pool(x, 3, 2, 1)
    expansion = 4 if self.bottleneck else 1
    in_features = self.width
    for stage, blocks in enumerate(self.layers):
      planes = self.width * 2**stage
      for index in range(blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        x = Block(planes, stride, self.bottleneck,
                  downsample=index == 0 and (
                      stride != 1 or in_features != planes * expansion),
                  groups=self.groups, width_per_group=self.width_per_group,
                  dtype=self.dtype, name=f"layer{stage + 1}_{index}")(x)
        in_features = planes * expansion
    x = jnp.mean(x, axis=(1, 2))
    return {"logits": nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)}
