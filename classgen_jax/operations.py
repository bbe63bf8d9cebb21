"""Image operations of a recipe: small frozen values, each a draw and an apply.

An octave lists its operations in three places, applied in order every
iteration (``recipes.Octave``):

* ``before``: on the canvas itself, before the gradient (the article's
  colour jitter and smoothing blur, the padding ring);
* ``view``: from the canvas to what the model sees, differentiated through
  (random crop, roll jitter, flips; Lucid's transformation robustness:
  ``Pad``, ``Scale``, ``Rotate``; MACO's ``Noise``); each view operation
  draws for the side of the image it receives (a ``Crop`` after a ``Pad``
  crops the padded view);
* ``after``: on the canvas after the update (the octaves' blur, clipping).

Every operation works on one image ``(H, W, 3)``; the engine vmaps it over
the batch. Each has

* ``draw(key, side, dtype)``: its random parameters for one image at a
  canvas side of ``side`` px (``None`` when it draws nothing);
* ``__call__(image, params, context)``: the pure, deterministic apply.

So the torch reference path replays exactly the same draws: its twin of an
operation is found by type (``converters/reference/operations.py``), and
adding an operation is one new value here and its twin there.

``context`` carries what an operation may read besides its own draw: the
iteration (for schedules) and the region of the canvas the view shows (for
``Blur(region="crop")``, which blurs only the crop just updated).

Randomness: an iteration's key is split into independent streams, one per
random operation. Streams 0-3 are those of the crop, roll, flip and colour
jitter since the first version, so their images are unchanged; other
operations take streams from 5 on, in the order they are listed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from classgen_jax import blur, colour, resize_cycle
from classgen_jax import transforms as T
from classgen_jax.updates import linear

_REGIONS = ("image", "crop")
_INTERPOLATIONS = ("bilinear", "nearest")
_PAD_MODES = ("constant", "reflect")


class Context(NamedTuple):
  """What an operation may read besides its draw, for one image.

  Attributes:
    iteration: the iteration within the octave (int32 scalar, traced).
    iterations: the octave's length (static).
    region: ``(offset, size)`` of the canvas region the view shows
      (``offset`` a ``(2,)`` int array, ``size`` a static int), or None
      when the view shows the whole canvas.
  """
  iteration: jax.Array
  iterations: int
  region: tuple[jax.Array, int] | None = None


def _scale_count(count: int | None, factor: float) -> int | None:
  if count is None:
    return None
  return max(1, round(count * factor)) if count else 0


class Operation:
  """Base of the image operations: no draw, no region, nothing to scale."""

  stream: ClassVar[int | None] = None  # a fixed key stream (see the module doc)

  def draw(self, key: jax.Array, side: int, dtype: Any) -> Any:
    del key, side, dtype
    return None

  def __call__(self, image: jax.Array, params: Any, context: Context) -> jax.Array:
    raise NotImplementedError

  def region(self, params: Any, side: int) -> tuple[jax.Array, int] | None:
    """For view operations: the part of the canvas the view shows."""
    del params, side
    return None

  def output_side(self, side: int) -> int:
    """The side of the image this operation returns for a ``side`` px input."""
    return side

  def scaled(self, factor: float) -> Operation:
    """The operation in an octave whose iterations are scaled by ``factor``."""
    del factor
    return self

  def check(self, where: str, sizes: tuple[int, ...]) -> None:
    """Raises a ``ValueError`` naming ``where`` if the canvas sides don't fit."""
    del where, sizes


# ----------------------------------------------------------------------------
# View operations.


@dataclasses.dataclass(frozen=True)
class Crop(Operation):
  """A random ``size`` px square of the canvas (the octaves' random crops).

  A canvas no larger than ``size`` is shown whole.
  """
  size: int
  stream: ClassVar[int] = 0

  def side(self, side: int) -> int | None:
    return self.size if self.size < side else None

  def draw(self, key, side, dtype):
    del dtype
    if self.side(side) is None:
      return None
    return T.draw_crop_offset(key, image_size=side, size=self.size)

  def __call__(self, image, params, context):
    del context
    if params is None:
      return image
    return T.crop(image, params, size=self.size)

  def region(self, params, side):
    return None if params is None else (params, self.size)

  def output_side(self, side):
    return min(side, self.size)

  def check(self, where, sizes):
    if self.size > min(sizes):
      raise ValueError(f"{where}: crop {self.size} is larger than the canvas {min(sizes)}; "
                       "make the crop smaller or the canvas larger")


@dataclasses.dataclass(frozen=True)
class Roll(Operation):
  """Roll by up to ``pixels`` px each way, wrapping around (DeepInversion's jitter)."""
  pixels: int
  stream: ClassVar[int] = 1

  def draw(self, key, side, dtype):
    del side, dtype
    return T.draw_shift(key, max_shift=self.pixels)

  def __call__(self, image, params, context):
    del context
    return T.shift(image, params)


@dataclasses.dataclass(frozen=True)
class Flip(Operation):
  """Mirror left-right with probability 1/2."""
  stream: ClassVar[int] = 2

  def draw(self, key, side, dtype):
    del side, dtype
    return T.draw_flip(key)

  def __call__(self, image, params, context):
    del context
    return T.flip_horizontal(image, params)


@dataclasses.dataclass(frozen=True)
class Pad(Operation):
  """Pad every side by ``width`` px: a constant ``value`` (Lucid's
  ``pad(12, mode="constant", constant_value=0.5)``) or ``"reflect"``.

  The view grows by ``2 * width``; a later ``Crop`` then jitters the
  image's position inside the padded frame (Lucid's ``jitter``).
  """
  width: int
  value: float = 0.5
  mode: str = "constant"

  def __post_init__(self):
    if self.mode not in _PAD_MODES:
      raise ValueError(f"Pad.mode must be one of {_PAD_MODES}, got {self.mode!r}")
    if self.width < 0:
      raise ValueError(f"Pad.width must be >= 0, got {self.width}")

  def __call__(self, image, params, context):
    del params, context
    if self.mode == "reflect":
      return T.pad_reflect(image, width=self.width)
    return T.pad(image, width=self.width, value=self.value)

  def output_side(self, side):
    return side + 2 * self.width


@dataclasses.dataclass(frozen=True)
class Scale(Operation):
  """Zoom about the centre by a factor uniform in ``[low, high]``, keeping
  the view's size (Lucid's ``random_scale``, 0.9-1.1); corners that a
  zoom-out uncovers are mirrored (``transforms.affine``)."""
  low: float = 0.9
  high: float = 1.1

  def __post_init__(self):
    if not 0 < self.low <= self.high or not math.isfinite(self.high):
      raise ValueError(f"Scale needs 0 < low <= high, got ({self.low}, {self.high})")

  def draw(self, key, side, dtype):
    del side
    return jax.random.uniform(key, (), dtype, self.low, self.high)

  def __call__(self, image, params, context):
    del context
    return T.affine(image, T.scale_matrix(params))


@dataclasses.dataclass(frozen=True)
class Rotate(Operation):
  """Rotate about the centre by an angle uniform in ``[-degrees, degrees]``
  (Lucid's ``random_rotate``, +-10); corners are mirrored."""
  degrees: float = 10.0

  def __post_init__(self):
    if not 0 <= self.degrees < 360:
      raise ValueError(f"Rotate.degrees must be in [0, 360), got {self.degrees}")

  def draw(self, key, side, dtype):
    del side
    return jax.random.uniform(key, (), dtype, -self.degrees, self.degrees)

  def __call__(self, image, params, context):
    del context
    return T.affine(image, T.rotation_matrix(params))


@dataclasses.dataclass(frozen=True)
class Noise(Operation):
  """Add Gaussian noise of standard deviation ``std`` to the view (MACO's
  robustness noise, Fel et al. 2023)."""
  std: float

  def __post_init__(self):
    if not 0 <= self.std < math.inf:
      raise ValueError(f"Noise.std must be finite and >= 0, got {self.std}")

  def draw(self, key, side, dtype):
    return self.std * jax.random.normal(key, (side, side, 3), dtype)

  def __call__(self, image, params, context):
    del context
    return image + params


@dataclasses.dataclass(frozen=True)
class Glance(Operation):
  """With probability ``probability``, the view as seen at a glance: its
  detail finer than a ``s`` px thumbnail of it would keep is blurred away,
  ``s`` uniform in ``[low, high]`` (a Gaussian of sigma ``side / (2 s)``,
  about what shrinking to ``s`` px with antialiasing and enlarging back
  removes). A class that must survive it is carried by large shapes and
  colours, not by fine texture: the glance of ``recognisability``, as a
  transformation the image must be robust to.

  Attributes:
    low, high: the thumbnail sides, in pixels.
    probability: of blurring a view at all.
  """
  low: int = 40
  high: int = 112
  probability: float = 0.5

  def __post_init__(self):
    if not 0 < self.low <= self.high:
      raise ValueError(f"Glance needs 0 < low <= high, got ({self.low}, {self.high})")
    if not 0 <= self.probability <= 1:
      raise ValueError(f"Glance.probability must be in [0, 1], got {self.probability}")

  def kernel(self, side: int) -> int:
    """The odd kernel side that holds three sigmas of the strongest blur."""
    return 2 * math.ceil(3 * side / (2 * self.low)) + 1

  def draw(self, key, side, dtype):
    thumb, coin = jax.random.split(key)
    s = jax.random.uniform(thumb, (), dtype, self.low, self.high)
    sigma = side / (2 * s)
    return jnp.where(jax.random.uniform(coin, (), dtype) < self.probability, sigma, 0.0)

  def __call__(self, image, params, context):
    del context
    kernel = min(self.kernel(image.shape[0]), 2 * ((image.shape[0] - 1) // 2) - 1)
    blurred = blur.gaussian_blur(image, sigma=jnp.maximum(params, 1e-3), kernel_size=kernel)
    return jnp.where(params > 0, blurred, image)

  def check(self, where, sizes):
    if min(sizes) < 3:
      raise ValueError(f"{where}: Glance needs a view of at least 3 px, got {min(sizes)}")


# ----------------------------------------------------------------------------
# Canvas operations.


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
    return dataclasses.replace(self, until=_scale_count(self.until, factor))


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
    return dataclasses.replace(self, until=_scale_count(self.until, factor))
