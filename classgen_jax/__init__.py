"""classgen_jax: images that an ImageNet classifier sees as a chosen class.

Images are NHWC float32 in [0, 1] everywhere in the library; each model
applies its own input normalisation.
"""

# First: it sets XLA_FLAGS before anything starts JAX's backends.
from classgen_jax import xla_flags  # noqa: F401  # isort: skip
from classgen_jax import (
    devices,
    engine,
    imagenet,
    metrics,
    models,
    objectives,
    octave,
    operations,
    parameterisations,
    recipes,
    starts,
    step,
    transforms,
    updates,
)
from classgen_jax._classifier import Classifier, InputError, Needs, Outputs
from classgen_jax.activations import Layer, LayerError
from classgen_jax.devices import mixed_precision
from classgen_jax.engine import Generation, GenerationError, Progress, generate
from classgen_jax.imagenet import LABELS, UnknownClassError, class_index, class_indices, class_name
from classgen_jax.images import ImageError, load_image
from classgen_jax.weights import (
                                   UnknownModelError,
                                   WeightsError,
                                   cache_dir,
                                   load_classifier,
                                   read_classifier,
                                   save_classifier,
)

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "Generation",
    "GenerationError",
    "Progress",
    "ImageError",
    "InputError",
    "LABELS",
    "Layer",
    "LayerError",
    "Needs",
    "Outputs",
    "UnknownClassError",
    "UnknownModelError",
    "WeightsError",
    "cache_dir",
    "class_index",
    "class_indices",
    "class_name",
    "devices",
    "engine",
    "generate",
    "imagenet",
    "load_classifier",
    "load_image",
    "metrics",
    "mixed_precision",
    "models",
    "objectives",
    "octave",
    "operations",
    "parameterisations",
    "read_classifier",
    "recipes",
    "save_classifier",
    "starts",
    "step",
    "transforms",
    "updates",
]
