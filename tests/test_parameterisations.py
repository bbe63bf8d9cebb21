"""Image parameterisations: round trips, spectra, colours, transformations, twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from classgen_jax import naturalness
from classgen_jax import parameterisations as P
from converters.reference import parameterisations as torch_params

SIDE = 32

ALL = {
    "lucid": P.Sigmoid(P.Decorrelated(P.Fourier())),
    "maco_photos": P.Sigmoid(P.Decorrelated(P.Maco())),
    "sigmoid_pixels": P.Sigmoid(P.Pixels()),
    "maco_power_law": P.Sigmoid(P.Decorrelated(P.Maco(alpha=1.4))),
}
# Lucid's image composes every piece but Maco's, which its own tests check in
# the default pass (the batch-independence of its gradient, its spectrum and
# phase); the rest in the slow pass.
def _default(*names):
  return lambda all_names: [pytest.param(n, marks=[] if n in names else [pytest.mark.slow])
                            for n in all_names]


_PARAMS = _default("lucid")(ALL)


def _image(seed=0, side=SIDE):
  return jax.random.uniform(jax.random.key(seed), (side, side, 3), minval=0.05, maxval=0.95)


@pytest.mark.parametrize("image", [P.Fourier(), P.Fourier(decay=1.5), P.Decorrelated(),
                                   P.Sigmoid(P.Decorrelated(P.Fourier())), P.Pixels()])
def test_encode_then_render_gives_the_image(image):
  x = _image()
  np.testing.assert_allclose(image.render(image.encode(x)), x, atol=2e-5)


def test_fourier_scale_gives_every_frequency_an_equal_share():
  """A unit change of coefficient k changes the image's spectrum at k by
  ``scale(k)``, and ``scale(k) * f_k`` is one constant: relative to a natural
  image's 1/f amplitude, every frequency moves by the same fraction."""
  image = P.Fourier()
  params = image.init(jax.random.key(0), SIDE, jnp.float32)
  base = jnp.fft.rfft2(image.render(params), axes=(0, 1))
  f = P.frequencies(SIDE)
  for k in [(0, 1), (3, 2), (SIDE // 2 - 1, 5), (7, SIDE // 2 - 1)]:
    moved = jnp.fft.rfft2(image.render(params.at[k + (0, 0)].add(1.0)), axes=(0, 1))
    change = float(jnp.abs(moved - base)[k + (0,)])
    np.testing.assert_allclose(change, P.fourier_scale(SIDE, 1.0)[k], rtol=1e-4)
  relative = P.fourier_scale(SIDE, 1.0) * f
  np.testing.assert_allclose(relative[f > 0], relative[0, 1], rtol=1e-12)


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_random_spectra_fall_as_one_over_f_to_the_decay(decay):
  """Power falls as 1/f^(2 decay): 2 (photos') for Lucid's decay 1, flat for 0."""
  image = P.Fourier(decay=decay)
  slopes = [naturalness.spectral_slope(
      np.asarray(image.render(image.init(jax.random.key(s), 128, jnp.float32))))
      for s in range(4)]
  assert abs(np.median(slopes) - 2 * decay) < 0.25, slopes


def test_colour_decorrelation_matrix():
  columns = np.linalg.norm(P.COLOUR, axis=0)
  assert columns.max() == pytest.approx(1.0)
  # Column 0 (luminance) is the largest and nearly grey; the others are opponents.
  assert np.argmax(columns) == 0 and np.ptp(P.COLOUR[:, 0]) < 0.05
  assert abs(P.COLOUR[:, 1].sum()) < 0.01 and P.COLOUR[0, 1] > 0 > P.COLOUR[2, 1]
  np.testing.assert_allclose(P.COLOUR * np.linalg.norm(P.COLOUR_CORRELATION_SQRT, axis=0).max(),
                             P.COLOUR_CORRELATION_SQRT)
  # A unit step in decorrelated channel 1 is an RGB step of COLOUR's column 1.
  step = P.Decorrelated().render(jnp.zeros((2, 2, 3)).at[..., 1].set(1.0))
  np.testing.assert_allclose(step[0, 0], P.COLOUR[:, 1], rtol=1e-6)
  # saturation scales the opponents' steps only, and round-trips.
  bright = P.Decorrelated(saturation=2.0)
  np.testing.assert_allclose(bright.matrix, P.COLOUR * [1, 2, 2])
  x = _image()
  np.testing.assert_allclose(bright.render(bright.encode(x)), x, atol=1e-5)
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match=r"^here: Decorrelated.saturation must be finite"):
      P.Decorrelated(saturation=bad).check("here", SIDE)


def test_maco_keeps_the_magnitude_and_optimises_the_phase():
  maco = P.Maco()
  a, b = (maco.init(jax.random.key(s), SIDE, jnp.float32) for s in (0, 1))
  spectra = [np.abs(np.fft.rfft2(np.asarray(maco.render(p)), axes=(0, 1))) for p in (a, b)]
  # Columns 0 and side/2 hold their own conjugates, which a random phase breaks.
  inner = (slice(None), slice(1, SIDE // 2), slice(None))
  # Up to the standardisation's one factor per image, it is the photos' spectrum.
  for spectrum in spectra:
    ratio = spectrum[inner] / P.photo_amplitude(SIDE)[inner]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-3)
  assert not np.allclose(maco.render(a), maco.render(b))
  # The phase of an image survives encode -> render (the magnitude does not):
  # a render's, once its own conjugate columns are consistent, comes back.
  x = maco.render(maco.encode(maco.render(a)))
  np.testing.assert_allclose(maco.render(maco.encode(x)), x, atol=1e-4)
  assert not np.allclose(maco.render(maco.encode(_image())), _image(), atol=0.1)


def test_maco_photo_spectrum_has_a_largest_canvas():
  P.Maco().check("recipe 'm' octave 1", 200)
  with pytest.raises(ValueError, match=r"recipe 'm' octave 1: Maco's photo spectrum .* 200 px"
                                       r".* canvas is 256 px"):
    P.Maco().check("recipe 'm' octave 1", 256)
  P.Maco(alpha=1.4).check("recipe 'm' octave 1", 1024)
  with pytest.raises(ValueError, match="Fourier.decay must be finite"):
    P.Sigmoid(P.Fourier(decay=float("nan"))).check("recipe 'm' octave 1", 64)


@pytest.mark.parametrize("name", _PARAMS)
def test_eager_jit_vmap_and_scan_agree(name):
  image = ALL[name]
  params = jax.vmap(lambda k: image.init(k, SIDE, jnp.float32))(
      jax.random.split(jax.random.key(0), 2))
  eager = jnp.stack([image.render(p) for p in params])
  np.testing.assert_allclose(jax.jit(jax.vmap(image.render))(params), eager, atol=1e-6)

  def ascend(params, _):  # a step of a scan, through render
    grad = jax.grad(lambda p: jnp.sum(jax.vmap(image.render)(p)[..., 0]))(params)
    return params + 0.01 * grad, None

  scanned, _ = jax.jit(lambda p: jax.lax.scan(ascend, p, None, length=2))(params)
  looped = ascend(ascend(params, None)[0], None)[0]
  np.testing.assert_allclose(scanned, looped, atol=1e-5)
  red = lambda p: jnp.sum(jax.vmap(image.render)(p)[..., 0])  # noqa: E731
  assert red(scanned) > red(params)


@pytest.mark.parametrize("name", _default("lucid", "pixels", "saturated", "sigmoid_pixels")(
    [*ALL, "pixels", "saturated"]))
def test_torch_twin_renders_and_encodes_alike(name, x64):
  image = ALL.get(name, {"saturated": P.Decorrelated(P.Fourier(), saturation=2.0)}.get(
      name, P.Pixels()))
  params = jax.vmap(lambda k: image.init(k, SIDE, jnp.float64))(
      jax.random.split(jax.random.key(0), 2))
  ours = np.asarray(jax.vmap(image.render)(params))
  theirs = torch_params.render(image, torch.from_numpy(np.array(params)))
  np.testing.assert_allclose(theirs.permute(0, 2, 3, 1).numpy(), ours, atol=1e-10)
  encoded = torch_params.encode(image, torch.from_numpy(ours).permute(0, 3, 1, 2))
  np.testing.assert_allclose(encoded.numpy(), np.asarray(jax.vmap(image.encode)(ours)),
                             atol=1e-8)


@pytest.mark.parametrize("name", _default("lucid", "maco_power_law")(
    ["lucid", "maco_photos", "maco_power_law"]))
@pytest.mark.bit_exact
def test_gradient_does_not_depend_on_the_batch(name):
  """The gradient through a render is bit-identical for an image alone, first
  or last in a batch (XLA rewrote ``magnitude * cos(phase)`` and a division
  by a broadcast mean differently for a lone image or the last of a batch)."""
  image = ALL[name]
  params = jax.vmap(lambda k: image.init(k, SIDE, jnp.float32))(
      jax.random.split(jax.random.key(3), 4))
  grad = jax.jit(jax.vmap(jax.grad(lambda p: jnp.sum(jnp.sin(3 * image.render(p))))))
  whole = grad(params)
  for count in (1, 2, 3):
    np.testing.assert_array_equal(grad(params[:count]), whole[:count], err_msg=f"{count}")
