"""Does the image look like the class, or only fool the model that made it?

``evaluate`` generates a set of classes with a *generator* model and classifies
every image with *judge* models that did not make it, each at its native
resolution: a recipe whose images only fool their generator scores high
``self_top1`` and low judge accuracy; a recipe whose priors make real class
features scores high on both. The judges also see the views of
``recognisability`` (at a glance, in grey, the centre, each quarter, and where
the evidence lies), which a texture collage does not survive and a picture a
person names does.

Images are NHWC float32 in [0, 1], as everywhere in the library.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import time
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from classgen_jax import devices, engine, imagenet, recognisability
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax.classify import class_probabilities


@dataclasses.dataclass
class JudgeScore:
  top1: float
  top5: float
  mean_target_prob: float
  self_judging: bool
  predictions: list[tuple[int, float]]  # per image: (top-1 class, its probability)


@dataclasses.dataclass
class RecipeScore:
  recipe: str
  self_top1: float  # the generator on the saved image, judged as the judges judge
  judges: dict[str, JudgeScore]
  seconds: float
  generation: engine.Generation
  self_top1_as_optimised: float | None = None  # the raw canvas, at its own size
  # The means of recognisability's measures, the worse judge's per image
  # (judges other than the generator; None without such a judge).
  recognisability: dict[str, float] | None = None


def judge(classifier: Classifier, images: np.ndarray, targets: Sequence[int], *,
          self_judging: bool = False, batch_size: int = 32) -> JudgeScore:
  """Top-1/top-5 accuracy and mean target probability of ``images``."""
  probabilities = np.concatenate([
      np.asarray(class_probabilities(classifier, jnp.asarray(images[i:i + batch_size])))
      for i in range(0, len(images), batch_size)])
  targets = np.asarray(targets)
  order = np.argsort(-probabilities, axis=1)
  top1 = order[:, 0] == targets
  top5 = np.any(order[:, :5] == targets[:, None], axis=1)
  target_prob = probabilities[np.arange(len(targets)), targets]
  predictions = [(int(c), float(probabilities[i, c])) for i, c in enumerate(order[:, 0])]
  return JudgeScore(float(top1.mean()), float(top5.mean()), float(target_prob.mean()),
                    self_judging, predictions)


def evaluate(generator: Classifier, judges: dict[str, Classifier],
             recipes: Sequence[str | recipes_lib.Recipe], classes: Sequence[int | str], *,
             seed: int = 0, steps_scale: float = 1.0, batch_size: int | None = None,
             photo: str | None = None,
             compute_dtype: Any = None) -> tuple[list[RecipeScore], dict[str, str]]:
  """Generate ``classes`` with each recipe and score the images with the judges.

  Args:
    photo: the start of recipes that begin from a photo (transfiguration);
      default: the bundled photo of a cat.
    compute_dtype: generate with the generator computing in this dtype
      (``jnp.bfloat16``: ``devices.mixed_precision``); the images are judged,
      by the generator too, in float32.

  Returns:
    The scores, and ``{recipe: reason}`` for recipes skipped because they
    read a head the generator does not have.

  Raises:
    ValueError: no classes, no judges, or an unknown recipe or class.
  """
  targets = imagenet.class_indices(classes, generator.labels)
  if not targets:
    raise ValueError("the class list is empty: pass indices or names")
  if not judges:
    raise ValueError("no judges: pass at least one model name")
  maker = generator if compute_dtype is None else devices.mixed_precision(generator, compute_dtype)
  scores, skipped = [], {}
  for recipe in recipes:
    recipe = recipes_lib.get(recipe, steps_scale=steps_scale)
    missing = [h for h in recipe.heads if h not in generator.heads]
    if missing:
      skipped[recipe.name] = (f"{generator.name} has no head {', '.join(missing)} (its heads: "
                              f"{', '.join(generator.heads)})")
      continue
    init = None
    if recipe.start.photo:
      init = photo or str(importlib.resources.files("classgen_jax") / "assets" / "chelsea.jpg")
    start = time.perf_counter()
    result = engine.generate(maker, targets, recipe, seed=seed, batch_size=batch_size,
                             init=init)
    seconds = time.perf_counter() - start
    self_score = judge(generator, result.images, targets, self_judging=True)
    verdicts = {name: judge(clf, result.images, targets, self_judging=clf is generator
                            or name == generator.name)
                for name, clf in judges.items()}
    others = {name: recognisability.measure(clf, result.images, targets)
              for name, clf in judges.items() if not verdicts[name].self_judging}
    scores.append(RecipeScore(
        recipe.name, self_score.top1, verdicts, seconds, result,
        float(np.mean(result.rank_as_optimised == 0)),
        recognisability.summary(recognisability.worst(others)) if others else None))
  return scores, skipped
