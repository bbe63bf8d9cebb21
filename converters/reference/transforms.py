"""PyTorch twins of the deterministic transforms in ``classgen_jax.transforms``,
``classgen_jax.blur`` and ``classgen_jax.colour``.

Each twin takes an NCHW batch (float32 or float64) and the parameters that
the JAX draws produce, one row per image (offsets ``(n, 2)``, flags ``(n,)``,
colour factors ``(n, 3)`` ...), as numpy arrays, tensors or nested lists.
With the same draws, twin and JAX agree to rounding (float64: <= 1e-12).

Where torchvision or torch has the function the article calls, the twin calls
it with the same parameters (``gaussian_blur``, ``interpolate``, ``pad``,
``adjust_*``), so the parity tests also check that the JAX transforms mean
what the article's code did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF


def _pair(size) -> tuple[int, int]:
  if isinstance(size, int):
    return size, size
  height, width = size
  return int(height), int(width)


def _per_image(values, n: int, width: int) -> np.ndarray:
  """``(n, width)`` parameters; a single row is used for every image."""
  if isinstance(values, torch.Tensor):
    values = values.detach().cpu().numpy()
  values = np.asarray(values)
  if values.ndim == 1:
    values = np.broadcast_to(values, (n, width))
  if values.shape != (n, width):
    raise ValueError(f"expected ({n}, {width}) parameters, got {values.shape}")
  return values


def _per_image_scalar(values, n: int) -> np.ndarray:
  if isinstance(values, torch.Tensor):
    values = values.detach().cpu().numpy()
  values = np.asarray(values)
  return np.broadcast_to(values, (n,))


def clip(x: torch.Tensor) -> torch.Tensor:
  """Clamps to [0, 1]."""
  return x.clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, *, sigma: float,
                  kernel_size: int = 3) -> torch.Tensor:
  """``torchvision.transforms.functional.gaussian_blur`` (reflect padding)."""
  return TF.gaussian_blur(x, [kernel_size, kernel_size], [float(sigma)] * 2)


def gaussian_blur_region(x: torch.Tensor, offsets, *, size, sigma: float,
                         kernel_size: int = 3,
                         context: bool = False) -> torch.Tensor:
  """Blurs the ``size`` region at each image's ``(top, left)`` offset.

  ``context=False`` is the article's fix: torchvision's blur on the crop
  tensor alone. ``context=True`` takes the region from a whole-image blur.
  """
  height, width = _pair(size)
  offsets = _per_image(offsets, x.shape[0], 2)
  source = gaussian_blur(x, sigma=sigma, kernel_size=kernel_size) if context \
      else x
  out = x.clone()
  for n, (top, left) in enumerate(offsets.tolist()):
    region = source[n:n + 1, :, top:top + height, left:left + width]
    if not context:
      region = gaussian_blur(region, sigma=sigma, kernel_size=kernel_size)
    out[n:n + 1, :, top:top + height, left:left + width] = region
  return out


def resize(x: torch.Tensor, size, *, method: str = "bilinear") -> torch.Tensor:
  """``torch.nn.functional.interpolate`` without antialiasing."""
  size = _pair(size)
  if method == "nearest":
    return F.interpolate(x, size=size, mode="nearest")
  if method == "bilinear":
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=False)
  raise ValueError(f"unknown method {method!r}")


def crop(x: torch.Tensor, offsets, *, size) -> torch.Tensor:
  """The ``size`` region at each image's ``(top, left)`` offset."""
  height, width = _pair(size)
  offsets = _per_image(offsets, x.shape[0], 2)
  return torch.stack([
      x[n, :, top:top + height, left:left + width]
      for n, (top, left) in enumerate(offsets.tolist())
  ])


def paste(x: torch.Tensor, patches: torch.Tensor, offsets) -> torch.Tensor:
  """Writes each patch into its image at ``(top, left)``."""
  offsets = _per_image(offsets, x.shape[0], 2)
  height, width = patches.shape[-2:]
  out = x.clone()
  for n, (top, left) in enumerate(offsets.tolist()):
    out[n, :, top:top + height, left:left + width] = patches[n]
  return out


def shift(x: torch.Tensor, offsets) -> torch.Tensor:
  """``torch.roll`` of each image by its ``(dy, dx)``."""
  offsets = _per_image(offsets, x.shape[0], 2)
  return torch.stack([
      torch.roll(x[n], shifts=(dy, dx), dims=(-2, -1))
      for n, (dy, dx) in enumerate(offsets.tolist())
  ])


def flip_horizontal(x: torch.Tensor, flipped) -> torch.Tensor:
  """Mirrors the images whose flag is true."""
  flags = torch.as_tensor(_per_image_scalar(flipped, x.shape[0]).copy(),
                          dtype=torch.bool, device=x.device)
  return torch.where(flags[:, None, None, None], TF.hflip(x), x)


def pad(x: torch.Tensor, *, width: int, value: float) -> torch.Tensor:
  """``torchvision.transforms.Pad(width, fill=value)``, the article's call."""
  return TF.pad(x, [width], fill=float(value))


def fill_border(x: torch.Tensor, *, width: int, value: float) -> torch.Tensor:
  """Pads the centre crop back: the border ring becomes ``value``."""
  if width == 0:
    return x.clone()
  return pad(x[..., width:-width, width:-width], width=width, value=value)


def adjust_color(x: torch.Tensor, factors, orders, *,
                 enabled: Sequence[bool] = (True, True, True)) -> torch.Tensor:
  """torchvision's ``adjust_brightness/contrast/saturation`` in each order.

  Args:
    x: ``(n, 3, h, w)``.
    factors: ``(n, 3)`` brightness, contrast, saturation factors.
    orders: ``(n, 3)`` permutations of ``0, 1, 2``.
    enabled: ops to apply, as in the JAX ``adjust_color``.

  Returns:
    The adjusted batch.
  """
  n = x.shape[0]
  factors = _per_image(factors, n, 3)
  orders = _per_image(orders, n, 3)
  adjusts = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
  out = []
  for image, image_factors, order in zip(x, factors.tolist(), orders.tolist()):
    image = image[None]
    for op in order:
      if enabled[op]:
        image = adjusts[op](image, image_factors[op])
    out.append(image[0])
  return torch.stack(out)


def _reflect(coordinate: torch.Tensor, size: int) -> torch.Tensor:
  if size == 1:
    return torch.zeros_like(coordinate)
  period = 2 * (size - 1)
  folded = torch.remainder(coordinate.abs(), period)
  return torch.where(folded > size - 1, period - folded, folded)


def affine(x: torch.Tensor, matrices) -> torch.Tensor:
  """``classgen_jax.transforms.affine`` of each image under its ``(2, 2)``
  matrix: bilinear, sources reflected into the image."""
  n, _, height, width = x.shape
  matrices = torch.as_tensor(np.asarray(matrices), dtype=x.dtype, device=x.device)
  matrices = matrices.reshape(n, 2, 2)
  dy = (torch.arange(height, dtype=x.dtype, device=x.device)[:, None] - (height - 1) / 2)
  dx = (torch.arange(width, dtype=x.dtype, device=x.device)[None, :] - (width - 1) / 2)
  m = matrices[:, :, :, None, None]
  source_y = _reflect((height - 1) / 2 + m[:, 0, 0] * dy + m[:, 0, 1] * dx, height)
  source_x = _reflect((width - 1) / 2 + m[:, 1, 0] * dy + m[:, 1, 1] * dx, width)
  y0 = source_y.floor().long().clamp(0, max(height - 2, 0))
  x0 = source_x.floor().long().clamp(0, max(width - 2, 0))
  y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
  wy = (source_y - y0)[:, None]
  wx = (source_x - x0)[:, None]
  batch = torch.arange(n, device=x.device)[:, None, None]

  def at(y, xs):
    return x[batch, :, y, xs].permute(0, 3, 1, 2)

  top = (1 - wx) * at(y0, x0) + wx * at(y0, x1)
  bottom = (1 - wx) * at(y1, x0) + wx * at(y1, x1)
  return (1 - wy) * top + wy * bottom


def pad_reflect(x: torch.Tensor, *, width: int) -> torch.Tensor:
  """Reflect padding on all four sides."""
  return F.pad(x, [width] * 4, mode="reflect")
