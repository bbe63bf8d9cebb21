"""Videos of a generation and plots of how steady a model's view of it is.

As in the article: each frame shows the image on the left and, on the right,
a scatter plot of all the classifier's logits for that image (x = class
index, y = logit; the target in red, and in a transfiguration the photo's
own class in green). The image is shown as it is at that iteration: during
a cyclic resize it shrinks and grows within the frame, all frames drawn at
one scale (the largest canvas fills the picture). Frames come from
``Generation.snapshots``; everything is drawn with Pillow, and written as an
animated GIF or WebP (MP4 only where ``imageio`` with an ffmpeg plugin is
installed).

``stability_plot`` draws, for several models side by side, the target's
logit and rank over the iterations (``Generation.trace``), octave by octave
with each octave's stability: the article's comparison of GoogLeNet,
Inception-v3 and ResNet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from classgen_jax import imagenet, metrics
from classgen_jax._files import atomic_path
from classgen_jax.images import to_uint8
from classgen_jax.metrics import Trace
from classgen_jax.results import Generation

_BACKGROUND = (255, 255, 255)
_AXIS = (90, 90, 90)
_POINT = (110, 130, 170)
_TARGET = (220, 30, 30)
_ORIGINAL = (30, 170, 50)
_GRID = (200, 200, 200)
_LINE = 12  # px per line of text
_SERIES = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


class VideoError(ValueError):
  """A video that cannot be made (no snapshots, unknown format)."""


def _font():
  return ImageFont.load_default()


def logit_scatter(logits: np.ndarray, target: int, size: tuple[int, int],
                  limits: tuple[float, float] | None = None,
                  title: str = "", original: int | None = None) -> Image.Image:
  """All logits as points (x = class index, y = logit), the target in red.

  Args:
    logits: ``(classes,)``.
    target: the class drawn in red, on top.
    size: ``(width, height)`` of the panel.
    limits: the y range (fixed across a video's frames so points move).
    title: a line drawn at the top.
    original: a class drawn in green (a transfigured photo's own class).
  """
  width, height = size
  logits = np.asarray(logits, np.float64)
  low, high = limits or (float(logits.min()), float(logits.max()))
  if high - low < 1e-9:
    high = low + 1.0
  panel = Image.new("RGB", size, _BACKGROUND)
  draw = ImageDraw.Draw(panel)
  left, right, top, bottom = 36, width - 8, 18, height - 14
  draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS)
  font = _font()
  draw.text((2, top - 4), f"{high:.0f}", fill=_AXIS, font=font)
  draw.text((2, bottom - 8), f"{low:.0f}", fill=_AXIS, font=font)
  draw.text((left, bottom + 1), "class index", fill=_AXIS, font=font)
  if title:
    draw.text((left, 2), title, fill=(0, 0, 0), font=font)
  n = len(logits)
  xs = left + (np.arange(n) + 0.5) / n * (right - left)
  ys = bottom - (np.clip(logits, low, high) - low) / (high - low) * (bottom - top)
  for i, (x, y) in enumerate(zip(xs, ys)):
    if i not in (target, original):
      draw.point((float(x), float(y)), fill=_POINT)
  marks = [(target, _TARGET)]
  if original is not None and original != target:
    marks.insert(0, (original, _ORIGINAL))
  for index, colour in marks:
    x, y = float(xs[index]), float(ys[index])
    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
  return panel


def photo_class(generation: Generation, index: int = 0) -> int:
  """The class the classifier gives image ``index``'s start (its first frame):
  in a transfiguration, the photo's own class."""
  snapshots = generation.snapshots
  if snapshots is None or not len(snapshots.iterations[0]) or snapshots.iterations[0][0] != 0:
    raise VideoError("the generation has no snapshot of its start: run it with "
                     "snapshot_every > 0")
  return int(np.argmax(snapshots.logits[0][index, 0]))


def frames(generation: Generation, index: int = 0,
           labels: Sequence[str] = imagenet.LABELS, side: int = 256,
           original: int | None = None) -> list[Image.Image]:
  """The video frames of image ``index`` of a generation made with ``snapshot_every``.

  Args:
    generation: made with ``snapshot_every``.
    index: which image.
    labels: class names.
    side: the picture's side for the largest canvas of the run; smaller
      canvases are drawn smaller, centred (every frame has the same size).
    original: a class to mark in green on the scatter: for a
      transfiguration, the photo's own class (``photo_class``).

  Raises:
    VideoError: the generation has no snapshots.
  """
  snapshots = generation.snapshots
  if snapshots is None or not any(len(i) for i in snapshots.iterations):
    raise VideoError("the generation has no snapshots: run it with snapshot_every > 0 "
                     "(and fewer than the octave's iterations)")
  target = int(generation.targets[index])
  logits = np.concatenate([lo[index] for lo in snapshots.logits])
  limits = (float(logits.min()), float(logits.max()))
  largest = max(int(s.max()) for s in snapshots.sides if len(s))
  result = []
  for octave, (logit_rows, iterations, sides) in enumerate(zip(
      snapshots.logits, snapshots.iterations, snapshots.sides)):
    for frame_index, (row, iteration, canvas) in enumerate(zip(logit_rows[index], iterations,
                                                               sides)):
      image = snapshots.image(index, octave, frame_index)
      shown = max(1, round(side * int(canvas) / largest))
      picture = Image.fromarray(to_uint8(image)).resize((shown, shown), Image.BILINEAR)
      rank = int(np.sum(row > row[target]))
      title = f"{labels[target]}  iteration {int(iteration)}  {int(canvas)} px  rank {rank}"
      panel = logit_scatter(row, target, (side * 3 // 2, side), limits, title, original)
      frame = Image.new("RGB", (side + panel.width, side), _BACKGROUND)
      frame.paste(picture, ((side - shown) // 2, (side - shown) // 2))
      frame.paste(panel, (side, 0))
      result.append(frame)
  return result


def write_video(path: str | os.PathLike, video_frames: Sequence[Image.Image], *,
                fps: float = 10.0) -> Path:
  """Write frames as ``.gif`` or ``.webp`` (Pillow), or ``.mp4`` (imageio + ffmpeg).

  Raises:
    VideoError: no frames, an unknown suffix, or MP4 without an encoder.
  """
  path = Path(path)
  if not video_frames:
    raise VideoError("no frames to write")
  suffix = path.suffix.lower()
  duration = max(1, round(1000 / fps))
  if suffix not in (".gif", ".webp", ".mp4"):
    raise VideoError(f"unknown video format {path.suffix!r}: use .gif, .webp or .mp4")
  # Written beside the target and renamed, so a killed run leaves no half video.
  with atomic_path(path, suffix=suffix) as tmp:
    if suffix == ".mp4":
      try:
        import imageio.v3 as iio
        iio.imwrite(tmp, np.stack([np.asarray(f) for f in video_frames]), fps=fps,
                    plugin="FFMPEG")
      except Exception as error:  # any missing plugin or encoder
        raise VideoError(f"cannot write MP4 ({type(error).__name__}: {error}); "
                         "write .gif or .webp, or pip install imageio-ffmpeg") from None
    else:
      first, *rest = video_frames
      options = dict(lossless=True) if suffix == ".webp" else {}
      first.save(tmp, format=suffix[1:].upper(), save_all=True, append_images=rest,
                 duration=duration, loop=0, **options)
  return path


def _line_panel(series: Sequence[np.ndarray], size: tuple[int, int], title: str,
                invert: bool = False, boundaries: Sequence[int] = ()) -> Image.Image:
  """Lines over iterations; ``invert`` puts low values (rank 0) at the top;
  a grey vertical line at each of ``boundaries`` (the first iteration of an
  octave)."""
  width, height = size
  panel = Image.new("RGB", size, _BACKGROUND)
  draw = ImageDraw.Draw(panel)
  left, right, top, bottom = 40, width - 8, 16, height - 14
  draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS)
  draw.text((left, 2), title, fill=(0, 0, 0), font=_font())
  values = np.concatenate([np.ravel(s) for s in series]).astype(np.float64)
  low, high = float(values.min()), float(values.max())
  if high - low < 1e-9:
    high = low + 1.0
  top_label, bottom_label = (low, high) if invert else (high, low)
  draw.text((2, top - 4), f"{top_label:.0f}", fill=_AXIS, font=_font())
  draw.text((2, bottom - 8), f"{bottom_label:.0f}", fill=_AXIS, font=_font())
  draw.text((left, bottom + 1), "iteration", fill=_AXIS, font=_font())
  length = max(len(np.ravel(line)) for line in series)
  for boundary in boundaries:
    x = left + boundary / max(length - 1, 1) * (right - left)
    draw.line([(x, top), (x, bottom)], fill=_GRID)
  for k, line in enumerate(series):
    line = np.asarray(line, np.float64)
    n = len(line)
    xs = left + np.arange(n) / max(n - 1, 1) * (right - left)
    fraction = (line - low) / (high - low)
    ys = top + fraction * (bottom - top) if invert else bottom - fraction * (bottom - top)
    points = [(float(x), float(y)) for x, y in zip(xs, ys)]
    colour = _SERIES[k % len(_SERIES)]
    if len(points) > 1:
      draw.line(points, fill=colour, width=1)
    else:
      draw.point(points, fill=colour)
  return panel


def _octave_panel(trace: Trace, octaves: Sequence[int], width: int) -> Image.Image:
  """One line per octave: its top-1 fraction and z-score jitter, over the images."""
  per_octave = metrics.stability(trace, octaves)
  top1 = per_octave["top1_fraction_per_octave"].mean(axis=0)
  jitter = per_octave["zscore_jitter_per_octave"].mean(axis=0)
  panel = Image.new("RGB", (width, _LINE * (len(octaves) + 1) + 4), _BACKGROUND)
  draw = ImageDraw.Draw(panel)
  draw.text((4, 2), "octave: top-1 fraction, z-score jitter", fill=(0, 0, 0), font=_font())
  for k, (fraction, change) in enumerate(zip(top1, jitter)):
    draw.text((4, 2 + _LINE * (k + 1)), f"{k + 1}: {fraction:.0%}, {change:.3f}",
              fill=_AXIS, font=_font())
  return panel


def stability_plot(traces: Mapping[str, Trace], path: str | os.PathLike, *,
                   panel: tuple[int, int] = (320, 180),
                   octaves: Sequence[int] | None = None) -> Path:
  """The target's logit (top) and rank (bottom) over iterations, one column per model.

  Args:
    traces: model name -> ``Generation.trace``; each image (restart) is a line.
    path: the PNG to write.
    panel: ``(width, height)`` of each panel.
    octaves: the iterations of each octave (``[o.iterations for o in
      recipe.octaves]``): marks where each octave starts and adds, under
      each model, its stability per octave (``metrics.stability``, averaged
      over the images), so a model that is unsteady in one octave (the
      article: Inception-v3, "particularly in the second octave") shows it.
  """
  if not traces:
    raise VideoError("no models to plot")
  width, height = panel
  boundaries = tuple(np.cumsum(octaves)[:-1]) if octaves else ()
  tables = {name: _octave_panel(trace, octaves, width) for name, trace in traces.items()
            } if octaves else {}
  extra = max((t.height for t in tables.values()), default=0)
  sheet = Image.new("RGB", (width * len(traces), height * 2 + extra), _BACKGROUND)
  for column, (name, trace) in enumerate(traces.items()):
    logits = np.asarray(trace.target_logit)
    ranks = np.asarray(trace.target_rank)
    sheet.paste(_line_panel(list(logits.T), panel, f"{name}: target logit",
                            boundaries=boundaries), (column * width, 0))
    sheet.paste(_line_panel(list(ranks.T), panel, f"{name}: target rank", invert=True,
                            boundaries=boundaries), (column * width, height))
    if name in tables:
      sheet.paste(tables[name], (column * width, height * 2))
  path = Path(path)
  sheet.save(path)
  return path


def make_video(*, model: str, weights: str | None, target: str, out: str | os.PathLike,
               recipe: str, seed: int = 0, steps_scale: float = 1.0, snapshot_every: int = 5,
               fps: float = 10.0, head: str | None = None,
               init: str | os.PathLike | None = None) -> Path:
  """Run one generation with snapshots and write its video (``scripts/make_video.py``).

  With ``init`` (a photo to transfigure), the photo's own class is marked in
  green, as in the article's transfiguration video.
  """
  from classgen_jax import engine, recipes
  from classgen_jax.weights import load_classifier
  classifier = load_classifier(model, weights=weights)
  chosen = recipes.get(recipe, steps_scale=steps_scale)
  if head:
    chosen = chosen.with_head(head)
  result = engine.generate(classifier, [target], chosen, seed=seed, init=init,
                           snapshot_every=snapshot_every)
  original = None if init is None else photo_class(result)
  return write_video(out, frames(result, 0, classifier.labels, original=original), fps=fps)


def compare_models(*, models: Sequence[str], target: str, out: str | os.PathLike,
                   recipe: str, seed: int = 0, steps_scale: float = 1.0,
                   restarts: int = 1) -> Path:
  """Generate ``target`` with each model and plot their stability side by side."""
  from classgen_jax import engine, recipes
  from classgen_jax.weights import load_classifier
  chosen = recipes.get(recipe, steps_scale=steps_scale)
  traces = {}
  for name in models:
    classifier = load_classifier(name)
    traces[name] = engine.generate(classifier, [target], chosen, seed=seed,
                                   restarts=restarts).trace
  return stability_plot(traces, out, octaves=[o.iterations for o in chosen.octaves])
