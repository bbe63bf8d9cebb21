"""Layers shared by the torchvision ports, with PyTorch's exact semantics.

Every layer takes and returns NHWC arrays. Padding is always explicit and
symmetric, as in PyTorch (XLA's 'SAME' pads more on the high side), and
pooling reproduces torch's ``ceil_mode`` and ``count_include_pad`` rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Pair = int | tuple[int, int]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pair(value: Pair) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def pool_output_size(size: int, kernel: int, stride: int, padding: int = 0,
                     ceil_mode: bool = False) -> int:
  """Output length of a torch conv or pool along one axis (may be <= 0)."""
  span = size + 2 * padding - kernel
  if span < 0:
    return 0
  if not ceil_mode:
    return span // stride + 1
  out = math.ceil(span / stride) + 1
  # torch drops a last window that would start in the right padding.
  if (out - 1) * stride >= size + padding:
    out -= 1
  return out


def _torch_pool_padding(size: int, kernel: int, stride: int, padding: int,
                        ceil_mode: bool) -> tuple[int, int]:
  out = pool_output_size(size, kernel, stride, padding, ceil_mode)
  high = (out - 1) * stride + kernel - size - padding
  return padding, max(high, 0)


def max_pool(x, kernel: Pair, stride: Pair, padding: Pair = 0, *,
             ceil_mode: bool = False):
  """``torch.nn.functional.max_pool2d`` on NHWC (padding counts as -inf)."""
  kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
  pads = [
      _torch_pool_padding(size, k, s, p, ceil_mode)
      for size, k, s, p in zip(x.shape[1:3], kernel, stride, padding)
  ]
  return nn.max_pool(x, kernel, strides=stride, padding=pads)


def avg_pool(x, kernel: Pair, stride: Pair, padding: Pair = 0):
  """``torch.nn.functional.avg_pool2d`` on NHWC, ``count_include_pad=True``."""
  kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
  return nn.avg_pool(x, kernel, strides=stride,
                     padding=[(p, p) for p in padding], count_include_pad=True)


def adaptive_avg_pool(x, output_size: Pair):
  """``torch.nn.functional.adaptive_avg_pool2d`` on NHWC.

  Window ``i`` along an axis of length ``n`` covers
  ``[floor(i * n / o), ceil((i + 1) * n / o))``, which is not what
  ``jax.image.resize`` computes.
  """
  out_h, out_w = pair(output_size)
  height, width = x.shape[1:3]
  if (out_h, out_w) == (1, 1):
    return jnp.mean(x, axis=(1, 2), keepdims=True)

  def windows(n, o):
    return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]

  rows = []
  for h0, h1 in windows(height, out_h):
    row = [jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2))
           for w0, w1 in windows(width, out_w)]
    rows.append(jnp.stack(row, axis=1))
  return jnp.stack(rows, axis=1)


def flatten_nchw(x):
  """Flatten an NHWC map in torch's (C, H, W) order, so fc weights map as-is."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def conv(features: int, kernel_size: Pair, *, stride: Pair = 1,
         padding: Pair = 0, groups: int = 1, use_bias: bool = True,
         dtype: Any = None, name: str | None = None) -> nn.Conv:
  """A ``torch.nn.Conv2d``-equivalent ``nn.Conv`` (explicit symmetric padding)."""
  pad_h, pad_w = pair(padding)
  return nn.Conv(features, pair(kernel_size), strides=pair(stride),
                 padding=((pad_h, pad_h), (pad_w, pad_w)),
                 feature_group_count=groups, use_bias=use_bias, dtype=dtype,
                 name=name)


def batch_norm(eps: float, *, dtype: Any = None,
               name: str | None = None) -> nn.BatchNorm:
  """An inference-mode ``torch.nn.BatchNorm2d`` (running statistics)."""
  return nn.BatchNorm(use_running_average=True, epsilon=eps, dtype=dtype,
                      name=name)


class BasicConv2d(nn.Module):
  """torchvision's ``BasicConv2d``: conv (no bias) -> BatchNorm -> ReLU."""
  features: int
  kernel_size: Pair
  stride: Pair = 1
  padding: Pair = 0
  eps: float = 1e-3
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    x = conv(self.features, self.kernel_size, stride=self.stride,
             padding=self.padding, use_bias=False, dtype=self.dtype,
             name="conv")(x)
    x = batch_norm(self.eps, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def normalize(x, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD):
  """Map an image in [0, 1] to the model's input scale, per channel."""
  mean = jnp.asarray(mean, x.dtype)
  std = jnp.asarray(std, x.dtype)
  return (x - mean) / std


def transform_input(x):
  """torchvision's ``_transform_input`` applied after ImageNet normalisation.

  It maps the normalised input back to the [-1, 1] scaling that the
  TensorFlow-born GoogLeNet and Inception-v3 weights expect.
  """
  mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
  std = jnp.asarray(IMAGENET_STD, x.dtype)
  return x * (std / 0.5) + (mean - 0.5) / 0.5
