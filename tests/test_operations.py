"""The view operations of transformation robustness (pad, scale, rotate, noise):
what they do, eager == jit == vmap, and their torch twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from classgen_jax import transforms as T
from classgen_jax.operations import Box, Context, Glance, Pad, Rotate, Scale
from classgen_jax.operations import Noise as NoiseOp
from converters.reference import operations as torch_ops

SIDE = 12
CONTEXT = Context(jnp.int32(0), 1)
OPS = {"pad": Pad(3), "pad_reflect": Pad(2, mode="reflect"), "scale": Scale(0.8, 1.25),
       "rotate": Rotate(30.0), "noise": NoiseOp(0.1), "glance": Glance(4, 8, 0.5),
       "box": Box(0.25, 0.6, out=9)}


def _images(n=3, side=SIDE, dtype=jnp.float32):
  return jax.random.uniform(jax.random.key(1), (n, side, side, 3), dtype)


def _draws(op, n, side, dtype):
  keys = jax.random.split(jax.random.key(2), n)
  return jax.jit(jax.vmap(lambda k: op.draw(k, side, dtype)))(keys)  # (eager: every op compiles)


@pytest.mark.parametrize("name", OPS)
def test_eager_jit_vmap_and_torch_twin_agree(name, x64):
  op = OPS[name]
  images = _images(dtype=jnp.float64)
  params = _draws(op, 3, SIDE, jnp.float64)
  one = lambda x, p: op(x, p, CONTEXT)  # noqa: E731
  eager = np.stack([one(x, None if params is None else params[i])
                    for i, x in enumerate(images)])
  batched = jax.jit(jax.vmap(one))(images, params)
  np.testing.assert_allclose(batched, eager, atol=1e-12)
  assert batched.shape[1] == op.output_side(SIDE)
  theirs = torch_ops.OPERATIONS(op, torch.from_numpy(np.array(images)).permute(0, 3, 1, 2),
                                None if params is None else np.asarray(params), None)
  np.testing.assert_allclose(theirs.permute(0, 2, 3, 1).numpy(), batched, atol=1e-12)


def test_scale_and_rotate_move_the_content_as_asked():
  image = _images(1, side=9)[0]
  np.testing.assert_allclose(T.affine(image, T.scale_matrix(1.0)), image, atol=1e-6)
  np.testing.assert_allclose(T.affine(image, T.rotation_matrix(0.0)), image, atol=1e-6)
  # A quarter turn is a permutation of the pixels (clockwise on screen, y down).
  np.testing.assert_allclose(T.affine(image, T.rotation_matrix(90.0)),
                             np.rot90(image, k=-1, axes=(0, 1)), atol=1e-5)
  # Zooming in by 2 puts pixel (c + d/2) at (c + d): the centre stays, an
  # off-centre pixel moves out.
  zoomed = T.affine(image, T.scale_matrix(2.0))
  np.testing.assert_allclose(zoomed[4, 4], image[4, 4], atol=1e-6)
  np.testing.assert_allclose(zoomed[8, 4], image[6, 4], atol=1e-6)
  # Zooming out mirrors the image into the uncovered border (no flat fill):
  # row 0 reads row -4, reflected to row 4; row 1 reads -2, i.e. row 2.
  out = T.affine(image, T.scale_matrix(0.5))
  np.testing.assert_allclose(out[0, 4], image[4, 4], atol=1e-6)
  np.testing.assert_allclose(out[1, 4], image[2, 4], atol=1e-6)


def test_zoom_is_affines_scale_bit_for_bit_and_its_gradient_too_to_rounding(x64):
  # Scale's per-axis zoom against affine's per-pixel read, on a canvas that
  # is not square (rows and columns swapped would show), zooms in and out.
  image = jnp.asarray(np.random.default_rng(3).random((13, 17, 3)), jnp.float32)
  for factor in (0.55, 1.0, 1.37, 2.0):  # op by op: the same values
    factor = jnp.asarray(factor, jnp.float32)
    np.testing.assert_array_equal(T.zoom(image, factor), T.affine(image, T.scale_matrix(factor)))
  # Under jit and vmap (the step's setting) XLA fuses each differently and
  # may contract other products into fused multiply-adds: equal to rounding;
  # and the gradients, in float64, to rounding.
  zoom = jax.vmap(T.zoom)
  affine = jax.vmap(lambda x, f: T.affine(x, T.scale_matrix(f)))
  images = jnp.stack([image, image[::-1]])
  factors = jnp.asarray([0.93, 1.41], jnp.float32)
  np.testing.assert_allclose(jax.jit(zoom)(images, factors), jax.jit(affine)(images, factors),
                             rtol=0, atol=1e-6)
  cotangent = np.random.default_rng(4).standard_normal(images.shape)
  pullback = jax.jit(lambda function, x, f, c: jax.vjp(lambda x: function(x, f), x)[1](c)[0],
                     static_argnums=0)
  theirs, ours = (pullback(function, images.astype(jnp.float64), factors.astype(jnp.float64),
                           cotangent) for function in (affine, zoom))
  assert ours.dtype == jnp.float64
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13)


def test_draws_stay_in_range_and_bad_settings_are_refused():
  scales = _draws(Scale(0.9, 1.1), 200, SIDE, jnp.float32)
  assert 0.9 <= scales.min() and scales.max() <= 1.1 and scales.std() > 0.04
  angles = _draws(Rotate(10.0), 200, SIDE, jnp.float32)
  assert -10 <= angles.min() and angles.max() <= 10 and angles.std() > 4
  noise = _draws(NoiseOp(0.08), 4, SIDE, jnp.float32)
  assert noise.shape == (4, SIDE, SIDE, 3) and abs(float(noise.std()) - 0.08) < 0.01
  for bad, message in [(lambda: Scale(0.0, 1.0), "0 < low <= high"),
                       (lambda: Scale(1.2, 1.1), "0 < low <= high"),
                       (lambda: Rotate(-1.0), "Rotate.degrees"),
                       (lambda: NoiseOp(float("inf")), "Noise.std"),
                       (lambda: Pad(2, mode="wrap"), "Pad.mode")]:
    with pytest.raises(ValueError, match=message):
      bad()


def test_a_glance_blurs_as_a_thumbnail_would_or_leaves_the_view():
  op = Glance(40, 112, probability=0.5)
  sigmas = np.asarray(_draws(op, 400, 224, jnp.float32))
  kept = sigmas == 0
  assert 0.4 < kept.mean() < 0.6  # half the views are left as they are
  blurred = sigmas[~kept]
  np.testing.assert_allclose([blurred.min(), blurred.max()], [224 / 224, 224 / 80], rtol=0.05)
  assert op.kernel(224) == 2 * 9 + 1  # three sigmas of the strongest blur
  stripes = np.zeros((64, 64, 3), np.float32)
  stripes[:, ::2] = 1.0  # detail a 16 px thumbnail cannot hold
  glanced = np.asarray(jax.jit(lambda x, s: Glance(16, 16, 1.0)(x, s, CONTEXT))(
      jnp.asarray(stripes), jnp.float32(2.0)))
  assert glanced[8:-8, 8:-8].std() < 0.01 and abs(glanced.mean() - 0.5) < 0.01
  np.testing.assert_array_equal(jax.jit(lambda x, s: op(x, s, CONTEXT))(
      jnp.asarray(stripes), jnp.float32(0.0)), stripes)
  for bad, message in [(lambda: Glance(0, 10), "0 < low <= high"),
                       (lambda: Glance(20, 10), "0 < low <= high"),
                       (lambda: Glance(probability=1.5), "Glance.probability")]:
    with pytest.raises(ValueError, match=message):
      bad()


def test_a_box_shows_a_part_of_the_middle_enlarged():
  image = np.zeros((40, 40, 3), np.float32)
  image[10:20, 20:30] = 1.0  # a white square, top right of the middle
  box = jax.jit(T.box, static_argnames="out")  # (eager, every op compiles)
  view = np.asarray(box(jnp.asarray(image), jnp.asarray([0.375, 0.625, 0.25]), out=20))
  np.testing.assert_allclose(view[2:-2, 2:-2], 1.0)  # the square, twice as large
  # A box off the canvas is moved inside it, not padded.
  edge = np.asarray(box(jnp.asarray(image), jnp.asarray([-1.0, 2.0, 0.5]), out=8))
  np.testing.assert_allclose(edge, box(jnp.asarray(image), jnp.asarray([0.25, 0.75, 0.5]),
                                       out=8))
  draws = np.asarray(_draws(Box(0.25, 0.30, 0.15), 400, 64, jnp.float32))
  assert 0.25 <= draws[:, 2].min() and draws[:, 2].max() <= 0.30
  assert abs(draws[:, :2].mean() - 0.5) < 0.02 and abs(draws[:, :2].std() - 0.15) < 0.02
  assert Box(out=224).output_side(512) == 224
  for bad in (lambda: Box(0.3, 0.2), lambda: Box(centre_std=-1.0), lambda: Box(out=0)):
    with pytest.raises(ValueError, match="Box needs"):
      bad()
