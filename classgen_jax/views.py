"""View operations: from the canvas to what the model sees, differentiated
through (random crop, roll jitter, flips; Lucid's transformation robustness;
MACO's noise and boxes; a glance). See ``classgen_jax.operations``."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from classgen_jax import blur
from classgen_jax import transforms as T
from classgen_jax.operation import Operation

_PAD_MODES = ("constant", "reflect")


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
  zoom-out uncovers are mirrored (``transforms.affine``, computed per axis
  by ``transforms.zoom``)."""
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
    return T.zoom(image, params)


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
class Box(Operation):
  """MACO's crop (Fel et al. 2023; Horama's ``optimization_step``): a square
  box of the canvas whose side is a fraction uniform in ``[low, high]`` of
  the canvas's, centred at ``0.5 + N(0, centre_std)`` of the side in each
  axis (moved to lie inside the canvas), resampled bilinearly to ``out`` px.

  Several boxes a step (``Octave.views``) cover the middle of the canvas
  with small views, each of which must show the class.
  """
  low: float = 0.25
  high: float = 0.30
  centre_std: float = 0.15
  out: int = 224

  def __post_init__(self):
    if not 0 < self.low <= self.high <= 1:
      raise ValueError(f"Box needs 0 < low <= high <= 1, got ({self.low}, {self.high})")
    if not (math.isfinite(self.centre_std) and self.centre_std >= 0) or self.out < 1:
      raise ValueError(f"Box needs a finite centre_std >= 0 and out >= 1, got "
                       f"({self.centre_std}, {self.out})")

  def draw(self, key, side, dtype):
    del side
    centre, fraction = jax.random.split(key)
    return jnp.concatenate([
        0.5 + self.centre_std * jax.random.normal(centre, (2,), dtype),
        jax.random.uniform(fraction, (1,), dtype, self.low, self.high)])

  def __call__(self, image, params, context):
    del context
    return T.box(image, params, out=self.out)

  def output_side(self, side):
    del side
    return self.out


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
