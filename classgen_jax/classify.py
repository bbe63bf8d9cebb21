"""Classify image files with a named model (the logic behind scripts/classify.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np

from classgen_jax._classifier import Classifier
from classgen_jax.images import load_image
from classgen_jax.weights import load_classifier

DEFAULT_MODEL = "efficientnet_lite0"


@jax.jit
def _probabilities(classifier: Classifier, images: jax.Array) -> jax.Array:
  return jax.nn.softmax(classifier(images, heads=("logits",))["logits"], axis=-1)


def top_k(classifier: Classifier, images: np.ndarray,
          k: int = 5) -> list[list[tuple[int, str, float]]]:
  """``[(index, name, probability), ...]`` of the ``k`` best classes per image."""
  probabilities = np.asarray(_probabilities(classifier, images))
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
