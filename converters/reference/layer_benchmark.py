"""Micro-benchmark of the layers whose input gradients the ports compute themselves.

For each op (the shapes the ports run at their native sizes), it times the
forward pass, XLA's default input gradient and the custom one, each jitted
alone on device-resident arrays. Backward times are the gradient alone: XLA
drops the unused forward of the default rule, and the custom max-pool
gradient is timed from the saved forward output, as in a training step.
The conv rows time ``conv_input_grad`` on every shape; the models use it
where ``conv_general_dilated``'s rule is ``"forward"`` at that shape (column
"used"). The ``[fwd]`` rows
compare forward passes instead: XLA's unpadded convolutions and
``reduce_window`` pools against the ports' (``forward_conv``,
``window_reduce``). Alone is not
inside a model: XLA's depthwise gradients, 4-8x slower here, made no such
difference inside EfficientNet-Lite0's compiled octave step.

``measure_loop`` (``--loop``) times dense convs as a generation loop runs
them: forward, ReLU and input gradient, iterated inside one jitted
``fori_loop``, once as a convolution with ``forward_grad_conv``'s gradient
and once as one matrix product (``patches_conv``); its ``LOOP_OPS`` are the
shapes ``patches_help`` was chosen on.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from classgen_jax import models


@dataclasses.dataclass(frozen=True)
class Op:
  """One layer at one shape (NHWC input of side ``size``, batch set later)."""
  name: str
  kind: str  # "conv", "max_pool"; forwards: "conv_forward", "max_forward", "avg_forward"
  size: int
  in_features: int
  kernel: int
  stride: int
  padding: tuple[int, int]  # (low, high), the same on both axes
  out_features: int = 0  # conv only
  groups: int = 1  # conv only
  ceil_mode: bool = False  # max_pool only (padding is then torch's, low only)


def _conv(name, size, cin, cout, k, s, pad, groups=1):
  return Op(name, "conv", size, cin, k, s, pad, cout, groups)


def _pool(name, size, c, k, s, p=0, ceil_mode=False):
  return Op(name, "max_pool", size, c, k, s, (p, p), ceil_mode=ceil_mode)


# Strided convs and max-pools of GoogLeNet, ResNet-18/50, Inception-v3 and
# EfficientNet-Lite0 at 224 (Inception-v3 at 299).
OPS = (
    _conv("stem 7x7/2 3->64 @224 (GoogLeNet, ResNet)", 224, 3, 64, 7, 2, (3, 3)),
    _conv("inception3 Conv2d_1a 3x3/2 3->32 @299", 299, 3, 32, 3, 2, (0, 0)),
    _conv("inception3 Mixed_6a 3x3/2 288->384 @35", 35, 288, 384, 3, 2, (0, 0)),
    _conv("inception3 Mixed_6a 3x3/2 96->96 @35", 35, 96, 96, 3, 2, (0, 0)),
    _conv("inception3 Mixed_7a 3x3/2 192->320 @17", 17, 192, 320, 3, 2, (0, 0)),
    _conv("resnet18 3x3/2 64->128 @56", 56, 64, 128, 3, 2, (1, 1)),
    _conv("resnet18 3x3/2 128->256 @28", 28, 128, 256, 3, 2, (1, 1)),
    _conv("resnet18 3x3/2 256->512 @14", 14, 256, 512, 3, 2, (1, 1)),
    _conv("resnet50 3x3/2 128->128 @56", 56, 128, 128, 3, 2, (1, 1)),
    _conv("resnet50 3x3/2 256->256 @28", 28, 256, 256, 3, 2, (1, 1)),
    _conv("resnet50 3x3/2 512->512 @14", 14, 512, 512, 3, 2, (1, 1)),
    _conv("resnet18 1x1/2 64->128 @56", 56, 64, 128, 1, 2, (0, 0)),
    _conv("resnet18 1x1/2 128->256 @28", 28, 128, 256, 1, 2, (0, 0)),
    _conv("resnet50 1x1/2 256->512 @56", 56, 256, 512, 1, 2, (0, 0)),
    _conv("resnet50 1x1/2 512->1024 @28", 28, 512, 1024, 1, 2, (0, 0)),
    _conv("resnet50 1x1/2 1024->2048 @14", 14, 1024, 2048, 1, 2, (0, 0)),
    _conv("effnet-lite0 stem 3x3/2 3->32 @224", 224, 3, 32, 3, 2, (0, 1)),
    _conv("effnet-lite0 dw 3x3/2 96 @112", 112, 96, 96, 3, 2, (0, 1), 96),
    _conv("effnet-lite0 dw 5x5/2 144 @56", 56, 144, 144, 5, 2, (1, 2), 144),
    _conv("effnet-lite0 dw 3x3/2 240 @28", 28, 240, 240, 3, 2, (0, 1), 240),
    _conv("effnet-lite0 dw 5x5/2 672 @14", 14, 672, 672, 5, 2, (1, 2), 672),
    _pool("googlenet pool 3x3/2 ceil 64 @112", 112, 64, 3, 2, ceil_mode=True),
    _pool("googlenet pool 3x3/2 ceil 192 @56", 56, 192, 3, 2, ceil_mode=True),
    _pool("googlenet pool 3x3/2 ceil 480 @28", 28, 480, 3, 2, ceil_mode=True),
    _pool("googlenet pool 2x2/2 ceil 832 @14", 14, 832, 2, 2, ceil_mode=True),
    _pool("googlenet branch4 3x3/1 p1 ceil 192 @28", 28, 192, 3, 1, 1, True),
    _pool("googlenet branch4 3x3/1 p1 ceil 512 @14", 14, 512, 3, 1, 1, True),
    _pool("googlenet branch4 3x3/1 p1 ceil 832 @7", 7, 832, 3, 1, 1, True),
    _pool("resnet stem pool 3x3/2 p1 64 @112", 112, 64, 3, 2, 1),
    _pool("inception3 pool 3x3/2 64 @147", 147, 64, 3, 2),
    _pool("inception3 pool 3x3/2 288 @35", 35, 288, 3, 2),
    # Forwards, XLA's against the ports' (``forward_conv``, ``window_reduce``).
    Op("[fwd] inception3 Conv2d_2a 3x3/1 valid 32->32 @149", "conv_forward", 149, 32, 3, 1,
       (0, 0), 32),
    Op("[fwd] inception3 Conv2d_4a 3x3/1 valid 80->192 @73", "conv_forward", 73, 80, 3, 1,
       (0, 0), 192),
    Op("[fwd] inception3 aux conv1 5x5/1 valid 128->768 @5", "conv_forward", 5, 128, 5, 1,
       (0, 0), 768),
    Op("[fwd] googlenet branch4 max 3x3/1 p1 ceil 192 @28", "max_forward", 28, 192, 3, 1,
       (1, 1), ceil_mode=True),
    Op("[fwd] resnet stem max 3x3/2 p1 64 @112", "max_forward", 112, 64, 3, 2, (1, 1)),
    Op("[fwd] inception3 avg 3x3/1 p1 288 @35", "avg_forward", 35, 288, 3, 1, (1, 1)),
)


# Dense convs at the benchmark's sizes (ResNet-18 at 160 px, ResNet-50 at 192,
# GoogLeNet at 224, Inception-v3 at 299): those ``patches_help`` takes as
# matrix products, and neighbours it leaves as convolutions.
LOOP_OPS = (
    _conv("resnet18 layer4 3x3/1 512 @5", 5, 512, 512, 3, 1, (1, 1)),
    _conv("resnet18 layer4 3x3/2 256->512 @10", 10, 256, 512, 3, 2, (1, 1)),
    _conv("resnet18 layer3 3x3/1 256 @10", 10, 256, 256, 3, 1, (1, 1)),
    _conv("resnet18 layer3 3x3/2 128->256 @20", 20, 128, 256, 3, 2, (1, 1)),
    _conv("resnet18 layer2 3x3/2 64->128 @40", 40, 64, 128, 3, 2, (1, 1)),
    _conv("resnet18 layer1 3x3/1 64 @40", 40, 64, 64, 3, 1, (1, 1)),
    _conv("resnet50 layer4 3x3/1 512 @6", 6, 512, 512, 3, 1, (1, 1)),
    _conv("resnet50 layer4 3x3/2 512 @12", 12, 512, 512, 3, 2, (1, 1)),
    _conv("resnet50 layer3 3x3/1 256 @12", 12, 256, 256, 3, 1, (1, 1)),
    _conv("resnet50 layer3 3x3/2 256 @24", 24, 256, 256, 3, 2, (1, 1)),
    _conv("resnet50 layer2 3x3/2 128 @48", 48, 128, 128, 3, 2, (1, 1)),
    _conv("googlenet inception5 3x3 160->320 @7", 7, 160, 320, 3, 1, (1, 1)),
    _conv("googlenet inception5 3x3 32->128 @7", 7, 32, 128, 3, 1, (1, 1)),
    _conv("googlenet inception4 3x3 112->224 @14", 14, 112, 224, 3, 1, (1, 1)),
    _conv("inception3 Mixed_7b 3x3 448->384 @8", 8, 448, 384, 3, 1, (1, 1)),
    _conv("inception3 Mixed_7a 3x3/2 192->320 @17", 17, 192, 320, 3, 2, (0, 0)),
    _conv("inception3 Mixed_6a 3x3/2 288->384 @35", 35, 288, 384, 3, 2, (0, 0)),
    _conv("inception3 Mixed_5b 3x3 64->96 @35", 35, 64, 96, 3, 1, (1, 1)),
    _conv("inception3 Conv2d_1a 3x3/2 3->32 @299", 299, 3, 32, 3, 2, (0, 0)),
    _conv("stem 7x7/2 3->64 @160 (ResNet)", 160, 3, 64, 7, 2, (3, 3)),
)


def _time_ms(fn: Callable, args, repeats: int) -> tuple[float, float]:
  """(min, median) milliseconds of ``fn(*args)`` after one compiling call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * min(times), 1e3 * float(np.median(times))


def _forwards(op: Op):
  """(ours, XLA's, ours) forwards of a forward row (``[fwd]``), in the
  columns of ``_functions``."""
  pads = (op.padding, op.padding)
  strides = (op.stride, op.stride)
  if op.kind == "conv_forward":
    def ours(x, w, g=None):
      del g
      return models.forward_conv(x, w, strides, pads)

    def xla(x, w, g=None):
      del g
      return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=models.NHWC)
    return ours, xla, ours
  pool_pads = tuple(models.torch_pool_padding(op.size, op.kernel, op.stride, op.padding[0],
                                              op.ceil_mode) for _ in range(2))
  if op.kind == "max_forward":
    def ours(x, w, g=None):
      del w, g
      return models.max_pool(x, op.kernel, op.stride, op.padding[0], ceil_mode=op.ceil_mode)

    def xla(x, w, g=None):
      del w, g
      return lax.reduce_window(x, -jnp.inf, lax.max, (1, op.kernel, op.kernel, 1),
                               (1, *strides, 1), ((0, 0), *pool_pads, (0, 0)))
    return ours, xla, ours

  def ours(x, w, g=None):
    del w, g
    return models.avg_pool(x, op.kernel, op.stride, op.padding[0])

  def xla(x, w, g=None):
    del w, g
    return nn.avg_pool(x, (op.kernel,) * 2, strides=strides, padding=pads,
                       count_include_pad=True)
  return ours, xla, ours


def _functions(op: Op):
  """(forward, default input gradient, custom input gradient) for ``op``; for
  a forward row, (ours, XLA's forward, ours)."""
  if op.kind.endswith("_forward"):
    return _forwards(op)
  pads = (op.padding, op.padding)
  strides = (op.stride, op.stride)
  if op.kind == "conv":

    def forward(x, w):
      return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=models.NHWC,
                                      feature_group_count=op.groups)

    def default(x, w, g):
      return jax.vjp(lambda x: forward(x, w), x)[1](g)[0]

    def custom(x, w, g):
      return models.conv_input_grad(g, w, x.shape, strides, pads, op.groups)

    return forward, default, custom

  pool_pads = tuple(models.torch_pool_padding(op.size, op.kernel, op.stride, op.padding[0],
                                          op.ceil_mode) for _ in range(2))

  def forward(x, w):
    del w
    return models.max_pool(x, op.kernel, op.stride, op.padding[0], ceil_mode=op.ceil_mode)

  def default(x, w, g):
    del w  # flax's max_pool: XLA's select_and_scatter gradient
    pool = lambda x: nn.max_pool(x, (op.kernel,) * 2, strides=strides,  # noqa: E731
                                 padding=pool_pads)
    return jax.vjp(pool, x)[1](g)[0]

  def custom(x, y, g):
    return models.max_pool_input_grad(x, y, g, (op.kernel,) * 2, strides, pool_pads)

  return forward, default, custom


def measure(op: Op, batch_size: int = 8, repeats: int = 10, dtype=jnp.float32) -> dict[str, Any]:
  """Forward, default-gradient and custom-gradient milliseconds (min and median
  over repeats), and whether the models use the custom gradient."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch_size, op.size, op.size, op.in_features)),
                  dtype)
  w = None
  if op.kind in ("conv", "conv_forward"):
    w = jnp.asarray(rng.standard_normal(
        (op.kernel, op.kernel, op.in_features // op.groups, op.out_features)), dtype)
  forward, default, custom = (jax.jit(f) for f in _functions(op))
  y = forward(x, w)
  g = jnp.asarray(rng.standard_normal(y.shape), dtype)
  np.testing.assert_allclose(np.asarray(custom(x, y if w is None else w, g)),
                             np.asarray(default(x, w, g)), rtol=1e-4, atol=1e-3)
  result = {"used": op.kind != "conv" or rule(op, batch_size) == "forward"}
  for key, fn, args in (("forward", forward, (x, w)), ("default_grad", default, (x, w, g)),
                        ("custom_grad", custom, (x, y if w is None else w, g))):
    result[key], result[key + "_median"] = _time_ms(fn, args, repeats)
  return result


def _header(batch_size: int, what: str) -> str:
  """A table's first line: the batch, the device and the load average."""
  load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
  return (f"batch {batch_size}, float32, {jax.devices()[0].platform} x{jax.device_count()}, "
          f"{os.cpu_count()} CPUs, load average {load}; {what}")


def _cells(r: dict[str, Any], keys) -> str:
  """Each key's min and median milliseconds."""
  return "".join(f"{r[k]:>9.2f} ({r[k + '_median']:>6.2f})" for k in keys)


def report(rows: dict[str, dict[str, Any]], batch_size: int) -> str:
  """A table of the measurements, with the load average it ran under."""
  lines = [_header(batch_size, "ms, min of repeats (median); [fwd] rows compare forwards: "
                   "'XLA grad' is XLA's forward, 'custom grad' ours"),
           f"{'op':44}{'forward':>17}{'XLA grad':>17}{'custom grad':>17}{'speed-up':>10}"
           f"{'used':>6}"]
  for name, r in rows.items():
    cells = _cells(r, ("forward", "default_grad", "custom_grad"))
    used = "yes" if r["used"] else "no"
    lines.append(f"{name:44}{cells}{r['default_grad'] / r['custom_grad']:>9.2f}x{used:>6}")
  return "\n".join(lines)


def rule(op: Op, batch_size: int) -> str:
  """The rule ``conv_general_dilated`` gives a conv op at this batch, on this
  backend: ``"forward"``, ``"patches"``, ``"pointwise"``, ``"depthwise"`` or
  ``"xla"``."""
  shape = (batch_size, op.size, op.size, op.in_features)
  kernel = (op.kernel, op.kernel, op.in_features // op.groups, op.out_features)
  how = models.conv_rule(shape, kernel, (op.stride, op.stride), (op.padding, op.padding),
                         dimension_numbers=lax.conv_dimension_numbers(shape, kernel, models.NHWC),
                         feature_group_count=op.groups)
  return how or "xla"


def measure_loop(op: Op, batch_size: int = 4, repeats: int = 7, iterations: int = 8,
                 dtype=jnp.float32) -> dict[str, Any]:
  """Milliseconds per iteration (min and median over repeats) of a jitted
  ``fori_loop`` whose every iteration runs a dense conv op forward, a ReLU
  and the input gradient, and moves the input by it: as a convolution
  (``forward_grad_conv``, XLA's forward) and as one matrix product
  (``patches_conv``); and the rule the models give it (``rule``)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch_size, op.size, op.size, op.in_features)), dtype)
  w = jnp.asarray(0.05 * rng.standard_normal(
      (op.kernel, op.kernel, op.in_features, op.out_features)), dtype)
  strides, pads = (op.stride, op.stride), (op.padding, op.padding)
  taps = models.input_grad_taps(w, strides)
  convs = {
      "convolution": lambda x, w, taps: models.forward_grad_conv(x, w, strides, pads, taps=taps),
      "products": lambda x, w, taps: models.patches_conv(x, w, strides, pads),
  }
  y = convs["convolution"](x, w, taps)
  r = jnp.asarray(rng.standard_normal(y.shape), dtype)
  np.testing.assert_allclose(np.asarray(convs["products"](x, w, taps)), np.asarray(y),
                             rtol=1e-4, atol=1e-3)
  result = {"rule": rule(op, batch_size), "gflop": 4 * y.size * op.kernel ** 2
            * op.in_features / 1e9}
  for key, conv in convs.items():
    def loop(x, w, taps, r, conv=conv):
      def body(_, x):
        grad = jax.grad(lambda x: jnp.sum(jax.nn.relu(conv(x, w, taps)) * r))(x)
        return x + 1e-3 * grad
      return lax.fori_loop(0, iterations, body, x)
    fastest, median = _time_ms(jax.jit(loop), (x, w, taps, r), repeats)
    result[key], result[key + "_median"] = fastest / iterations, median / iterations
  return result


def report_loop(rows: dict[str, dict[str, Any]], batch_size: int) -> str:
  """A table of ``measure_loop``'s rows, with the load average it ran under."""
  lines = [_header(batch_size, "ms per iteration of forward + input gradient in a jitted "
                   "loop, min of repeats (median); GFLOP/s from the min"),
           f"{'op':44}{'convolution':>17}{'products':>17}{'conv GF/s':>10}{'prod GF/s':>10}"
           f"{'speed-up':>10}{'rule':>10}"]
  for name, r in rows.items():
    cells = _cells(r, ("convolution", "products"))
    rates = "".join(f"{r['gflop'] / r[k] * 1e3:>10.0f}" for k in ("convolution", "products"))
    lines.append(f"{name:44}{cells}{rates}{r['convolution'] / r['products']:>9.2f}x"
                 f"{r['rule']:>10}")
  return "\n".join(lines)
