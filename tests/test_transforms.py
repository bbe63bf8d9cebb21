"""Tests of the image transforms (``classgen_jax.transforms``, ``blur``, ``colour``
and ``resize_cycle``): eager == jit == vmap, torch parity, behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision.transforms as tv_transforms

from classgen_jax import blur, colour, resize_cycle
from classgen_jax import transforms as T
from converters.reference import transforms as TT

# Small sizes keep the suite fast; the article's own sizes are checked where
# only index arithmetic is involved.
H, W = 20, 24
BATCH = 3
# A scaled-down resilience cycle: start size (the H x W canvas), then the
# square sizes of the cycle.
SIZES = ((H, W), 16, 12, 10, 13, 14)
STOP = 8
# The article's resilience cycle: step i < 76 resizes to ARTICLE_CYCLE[i % 5].
ARTICLE_CYCLE = (256, 198, 160, 180, 200)
ARTICLE_STOP = 76


def images(dtype=np.float32, seed=0, low=0.0, high=1.0, shape=(H, W)):
  rng = np.random.default_rng(seed)
  return rng.uniform(low, high, (BATCH, *shape, 3)).astype(dtype)


def to_torch(batch) -> torch.Tensor:
  return torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).contiguous()


def from_torch(x: torch.Tensor) -> np.ndarray:
  return x.permute(0, 2, 3, 1).numpy()


def keys(seed=0, n=BATCH):
  return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------------------
# Every transform: eager == jit == vmap.

def _region_offset(key, image):
  return T.draw_crop_offset(key, image.shape[:2], size=(9, 11))


CASES = {
    "gaussian_blur": lambda k, x: blur.gaussian_blur(
        x, sigma=0.4 + jax.random.uniform(k), kernel_size=3),
    "gaussian_blur_k5": lambda k, x: blur.gaussian_blur(x, sigma=1.7,
                                                        kernel_size=5),
    "blur_region": lambda k, x: blur.gaussian_blur_region(
        x, _region_offset(k, x), size=(9, 11), sigma=1.2),
    "blur_region_context": lambda k, x: blur.gaussian_blur_region(
        x, _region_offset(k, x), size=(9, 11), sigma=1.2, context=True),
    "resize_bilinear_down": lambda k, x: T.resize(x, (13, 17)),
    "resize_bilinear_up": lambda k, x: T.resize(x, 31),
    "resize_nearest": lambda k, x: T.resize(x, (13, 31), method="nearest"),
    "resize_antialiased": lambda k, x: T.resize(x, (13, 9), antialias=True),
    "crop_paste": lambda k, x: T.paste(
        x, 1.0 - T.crop(x, _region_offset(k, x), size=(9, 11)),
        _region_offset(k, x)),
    "shift": lambda k, x: T.shift(x, T.draw_shift(k, max_shift=5)),
    "flip": lambda k, x: T.flip_horizontal(x, T.draw_flip(k)),
    "pad": lambda k, x: T.pad(x, width=2, value=0.7),
    "fill_border": lambda k, x: T.fill_border(x, width=2, value=0.7),
    "color_jitter": lambda k, x: colour.adjust_color(x, colour.draw_color_jitter(
        k, brightness=0.3, contrast=0.4, saturation=0.5, dtype=x.dtype)),
    "clip": lambda k, x: T.clip(2.0 * x - 0.5),
    "resize_within": lambda k, x: resize_cycle.resize_within(
        resize_cycle.embed(x[:16, :16], shape=(H, W)), 1, 4, sizes=SIZES,
        method="nearest"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_jit_vmap_agree(name):
  fn = CASES[name]
  batch, batch_keys = jnp.asarray(images()), keys(1)
  eager = np.stack([np.asarray(fn(k, x)) for k, x in zip(batch_keys, batch)])
  jitted = jax.jit(fn)
  jit_out = np.stack([np.asarray(jitted(k, x))
                      for k, x in zip(batch_keys, batch)])
  # Jitted, as the engine runs it; op-by-op vmap checks the same batching
  # rules at several times the cost.
  vmap_out = np.asarray(jax.jit(jax.vmap(fn))(batch_keys, batch))
  np.testing.assert_allclose(jit_out, eager, rtol=0, atol=1e-6)
  np.testing.assert_allclose(vmap_out, eager, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["gaussian_blur", "blur_region",
                                  "resize_bilinear_down", "resize_nearest",
                                  "crop_paste", "shift", "fill_border"])
def test_gradients_flow_through(name):
  # The engine takes the gradient of the objective through these.
  fn = CASES[name]
  image, key = jnp.asarray(images()[0]), keys(3)[0]
  # numpy's normal: jax.random's would compile anew for every output shape.
  weights = np.random.default_rng(2).standard_normal(
      jax.eval_shape(fn, key, image).shape).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(weights * fn(key, x))))(image)
  assert grad.shape == image.shape
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_sigma_can_follow_a_schedule_inside_scan():
  image = jnp.asarray(images()[0])
  sigmas = jnp.linspace(2.4, 0.8, 4)

  def step(x, sigma):
    return blur.gaussian_blur(x, sigma=sigma), None

  scanned, _ = jax.lax.scan(step, image, sigmas)
  expected = image
  for sigma in [2.4, 2.4 - 1.6 / 3, 2.4 - 3.2 / 3, 0.8]:
    expected = blur.gaussian_blur(expected, sigma=sigma)
  np.testing.assert_allclose(scanned, expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Parity with the torch twins, float64 (tight) and float32 (realistic).

TOLERANCE = {np.float64: 1e-12, np.float32: 2e-6}
# torchvision's sigma when none is given, 0.3 * ((k - 1) / 2 - 1) + 0.8: the
# article's blur, a 3x3 kernel.
TORCHVISION_SIGMA_3X3 = 0.8


def _batched(fn):
  """``fn`` over the batch, jitted: one compile instead of many op-by-op ones."""
  return jax.jit(jax.vmap(fn))


# Shared by the crop, paste and region parity cases: one compile of the
# (costly) threefry draw per dtype mode, not one per case.
_crop_offsets = _batched(lambda k: T.draw_crop_offset(k, (H, W), size=(9, 11)))


def _parity_blur(dtype):
  x = images(dtype)
  jax_out = _batched(lambda i: blur.gaussian_blur(i, sigma=1.3, kernel_size=5))(
      jnp.asarray(x))
  return jax_out, TT.gaussian_blur(to_torch(x), sigma=1.3, kernel_size=5)


def _parity_blur_default(dtype):
  x = images(dtype)
  jax_out = _batched(lambda i: blur.gaussian_blur(i, sigma=TORCHVISION_SIGMA_3X3))(
      jnp.asarray(x))
  # The article's call: torchvision's default sigma for a 3x3 kernel.
  from torchvision.transforms import functional as tvf
  return jax_out, tvf.gaussian_blur(to_torch(x), [3, 3])


def _parity_blur_region(dtype, context):
  x = images(dtype)
  offsets = _crop_offsets(keys(2))
  fn = lambda i, o: blur.gaussian_blur_region(i, o, size=(9, 11), sigma=0.9,
                                              context=context)
  jax_out = _batched(fn)(jnp.asarray(x), offsets)
  return jax_out, TT.gaussian_blur_region(to_torch(x), np.asarray(offsets),
                                          size=(9, 11), sigma=0.9,
                                          context=context)


def _parity_resize(dtype, size, method):
  x = images(dtype)
  jax_out = _batched(lambda i: T.resize(i, size, method=method))(
      jnp.asarray(x))
  return jax_out, TT.resize(to_torch(x), size, method=method)


def _parity_resize_torchvision_upsample(dtype):
  # Between octaves the article upsizes with torchvision's Resize, whose
  # default antialias only acts when shrinking.
  x = images(dtype)
  jax_out = _batched(lambda i: T.resize(i, (27, 29)))(jnp.asarray(x))
  return jax_out, tv_transforms.Resize([27, 29])(to_torch(x))


def _parity_resize_torchvision_antialiased(dtype):
  # Photos are loaded with torchvision's Resize, which antialiases when
  # shrinking; one side shrinks by more than 2, the other grows.
  x = images(dtype)
  jax_out = _batched(lambda i: T.resize(i, (7, 29), antialias=True))(jnp.asarray(x))
  return jax_out, tv_transforms.Resize([7, 29], antialias=True)(to_torch(x))


def _parity_crop(dtype):
  x = images(dtype)
  offsets = _crop_offsets(keys(3))
  jax_out = _batched(lambda i, o: T.crop(i, o, size=(9, 11)))(jnp.asarray(x),
                                                               offsets)
  return jax_out, TT.crop(to_torch(x), np.asarray(offsets), size=(9, 11))


def _parity_paste(dtype):
  x, patches = images(dtype), images(dtype, seed=5, shape=(9, 11))
  offsets = _crop_offsets(keys(4))
  jax_out = _batched(T.paste)(jnp.asarray(x), jnp.asarray(patches), offsets)
  return jax_out, TT.paste(to_torch(x), to_torch(patches), np.asarray(offsets))


def _parity_shift(dtype):
  x = images(dtype)
  offsets = _batched(lambda k: T.draw_shift(k, max_shift=7))(keys(5))
  jax_out = _batched(T.shift)(jnp.asarray(x), offsets)
  return jax_out, TT.shift(to_torch(x), np.asarray(offsets))


def _parity_flip(dtype):
  x = images(dtype)
  flags = np.array([True, False, True])
  jax_out = _batched(T.flip_horizontal)(jnp.asarray(x), jnp.asarray(flags))
  return jax_out, TT.flip_horizontal(to_torch(x), flags)


def _parity_pad(dtype):
  x = images(dtype)
  jax_out = _batched(lambda i: T.pad(i, width=1, value=0.7))(jnp.asarray(x))
  # The article's call.
  return jax_out, tv_transforms.Pad([1, 1], fill=0.7)(to_torch(x))


def _parity_fill_border(dtype):
  x = images(dtype)
  jax_out = _batched(lambda i: T.fill_border(i, width=2, value=0.7))(
      jnp.asarray(x))
  return jax_out, TT.fill_border(to_torch(x), width=2, value=0.7)


def _parity_color_jitter(dtype):
  # Some values leave [0, 1] after scaling, so the clamps are exercised.
  x = images(dtype)
  params = _batched(lambda k: colour.draw_color_jitter(
      k, brightness=0.5, contrast=0.6, saturation=0.7, dtype=dtype))(keys(6))
  jax_out = _batched(colour.adjust_color)(jnp.asarray(x), params)
  return jax_out, TT.adjust_color(to_torch(x), np.asarray(params.factors),
                                  np.asarray(params.order))


def _parity_clip(dtype):
  x = images(dtype, low=-0.5, high=1.5)
  return _batched(T.clip)(jnp.asarray(x)), TT.clip(to_torch(x))


def _parity_cyclic_chain(dtype, method):
  """The article's resize loop, fixed-shape JAX vs torch's interpolate."""
  x = images(dtype)
  steps = STOP + 3

  def run(image):
    def step(buffer, i):
      from_index, to_index = resize_cycle.cyclic_size_indices(i, num_sizes=5, stop=STOP)
      buffer = resize_cycle.resize_within(buffer, from_index, to_index, sizes=SIZES,
                                          method=method)
      # Something in between, as the gradient step would be; resize_within
      # reads only the image's corner, so it may touch the whole buffer.
      return buffer * 0.9 + 0.05, None

    buffer, _ = jax.lax.scan(step, resize_cycle.embed(image, shape=(H, W)),
                             jnp.arange(steps))
    last = SIZES[1 + (STOP - 1) % 5]
    return buffer[:last, :last]

  jax_out = _batched(run)(jnp.asarray(x))
  ref = to_torch(x)
  for i in range(steps):
    if i < STOP:
      ref = TT.resize(ref, SIZES[1 + i % 5], method=method)
    ref = ref * 0.9 + 0.05
  return jax_out, ref


PARITY = {
    "gaussian_blur": _parity_blur,
    "gaussian_blur_torchvision_default": _parity_blur_default,
    "blur_region": lambda d: _parity_blur_region(d, False),
    "blur_region_context": lambda d: _parity_blur_region(d, True),
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
    "color_jitter": _parity_color_jitter,
    "clip": _parity_clip,
    "cyclic_chain_nearest": lambda d: _parity_cyclic_chain(d, "nearest"),
    "cyclic_chain_bilinear": lambda d: _parity_cyclic_chain(d, "bilinear"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(PARITY))
def test_torch_parity(name, dtype, request):
  if dtype == np.float64:
    request.getfixturevalue("x64")
  jax_out, torch_out = PARITY[name](dtype)
  jax_out, torch_out = np.asarray(jax_out), from_torch(torch_out)
  assert jax_out.dtype == dtype and torch_out.dtype == dtype
  assert jax_out.shape == torch_out.shape
  np.testing.assert_allclose(jax_out, torch_out, rtol=0,
                             atol=TOLERANCE[dtype])


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


def test_gaussian_kernel_is_torchvision_default_for_3x3():
  kernel = np.asarray(blur.gaussian_kernel(3, TORCHVISION_SIGMA_3X3))
  np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
  # The article's approximation: centre weight about twice the outer ones.
  assert kernel[0] == pytest.approx(kernel[2])
  assert 1.9 < kernel[1] / kernel[0] < 2.2


def test_blur_preserves_constant_and_reduces_variance():
  constant = jnp.full((H, W, 3), 0.37)
  np.testing.assert_allclose(blur.gaussian_blur(constant, sigma=2.0), constant,
                             atol=1e-6)
  noise = jnp.asarray(images()[0])
  blurred = blur.gaussian_blur(noise, sigma=0.8)
  assert float(jnp.var(blurred)) < 0.5 * float(jnp.var(noise))
  np.testing.assert_allclose(jnp.mean(blurred), jnp.mean(noise), atol=0.02)


def test_blur_region_touches_only_the_region():
  image = jnp.asarray(images()[0])
  offset = jnp.array([4, 6])
  for context in (False, True):
    out = np.asarray(blur.gaussian_blur_region(image, offset, size=(9, 11),
                                               sigma=1.0, context=context))
    outside = np.ones((H, W), bool)
    outside[4:13, 6:17] = False
    np.testing.assert_array_equal(out[outside], np.asarray(image)[outside])
    assert not np.allclose(out[4:13, 6:17], np.asarray(image)[4:13, 6:17])
  region_only = blur.gaussian_blur_region(image, offset, size=(9, 11), sigma=1.0)
  np.testing.assert_allclose(
      region_only[4:13, 6:17],
      blur.gaussian_blur(image[4:13, 6:17], sigma=1.0), atol=1e-7)
  with_context = blur.gaussian_blur_region(image, offset, size=(9, 11), sigma=1.0,
                                           context=True)
  # The two semantics differ only at the region's border.
  np.testing.assert_allclose(with_context[5:12, 7:16],
                             region_only[5:12, 7:16], atol=1e-7)
  assert not np.allclose(with_context[4], region_only[4])


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


def test_cyclic_size_indices_follow_the_article():
  sizes = (299, *ARTICLE_CYCLE)
  current = 299
  for step in range(100):
    from_index, to_index = resize_cycle.cyclic_size_indices(step, num_sizes=5,
                                                            stop=ARTICLE_STOP)
    assert sizes[int(from_index)] == current
    if step < ARTICLE_STOP:  # the article: interpolate(x, sizes[i % 5]) for i < 76
      expected = ARTICLE_CYCLE[step % 5]
    else:
      expected = current
    assert sizes[int(to_index)] == expected, step
    current = expected
  assert current == 256


def test_resize_within_matches_plain_resize_and_zeroes_the_rest():
  image = jnp.asarray(images()[0][:16, :16])
  buffer = resize_cycle.embed(image, shape=(H, W))
  out = resize_cycle.resize_within(buffer, 1, 3, sizes=SIZES, method="bilinear")
  # Compiled inside a switch, XLA may fuse multiply-adds: equal to rounding.
  np.testing.assert_allclose(out[:10, :10], T.resize(image, 10), atol=1e-6)
  assert float(jnp.abs(out[10:]).max()) == 0.0
  assert float(jnp.abs(out[:, 10:]).max()) == 0.0


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


def test_color_jitter_zero_strength_is_identity():
  # Out-of-range values too: torchvision skips disabled ops (no clamp).
  image = jnp.asarray(images(low=-0.2, high=1.2)[0])
  params = colour.draw_color_jitter(jax.random.key(0))
  np.testing.assert_array_equal(
      colour.adjust_color(image, params, enabled=(False, False, False)), image)
  np.testing.assert_array_equal(params.factors, 1.0)
  in_range = jnp.asarray(images()[0])
  np.testing.assert_array_equal(colour.adjust_color(in_range, params), in_range)


def test_color_jitter_brightness_scales_and_clamps():
  image = jnp.asarray(images()[0])
  key = jax.random.key(4)
  params = colour.draw_color_jitter(key, brightness=0.5)
  factor = float(params.factors[0])
  assert 0.5 <= factor <= 1.5 and factor != 1.0
  brightness = (True, False, False)
  out = colour.adjust_color(image, params, enabled=brightness)
  np.testing.assert_allclose(out, jnp.clip(factor * image, 0, 1), atol=1e-7)
  # The article's setting moves pixels by at most 1e-4 relative.
  tiny = colour.adjust_color(image, colour.draw_color_jitter(key, brightness=1e-4),
                             enabled=brightness)
  assert 0 < float(jnp.abs(tiny - image).max()) <= 1e-4


def test_color_jitter_factors_and_order():
  params = jax.jit(jax.vmap(lambda k: colour.draw_color_jitter(
      k, brightness=0.2, contrast=1.5, saturation=0.1)))(
          jax.random.split(jax.random.key(0), 300))
  factors = np.asarray(params.factors)
  assert factors[:, 0].min() >= 0.8 and factors[:, 0].max() <= 1.2
  assert factors[:, 1].min() >= 0.0 and factors[:, 1].max() <= 2.5
  orders = {tuple(o) for o in np.asarray(params.order)}
  assert len(orders) == 6  # every permutation is drawn
  fixed = colour.draw_color_jitter(jax.random.key(1), brightness=0.2,
                                   permute=False)
  np.testing.assert_array_equal(fixed.order, [0, 1, 2])


def test_saturation_zero_gives_grayscale():
  image = jnp.asarray(images()[0])
  params = colour.ColorJitterParams(factors=jnp.array([1.0, 1.0, 0.0]),
                                    order=jnp.arange(3))
  out = np.asarray(colour.adjust_color(image, params))
  gray = np.asarray(colour.grayscale(image))
  np.testing.assert_allclose(out, np.broadcast_to(gray, out.shape), atol=1e-6)

