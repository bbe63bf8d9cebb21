"""EfficientNet-Lite (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling").

The Lite variants are the edge versions of EfficientNet from the TensorFlow
TPU repository (``models/official/efficientnet/lite``): ReLU6 instead of
swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280
channels) that width scaling leaves alone, as do the repeats of the first and
last stages. Module names mirror the ``efficientnet_lite_pytorch`` package
(lukemelas' EfficientNet-PyTorch layout: ``_conv_stem``, ``_blocks.N``,
``_conv_head``, ``_fc``), so the generic converter maps every tensor by name.

Inputs are NHWC float images in [0, 1]. The module maps them to the
inception-style scale the Lite checkpoints were trained with,
``(255 * x - 127) / 128`` (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the
TensorFlow Lite builder), so callers never normalise.

Padding: every conv uses TensorFlow's 'SAME' rule computed from the actual
input side (output ``ceil(n / stride)``, the extra pad on the high side), as
the original TensorFlow model does. The torch package instead fixes each
pad at construction for its configured image size. Both agree at the native
size (224, 240, 260) and at any size whose side has the same parity as the
native one before every stride-2 conv (for Lite0: every multiple of 32);
elsewhere the static torch model computes a different (shifted, sometimes
smaller) map. ``efficientnet_lite_pytorch.EfficientNet.from_name(...,
image_size=None)`` switches torch to dynamic padding, which agrees with this
port at every size.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from classgen_jax.models._layers import Conv2d, batch_norm, normalize

# Inception-style input scaling of the Lite checkpoints, on [0, 1] images.
INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3

_BN_EPS = 1e-3
_STEM_FEATURES = 32
_HEAD_FEATURES = 1280
_DIVISOR = 8

# EfficientNet-B0 stages, which the Lite models share:
# (repeats, kernel, stride, expand_ratio, in_features, out_features).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class Variant(NamedTuple):
  """A released checkpoint's architecture.

  Attributes:
    image_size: the native (training) input side.
    kwargs: ``EfficientNetLite`` constructor arguments.
  """
  image_size: int
  kwargs: dict[str, Any]


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(224, {"width": 1.0, "depth": 1.0}),
    "efficientnet_lite1": Variant(240, {"width": 1.0, "depth": 1.1}),
    "efficientnet_lite2": Variant(260, {"width": 1.1, "depth": 1.2}),
}


class BlockConfig(NamedTuple):
  kernel: int
  stride: int
  expand_ratio: int
  in_features: int
  out_features: int


def round_features(features: int, width: float) -> int:
  """Scales a channel count by ``width``, to a multiple of 8 (TF's rule)."""
  scaled = features * width
  rounded = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
  # TensorFlow never rounds down by more than 10%.
  if rounded < 0.9 * scaled:
    rounded += _DIVISOR
  return int(rounded)


def block_configs(width: float, depth: float) -> tuple[BlockConfig, ...]:
  """Every MBConv block, in order, for width and depth multipliers."""
  blocks = []
  for i, (repeats, kernel, stride, expand, in_f, out_f) in enumerate(_STAGES):
    fixed = i in (0, len(_STAGES) - 1)
    # Lite keeps the first and last stages at their B0 depth, and the first
    # block reads the stem, which is never scaled.
    in_f = _STEM_FEATURES if i == 0 else round_features(in_f, width)
    out_f = round_features(out_f, width)
    if not fixed:
      repeats = int(math.ceil(depth * repeats))
    blocks.append(BlockConfig(kernel, stride, expand, in_f, out_f))
    blocks += [BlockConfig(kernel, 1, expand, out_f, out_f)] * (repeats - 1)
  return tuple(blocks)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow 'SAME' padding ``(low, high)`` for one axis of side ``size``."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def same_conv(x, features: int, kernel: int, *, stride: int = 1,
              groups: int = 1, dtype: Any = None, name: str | None = None):
  """A bias-free conv with TF 'SAME' padding for ``x``'s actual side."""
  pads = [same_padding(n, kernel, stride) for n in x.shape[1:3]]
  return Conv2d(features, (kernel, kernel), strides=(stride, stride),
                padding=tuple(pads), feature_group_count=groups, use_bias=False,
                dtype=dtype, name=name)(x)


class MBConvBlock(nn.Module):
  """Inverted residual block without squeeze-excite (MobileNetV2-style)."""
  config: BlockConfig
  dtype: Any = None

  @nn.compact
  def __call__(self, inputs):
    cfg = self.config
    bn = lambda name: batch_norm(_BN_EPS, dtype=self.dtype, name=name)  # noqa: E731
    hidden = cfg.in_features * cfg.expand_ratio
    x = inputs
    if cfg.expand_ratio != 1:
      x = same_conv(x, hidden, 1, dtype=self.dtype, name="expand_conv")
      x = nn.relu6(bn("bn0")(x))
    x = same_conv(x, hidden, cfg.kernel, stride=cfg.stride, groups=hidden,
                  dtype=self.dtype, name="depthwise_conv")
    x = nn.relu6(bn("bn1")(x))
    x = same_conv(x, cfg.out_features, 1, dtype=self.dtype, name="project_conv")
    x = bn("bn2")(x)
    if cfg.stride == 1 and cfg.in_features == cfg.out_features:
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """Maps NHWC images in [0, 1] to ``{"logits"}``, in inference mode.

  ``VARIANTS`` holds the arguments of the released checkpoints; other
  multipliers build the same family (Lite3 is ``width=1.2, depth=1.4``,
  Lite4 ``width=1.4, depth=1.8``) but have no weights here.

  Attributes:
    width: channel multiplier of the inner stages (stem and head stay fixed).
    depth: repeat multiplier of stages 2 to 6.
    num_classes: size of the classifier.
    dtype: computation dtype (None: from the inputs and parameters).
  """
  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 1000
  dtype: Any = None

  @property
  def heads(self) -> tuple[str, ...]:
    return ("logits",)

  def spatial_size(self, size: int, head: str) -> int:
    """The side of the last feature map ``head`` pools, for an input side."""
    del head  # A single head, after the last block.
    for stride in (2, *(c.stride for c in block_configs(self.width,
                                                         self.depth))):
      size = -(-size // stride)
    return size

  @nn.compact
  def __call__(self, images, heads: tuple[str, ...] = ("logits",)):
    bn = lambda name: batch_norm(_BN_EPS, dtype=self.dtype, name=name)  # noqa: E731
    x = normalize(images, INPUT_MEAN, INPUT_STD)
    x = same_conv(x, _STEM_FEATURES, 3, stride=2, dtype=self.dtype,
                  name="conv_stem")
    x = nn.relu6(bn("bn0")(x))
    for i, config in enumerate(block_configs(self.width, self.depth)):
      x = MBConvBlock(config, dtype=self.dtype, name=f"blocks_{i}")(x)
    x = same_conv(x, _HEAD_FEATURES, 1, dtype=self.dtype, name="conv_head")
    x = nn.relu6(bn("bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    outputs = {}
    if "logits" in heads:
      outputs["logits"] = nn.Dense(self.num_classes, dtype=self.dtype,
                                   name="fc")(x)
    return outputs
