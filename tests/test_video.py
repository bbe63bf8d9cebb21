"""Videos and stability plots: frame counts, the scatter's target in red,
formats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classgen_jax import engine, video
from classgen_jax.engine import Trace
from tests.conftest import QUICK, tiny


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
  plain = engine.generate(tiny(), [3], QUICK, seed=0)
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
