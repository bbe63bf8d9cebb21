"""Tests of classgen_jax.transforms (geometry): eager == jit == vmap, torch parity, behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision.transforms as tv_transforms

from classgen_jax import transforms as T
from converters.reference import transforms as TT

# Before tests.image_cases is imported, so that its checks' asserts say what failed.
from tests.image_cases import (
  PARITY_DTYPES,
  H,
  W,
  batched,
  check_eager_jit_vmap_agree,
  check_gradients_flow_through,
  check_torch_parity,
  crop_offsets,
  images,
  keys,
  region_offset,
  to_torch,
)

# ---------------------------------------------------------------------------
# Every transform: eager == jit == vmap.

CASES = {
    "resize_bilinear_down": lambda k, x: T.resize(x, (13, 17)),
    "resize_bilinear_up": lambda k, x: T.resize(x, 31),
    "resize_nearest": lambda k, x: T.resize(x, (13, 31), method="nearest"),
    "resize_antialiased": lambda k, x: T.resize(x, (13, 9), antialias=True),
    "crop_paste": lambda k, x: T.paste(
        x, 1.0 - T.crop(x, region_offset(k, x), size=(9, 11)),
        region_offset(k, x)),
    "shift": lambda k, x: T.shift(x, T.draw_shift(k, max_shift=5)),
    "flip": lambda k, x: T.flip_horizontal(x, T.draw_flip(k)),
    "pad": lambda k, x: T.pad(x, width=2, value=0.7),
    "fill_border": lambda k, x: T.fill_border(x, width=2, value=0.7),
    "clip": lambda k, x: T.clip(2.0 * x - 0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_jit_vmap_agree(name):
  check_eager_jit_vmap_agree(CASES[name])


@pytest.mark.parametrize("name", ["resize_bilinear_down", "resize_nearest",
                                  "crop_paste", "shift", "fill_border"])
def test_gradients_flow_through(name):
  check_gradients_flow_through(CASES[name])


# ---------------------------------------------------------------------------
# Parity with the torch twins, float64 (tight) and float32 (realistic).


def _parity_resize(dtype, size, method):
  x = images(dtype)
  jax_out = batched(lambda i: T.resize(i, size, method=method))(
      jnp.asarray(x))
  return jax_out, TT.resize(to_torch(x), size, method=method)


def _parity_resize_torchvision_upsample(dtype):
  # Between octaves the article upsizes with torchvision's Resize, whose
  # default antialias only acts when shrinking.
  x = images(dtype)
  jax_out = batched(lambda i: T.resize(i, (27, 29)))(jnp.asarray(x))
  return jax_out, tv_transforms.Resize([27, 29])(to_torch(x))


def _parity_resize_torchvision_antialiased(dtype):
  # Photos are loaded with torchvision's Resize, which antialiases when
  # shrinking; one side shrinks by more than 2, the other grows.
  x = images(dtype)
  jax_out = batched(lambda i: T.resize(i, (7, 29), antialias=True))(jnp.asarray(x))
  return jax_out, tv_transforms.Resize([7, 29], antialias=True)(to_torch(x))


def _parity_crop(dtype):
  x = images(dtype)
  offsets = crop_offsets(keys(3))
  jax_out = batched(lambda i, o: T.crop(i, o, size=(9, 11)))(jnp.asarray(x),
                                                              offsets)
  return jax_out, TT.crop(to_torch(x), np.asarray(offsets), size=(9, 11))


def _parity_paste(dtype):
  x, patches = images(dtype), images(dtype, seed=5, shape=(9, 11))
  offsets = crop_offsets(keys(4))
  jax_out = batched(T.paste)(jnp.asarray(x), jnp.asarray(patches), offsets)
  return jax_out, TT.paste(to_torch(x), to_torch(patches), np.asarray(offsets))


def _parity_shift(dtype):
  x = images(dtype)
  offsets = batched(lambda k: T.draw_shift(k, max_shift=7))(keys(5))
  jax_out = batched(T.shift)(jnp.asarray(x), offsets)
  return jax_out, TT.shift(to_torch(x), np.asarray(offsets))


def _parity_flip(dtype):
  x = images(dtype)
  flags = np.array([True, False, True])
  jax_out = batched(T.flip_horizontal)(jnp.asarray(x), jnp.asarray(flags))
  return jax_out, TT.flip_horizontal(to_torch(x), flags)


def _parity_pad(dtype):
  x = images(dtype)
  jax_out = batched(lambda i: T.pad(i, width=1, value=0.7))(jnp.asarray(x))
  # The article's call.
  return jax_out, tv_transforms.Pad([1, 1], fill=0.7)(to_torch(x))


def _parity_fill_border(dtype):
  x = images(dtype)
  jax_out = batched(lambda i: T.fill_border(i, width=2, value=0.7))(
      jnp.asarray(x))
  return jax_out, TT.fill_border(to_torch(x), width=2, value=0.7)


def _parity_clip(dtype):
  x = images(dtype, low=-0.5, high=1.5)
  return batched(T.clip)(jnp.asarray(x)), TT.clip(to_torch(x))


PARITY = {
    "resize_bilinear_down": lambda d: _parity_resize(d, (13, 17), "bilinear"),
    "resize_bilinear_up": lambda d: _parity_resize(d, (31, 37), "bilinear"),
    "resize_nearest_down": lambda d: _parity_resize(d, (13, 17), "nearest"),
    "resize_nearest_up": lambda d: _parity_resize(d, (31, 37), "nearest"),
    "resize_torchvision_upsample": _parity_resize_torchvision_upsample,
    "resize_torchvision_antialiased": _parity_resize_torchvision_antialiased,
    "crop": _parity_crop,
    "paste": _parity_paste,
    "shift": _parity_shift,
    "flip": _parity_flip,
    "pad": _parity_pad,
    "fill_border": _parity_fill_border,
    "clip": _parity_clip,
}


@PARITY_DTYPES
@pytest.mark.parametrize("name", sorted(PARITY))
def test_torch_parity(name, dtype, request):
  check_torch_parity(PARITY[name], dtype, request)


@pytest.mark.parametrize("size_in,size_out", [
    (299, 256), (256, 198), (198, 160), (160, 180), (180, 200), (200, 256),
    (8, 490), (260, 200), (50, 198), (106, 200), (299, 340), (340, 390),
])
def test_nearest_indices_match_torch_float32(size_in, size_out):
  # Includes pairs where dst * in / out is an integer that float32 rounds
  # below, the case an exact-rational index would get wrong.
  row = torch.arange(size_in, dtype=torch.float32).view(1, 1, 1, size_in)
  expected = TT.resize(row, (1, size_out), method="nearest")[0, 0, 0]
  np.testing.assert_array_equal(T.nearest_indices(size_in, size_out),
                                expected.long().numpy())


# ---------------------------------------------------------------------------
# Behaviour.


def _centre_of_mass(image):
  """Centre of mass in relative coordinates (pixel centres at (i+.5)/n)."""
  mass = np.asarray(image)[..., 0]
  rows = (np.arange(mass.shape[0]) + 0.5) / mass.shape[0]
  cols = (np.arange(mass.shape[1]) + 0.5) / mass.shape[1]
  total = mass.sum()
  return (mass.sum(1) @ rows) / total, (mass.sum(0) @ cols) / total


def _bump(size=40, centre=(0.35, 0.6), sigma=0.08):
  """A smooth off-centre blob, so that symmetry cannot hide a drift."""
  r = (np.arange(size) + 0.5) / size
  blob = np.exp(-((r[:, None] - centre[0]) ** 2
                  + (r[None, :] - centre[1]) ** 2) / (2 * sigma ** 2))
  return jnp.asarray(np.repeat(blob[..., None], 3, -1).astype(np.float32))


def test_nearest_resize_drifts_to_bottom_right_bilinear_does_not():
  sizes = (32, 25, 20, 22, 25)  # the article's cycle, scaled to 40 px
  start = np.array(_centre_of_mass(_bump()))
  moved = {}
  for method in ("nearest", "bilinear"):
    @jax.jit
    def cycle(image, method=method):
      for step in range(15):  # the cycle three times, as before step 76
        image = T.resize(image, sizes[step % 5], method=method)
      return image

    moved[method] = np.array(_centre_of_mass(cycle(_bump()))) - start
  # Nearest moves the blob down and right by well over a pixel (1/20 of the
  # image); bilinear keeps its centre within a tenth of a pixel.
  assert (moved["nearest"] > 0.1).all()
  assert (np.abs(moved["bilinear"]) < 0.1 / 20).all()


def test_single_bright_pixel_nearest_moves_down_right_bilinear_stays():
  pixel = np.zeros((16, 16, 3), np.float32)
  pixel[7, 7] = 1.0  # centre at 7.5 / 16
  nearest = _centre_of_mass(T.resize(jnp.asarray(pixel), 20, method="nearest"))
  bilinear = _centre_of_mass(T.resize(jnp.asarray(pixel), 20))
  start = 7.5 / 16
  # Nearest shifts the pixel by an eighth of an output pixel towards the
  # bottom-right; bilinear stays within 0.05 output pixels.
  assert nearest[0] - start > 0.1 / 20 and nearest[1] - start > 0.1 / 20
  np.testing.assert_allclose(bilinear, (start, start), atol=0.05 / 20)


def test_resize_identity_at_same_size():
  image = jnp.asarray(images()[0])
  for method in ("nearest", "bilinear"):
    np.testing.assert_array_equal(T.resize(image, (H, W), method=method),
                                  image)
  with pytest.raises(ValueError):
    T.resize(image, 8, method="bicubic")
  with pytest.raises(ValueError, match="antialias needs method='bilinear'"):
    T.resize(image, 8, method="nearest", antialias=True)


def test_crop_paste_round_trip():
  image = jnp.asarray(images()[0])
  offset = T.draw_crop_offset(jax.random.key(3), (H, W), size=(9, 11))
  patch = T.crop(image, offset, size=(9, 11))
  np.testing.assert_array_equal(T.paste(image, patch, offset), image)
  top, left = (int(v) for v in offset)
  np.testing.assert_array_equal(patch, image[top:top + 9, left:left + 11])
  changed = np.asarray(T.paste(image, patch + 1.0, offset))
  diff = changed - np.asarray(image)
  np.testing.assert_allclose(diff[top:top + 9, left:left + 11], 1.0,
                             atol=1e-6)
  assert np.count_nonzero(diff) == 9 * 11 * 3


def test_crop_offsets_cover_all_valid_positions():
  offsets = jax.jit(jax.vmap(lambda k: T.draw_crop_offset(k, (H, W), size=(17, 20))))(
      jax.random.split(jax.random.key(0), 400))
  offsets = np.asarray(offsets)
  assert offsets.min() == 0
  assert set(offsets[:, 0]) == {0, 1, 2, 3}
  assert set(offsets[:, 1]) == {0, 1, 2, 3, 4}


def test_jitter_is_reproducible_and_bounded():
  image = jnp.asarray(images()[0])
  fn = lambda k, x, pixels=4: T.shift(x, T.draw_shift(k, max_shift=pixels))
  key = jax.random.key(7)
  np.testing.assert_array_equal(fn(key, image), fn(key, image))
  outputs = [np.asarray(fn(k, image)) for k in keys(8, 6)]
  assert any(not np.array_equal(outputs[0], o) for o in outputs[1:])
  shifts = np.asarray(jax.jit(jax.vmap(lambda k: T.draw_shift(k, max_shift=4)))(
      jax.random.split(key, 500)))
  assert shifts.min() == -4 and shifts.max() == 4
  offset = jnp.array([3, -2])
  np.testing.assert_array_equal(T.shift(T.shift(image, offset), -offset),
                                image)
  np.testing.assert_array_equal(fn(key, image, 0), image)


def test_flip_probabilities_and_involution():
  image = jnp.asarray(images()[0])
  fn = lambda p: T.flip_horizontal(image, T.draw_flip(jax.random.key(0), probability=p))
  np.testing.assert_array_equal(fn(0.0), image)
  np.testing.assert_array_equal(fn(1.0), image[:, ::-1])
  flags = jax.jit(jax.vmap(T.draw_flip))(jax.random.split(jax.random.key(1), 400))
  assert 150 < int(jnp.sum(flags)) < 250  # a fair coin by default
  np.testing.assert_array_equal(
      T.flip_horizontal(T.flip_horizontal(image, True), True), image)


def test_pad_and_fill_border():
  image = jnp.asarray(images()[0])
  padded = np.asarray(T.pad(image, width=1, value=0.7))
  assert padded.shape == (H + 2, W + 2, 3)
  np.testing.assert_allclose(padded[0], 0.7)
  np.testing.assert_array_equal(padded[1:-1, 1:-1], image)
  ring = np.asarray(T.fill_border(image, width=2, value=0.7))
  assert ring.shape == image.shape
  np.testing.assert_allclose(ring[:2], 0.7)
  np.testing.assert_allclose(ring[:, -2:], 0.7)
  np.testing.assert_array_equal(ring[2:-2, 2:-2], image[2:-2, 2:-2])
  # Fixed-shape equivalent of padding then cropping the centre back.
  np.testing.assert_array_equal(
      ring, T.pad(image[2:-2, 2:-2], width=2, value=0.7))
