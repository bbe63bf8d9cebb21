"""Naturalness: colourfulness against hand computations, spectral slope against
synthetic 1/f^alpha noise, medians, and the bundled photos' reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classgen_jax import images, naturalness


def power_law_noise(alpha: float, side: int = 512, seed: int = 0) -> np.ndarray:
  """Gaussian noise whose power spectrum is exactly 1 / f^alpha in expectation."""
  radius = np.hypot(np.fft.fftfreq(side)[:, None], np.fft.fftfreq(side)[None, :])
  radius[0, 0] = 1.0
  spectrum = np.fft.fft2(np.random.default_rng(seed).standard_normal((side, side)))
  spectrum *= radius ** (-alpha / 2)
  spectrum[0, 0] = 0.0
  return np.real(np.fft.ifft2(spectrum))


@pytest.mark.parametrize("level", [0.0, 0.3, 1.0])
def test_grey_has_no_colour(level):
  image = np.full((8, 9, 3), level)
  image[2:5, 3:7] = 1 - level  # grey structure, still no colour
  assert naturalness.colourfulness(image) == pytest.approx(0.0, abs=1e-9)


def test_colourfulness_of_a_flat_colour_is_the_mean_term_alone():
  image = np.broadcast_to(np.array([200.0, 100.0, 50.0]) / 255, (4, 4, 3))
  # rg = 100 and yb = 150 - 50 = 100 everywhere: no spread, 0.3 * |(100, 100)|.
  assert naturalness.colourfulness(image) == pytest.approx(0.3 * math.hypot(100, 100))


def test_colourfulness_of_half_red_half_blue():
  image = np.zeros((6, 10, 3))
  image[:, :5, 0] = 1.0
  image[:, 5:, 2] = 1.0
  # Red half: rg = 255, yb = 127.5. Blue half: rg = 0, yb = -255.
  # rg: mean 127.5, std 127.5; yb: mean -63.75, std 191.25.
  expected = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
  assert naturalness.colourfulness(image) == pytest.approx(expected)
  assert naturalness.colourfulness(image) == pytest.approx(272.61, abs=0.01)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_spectral_slope_recovers_power_law_noise(alpha):
  assert naturalness.spectral_slope(power_law_noise(alpha)) == pytest.approx(alpha, abs=0.15)


def test_white_noise_is_flat():
  noise = np.random.default_rng(1).random((512, 512))
  assert abs(naturalness.spectral_slope(noise)) < 0.15


def test_spectral_slope_ignores_contrast_brightness_and_colour():
  grey = power_law_noise(2.0, side=128)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  slope = naturalness.spectral_slope(grey)
  assert naturalness.spectral_slope(0.1 * rgb + 0.5) == pytest.approx(slope, abs=1e-9)
  # Not square: the rings are one step of the shorter side wide.
  assert naturalness.spectral_slope(power_law_noise(2.0, side=256)[:128]) == pytest.approx(
      2.0, abs=0.3)


def test_spectral_slope_errors_and_flat_images():
  assert math.isnan(naturalness.spectral_slope(np.full((64, 64, 3), 0.5)))
  with pytest.raises(ValueError, match="too few frequency rings"):
    naturalness.spectral_slope(np.random.default_rng(0).random((8, 8)))
  with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
    naturalness.colourfulness(np.zeros((4, 4, 4)))


def test_measure_takes_medians_and_skips_flat_images():
  batch = np.stack([np.full((64, 64, 3), 0.5),
                    np.repeat(power_law_noise(1.0, side=64)[..., None], 3, -1),
                    np.repeat(power_law_noise(3.0, side=64)[..., None], 3, -1)])
  batch[0, ..., 0] = 0.9  # flat but colourful: colour, no slope
  values = naturalness.measure(batch)
  assert values["colourfulness"] == pytest.approx(0.0)  # the median of (c, 0, 0)
  assert values["spectral_slope"] == pytest.approx(np.mean(
      [naturalness.spectral_slope(x) for x in batch[1:]]))
  assert naturalness.measure(batch[:1])["spectral_slope"] is None


def test_reference_is_the_bundled_photos():
  photos = images.bundled_photos()
  reference = naturalness.reference()
  assert reference["photos"] == list(photos) == ["chelsea", "coffee"]
  assert reference["colourfulness"] == pytest.approx(
      np.median([naturalness.colourfulness(p) for p in photos.values()]))
  # Photos: colourful, and steeper than noise (their power falls with frequency).
  assert 20 < reference["colourfulness"] < 110 and 2 < reference["spectral_slope"] < 4
  reference["photos"].append("mutated")
  assert naturalness.reference()["photos"] == ["chelsea", "coffee"]
