"""Classify image files with a named model (the logic behind scripts/classify.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax.images import load_image
from classgen_jax.weights import load_classifier

DEFAULT_MODEL = "efficientnet_lite0"


@jax.jit
def class_probabilities(classifier: Classifier, images: jax.Array) -> jax.Array:
  """Softmax of the main head for images resized (bilinear) to the native size.

  Images already at the native size pass through unchanged (a same-size
  bilinear resize is the identity).
  """
  size = classifier.input_size
  resized = jax.vmap(lambda x: T.resize(x, size, method="bilinear"))(images)
  logits = classifier(resized.astype(classifier.dtype), heads=("logits",))["logits"]
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def top_k(classifier: Classifier, images: np.ndarray,
          k: int = 5) -> list[list[tuple[int, str, float]]]:
  """``[(index, name, probability), ...]`` of the ``k`` best classes per image."""
  probabilities = np.asarray(class_probabilities(classifier, images))
  best = np.argsort(-probabilities, axis=-1)[:, :k]
  return [[(int(i), classifier.labels[i], float(p[i])) for i in row]
          for row, p in zip(best, probabilities)]


def classify_files(paths: Sequence[str | os.PathLike], *, model: str = DEFAULT_MODEL,
                   weights: str | None = None, top_k: int = 5,
                   crop: bool = True) -> list[tuple[str, list[tuple[int, str, float]]]]:
  """Top classes for each image file, each at the model's native size."""
  classifier = load_classifier(model, weights=weights)
  size = classifier.input_size
  images = np.stack([load_image(p, size, crop=crop) for p in paths])
  return list(zip(map(str, paths), globals()["top_k"](classifier, images, top_k)))


def annotate_folder(folder: str | os.PathLike, classifier: Classifier, *,
                    batch_size: int = 32) -> list[dict]:
  """Classify every image of an atlas folder and record it in its summary.

  Each row of ``summary.jsonl`` (and ``summary.csv``, whose columns stay the
  standard ones) gains a field ``classify_<model>``: ``{"top1", "top1_name",
  "top1_probability", "target_rank", "target_probability"}`` under
  ``classifier``. The summary is rewritten atomically; a later resume of the
  atlas keeps these fields.

  Raises:
    ValueError: the folder has no ``summary.jsonl`` rows.
  """
  from classgen_jax import folders
  folder = Path(folder)
  rows = folders.read_summary(folder)
  if not rows:
    raise ValueError(f"{folder} has no {folders.SUMMARY_JSONL} rows: give a folder that "
                     "scripts/generate.py wrote")
  size = classifier.input_size
  field = f"classify_{classifier.name}"
  for begin in range(0, len(rows), batch_size):
    chunk = rows[begin:begin + batch_size]
    images = np.stack([load_image(folder / r["file"], size) for r in chunk])
    probabilities = np.asarray(class_probabilities(classifier, images))
    for row, p in zip(chunk, probabilities):
      target, best = int(row["target"]), int(np.argmax(p))
      row[field] = dict(top1=best, top1_name=classifier.labels[best],
                        top1_probability=float(p[best]),
                        target_rank=int(np.sum(p > p[target])),
                        target_probability=float(p[target]))
  folders.write_summary(folder, rows)
  return rows


def classify_folder(folder: str | os.PathLike, *, model: str = DEFAULT_MODEL,
                    weights: str | None = None) -> list[dict]:
  """``annotate_folder`` with a named model."""
  return annotate_folder(folder, load_classifier(model, weights=weights))
