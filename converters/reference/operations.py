"""Torch twins of ``classgen_jax.operations``, found by type.

Each twin takes the operation, an NCHW batch, the operation's draws for the
batch (numpy, as ``step.random_draws`` returns them) and a ``Context``
whose region, when the view is a crop, holds the batch's ``(N, 2)`` offsets.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from classgen_jax import operations as ops
from converters.reference import transforms as TT
from converters.reference._registry import Twins

OPERATIONS = Twins("operation")


def linear(pair: tuple[float, float], iteration: int, iterations: int) -> float:
  """``updates.linear`` in Python floats (the torch loop's schedules)."""
  start, end = pair
  n = max(iterations, 1)
  return start + (end - start) * min(iteration, n) / n


class Context(NamedTuple):
  """``operations.Context`` for a torch batch (host ints, numpy offsets)."""
  iteration: int
  iterations: int
  region: tuple[Any, int] | None = None


@OPERATIONS.register(ops.Crop)
def _crop(op: ops.Crop, x: torch.Tensor, params, context) -> torch.Tensor:
  del context
  return x if params is None else TT.crop(x, params, size=op.size)


@OPERATIONS.register(ops.Roll)
def _roll(op, x, params, context):
  del op, context
  return TT.shift(x, params)


@OPERATIONS.register(ops.Flip)
def _flip(op, x, params, context):
  del op, context
  return TT.flip_horizontal(x, params)


@OPERATIONS.register(ops.Pad)
def _pad(op, x, params, context):
  del params, context
  if op.mode == "reflect":
    return TT.pad_reflect(x, width=op.width)
  return TT.pad(x, width=op.width, value=op.value)


def _matrices(make, params, x):
  angles = torch.as_tensor(np.asarray(params), dtype=x.dtype).reshape(-1)
  return torch.stack([make(a) for a in angles])


@OPERATIONS.register(ops.Scale)
def _scale(op, x, params, context):
  del op, context
  return TT.affine(x, _matrices(lambda s: torch.eye(2, dtype=x.dtype) / s, params, x))


@OPERATIONS.register(ops.Rotate)
def _rotate(op, x, params, context):
  del op, context

  def rotation(degrees):
    angle = torch.deg2rad(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])

  return TT.affine(x, _matrices(rotation, params, x))


@OPERATIONS.register(ops.Noise)
def _noise(op, x, params, context):
  del op, context
  noise = torch.as_tensor(np.asarray(params), dtype=x.dtype, device=x.device)
  return x + noise.permute(0, 3, 1, 2)


@OPERATIONS.register(ops.Box)
def _box(op, x, params, context):
  """Per image, the box's bilinear samples, by the same arithmetic."""
  del context
  params = torch.as_tensor(np.asarray(params), dtype=x.dtype, device=x.device).reshape(-1, 3)
  side = x.shape[-1]
  views = []
  for image, (cy, cx, fraction) in zip(x, params):
    size = fraction.clamp(1.0 / side, 1.0) * side
    steps = (torch.arange(op.out, dtype=x.dtype, device=x.device) + 0.5) * (size / op.out) - 0.5
    coords = []
    for centre in (cy, cx):
      top = (centre * side - size / 2).clamp(0.0, side - size)
      source = (top + steps).clamp(0.0, side - 1.0)
      low = source.floor().long().clamp(0, max(side - 2, 0))
      coords.append((low, (low + 1).clamp(max=side - 1), source - low))
    (y0, y1, wy), (x0, x1, wx) = coords
    wy, wx = wy[:, None], wx[None, :]
    top_row = (1 - wx) * image[:, y0][:, :, x0] + wx * image[:, y0][:, :, x1]
    bottom_row = (1 - wx) * image[:, y1][:, :, x0] + wx * image[:, y1][:, :, x1]
    views.append((1 - wy) * top_row + wy * bottom_row)
  return torch.stack(views)


@OPERATIONS.register(ops.Glance)
def _glance(op, x, params, context):
  """Per image: blurred with its own sigma, or left as it is (sigma 0)."""
  del context
  sigmas = np.asarray(params).reshape(-1)
  side = x.shape[-1]
  kernel = min(op.kernel(side), 2 * ((side - 1) // 2) - 1)
  return torch.cat([TT.gaussian_blur(x[i:i + 1], sigma=float(s), kernel_size=kernel) if s > 0
                    else x[i:i + 1] for i, s in enumerate(sigmas)])


@OPERATIONS.register(ops.ColourJitter)
def _colour(op, x, params, context):
  del context
  return TT.adjust_color(x, params.factors, params.order, enabled=op.enabled)


@OPERATIONS.register(ops.PadRing)
def _pad_ring(op, x, params, context):
  del params, context
  return TT.fill_border(x, width=op.width, value=op.value)


@OPERATIONS.register(ops.Blur)
def _blur(op, x, params, context):
  del params
  if op.until is not None and context.iteration >= op.until:
    return x
  sigma = linear(op.sigma, context.iteration, context.iterations)
  if op.region == "crop" and context.region is not None:
    offsets, size = context.region
    return TT.gaussian_blur_region(x, offsets, size=size, sigma=sigma, kernel_size=op.kernel)
  return TT.gaussian_blur(x, sigma=sigma, kernel_size=op.kernel)


@OPERATIONS.register(ops.Clip)
def _clip(op, x, params, context):
  del op, params, context
  return TT.clip(x)


@OPERATIONS.register(ops.ResizeCycle)
def _resize(op, x, params, context):
  """``params``: the side to resize to."""
  del context
  return x if params == x.shape[-1] else TT.resize(x, params, method=op.interpolation)
