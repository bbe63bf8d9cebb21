"""Image parameterisations: what the optimisation changes, and how it becomes an image.

A recipe optimises parameters; each step renders them into the image the
view operations and the model see, inside the differentiated function, so
the update rule acts on the parameters (Mordvintsev et al. 2018,
"Differentiable Image Parameterizations"). ``Pixels()``, the default, is the
image itself. The others change which directions a step of a given size can
take:

* ``Fourier(decay)``: the coefficients of the image's ``rfft2``, scaled by
  ``1 / max(f, 1/side)^decay`` (Lucid's ``fft_image``). A natural image's
  amplitude falls as ``1/f``, so in these coordinates every frequency is
  about equally large, and a step changes every frequency by about equal
  parts of a natural image's amplitude instead of piling up high-frequency
  noise (which is what pixel steps do).
* ``Decorrelated(inner)``: ``inner`` renders colours in a decorrelated space,
  mapped to RGB by the square root of ImageNet's colour correlation
  (Lucid's ``_linear_decorelate_color``), so a step changes luminance and
  colour opponents, not red, green and blue independently.
* ``Sigmoid(inner)``: squashes into (0, 1), so the image is always valid.
* ``Maco(alpha)``: the Fourier *phase* alone; the magnitude is fixed to a
  natural image's (Fel et al. 2023, "Unlocking Feature Visualization for
  Deeper Networks with MAgnitude Constrained Optimization"), here the
  average amplitude spectrum of the photos bundled in ``classgen_jax/assets``
  or a ``1/f^alpha`` law.

They compose: Lucid's image is ``Sigmoid(Decorrelated(Fourier()))``, MACO's
``Sigmoid(Decorrelated(Maco()))``. Each is a frozen value with

* ``init(key, side, dtype)``: random parameters (Lucid's start: a spectrum
  of N(0, 0.01) coefficients); a recipe with ``start=starts.Parameters()`` starts here;
* ``encode(image)``: parameters whose render is ``image`` (exactly, up to
  rounding, except ``Maco``, which keeps only the image's phase, and
  ``Sigmoid``, which clips to (1e-6, 1 - 1e-6) first);
* ``render(params)``: the ``(side, side, 3)`` image.

All work on one image; the engine vmaps them. Between octaves the engine
renders the image, resizes it and encodes it again, so a canvas can grow;
operations on the canvas itself (``Octave.before``, ``after``, ``resize``)
act on pixels and are refused for any other parameterisation. Their torch
twins are in ``converters/reference/parameterisations.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax._sums import mean_like

# Lucid's square root of ImageNet's colour correlation (``color_correlation_svd_sqrt``):
# column j is the RGB colour of decorrelated channel j (luminance, then two opponents).
COLOUR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02],
                                    [0.27, 0.00, -0.05],
                                    [0.27, -0.09, 0.03]])
# Normalised by its largest column norm, as Lucid does, so that the luminance
# channel maps a unit step to a unit (RGB-norm) step.
COLOUR = COLOUR_CORRELATION_SQRT / np.linalg.norm(COLOUR_CORRELATION_SQRT, axis=0).max()

_SIGMOID_EPS = 1e-6


class Parameterisation:
  """Base of the parameterisations (see the module doc)."""

  # True only for ``Pixels``: the parameters are the image, and canvas
  # operations (blur, clip, resize) apply to them.
  pixels: ClassVar[bool] = False

  def init(self, key: jax.Array, side: int, dtype: Any) -> Any:
    raise NotImplementedError

  def encode(self, image: jax.Array) -> Any:
    raise NotImplementedError

  def render(self, params: Any) -> jax.Array:
    raise NotImplementedError

  def check(self, where: str, side: int) -> None:
    """Raises a ``ValueError`` naming ``where`` if a ``side`` px canvas does not fit."""
    del where, side


@dataclasses.dataclass(frozen=True)
class Pixels(Parameterisation):
  """The image itself (every recipe of the article).

  Attributes:
    std: of the N(0, std) random start (``init``); under a ``Sigmoid`` that
      is a grey image with faint noise.
  """
  std: float = 0.01
  pixels: ClassVar[bool] = True

  def init(self, key, side, dtype):
    return self.std * jax.random.normal(key, (side, side, 3), dtype)

  def encode(self, image):
    return image

  def render(self, params):
    return params


def frequencies(side: int) -> np.ndarray:
  """``(side, side // 2 + 1)`` radial frequency (cycles per pixel) of each
  ``rfft2`` coefficient of a ``side`` x ``side`` image."""
  fy = np.fft.fftfreq(side)[:, None]
  fx = np.fft.rfftfreq(side)[None, :]
  return np.sqrt(fx * fx + fy * fy)


def fourier_scale(side: int, decay: float) -> np.ndarray:
  """Lucid's spectrum scale: ``sqrt(side^2) / max(f, 1/side)^decay / 4``.

  ``sqrt(side^2)`` makes the map from parameters to pixels about unitary
  (so pixel step sizes carry over) and ``/ 4`` is Lucid's own constant
  (``fft_image``'s ``image_t / 4.0``), kept so that Lucid's Adam 0.05 means
  what it meant there.
  """
  return side / np.maximum(frequencies(side), 1.0 / side) ** decay / 4.0


@dataclasses.dataclass(frozen=True)
class Fourier(Parameterisation):
  """The image's ``rfft2`` coefficients over ``1 / max(f, 1/side)^decay``.

  Parameters are ``(side, side // 2 + 1, 3, 2)``: real and imaginary parts
  per channel (the imaginary parts of the zero and Nyquist frequencies do
  not reach the image and get no gradient).

  Attributes:
    decay: the spectrum's fall-off; 1 (Lucid) gives the rendered image of
      random parameters a power spectrum falling as ``1/f^2``, as photos'.
    std: of the N(0, std) random start (Lucid: 0.01).
  """
  decay: float = 1.0
  std: float = 0.01

  def init(self, key, side, dtype):
    return self.std * jax.random.normal(key, (side, side // 2 + 1, 3, 2), dtype)

  def _scale(self, side, dtype):
    return jnp.asarray(fourier_scale(side, self.decay), dtype)[:, :, None]

  def encode(self, image):
    side = image.shape[0]
    spectrum = jnp.fft.rfft2(image, axes=(0, 1)) / self._scale(side, image.dtype)
    return jnp.stack([spectrum.real, spectrum.imag], axis=-1)

  def render(self, params):
    side = params.shape[0]
    spectrum = jax.lax.complex(params[..., 0], params[..., 1]) * self._scale(side, params.dtype)
    return jnp.fft.irfft2(spectrum, s=(side, side), axes=(0, 1))

  def check(self, where, side):
    if not (math.isfinite(self.decay) and self.decay >= 0):
      raise ValueError(f"{where}: Fourier.decay must be finite and >= 0, got {self.decay}")


@dataclasses.dataclass(frozen=True)
class Decorrelated(Parameterisation):
  """``inner``'s three channels as decorrelated colours, mapped to RGB by
  ``COLOUR`` (Lucid's decorrelated colour space).

  Attributes:
    inner: the parameterisation of the three decorrelated channels.
    saturation: scales the two colour-opponent columns of ``COLOUR`` (1:
      Lucid's). Lucid's normalisation makes a unit step of an opponent
      channel a third to an eighth of a luminance step, so images stay
      greyer than photos; 2 doubles how far a step moves the colours.
  """
  inner: Parameterisation = Pixels()
  saturation: float = 1.0

  @property
  def matrix(self) -> np.ndarray:
    """RGB = ``matrix @ decorrelated`` (``COLOUR`` with its opponents scaled)."""
    return COLOUR * np.array([1.0, self.saturation, self.saturation])

  def init(self, key, side, dtype):
    return self.inner.init(key, side, dtype)

  def encode(self, image):
    return self.inner.encode(image @ jnp.asarray(np.linalg.inv(self.matrix).T, image.dtype))

  def render(self, params):
    values = self.inner.render(params)
    return values @ jnp.asarray(self.matrix.T, values.dtype)

  def check(self, where, side):
    if not (math.isfinite(self.saturation) and self.saturation > 0):
      raise ValueError(f"{where}: Decorrelated.saturation must be finite and > 0, got "
                       f"{self.saturation}")
    self.inner.check(where, side)


@dataclasses.dataclass(frozen=True)
class Sigmoid(Parameterisation):
  """``sigmoid`` of ``inner``: every image it renders lies in (0, 1)."""
  inner: Parameterisation = Pixels()

  def init(self, key, side, dtype):
    return self.inner.init(key, side, dtype)

  def encode(self, image):
    clipped = jnp.clip(image, _SIGMOID_EPS, 1 - _SIGMOID_EPS)
    return self.inner.encode(jnp.log(clipped) - jnp.log1p(-clipped))

  def render(self, params):
    return jax.nn.sigmoid(self.inner.render(params))

  def check(self, where, side):
    self.inner.check(where, side)


# The bundled photos' amplitude spectrum is measured on centre crops, never on
# enlarged photos (enlarging removes their high frequencies).
def _photo_sides() -> int:
  from classgen_jax.images import bundled_photos  # pylint: disable=g-import-not-at-top
  return min(min(p.shape[:2]) for p in bundled_photos().values())


@functools.cache
def photo_amplitude(side: int) -> np.ndarray:
  """The bundled photos' mean amplitude spectrum at ``side`` px, per
  decorrelated channel: ``(side, side // 2 + 1, 3)``, zero at frequency 0.

  Each photo's centre ``side`` x ``side`` crop is mapped to the decorrelated
  space (``COLOUR``'s inverse), its mean removed, and the amplitude of its
  ``rfft2`` averaged over the photos and over the crop's eight mirrorings
  and transpositions (two photos alone would imprint their own dominant
  orientations).
  """
  from classgen_jax.images import bundled_photos  # pylint: disable=g-import-not-at-top
  total = np.zeros((side, side // 2 + 1, 3))
  count = 0
  for photo in bundled_photos().values():
    h, w = photo.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.asarray(photo[top:top + side, left:left + side], np.float64)
    crop = crop @ np.linalg.inv(COLOUR).T
    crop = crop - crop.mean(axis=(0, 1))
    for turned in (crop, crop.transpose(1, 0, 2)):
      for flipped in (turned, turned[::-1], turned[:, ::-1], turned[::-1, ::-1]):
        total += np.abs(np.fft.rfft2(flipped, axes=(0, 1)))
        count += 1
  amplitude = total / count
  amplitude[0, 0] = 0.0
  return amplitude


def power_law_amplitude(side: int, alpha: float) -> np.ndarray:
  """``1 / max(f, 1/side)^alpha`` in each decorrelated channel, zero at
  frequency 0: ``(side, side // 2 + 1, 3)``."""
  amplitude = 1.0 / np.maximum(frequencies(side), 1.0 / side) ** alpha
  amplitude[0, 0] = 0.0
  return np.repeat(amplitude[:, :, None], 3, axis=2)


def _standardise(x):
  """Mean 0 and standard deviation 1 over the image, summed in an order
  that does not depend on the batch (``_sums``)."""
  axes = tuple(range(x.ndim))
  x = x - mean_like(x, axes)
  # A reciprocal, then a product: XLA rewrites a division by a broadcast
  # value in a way that depends on the image's place in the batch.
  return x * (1 / (jnp.sqrt(mean_like(jnp.square(x), axes)) + 1e-4))


@dataclasses.dataclass(frozen=True)
class Maco(Parameterisation):
  """The Fourier phase, under a fixed natural magnitude (MACO).

  Parameters are the phases ``(side, side // 2 + 1, 3)``; the render is
  ``irfft2(magnitude * exp(i phase))``, standardised to mean 0 and standard
  deviation 1 over the image (as Horama's ``maco_preconditioner``), meant to
  sit inside ``Sigmoid(Decorrelated(...))``. Horama also standardises the
  phases themselves before use; angles need no such scale, so this does not.

  Attributes:
    alpha: None: the magnitude is the bundled photos' average amplitude
      spectrum (``photo_amplitude``), which exists only for canvases up to
      the smallest photo's side (200 px); a number: ``1/f^alpha`` at any size
      (photos: about 1.4, half their power spectrum's slope).
  """
  alpha: float | None = None

  def magnitude(self, side: int, dtype) -> jax.Array:
    if self.alpha is None:
      amplitude = photo_amplitude(side)
    else:
      amplitude = power_law_amplitude(side, self.alpha)
    return jnp.asarray(amplitude, dtype)

  def init(self, key, side, dtype):
    return jax.random.uniform(key, (side, side // 2 + 1, 3), dtype, -math.pi, math.pi)

  def encode(self, image):
    phase = jnp.angle(jnp.fft.rfft2(image, axes=(0, 1))).astype(image.dtype)
    # The mean's phase is meaningless (the magnitude there is 0): 0, not a
    # sign of rounding.
    return phase.at[0, 0].set(0.0)

  def render(self, params):
    side = params.shape[0]
    magnitude = self.magnitude(side, params.dtype)
    # As ``exp(i phase)`` times the magnitude: a lone image's gradient
    # through ``magnitude * cos(phase)`` rounds differently from a batch's.
    spectrum = magnitude * jnp.exp(1j * params)
    return _standardise(jnp.fft.irfft2(spectrum, s=(side, side), axes=(0, 1)))

  def check(self, where, side):
    if self.alpha is not None:
      if not (math.isfinite(self.alpha) and self.alpha >= 0):
        raise ValueError(f"{where}: Maco.alpha must be finite and >= 0, got {self.alpha}")
      return
    largest = _photo_sides()
    if side > largest:
      raise ValueError(f"{where}: Maco's photo spectrum comes from centre crops of the "
                       f"bundled photos, at most {largest} px, but the canvas is {side} px; "
                       "use a smaller canvas or Maco(alpha=1.4)")


__all__ = ["COLOUR", "COLOUR_CORRELATION_SQRT", "Decorrelated", "Fourier", "Maco",
           "Parameterisation", "Pixels", "Sigmoid", "fourier_scale", "frequencies",
           "photo_amplitude", "power_law_amplitude"]
