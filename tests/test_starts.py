"""Where an image begins: its keys and its starting canvas."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import parameterisations as P
from classgen_jax import recipes, starts
from classgen_jax.images import ImageError
from classgen_jax.recipe import Octave, Recipe
from tests.helpers import small


def _data(keys):
  return np.asarray(jax.random.key_data(keys))


def test_an_image_key_depends_on_seed_target_and_restart_only():
  batch = starts.image_keys(0, [9, 5, 5], [0, 0, 1])
  alone = starts.image_keys(0, [5], [1])
  np.testing.assert_array_equal(_data(batch)[2], _data(alone)[0])
  assert not np.array_equal(_data(batch)[1], _data(batch)[2])  # another restart
  assert not np.array_equal(_data(starts.image_keys(1, [5], [1])), _data(alone))
  folded = starts.fold_in(batch, 3)
  np.testing.assert_array_equal(_data(folded)[2],
                                _data(jax.random.fold_in(alone[0], 3)))


def _recipe(start, image=None):
  return Recipe("start", start, 16, (Octave(1),), image=image or P.Pixels())


def test_each_start_draws_as_it_says():
  keys = starts.image_keys(0, [1, 2], [0, 0])
  uniform = np.asarray(starts.initial_images(_recipe(starts.Uniform()), keys))
  assert uniform.shape == (2, 16, 16, 3) and 0 <= uniform.min() and uniform.max() < 1
  scaled = np.asarray(starts.initial_images(_recipe(starts.Uniform(25.0, 0.5)), keys))
  np.testing.assert_array_equal(scaled, np.asarray(jnp.asarray(uniform) / 25.0 + 0.5))
  normal = np.asarray(starts.initial_images(_recipe(starts.Normal(0.5, 0.05)), keys))
  assert abs(normal.mean() - 0.5) < 0.01 and abs(normal.std() - 0.05) < 0.01
  lucid = P.Sigmoid(P.Decorrelated(P.Fourier()))
  drawn = np.asarray(starts.initial_images(_recipe(starts.Parameters(), lucid), keys))
  assert 0 < drawn.min() and drawn.max() < 1 and drawn.std() < 0.1  # a small spectrum
  assert not np.array_equal(drawn[0], drawn[1])


def test_a_photo_start_needs_init_and_a_recipe_takes_only_start_values(tmp_path):
  keys = starts.image_keys(0, [1], [0])
  with pytest.raises(ValueError, match=r"^recipe 'start' starts from a photo: pass init="):
    starts.initial_images(_recipe(starts.Photo()), keys)
  with pytest.raises(ValueError, match=r"^recipe 'old': Recipe.start takes a start of "
                                       r"classgen_jax.starts .*got 'uniform'$"):
    Recipe("old", "uniform", 16, (Octave(1),))
  assert recipes.get("transfigure").start.photo and not recipes.get("octaves").start.photo


def test_photos_are_one_for_all_or_one_per_image(tmp_path):
  photo = np.full((10, 12, 3), 0.5, np.float32)
  assert len(starts.photos(photo, 3)) == 3
  assert starts.photos(np.full((4, 4, 3), 255, np.uint8), 1)[0].max() == 1.0
  with pytest.raises(ValueError, match="init has 2 photos for 3 images"):
    starts.photos([photo, photo], 3)
  with pytest.raises(ValueError, match=r"must be \(H, W, 3\)"):
    starts.photos([np.zeros((4, 4))], 1)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(ImageError, match="cannot read"):
    starts.photos(bad, 1)


def test_transfiguration_starts_from_the_antialiased_photo():
  """A photo start is resized as torchvision's ``Resize`` (antialiased), as the
  article loads its photos."""
  import torch
  import torchvision.transforms.functional as TF

  from classgen_jax import transforms
  photo = np.random.default_rng(0).random((120, 90, 3)).astype(np.float32)
  recipe = small(recipes.get("transfigure"), 1)
  start = np.asarray(starts.initial_images(recipe, starts.image_keys(0, [1], [0]), [photo]))
  want = TF.resize(torch.from_numpy(photo).permute(2, 0, 1), [recipe.size] * 2,
                   antialias=True).permute(1, 2, 0).numpy()
  np.testing.assert_allclose(start[0], want, atol=1e-5)
  aliased = np.asarray(transforms.resize(jnp.asarray(photo), recipe.size))
  assert np.abs(aliased - want).max() > 0.1


def test_starts_are_frozen_values():
  assert starts.Uniform(25.0, 0.5) == starts.Uniform(25.0, 0.5)
  assert hash(starts.Normal(0.5, 0.1)) == hash(starts.Normal(0.5, 0.1))
  with pytest.raises(dataclasses.FrozenInstanceError):
    starts.Normal().mean = 1.0
