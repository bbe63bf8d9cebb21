"""Does an image have the statistics of a photo? Two numbers, computed on the host.

Images are ``(H, W, 3)`` (or ``(N, H, W, 3)``) floats in [0, 1], as everywhere
in the library; numpy only, since the metrics describe finished images.

* ``colourfulness``: Hasler and Süsstrunk (2003), "Measuring colourfulness in
  natural images", on 0-255 RGB. Grey is 0; their survey put "moderately
  colourful" photos near 33 and "extremely colourful" ones above 109.
* ``spectral_slope``: the exponent alpha of power ~ 1 / f^alpha in the radially
  averaged power spectrum of the grey image. Photos of natural scenes sit
  near 2 (Field 1987; van der Schaaf and van Hateren 1996); white noise is 0,
  and the high-frequency patterns that only fool a model flatten it.

``measure`` gives the medians of both over a set of images, and ``reference``
the same for the photos bundled in ``classgen_jax/assets``, to read them
against.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from classgen_jax.images import bundled_photos

# ITU-R BT.601 luma weights: the grey a viewer would see.
_LUMA = np.array([0.299, 0.587, 0.114])


def colourfulness(image: np.ndarray) -> float:
  """Hasler and Süsstrunk's colourfulness of one ``(H, W, 3)`` image in [0, 1].

  ``sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`` with
  ``rg = R - G`` and ``yb = (R + G) / 2 - B``, on 0-255 values.

  >>> colourfulness(np.full((4, 4, 3), 0.5))
  0.0
  """
  rgb = _check_rgb(image).astype(np.float64) * 255.0
  red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  rg = red - green
  yb = (red + green) / 2 - blue
  return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def spectral_slope(image: np.ndarray, *, low: float = 1 / 32, high: float = 1 / 4) -> float:
  """alpha of power ~ 1 / f^alpha for one image, grey ``(H, W)`` or RGB ``(H, W, 3)``.

  The grey image (BT.601 luma), less its mean, under a Hann window (so the
  image's borders do not add a cross of 1/f^2 power), is Fourier transformed;
  the power is averaged over rings one frequency step (1 / min(H, W)) wide,
  and a least-squares line fitted to log power against log frequency over the
  rings between ``low`` and ``high`` cycles per pixel: above the lowest
  frequencies, which a few objects dominate, and below the highest, where
  JPEG and resampling cut or alias the spectrum.

  Returns:
    alpha (minus the fitted slope); NaN for an image without any variation.

  Raises:
    ValueError: not an image, or too small for three rings in the band.
  """
  image = np.asarray(image, np.float64)
  grey = image if image.ndim == 2 else _check_rgb(image) @ _LUMA
  if grey.ndim != 2:
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
  height, width = grey.shape
  grey = grey - grey.mean()
  if not np.any(grey):
    return float("nan")
  window = np.outer(np.hanning(height), np.hanning(width))
  power = np.abs(np.fft.fft2(grey * window)) ** 2
  radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
  step = 1 / min(height, width)
  rings = np.rint(radius / step).astype(np.int64).ravel()
  counts = np.bincount(rings)
  mean_power = np.bincount(rings, power.ravel()) / np.maximum(counts, 1)
  frequency = np.arange(len(counts)) * step
  band = (frequency >= low) & (frequency <= high) & (counts > 0)
  if band.sum() < 3:
    raise ValueError(f"a {height}x{width} image has too few frequency rings between "
                     f"{low:g} and {high:g} cycles per pixel to fit a slope")
  # A ring can hold exactly zero power (a synthetic image); the floor keeps log finite.
  floor = np.finfo(np.float64).tiny
  slope = np.polyfit(np.log(frequency[band]), np.log(np.maximum(mean_power[band], floor)), 1)[0]
  return float(-slope)


def measure(images: np.ndarray) -> dict[str, float | None]:
  """Median colourfulness and spectral slope of ``(N, H, W, 3)`` images in [0, 1].

  Returns:
    ``{"colourfulness": ..., "spectral_slope": ...}``; a median is ``None``
    where no image gives a finite value (flat images have no slope).
  """
  images = np.asarray(images)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(f"expected a non-empty (N, H, W, 3) batch, got shape {images.shape}")
  return {"colourfulness": _median([colourfulness(x) for x in images]),
          "spectral_slope": _median([spectral_slope(x) for x in images])}


def reference() -> dict[str, Any]:
  """``measure``'s medians for the photos in ``classgen_jax/assets``, at their stored size.

  At their stored size because resampling a photo changes its spectrum: the
  bundled coffee photo, enlarged to 224 px, steepens from 3.3 to 3.9.

  Returns:
    ``{"photos": [names], "colourfulness": ..., "spectral_slope": ...}``.
  """
  photos, colourfulness_, slope = _reference()
  return {"photos": list(photos), "colourfulness": colourfulness_, "spectral_slope": slope}


@functools.cache
def _reference() -> tuple[tuple[str, ...], float | None, float | None]:
  photos = bundled_photos()
  return (tuple(photos), _median([colourfulness(p) for p in photos.values()]),
          _median([spectral_slope(p) for p in photos.values()]))


def _check_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
  return image


def _median(values: list[float]) -> float | None:
  finite = [v for v in values if math.isfinite(v)]
  return float(np.median(finite)) if finite else None
