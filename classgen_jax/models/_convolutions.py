"""The convolutions of the torchvision ports, and their input gradients.

Generation only ever differentiates with respect to the input image, and
some of XLA:CPU's convolution input gradients are far slower than their
forward passes: that of a strided image stem (a convolution of a
zero-dilated gradient, ~3-5x), and, inside the generation loop's ``while``,
that of every stride-1 convolution: there XLA:CPU keeps the transposed
kernel as a relabelling of its dimensions and runs the convolution outside
its fast (YNNPACK) kernels, ~3x slower than the same gradient compiled
alone. ``conv_general_dilated`` (the one every port's ``nn.Conv`` calls,
through ``_layers.conv``) gives them custom VJPs built from strided slices,
pads and plain forward convolutions, with torch's gradients
(``scripts/benchmark_layers.py`` times them alone,
``scripts/benchmark.py --breakdown`` inside the step). On a CPU, dense
convolutions with small outputs and strided ones are one matrix product
instead (``patches_conv``, ``patches_help``), forward and backward. NHWC
images, HWIO kernels.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

# The dimension numbers of every convolution here: images, kernels, outputs.
NHWC = ("NHWC", "HWIO", "NHWC")


def phase_split_helps(in_features: int, groups: int) -> bool:
  """Whether ``conv_input_grad`` beats XLA:CPU's input gradient for this
  strided conv inside the generation loop.

  For every dense (``groups == 1``) one. Alone, image stems (3 input
  channels) were 1.4-2.6x faster with it and convs with 32+ input channels
  1.3-5x slower (``scripts/benchmark_layers.py``, batch 8, float32, 2 cores);
  but inside the octave's loop XLA's rule (a convolution of the zero-dilated
  gradient) leaves the fast YNNPACK kernels, and ResNet-50's octave step is
  5% faster with the phase split for all of them. Depthwise convs have their
  own rule (``depthwise_conv``); other grouped ones keep XLA's.
  ``in_features`` is kept for callers that report the choice per layer.
  """
  del in_features
  return groups == 1


# The rules ``conv_general_dilated`` can give a convolution, and, innermost
# ``rules_off`` last, those turned off.
RULES = ("pointwise", "depthwise", "patches", "forward")
_OFF = [frozenset()]


@contextlib.contextmanager
def rules_off(*names: str):
  """Within it, ``conv_general_dilated`` gives no convolution the named rules
  (``RULES``; a convolution that would take one takes the next that fits,
  else XLA's own), to compare with them; a program traced inside keeps them."""
  unknown = set(names) - set(RULES)
  if unknown:
    raise ValueError(f"unknown convolution rules {sorted(unknown)}; choose from {RULES}")
  _OFF.append(_OFF[-1] | frozenset(names))
  try:
    yield
  finally:
    _OFF.pop()


def plain_convolutions():
  """Within it, ``conv_general_dilated`` traces XLA's own convolution and
  gradient (every rule off: ``rules_off``)."""
  return rules_off(*RULES)


def rule(lhs_shape, rhs_shape, window_strides, padding, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
         **kwargs) -> str | None:
  """Which rule ``conv_general_dilated`` gives a convolution: ``"pointwise"``
  (a matrix product), ``"depthwise"`` (taps), ``"patches"`` (``patches_conv``),
  ``"forward"`` (``forward_grad_conv``), or None (XLA's own). Shapes only."""
  strides = tuple(window_strides)
  off = _OFF[-1]
  if (kwargs or len(lhs_shape) != 4 or isinstance(padding, str)
      or any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
      or dimension_numbers != lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC)
      or min(min(p) for p in padding) < 0):
    return None
  if ("pointwise" not in off and tuple(rhs_shape[:2]) == (1, 1) and feature_group_count == 1
      and not any(map(any, padding))):
    return "pointwise"
  if "depthwise" not in off and feature_group_count == lhs_shape[-1] == rhs_shape[-1] > 1:
    return "depthwise"
  if "patches" not in off and patches_help(lhs_shape, rhs_shape, strides, padding,
                                           feature_group_count):
    return "patches"
  if "forward" not in off and (max(strides) == 1
                               or phase_split_helps(lhs_shape[-1], feature_group_count)):
    return "forward"
  return None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, precision=None, *,
                         gradient_kernel=None, **kwargs):
  """``lax.conv_general_dilated`` whose input gradient is a forward convolution.

  A drop-in for ``nn.Conv(conv_general_dilated=...)``. For an NHWC/HWIO
  convolution with explicit non-negative padding and no dilation, the input
  gradient is ``conv_input_grad`` (one stride-1 convolution with the flipped,
  transposed kernel) when the stride is 1 or ``phase_split_helps``. The
  forward pass is unchanged; the weight gradient, never needed to generate
  images, uses JAX's rule and is computed only when asked for. Anything else
  is ``lax.conv_general_dilated`` unchanged.

  ``gradient_kernel``: ``gradient_kernel(rhs, ...)`` of this convolution,
  computed beforehand (``layers.Conv2d`` keeps it as a variable, so that a
  loop taking many input gradients with the same weights does not flip and
  transpose them at every iteration); None: computed where it is used.
  """
  how = rule(lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation,
             dimension_numbers, feature_group_count, **kwargs)
  strides = tuple(window_strides)
  if how == "pointwise":
    return pointwise_conv(lhs, rhs, strides, precision)
  padding = tuple(tuple(p) for p in padding) if how else padding
  if how == "depthwise":
    return depthwise_conv(lhs, rhs, gradient_kernel, strides, padding)
  if how == "patches":
    return patches_conv(lhs, rhs, strides, padding, precision)
  if how == "forward":
    return forward_grad_conv(lhs, rhs, strides, padding, feature_group_count, precision,
                             gradient_kernel)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision, **kwargs)


def gradient_kernel(rhs, lhs_shape, window_strides, padding, feature_group_count: int = 1,
                    **kwargs):
  """What the input gradient of ``conv_general_dilated(lhs, rhs, ...)`` convolves
  with, a function of the kernel alone: the flipped (depthwise) or flipped and
  transposed (``conv_input_grad``) kernel; None where its rule needs none."""
  dimension_numbers = lax.conv_dimension_numbers(lhs_shape, rhs.shape, NHWC)
  # The image's size is not known here (``lhs_shape`` may be a placeholder),
  # so the kernel is prepared for the rule the layer has where ``patches_help``
  # says no, at sizes other than the ones it says yes to.
  with rules_off("patches"):
    how = rule(lhs_shape, rhs.shape, window_strides, padding,
               dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
               **kwargs)
  if how == "depthwise":
    return rhs[::-1, ::-1]
  if how == "forward":
    return input_grad_taps(rhs, tuple(window_strides), feature_group_count)
  return None


def pointwise_conv(x, kernel, strides=(1, 1), precision=None):
  """An unpadded 1x1 NHWC/HWIO convolution as a matrix product (after
  striding), in both directions: XLA:CPU runs 1x1 convolutions 2-13x slower
  than the same ``dot_general`` (EfficientNet-Lite's expand and project
  layers, batch 8), and JAX's gradient of a product is a product."""
  if tuple(strides) != (1, 1):
    x = x[:, ::strides[0], ::strides[1]]
  return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())), precision=precision)


def patches_help(lhs_shape, rhs_shape, strides, padding, groups: int = 1) -> bool:
  """Whether ``patches_conv`` beats the convolution and its input gradient
  (``forward_grad_conv``) for this dense convolution on a CPU.

  For strided ones with kernels of 3x3 or smaller, and stride-1 ones with
  outputs of 64 pixels or fewer and products at least 1024 long. Inside the
  octave's loop (``scripts/benchmark_layers.py --loop`` times the layers;
  docs/benchmarks.md, "Small convolutions as matrix products"), XLA's
  convolutions of 8x8 outputs or fewer ran at 90-280 GFLOP/s (across runs)
  against 220-370 for the product, and a strided one's stride-phase gradient is slow
  at any size; ResNet-18's octave step is 1.2x faster with the rule,
  ResNet-50's and Inception-v3's 1.05-1.09x. Image stems (3 channels; 3x3
  ones are faster as products alone, not in a model) and 7x7 ones stay
  convolutions, as do larger stride-1 outputs and short products (GoogLeNet's
  32- and 48-channel 3x3 ones). ``padding`` is explicit; shapes only. Never
  on other backends, whose convolutions are their fast path.
  """
  kh, kw, in_features, _ = rhs_shape
  if (jax.default_backend() != "cpu" or groups != 1 or (kh, kw) == (1, 1)
      or in_features <= 4):
    return False
  if max(strides) > 1:
    return kh * kw <= 9
  (top, bottom), (left, right) = padding
  pixels = (lhs_shape[1] + top + bottom - kh + 1) * (lhs_shape[2] + left + right - kw + 1)
  return pixels <= 64 and kh * kw * in_features >= 1024


def patches_conv(x, kernel, strides=(1, 1), padding=((0, 0), (0, 0)), precision=None):
  """A dense NHWC/HWIO convolution as one matrix product: the input's windows
  side by side (``(n, oh, ow, kh * kw * in)``, tap-major as the kernel's rows)
  times the kernel. JAX's gradient of it is a product and the windows summed
  back, equal to the convolution's to rounding (``patches_help``: where it is
  faster)."""
  kh, kw, in_features, out_features = kernel.shape
  patches = jnp.concatenate(
      [window for _, window in _windows(x, (kh, kw), tuple(strides), padding)], axis=3)
  return lax.dot_general(patches, kernel.reshape(kh * kw * in_features, out_features),
                         (((3,), (0,)), ((), ())), precision=precision)


def _depthwise_taps(x, kernel, strides, padding):
  """A depthwise conv as a sum over its taps of strided slices times weights.

  XLA:CPU runs ``feature_group_count == channels`` convolutions through a
  generic kernel at 1-10 GFLOP/s; this elementwise form fuses into one loop
  (EfficientNet-Lite's 3x3 and 5x5 depthwise layers: 6-45x faster, batch 8).
  """
  total = None
  for (a, b), window in _windows(x, kernel.shape[:2], strides, padding):
    term = window * kernel[a, b, 0]
    total = term if total is None else total + term
  return total


def _windows(x, kernel_size, strides, padding):
  """``((a, b), window)`` for each tap of a ``kernel_size`` convolution of
  ``x`` (NHWC, explicitly padded): the padded input's pixels that tap meets,
  a strided slice of the output's size."""
  (kh, kw), (sh, sw) = kernel_size, strides
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
  n, height, width, c = x.shape
  oh, ow = (height - kh) // sh + 1, (width - kw) // sw + 1
  for a in range(kh):
    for b in range(kw):
      yield (a, b), lax.slice(x, (0, a, b, 0), (n, a + (oh - 1) * sh + 1, b + (ow - 1) * sw + 1, c),
                              (1, sh, sw, 1))


def depthwise_conv(x, kernel, flipped=None, strides=(1, 1), padding=((0, 0), (0, 0))):
  """A depthwise (one filter per channel) NHWC conv, ``kernel`` ``(kh, kw, 1, c)``.

  Computed as ``_depthwise_taps``, forward and backward: the input gradient
  is the output gradient, zero-dilated by the stride, through the flipped
  kernel (``flipped``, ``kernel[::-1, ::-1]``, if given). ``padding`` is
  explicit and non-negative; forward-mode differentiation is not supported.
  """
  return _depthwise_conv(x, kernel, kernel[::-1, ::-1] if flipped is None else flipped,
                         tuple(strides), tuple(tuple(p) for p in padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _depthwise_conv(x, kernel, flipped, strides, padding):
  del flipped  # only the input gradient reads it
  return _depthwise_taps(x, kernel, strides, padding)


def _depthwise_conv_fwd(x, kernel, flipped, strides, padding):
  y = _depthwise_conv(x.value, kernel.value, flipped.value, strides, padding)
  return y, (x.value, kernel.value, flipped.value, x.perturbed, kernel.perturbed)


def _depthwise_conv_bwd(strides, padding, residuals, g):
  x, kernel, flipped, x_perturbed, kernel_perturbed = residuals
  if isinstance(g, SymbolicZero):
    g = jnp.zeros(g.shape, g.dtype)
  dx = dkernel = None
  if x_perturbed:
    kh, kw = kernel.shape[:2]
    # Gradient row i of the input collects output rows o with
    # o * stride + a = i + top; dilating g by the stride and padding it by
    # kernel - 1 - top (low) turns that into a stride-1 correlation with the
    # flipped kernel, cut to the input's side by the high padding.
    pads = []
    for side, out, k, stride, (low, _) in zip(x.shape[1:3], g.shape[1:3], (kh, kw),
                                              strides, padding):
      low = k - 1 - low
      pads.append((low, side + k - 1 - low - ((out - 1) * stride + 1), stride - 1))
    dilated = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), *pads, (0, 0, 0)))
    dx = _depthwise_taps(dilated, flipped, (1, 1), ((0, 0), (0, 0)))
  if kernel_perturbed:
    _, vjp = jax.vjp(lambda k: _depthwise_taps(x, k, strides, padding), kernel)
    (dkernel,) = vjp(g)
  return dx, dkernel, None  # the output does not depend on ``flipped``


_depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd, symbolic_zeros=True)


def forward_grad_conv(x, kernel, strides, padding, groups: int = 1, precision=None,
                      taps=None):
  """An NHWC/HWIO conv whose input gradient is always ``conv_input_grad``.

  ``padding`` is explicit, ``((top, bottom), (left, right))``; ``taps``:
  ``input_grad_taps(kernel, strides, groups)`` if computed beforehand.
  Forward-mode differentiation (``jax.jvp``) is not supported.
  """
  strides, padding = tuple(strides), tuple(tuple(p) for p in padding)
  if taps is None:
    taps = input_grad_taps(kernel, strides, groups)
  return _forward_grad_conv(x, kernel, taps, strides, padding, groups, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _forward_grad_conv(x, kernel, taps, strides, padding, groups, precision):
  del taps  # only the input gradient reads them
  return forward_conv(x, kernel, strides, padding, groups, precision)


# Unpadded stride-1 convolutions with outputs at least this wide are padded
# and cut on a CPU (``forward_conv``).
_PAD_VALID_FROM = 24


def forward_conv(x, kernel, strides, padding, groups: int = 1, precision=None):
  """XLA's NHWC/HWIO convolution, except that on a CPU an unpadded stride-1
  one with a kernel wider than 1x1 and an output at least
  ``_PAD_VALID_FROM`` pixels wide is computed padded by one pixel all round
  and cut: XLA:CPU runs those 2.5-5x slower than the same convolution padded
  (Inception-v3's Conv2d_2a_3x3 and Conv2d_4a_3x3, batch 4: 20 and 80
  GFLOP/s as they are, 107 and 196 padded and cut;
  ``scripts/benchmark_layers.py --only=valid``). Equal to rounding."""
  kh, kw = kernel.shape[:2]
  oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  if (jax.default_backend() == "cpu" and tuple(strides) == (1, 1) and kh > 1 and kw > 1
      and not any(map(any, padding)) and min(oh, ow) >= _PAD_VALID_FROM):
    y = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC,
                                 feature_group_count=groups, precision=precision)
    return y[:, 1:1 + oh, 1:1 + ow]
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC,
                                  feature_group_count=groups, precision=precision)


def _forward_grad_conv_fwd(x, kernel, taps, strides, padding, groups, precision):
  y = _forward_grad_conv(x.value, kernel.value, taps.value, strides, padding, groups,
                         precision)
  return y, (x.value, kernel.value, taps.value, x.perturbed, kernel.perturbed)


def _forward_grad_conv_bwd(strides, padding, groups, precision, residuals, g):
  x, kernel, taps, x_perturbed, kernel_perturbed = residuals
  if isinstance(g, SymbolicZero):
    g = jnp.zeros(g.shape, g.dtype)
  dx = dkernel = None
  if x_perturbed:
    dx = conv_input_grad(g, kernel, x.shape, strides, padding, groups, precision, taps)
  if kernel_perturbed:
    _, vjp = jax.vjp(
        lambda k: lax.conv_general_dilated(
            x, k, strides, padding, dimension_numbers=NHWC,
            feature_group_count=groups, precision=precision), kernel)
    (dkernel,) = vjp(g)
  return dx, dkernel, None  # the output does not depend on ``taps``


_forward_grad_conv.defvjp(_forward_grad_conv_fwd, _forward_grad_conv_bwd, symbolic_zeros=True)


def input_grad_taps(kernel, strides, groups: int = 1):
  """The kernel ``conv_input_grad`` convolves with: ``kernel`` (HWIO) flipped
  and transposed (out -> in within each group); for a strided one (not 1x1),
  each stride phase's taps side by side, zero-padded to a whole number of
  strides. A function of the kernel alone, computed once per set of weights
  where it can be (``gradient_kernel``)."""
  kh, kw, in_per_group, out_features = kernel.shape
  sh, sw = strides
  out_per_group = out_features // groups
  if (sh, sw) == (1, 1) or (kh, kw) == (1, 1):
    taps = kernel.reshape(kh, kw, in_per_group, groups, out_per_group)
    taps = taps.transpose(0, 1, 4, 3, 2)[::-1, ::-1]
    return taps.reshape(kh, kw, out_per_group, groups * in_per_group)
  # Phase (r, t) fills the padded input's pixels [r::sh, t::sw] from the
  # taps kernel[r::sh, t::sw] (qh x qw at most; zero-padded). All phases are
  # one stride-1 convolution whose outputs are grouped (group, phase, input
  # channel): flipped taps turn its correlation into the transposed one.
  qh, qw = -(-kh // sh), -(-kw // sw)
  taps = jnp.pad(kernel, ((0, qh * sh - kh), (0, qw * sw - kw), (0, 0), (0, 0)))
  taps = taps.reshape(qh, sh, qw, sw, in_per_group, groups, out_per_group)
  taps = taps.transpose(0, 2, 6, 5, 1, 3, 4)[::-1, ::-1]
  return taps.reshape(qh, qw, out_per_group, groups * sh * sw * in_per_group)


def conv_input_grad(g, kernel, x_shape, strides, padding, groups: int = 1,
                    precision=None, taps=None):
  """The input gradient of an NHWC/HWIO convolution, as one stride-1 conv.

  A stride-1 convolution's input gradient is the output gradient convolved
  with the kernel flipped and transposed (out -> in within each group); a
  strided one's is split into its stride phases, all computed by one such
  convolution and interleaved.

  Args:
    g: gradient of the convolution's output, ``(n, oh, ow, out)``.
    kernel: the HWIO kernel, ``(kh, kw, in // groups, out)``.
    x_shape: the input's shape ``(n, h, w, in)``.
    strides: ``(sh, sw)``.
    padding: explicit ``((top, bottom), (left, right))``, each >= 0.
    groups: ``feature_group_count``.
    precision: passed to every convolution.
    taps: ``input_grad_taps(kernel, strides, groups)``, if computed
      beforehand.

  Returns:
    The gradient with respect to the input, of shape ``x_shape``.
  """
  n, height, width, in_features = x_shape
  kh, kw, in_per_group, _ = kernel.shape
  (sh, sw), ((top, bottom), (left, right)) = strides, padding
  oh, ow = g.shape[1:3]
  if taps is None:
    taps = input_grad_taps(kernel, strides, groups)
  if (sh, sw) == (1, 1) or (kh, kw) == (1, 1):
    if (kh, kw) == (1, 1):  # any stride: the transposed 1x1 conv, spread out
      grad = lax.conv_general_dilated(g, taps, (1, 1), ((0, 0), (0, 0)),
                                      dimension_numbers=NHWC, feature_group_count=groups,
                                      precision=precision)
      return lax.pad(grad, jnp.zeros((), grad.dtype), (
          (0, 0, 0), (-top, height + top - (oh - 1) * sh - 1, sh - 1),
          (-left, width + left - (ow - 1) * sw - 1, sw - 1), (0, 0, 0)))
    return lax.conv_general_dilated(
        g, taps, (1, 1),
        ((kh - 1 - top, height - oh + top), (kw - 1 - left, width - ow + left)),
        dimension_numbers=NHWC, feature_group_count=groups, precision=precision)
  # Phase (r, t) fills the padded input's pixels [r::sh, t::sw], mh x mw of them.
  mh, mw = -(-(height + top + bottom) // sh), -(-(width + left + right) // sw)
  qh, qw = taps.shape[:2]
  phases = lax.conv_general_dilated(
      g, taps, (1, 1), ((qh - 1, mh - oh), (qw - 1, mw - ow)),
      dimension_numbers=NHWC, feature_group_count=groups, precision=precision)
  phases = phases.reshape(n, mh, mw, groups, sh, sw, in_per_group)
  grad = phases.transpose(0, 1, 4, 2, 5, 3, 6).reshape(n, mh * sh, mw * sw, in_features)
  return grad[:, top:top + height, left:left + width, :]
