"""The views a collage does not survive: their geometry, and the measures on
a stand-in judge whose evidence is where the red is."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import recognisability
from tests.shared import red_judge

JUDGE = red_judge()


def test_the_views_keep_shapes_and_colours_and_drop_texture():
  # (Each view jitted: eager, every op compiles.)
  rng = np.random.default_rng(0)
  checker = np.indices((32, 32)).sum(axis=0) % 2
  images = np.stack([np.repeat(checker[..., None], 3, axis=-1),
                     rng.random((32, 32, 3))]).astype(np.float32)
  glanced = np.asarray(jax.jit(recognisability.glance, static_argnames="side")(
      jnp.asarray(images), side=8))
  assert glanced.shape == images.shape and glanced[0].std() < 0.05 * images[0].std()
  np.testing.assert_allclose(glanced.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=0.02)
  grey = np.asarray(jax.jit(recognisability.grey)(jnp.asarray(images)))
  np.testing.assert_allclose(grey[..., 0], grey[..., 2])
  np.testing.assert_allclose(grey[1, 3, 4, 0], images[1, 3, 4] @ [0.299, 0.587, 0.114],
                             rtol=1e-6)
  marked = np.zeros((1, 32, 32, 3), np.float32)
  marked[0, 8:24, 8:24] = 1.0  # the central half, white
  assert np.asarray(jax.jit(recognisability.centre)(jnp.asarray(marked))).min() > 0.99
  parts = np.asarray(jax.jit(recognisability.quarters)(jnp.asarray(marked)))
  assert parts.shape == (1, 4, 32, 32, 3)
  np.testing.assert_allclose(parts[0, 0, -1, -1], 1.0, atol=0.1)  # the square's corner
  cells = np.asarray(jax.jit(recognisability.occluded)(jnp.asarray(marked)))
  assert cells.shape == (1, 16, 32, 32, 3)
  np.testing.assert_allclose(cells[0, 5, 8:16, 8:16], 0.25)  # the mean colour
  assert (cells[0, 5, 16:24, 16:24] == 1.0).all()


def test_one_red_object_concentrates_the_evidence_a_red_collage_spreads_it():
  one = np.zeros((32, 32, 3), np.float32)
  one[:8, :8, 0] = 1.0  # one red cell, top left
  collage = np.zeros((32, 32, 3), np.float32)
  collage[::4, ::4, 0] = 1.0  # red dots everywhere
  values = recognisability.measure(JUDGE, np.stack([one, collage]), [0, 0])
  assert set(values) == set(recognisability.MEASURES)
  np.testing.assert_allclose(values["concentration"], [1.0, 0.25], atol=1e-6)
  # Red is top-1 whole and at a glance.
  np.testing.assert_array_equal(values["full_top1"], [1, 1])
  np.testing.assert_array_equal(values["glance_top1"], [1, 1])
  # Only the top-left quarter of the object holds red; every quarter of the collage does.
  np.testing.assert_allclose(values["quarters_top5"], [0.25, 1.0])
  assert values["full_p"].shape == (2,) and (values["full_p"] > 0).all()
  summary = recognisability.summary(values)
  assert summary["quarters_top5"] == pytest.approx(0.625)
  worse = recognisability.worst({"a": values, "b": {**values, "concentration": np.ones(2)}})
  np.testing.assert_allclose(worse["concentration"], [1.0, 0.25])
  worse = recognisability.worst({"a": values, "b": {**values, "quarters_top5": np.ones(2)}})
  np.testing.assert_allclose(worse["quarters_top5"], [1.0, 1.0])  # lower is better


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match="square"):
    recognisability.measure(JUDGE, np.zeros((1, 32, 30, 3)), [0])
  with pytest.raises(ValueError, match="1 images for 2 targets"):
    recognisability.measure(JUDGE, np.zeros((1, 32, 32, 3)), [0, 1])
