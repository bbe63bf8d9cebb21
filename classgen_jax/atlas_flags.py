"""Atlases from flag values: the classifier a run names (model, weights,
dtype) and ``atlas.make_atlas`` with its classes parsed; what
``scripts/generate.py`` and ``classgen_jax.units`` call."""

from __future__ import annotations

import jax.numpy as jnp

from classgen_jax import devices, folders
from classgen_jax._classifier import Classifier
from classgen_jax.atlas import AtlasResult, make_atlas


def load(model: str, weights: str | None, dtype: str = "float32") -> tuple[Classifier, str]:
  """The classifier from flag values (computing in ``dtype``: ``"bfloat16"``
  for ``devices.mixed_precision``) and how its weights are identified."""
  from classgen_jax.weights import load_classifier
  identity = folders.weights_identity(model, weights)
  classifier = load_classifier(model, weights=weights)
  if dtype != "float32":
    classifier = devices.mixed_precision(classifier, jnp.dtype(dtype))
  return classifier, identity


def run(*, model: str, weights: str | None, classes: str, out: str,
        recipe: str | None = None, dtype: str = "float32", **kwargs) -> AtlasResult:
  """``make_atlas`` from flag values: loads the model (``load``), parses ``classes``."""
  indices = folders.parse_classes(classes)
  classifier, identity = load(model, weights, dtype)
  return make_atlas(classifier, indices, out, recipe, weights=identity, **kwargs)
