"""Would a person name the class? Views of an image that a texture collage
does not survive but a drawn object does, shown to a judge.

A judge (a model that did not make the image) names a collage of the class's
textures as readily as a picture of the object; a person does not. These
views take away what a collage lives on and keep what a drawing has:

* ``glance``: the image shrunk to 40 px with antialiasing and enlarged back,
  as seen across a room or in a thumbnail: fine texture is gone, large shapes
  and colours remain;
* ``grey``: its luma (ITU-R BT.601) only;
* ``centre``: its central half (in side), enlarged;
* ``quarters``: each quarter alone, enlarged: a collage of repeated parts
  carries the class in every quarter, a single object in one or two;
* ``concentration``: where the class evidence lies. Each cell of a 4 x 4
  grid is filled in turn with the image's mean colour (Zeiler and Fergus's
  occlusion, 2014); a cell's evidence is the drop of the target's logit.
  The share of the evidence in the best 4 cells (a quarter of the canvas)
  is 1 when it is all in one region and 0.25 when it is spread evenly.

``measure`` gives these per image; ``summary`` their means.
``scripts/eye_agreement.py`` reads which of them agree with a person's eye
(``docs/eye_labels.json``), and ``docs/quality.md`` records how well.

Images are NHWC float32 in [0, 1], as everywhere in the library; each judge
sees every view at its native size.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier

GLANCE_SIDE = 40
GRID = 4
_LUMA = jnp.asarray([0.299, 0.587, 0.114])

# The per-image measures ``measure`` returns, and which way is better: +1
# higher, -1 lower (a collage fills every quarter).
MEASURES = {
    "full_top1": 1, "full_top5": 1, "full_p": 1,
    "glance_top1": 1, "glance_top5": 1, "glance_p": 1,
    "grey_top5": 1, "centre_top5": 1,
    "quarters_top5": -1, "concentration": 1,
}


def glance(images: jax.Array, side: int = GLANCE_SIDE) -> jax.Array:
  """``(N, H, W, 3)`` shrunk to ``side`` px with antialiasing, enlarged back."""
  height = images.shape[1]
  small = jax.vmap(lambda x: T.resize(x, side, method="bilinear", antialias=True))(images)
  return jax.vmap(lambda x: T.resize(x, height, method="bilinear"))(small)


def grey(images: jax.Array) -> jax.Array:
  """The luma of each image, in all three channels."""
  luma = images @ _LUMA.astype(images.dtype)
  return jnp.repeat(luma[..., None], 3, axis=-1)


def centre(images: jax.Array) -> jax.Array:
  """The central half of each image (in side), enlarged to its size."""
  side = images.shape[1]
  start = side // 4
  middle = images[:, start:start + side // 2, start:start + side // 2]
  return jax.vmap(lambda x: T.resize(x, side, method="bilinear", antialias=True))(middle)


def quarters(images: jax.Array) -> jax.Array:
  """``(N, 4, H, W, 3)``: each quarter of each image, enlarged to its size."""
  side = images.shape[1]
  half = side // 2
  parts = [images[:, y:y + half, x:x + half] for y in (0, half) for x in (0, half)]
  enlarge = jax.vmap(lambda x: T.resize(x, side, method="bilinear"))
  return jnp.stack([enlarge(p) for p in parts], axis=1)


def occluded(images: jax.Array, grid: int = GRID) -> jax.Array:
  """``(N, grid * grid, H, W, 3)``: each image with one cell of a grid filled
  with the image's mean colour."""
  side = images.shape[1]
  cell = -(-side // grid)
  rows = jnp.arange(side) // cell
  cells = (rows[:, None] * grid + rows[None, :])  # (H, W) cell index of each pixel
  masks = cells[None] == jnp.arange(grid * grid)[:, None, None]  # (cells, H, W)
  fill = images.mean(axis=(1, 2))[:, None, None, None]
  return jnp.where(masks[None, ..., None], fill, images[:, None])


@jax.jit
def _views(classifier: Classifier, images: jax.Array, targets: jax.Array):
  """Target log-probability, top-1 and top-5 of every view, per image."""
  size = classifier.input_size
  # As the judges see the image (``classify.class_probabilities``).
  native = jax.vmap(lambda x: T.resize(x, size, method="bilinear"))(T.clip(images))

  def scores(batch):
    logits = classifier(batch.astype(classifier.dtype), heads=("logits",))["logits"]
    logits = logits.astype(jnp.float32)
    repeat = batch.shape[0] // targets.shape[0]
    chosen = jnp.repeat(targets, repeat)
    target = jnp.take_along_axis(logits, chosen[:, None], axis=1)[:, 0]
    rank = jnp.sum(logits > target[:, None], axis=1)
    log_p = target - jax.nn.logsumexp(logits, axis=1)
    return target, log_p, rank

  def per_image(values, count):
    return jax.tree_util.tree_map(lambda v: v.reshape(-1, count), values)

  n = images.shape[0]
  full = scores(native)
  views = {"glance": scores(glance(native)), "grey": scores(grey(native)),
           "centre": scores(centre(native))}
  quarter = per_image(scores(quarters(native).reshape(n * 4, size, size, 3)), 4)
  occlusion = per_image(scores(occluded(native).reshape(n * GRID * GRID, size, size, 3)),
                        GRID * GRID)
  return full, views, quarter, occlusion


def measure(judge: Classifier, images: np.ndarray, targets: Sequence[int], *,
            batch_size: int = 8) -> dict[str, np.ndarray]:
  """Every measure of ``MEASURES`` per image, under ``judge``.

  Args:
    judge: a classifier that did not make the images.
    images: ``(N, H, W, 3)`` in [0, 1] (square).
    targets: ``(N,)`` class indices.
    batch_size: images per compiled call (each shows the judge 24 views).

  Returns:
    ``{measure: (N,) array}``: top-1/top-5 hits are 0 or 1, ``_p`` the
    target's probability, ``quarters_top5`` the share of quarters whose
    top-5 holds the target, ``concentration`` as in the module doc.
  """
  images = np.asarray(images, np.float32)
  targets = np.asarray(targets, np.int32)
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"expected square (N, H, W, 3) images, got shape {images.shape}")
  if len(images) != len(targets):
    raise ValueError(f"{len(images)} images for {len(targets)} targets")
  parts = []
  for i in range(0, len(images), batch_size):
    chunk, chosen = images[i:i + batch_size], targets[i:i + batch_size]
    pad = batch_size - len(chunk) if len(images) > batch_size else 0
    if pad:  # one program for every chunk: the last one padded with copies
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
      chosen = np.concatenate([chosen, np.repeat(chosen[:1], pad)])
    values = jax.tree_util.tree_map(np.asarray, _views(judge, chunk, chosen))
    keep = len(chunk) - pad
    parts.append(jax.tree_util.tree_map(lambda v: v[:keep], values))  # noqa: B023
  full, views, quarter, occlusion = jax.tree_util.tree_map(
      lambda *xs: np.concatenate(xs), *parts)
  result = {"full_top1": (full[2] == 0).astype(float), "full_top5": (full[2] < 5).astype(float),
            "full_p": np.exp(full[1])}
  glance_ = views["glance"]
  result.update(glance_top1=(glance_[2] == 0).astype(float),
                glance_top5=(glance_[2] < 5).astype(float), glance_p=np.exp(glance_[1]))
  result["grey_top5"] = (views["grey"][2] < 5).astype(float)
  result["centre_top5"] = (views["centre"][2] < 5).astype(float)
  result["quarters_top5"] = (quarter[2] < 5).mean(axis=1)
  evidence = np.maximum(full[0][:, None] - occlusion[0], 0.0)
  best = np.sort(evidence, axis=1)[:, ::-1][:, :GRID * GRID // 4].sum(axis=1)
  total = evidence.sum(axis=1)
  result["concentration"] = np.where(total > 0, best / np.maximum(total, 1e-12), 0.25)
  return result


def summary(values: dict[str, np.ndarray]) -> dict[str, float]:
  """The mean of each measure over the images."""
  return {name: float(np.mean(v)) for name, v in values.items()}


def worst(per_judge: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Per image and measure, the worse of several judges' values (by
  ``MEASURES``' direction): an image counts as named only if every judge
  names it."""
  names = next(iter(per_judge.values())).keys()
  result = {}
  for name in names:
    stacked = np.stack([v[name] for v in per_judge.values()])
    result[name] = stacked.min(axis=0) if MEASURES.get(name, 1) > 0 else stacked.max(axis=0)
  return result
