"""Image files: loading (RGB, sizes, the ImageNet centre crop), one-line
errors for a missing or unreadable file, PNGs with their metadata."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classgen_jax import ImageError, images


def test_load_resizes_crops_and_converts_to_rgb(tmp_path):
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((40, 80), 128, np.uint8)).save(grey)
  loaded = images.load_image(grey)
  assert loaded.shape == (40, 80, 3) and loaded.dtype == np.float32
  np.testing.assert_allclose(loaded, 128 / 255)
  assert images.load_image(grey, 16).shape == (16, 16, 3)
  assert images.load_image(grey, (10, 20)).shape == (10, 20, 3)
  assert images.load_image(grey, 32, crop=True).shape == (32, 32, 3)
  assert sorted(images.bundled_photos()) == ["chelsea", "coffee"]


def test_missing_or_unreadable_files_are_one_line(tmp_path):
  with pytest.raises(ImageError, match="does not exist"):
    images.load_image(tmp_path / "nope.jpg")
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(ImageError, match="cannot read .*bad.jpg as an image"):
    images.load_image(bad)


def test_png_round_trip_keeps_pixels_and_metadata(tmp_path):
  image = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
  path = tmp_path / "x.png"
  images.save_png(path, image, {"class": "tabby", "seed": 3})
  assert images.read_png_metadata(path) == {"class": "tabby", "seed": "3"}
  np.testing.assert_array_equal(np.asarray(Image.open(path)), images.to_uint8(image))
