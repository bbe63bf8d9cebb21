"""Layers shared by the torchvision ports, with PyTorch's exact semantics.

Every layer takes and returns NHWC arrays. Padding is always explicit and
symmetric, as in PyTorch (XLA's 'SAME' pads more on the high side), and
pooling reproduces torch's ``ceil_mode`` and ``count_include_pad`` rules.

Generation only ever differentiates with respect to the input image, and
XLA:CPU's max-pooling input gradient (``select_and_scatter``) is 8-30x its
forward: ``max_pool`` has a custom VJP built from strided slices, with
torch's gradient. The convolutions' own rules live in ``_convolutions``;
``Conv2d`` here is the ``torch.nn.Conv2d``-equivalent layer that uses them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from classgen_jax.models._convolutions import NHWC, conv_general_dilated, gradient_kernel

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


def torch_pool_padding(size: int, kernel: int, stride: int, padding: int,
                        ceil_mode: bool) -> tuple[int, int]:
  out = pool_output_size(size, kernel, stride, padding, ceil_mode)
  high = (out - 1) * stride + kernel - size - padding
  return padding, max(high, 0)


def max_pool(x, kernel: Pair, stride: Pair, padding: Pair = 0, *,
             ceil_mode: bool = False):
  """``torch.nn.functional.max_pool2d`` on NHWC (padding counts as -inf).

  The gradient is torch's: each window routes its output gradient to the
  first maximum in row-major window order (ties matter on flat regions).
  It is computed without ``select_and_scatter`` (see ``_max_pool_bwd``);
  forward-mode differentiation (``jax.jvp``) is not supported.
  """
  kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
  pads = tuple(
      torch_pool_padding(size, k, s, p, ceil_mode)
      for size, k, s, p in zip(x.shape[-3:-1], kernel, stride, padding)
  )
  return _max_pool(x, kernel, stride, pads)


def window_reduce(x, combine, init, kernel: tuple[int, int], stride: tuple[int, int], pads):
  """``lax.reduce_window`` over NHWC's spatial axes, as strided slices of the
  padded input combined elementwise, rows then columns.

  XLA:CPU runs ``reduce_window`` through a generic loop (GoogLeNet's and
  Inception-v3's pools: 6-8% of their octave steps' op time); the slices
  fuse into one elementwise loop. For ``lax.max`` the result is
  ``reduce_window``'s exactly; for ``lax.add`` to rounding (another order).
  ``pads``: ``((top, bottom), (left, right))``, filled with ``init``.
  """
  (kh, kw), (sh, sw) = kernel, stride
  x = lax.pad(x, jnp.asarray(init, x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  n, height, width, c = x.shape
  oh, ow = (height - kh) // sh + 1, (width - kw) // sw + 1
  rows = functools.reduce(combine, [
      lax.slice(x, (0, a, 0, 0), (n, a + (oh - 1) * sh + 1, width, c), (1, sh, 1, 1))
      for a in range(kh)])
  return functools.reduce(combine, [
      lax.slice(rows, (0, 0, b, 0), (n, oh, b + (ow - 1) * sw + 1, c), (1, 1, sw, 1))
      for b in range(kw)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, kernel, stride, pads):
  return window_reduce(x, lax.max, -jnp.inf, kernel, stride, pads)


def _max_pool_fwd(x, kernel, stride, pads):
  y = _max_pool(x, kernel, stride, pads)
  return y, (x, y)


def _max_pool_bwd(kernel, stride, pads, residuals, g):
  """Routes each window's gradient to its first maximum.

  XLA's rule, ``select_and_scatter``, runs at 8-30x the forward on CPU. Here
  the strided slice of the padded input at each window offset, compared
  with the output, marks the windows whose first maximum sits at that
  offset; the masked gradients are then placed back on the input grid.
  """
  x, y = residuals
  (kh, kw), (sh, sw) = kernel, stride
  n, height, width, c = x.shape
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  hp, wp = xp.shape[1:3]
  oh, ow = y.shape[1:3]
  span_h, span_w = (oh - 1) * sh + 1, (ow - 1) * sw + 1
  hits = [lax.slice(xp, (0, i, j, 0), (n, i + span_h, j + span_w, c), (1, sh, sw, 1)) == y
          for i in range(kh) for j in range(kw)]
  zero = jnp.zeros((), g.dtype)
  (top, _), (left, _) = pads
  if height % sh or width % sw:
    # Measured on XLA:CPU: a fused stride-phase interleave that ends in an
    # odd-length crop runs several times slower, so here the first-maximum
    # offsets are materialised (argmax is a reduction, which XLA does not
    # fuse into its consumers) and each offset's gradients are dilated onto
    # the input grid by interior padding.
    first = jnp.argmax(jnp.stack(hits), axis=0).astype(jnp.int8)
    grad = jnp.zeros(xp.shape, g.dtype)
    for k, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
      grad = grad + lax.pad(
          jnp.where(first == k, g, zero), zero,
          ((0, 0, 0), (i, hp - i - span_h, sh - 1), (j, wp - j - span_w, sw - 1),
           (0, 0, 0)))
    return (grad[:, top:top + height, left:left + width, :],)
  # Offset (i, j) = (r + sh*q, t + sw*p) feeds stride phase (r, t), shifted by
  # (q, p) output pixels: sum each phase at output resolution, then
  # interleave the phases. XLA fuses all of it (the first-maximum masks
  # included, recomputed where used) into one loop over the input grid.
  taken = jnp.zeros(y.shape, bool)
  firsts = []
  for hit in hits:
    firsts.append(hit & ~taken)
    taken = taken | hit
  qh, qw = -(-kh // sh), -(-kw // sw)
  mh, mw = oh + qh - 1, ow + qw - 1
  rows = []
  for r in range(sh):
    phases = []
    for t in range(sw):
      acc = jnp.zeros((n, mh, mw, c), g.dtype)
      for q in range(qh):
        for p in range(qw):
          i, j = r + sh * q, t + sw * p
          if i < kh and j < kw:
            acc = acc + lax.pad(jnp.where(firsts[i * kw + j], g, zero), zero,
                                ((0, 0, 0), (q, qh - 1 - q, 0), (p, qw - 1 - p, 0), (0, 0, 0)))
      phases.append(acc)
    rows.append(jnp.stack(phases, axis=3))  # (n, mh, mw, sw, c)
  grad = jnp.stack(rows, axis=2).reshape(n, mh * sh, mw * sw, c)
  # The phases cover rows up to (oh - 1) * sh + kh; floor mode may leave
  # input rows past that which no window reads.
  grad = lax.pad(grad, zero, ((0, 0, 0), (0, max(hp - mh * sh, 0), 0),
                              (0, max(wp - mw * sw, 0), 0), (0, 0, 0)))
  return (grad[:, top:top + height, left:left + width, :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_input_grad(x, y, g, kernel: tuple[int, int], stride: tuple[int, int],
                        pads) -> jax.Array:
  """The input gradient ``max_pool``'s rule computes (``_max_pool_bwd``), for
  the output ``y`` of ``x`` and its gradient ``g``: timed alone by
  ``scripts/benchmark_layers.py``. ``pads`` is ``torch_pool_padding``'s, per side."""
  return _max_pool_bwd(kernel, stride, pads, (x, y), g)[0]


def avg_pool(x, kernel: Pair, stride: Pair, padding: Pair = 0):
  """``torch.nn.functional.avg_pool2d`` on NHWC, ``count_include_pad=True``
  (a window's sum over its size, padding included; ``window_reduce``)."""
  kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
  total = window_reduce(x, lax.add, 0, kernel, stride, [(p, p) for p in padding])
  return total / jnp.asarray(kernel[0] * kernel[1], x.dtype)


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


# The variable collection that holds each convolution's ``gradient_kernel``
# once ``with_gradient_kernels`` has computed them.
GRADIENT_KERNELS = "gradient_kernels"


class Conv2d(nn.Module):
  """``torch.nn.Conv2d`` on NHWC images (explicit padding), whose input
  gradient comes from ``_convolutions.conv_general_dilated``.

  Its parameters are ``nn.Conv``'s (``kernel`` HWIO, ``bias``), and so is its
  output. Where the variables hold a ``gradient_kernels`` collection
  (``with_gradient_kernels``), the input gradient reads this layer's flipped
  and transposed kernel from it instead of computing it: an octave's loop
  takes hundreds of input gradients with the same weights, and XLA does not
  hoist that weight-only work out of the loop (ResNet-50: 17 flips an
  iteration, 12% of its op time on a CPU).
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    groups = self.feature_group_count
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1] // groups, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps = None
    if self.has_variable(GRADIENT_KERNELS, "kernel"):
      taps = self.get_variable(GRADIENT_KERNELS, "kernel").astype(kernel.dtype)
    y = conv_general_dilated(x, kernel, self.strides, self.padding,
                             dimension_numbers=lax.conv_dimension_numbers(
                                 x.shape, kernel.shape, NHWC),
                             feature_group_count=groups, gradient_kernel=taps)
    return y if bias is None else y + bias

  def gradient_kernel(self, kernel, in_features: int):
    """What this layer's input gradient convolves with, for its ``kernel``
    (None where its rule needs nothing beyond the kernel)."""
    if self.dtype is not None:  # as ``promote_dtype`` casts it in ``__call__``
      kernel = kernel.astype(self.dtype)
    return gradient_kernel(kernel, (1, 1, 1, in_features), self.strides, self.padding,
                           self.feature_group_count)


def conv_recorder(found: dict):
  """A Flax method interceptor that records, in ``found``, ``{path: (layer,
  input channels)}`` of every ``Conv2d`` a pass meets (``conv_layers``)."""
  def record(next_fun, args, kwargs, context):
    layer = context.module
    if isinstance(layer, Conv2d) and context.method_name == "__call__":
      found[layer.path] = (layer.clone(parent=None, name=None), args[0].shape[-1])
    return next_fun(*args, **kwargs)
  return record


def with_gradient_kernels(layers, variables):
  """``variables`` with a ``gradient_kernels`` collection holding, for each
  of ``layers`` (``models.conv_layers``) whose rule needs one, its input
  gradient's kernel: flipped and transposed once, here, rather than at every
  gradient."""
  params = flax.traverse_util.flatten_dict(variables["params"])
  kernels = {}
  for path, layer, channels in layers:
    taps = layer.gradient_kernel(params[(*path, "kernel")], channels)
    if taps is not None:
      kernels[(*path, "kernel")] = taps
  if not kernels:
    return variables
  return {**variables, GRADIENT_KERNELS: flax.traverse_util.unflatten_dict(kernels)}


def conv(features: int, kernel_size: Pair, *, stride: Pair = 1,
         padding: Pair = 0, groups: int = 1, use_bias: bool = True,
         dtype: Any = None, name: str | None = None) -> Conv2d:
  """A ``torch.nn.Conv2d``-equivalent layer (explicit symmetric padding)."""
  pad_h, pad_w = pair(padding)
  return Conv2d(features, pair(kernel_size), strides=pair(stride),
                padding=((pad_h, pad_h), (pad_w, pad_w)), feature_group_count=groups,
                use_bias=use_bias, dtype=dtype, name=name)


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
