"""Canvas operations: on the canvas before the gradient or after the update
(colour jitter, the padding ring, blur, clipping), and the cyclic resize.
See ``classgen_jax.operations``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from classgen_jax import blur, colour, resize_cycle
from classgen_jax import transforms as T
from classgen_jax.operation import Operation, scale_count
from classgen_jax.updates import linear

_REGIONS = ("image", "crop")
_INTERPOLATIONS = ("bilinear", "nearest")


@dataclasses.dataclass(frozen=True)
class ColourJitter(Operation):
  """torchvision's ``ColorJitter`` (no hue): factors and order drawn per image.

  Each enabled op also clamps to [0, 1], as torchvision's does.
  """
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  stream: ClassVar[int] = 3

  def __post_init__(self):
    for name in ("brightness", "contrast", "saturation"):
      if getattr(self, name) < 0:
        raise ValueError(f"ColourJitter.{name} must be >= 0, got {getattr(self, name)}")

  def draw(self, key, side, dtype):
    del side
    return colour.draw_color_jitter(key, brightness=self.brightness, contrast=self.contrast,
                                    saturation=self.saturation, dtype=dtype)

  @property
  def enabled(self) -> tuple[bool, bool, bool]:
    return (bool(self.brightness), bool(self.contrast), bool(self.saturation))

  def __call__(self, image, params, context):
    del context
    return colour.adjust_color(image, params, enabled=self.enabled)


@dataclasses.dataclass(frozen=True)
class PadRing(Operation):
  """Paint a ring of ``width`` px of ``value`` around the image (the article's
  ``Pad([1, 1], fill=0.7)``, kept at a fixed size: see ``transforms.fill_border``)."""
  value: float
  width: int = 1

  def __call__(self, image, params, context):
    del params, context
    return T.fill_border(image, width=self.width, value=self.value)


@dataclasses.dataclass(frozen=True)
class Blur(Operation):
  """Gaussian blur with torchvision's kernel, sigma decaying linearly.

  Attributes:
    sigma: (first, last) sigma over the octave.
    kernel: odd kernel side.
    until: blur only the first this-many iterations (None: all).
    region: ``"image"``, or ``"crop"``: only the region the view showed,
      which avoids the washed-out border the article shows.
  """
  sigma: tuple[float, float]
  kernel: int = 3
  until: int | None = None
  region: str = "image"

  def __post_init__(self):
    if self.kernel % 2 != 1:
      raise ValueError(f"Blur.kernel must be odd, got {self.kernel}")
    if self.region not in _REGIONS:
      raise ValueError(f"Blur.region must be one of {_REGIONS}, got {self.region!r}")

  def __call__(self, image, params, context):
    del params
    sigma = linear(*self.sigma, context.iterations)(context.iteration)
    if self.region == "crop" and context.region is not None:
      offset, size = context.region
      blurred = blur.gaussian_blur_region(image, offset, size=size, sigma=sigma,
                                          kernel_size=self.kernel)
    else:
      blurred = blur.gaussian_blur(image, sigma=sigma, kernel_size=self.kernel)
    active = True if self.until is None else context.iteration < self.until
    return jnp.where(active, blurred, image)

  def scaled(self, factor):
    return dataclasses.replace(self, until=scale_count(self.until, factor))


@dataclasses.dataclass(frozen=True)
class Clip(Operation):
  """Clip to [0, 1]."""

  def __call__(self, image, params, context):
    del params, context
    return T.clip(image)


# ----------------------------------------------------------------------------
# The cyclic resize (changes the canvas size: an octave field, not a step op).


@dataclasses.dataclass(frozen=True)
class ResizeCycle(Operation):
  """The article's resilience resize: iteration ``i < until`` resizes the
  canvas to ``sizes[i % len(sizes)]``; from ``until`` on it keeps its size.

  Attributes:
    sizes: the cycle.
    until: iterations that resize.
    interpolation: ``"nearest"`` (``F.interpolate``'s default, which drifts
      the image to the bottom-right) or ``"bilinear"``.
  """
  sizes: tuple[int, ...]
  until: int
  interpolation: str = "nearest"

  def __post_init__(self):
    if self.interpolation not in _INTERPOLATIONS:
      raise ValueError(f"ResizeCycle.interpolation must be one of {_INTERPOLATIONS}, got "
                       f"{self.interpolation!r}")
    if not self.sizes:
      raise ValueError("ResizeCycle needs at least one size")

  def canvas_sides(self, start: int) -> tuple[int, ...]:
    """Every side the canvas takes in the octave (``[0]``: at its start)."""
    return (start, *self.sizes) if self.until > 0 else (start,)

  def indices(self, iteration, iterations: int):
    """``(from, to)`` indices into ``canvas_sides`` at ``iteration``."""
    return resize_cycle.cyclic_size_indices(iteration, num_sizes=len(self.sizes),
                                            stop=min(self.until, iterations))

  def __call__(self, buffer, params, context):
    """Resizes the image held in ``buffer`` (see ``resize_cycle.resize_within``);
    ``params`` is ``(from_index, to_index, sides)``."""
    del context
    from_index, to_index, sides = params
    return resize_cycle.resize_within(buffer, from_index, to_index, sizes=sides,
                                      method=self.interpolation)

  def scaled(self, factor):
    return dataclasses.replace(self, until=scale_count(self.until, factor))
