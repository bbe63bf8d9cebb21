"""What the tests and the processes they start share, importable without
torch (a child process starts in about a second instead of four): the
compile cache's folder, the tiny model, and the short recipes.

The tiny model is converted from torchvision once per test run (by the first
process that asks, with torch) and saved in the run's folder; every later
process of the run reads it back, the same weights bit for bit.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

# The folders and threads the processes share are set in tests/__init__.py.
_RUN = os.environ["CLASSGEN_JAX_TEST_RUN"]
RUN_FOLDER = Path(tempfile.gettempdir()) / f"classgen_jax_tests_{_RUN}"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import classgen_jax  # noqa: E402
from classgen_jax import objectives as obj  # noqa: E402
from classgen_jax import operations, updates  # noqa: E402
from classgen_jax.recipe import Octave, Recipe  # noqa: E402
from classgen_jax.starts import Uniform  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

TINY_FILE = RUN_FOLDER / "tiny_resnet.safetensors"


@functools.cache
def tiny() -> classgen_jax.Classifier:
  """A one-block-per-stage random ResNet (``helpers.tiny_torch``) in Flax:
  every mechanism, little compute."""
  if TINY_FILE.exists():
    return classgen_jax.read_classifier(TINY_FILE)
  import converters  # pylint: disable=g-import-not-at-top
  from tests.helpers import tiny_torch  # pylint: disable=g-import-not-at-top
  classifier = converters.from_torchvision(tiny_torch())
  classgen_jax.save_classifier(classifier, TINY_FILE)
  return classifier


def quick(rule: str = "gradient", lr: float = 0.05, iterations: int = 4, **octave) -> Recipe:
  """A one-octave recipe on a 48 px canvas."""
  return Recipe("quick", Uniform(), 48,
                (Octave(iterations, obj.class_logit(), updates.get(rule), (lr, lr), **octave),))


# A recipe for the tool's tests (atlas, gallery, video) and its classes. Sign
# steps: an image is then bit-equal whatever its batch (a plain gradient step
# passes a batched convolution's last-bit rounding on, which can move a
# pixel of the PNG by one level on some CPUs).
QUICK = Recipe("quick", Uniform(), 32, (
    Octave(3, obj.class_logit(), updates.Sign(), (0.02, 0.02),
           after=(operations.Blur((0.8, 0.8)),)),))
CLASSES = [0, 1, 2, 3]


class _Red(nn.Module):
  """Thirteen classes: logit 0 is the mean of the image's red squared, 1 and 2
  its green's and blue's, and ten more stand at 0.002 (so a class is in the
  top five only where its colour is)."""
  heads: tuple[str, ...] = ("logits",)
  num_classes: int = 13

  def spatial_size(self, side: int, head: str) -> int:
    del head
    return side

  @nn.compact
  def __call__(self, images, heads=("logits",)):
    scale = self.param("scale", nn.initializers.ones, ())
    means = scale * jnp.mean(jnp.square(images), axis=(1, 2))
    return {"logits": jnp.concatenate([means, jnp.full((images.shape[0], 10), 0.002)],
                                      axis=1)}


def red_judge(input_size: int = 32) -> classgen_jax.Classifier:
  """A stand-in judge whose class-0 evidence is where the red is (``_Red``)."""
  return classgen_jax.Classifier(_Red(), {"params": {"scale": jnp.ones(())}}, "red",
                                 input_size=input_size)
