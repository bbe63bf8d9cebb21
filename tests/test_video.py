"""Videos and stability plots: frame counts, the scatter's target in red,
formats."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from classgen_jax import engine, updates, video
from classgen_jax import objectives as obj
from classgen_jax.metrics import Trace
from classgen_jax.operations import ResizeCycle
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform
from tests.helpers import QUICK, tiny

# Its tests share the module's fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("video")

# A cyclic resize from 40 px to 24: the image before iteration i has the
# side the previous iteration left.
CYCLING = Recipe("cycling", Uniform(), 40, (Octave(
    2, obj.class_logit(), updates.Gradient(), (0.1, 0.1),
    resize=ResizeCycle((24,), until=1)),))
CYCLING_SIDES = [40, 24]


@pytest.fixture(scope="module")
def generation():
  return engine.generate(tiny(), [3, 7], QUICK, seed=0, snapshot_every=1)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_video_has_one_frame_per_snapshot(generation, tmp_path, suffix):
  frames = video.frames(generation, 1, side=48)
  assert len(frames) == QUICK.iterations == 3
  assert frames[0].size == (48 + 72, 48)
  path = video.write_video(tmp_path / f"v{suffix}", frames, fps=5)
  with Image.open(path) as image:
    assert image.n_frames == 3


@pytest.mark.slow
def test_frames_of_a_resizing_recipe_show_the_image_at_its_size():
  result = engine.generate(tiny(), [3], CYCLING, seed=0, snapshot_every=1)
  snaps = result.snapshots
  assert list(snaps.sides[0]) == CYCLING_SIDES
  for frame, side in enumerate(CYCLING_SIDES):
    image = snaps.image(0, 0, frame)
    assert image.shape == (side, side, 3)
    # The logits drawn are the image's own, not the step's resized view's.
    own = tiny()(jnp.asarray(image)[None])["logits"][0]
    np.testing.assert_allclose(snaps.logits[0][0, frame], own, rtol=1e-5, atol=1e-5)
  frames = video.frames(result, 0, side=80)
  assert len(frames) == 2 and all(f.size == (80 + 120, 80) for f in frames)
  for frame, side in zip(frames, CYCLING_SIDES):
    picture = np.asarray(frame)[:, :80]
    drawn = np.nonzero((picture != 255).any(axis=-1))
    # Drawn at one scale for the whole video (40 px -> 80), centred.
    shown = side * 2
    assert drawn[0].min() == drawn[1].min() == (80 - shown) // 2
    assert drawn[0].max() - drawn[0].min() + 1 == drawn[1].max() - drawn[1].min() + 1 == shown


@pytest.mark.slow
def test_transfiguration_marks_the_photo_class_in_green():
  photo = np.random.default_rng(0).random((32, 32, 3))
  result = engine.generate(tiny(), [3], QUICK, seed=0, init=photo, snapshot_every=1)
  original = video.photo_class(result)
  start = tiny()(jnp.asarray(result.snapshots.image(0, 0, 0))[None])["logits"][0]
  assert original == int(np.argmax(start)) and original != 3
  def green(frame):  # in the scatter, right of the 48 px picture
    panel = np.asarray(frame)[:, 48:]
    return ((panel[..., 1] > 150) & (panel[..., 0] < 80) & (panel[..., 2] < 100)).sum()

  assert green(video.frames(result, 0, side=48, original=original)[0]) > 10
  assert green(video.frames(result, 0, side=48)[0]) == 0


def test_scatter_draws_the_target_in_red():
  logits = np.zeros(1000)
  logits[10] = 5.0
  panel = np.asarray(video.logit_scatter(logits, 10, (300, 100)))
  red = (panel[..., 0] > 200) & (panel[..., 1] < 80) & (panel[..., 2] < 80)
  ys, xs = np.nonzero(red)
  assert red.sum() > 10 and ys.max() < 30 and xs.max() < 60  # top left: class 10, high
  panel = np.asarray(video.logit_scatter(logits, 900, (300, 100)))
  ys, xs = np.nonzero((panel[..., 0] > 200) & (panel[..., 1] < 80))
  assert xs.min() > 240 and ys.min() > 60  # class 900, at the bottom


def test_video_errors(generation, tmp_path):
  plain = dataclasses.replace(generation, snapshots=None)  # as made without snapshot_every
  with pytest.raises(video.VideoError, match="no snapshots"):
    video.frames(plain)
  with pytest.raises(video.VideoError, match="unknown video format"):
    video.write_video(tmp_path / "v.avi", video.frames(generation, side=16))


def test_stability_plot_has_a_column_per_model(generation, tmp_path):
  other = Trace(*(np.asarray(x)[:, :1] for x in generation.trace))
  path = video.stability_plot({"a": generation.trace, "b": other, "c": other},
                              tmp_path / "s.png", panel=(100, 60))
  with Image.open(path) as image:
    assert image.size == (300, 120)
    pixels = np.asarray(image.convert("RGB"))
  assert (pixels != 255).any(axis=-1)[:, 200:].any()  # the third column is drawn


def test_stability_plot_reports_each_octave(generation, tmp_path):
  traces = {"a": generation.trace, "b": generation.trace}
  plain = video.stability_plot(traces, tmp_path / "plain.png", panel=(200, 60))
  path = video.stability_plot(traces, tmp_path / "s.png", panel=(200, 60), octaves=(1, 2))
  with Image.open(plain) as without, Image.open(path) as image:
    assert image.size[0] == without.size[0] and image.size[1] > 120
    pixels = np.asarray(image.convert("RGB"))
    lines = np.asarray(without.convert("RGB"))
  assert (pixels[120:] != 255).any()  # the per-octave table under each column
  assert (pixels[:120] != lines).any()  # and the octave boundary in the panels
