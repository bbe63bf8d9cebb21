"""Does the image look like the class, or only fool the model that made it?

``evaluate`` generates a set of classes with a *generator* model and classifies
every image with *judge* models that did not make it, each at its native
resolution: a recipe whose images only fool their generator scores high
``self_top1`` and low judge accuracy; a recipe whose priors make real class
features scores high on both.

``adversarial_flip_rates`` measures the article's claim about adversarial
examples: a perturbation of L-infinity size epsilon in a random sign
direction rarely changes a real photo's top-1 class; the same size in the
gradient-sign direction usually does.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.resources
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from classgen_jax import engine, gallery, imagenet
from classgen_jax import recipes as recipes_lib
from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax.classify import class_probabilities

# 32 classes spread evenly over the 1000 (every 31.25th, from class 15):
# birds, dogs, insects, tools, vehicles, foods... fixed so runs compare.
DEFAULT_CLASSES: tuple[int, ...] = tuple(int(15 + 31.25 * i) for i in range(32))


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

  def as_json(self) -> dict:
    return {
        "self_top1": self.self_top1,
        "self_top1_as_optimised": self.self_top1_as_optimised,
        "judges": {name: {"top1": j.top1, "top5": j.top5,
                          "mean_target_prob": j.mean_target_prob,
                          "self_judging": j.self_judging}
                   for name, j in self.judges.items()},
        "seconds": self.seconds,
    }


def markdown_table(results: Sequence[dict]) -> str:
  """A README table of ``evaluate_quality.py --json_out`` files' recipes.

  One row per recipe (with its compute dtype where not float32, its steps
  scale where not 1, and its device where a recipe was run more than once),
  in the catalogue's order:
  the generator's top-1 on its raw canvas (as optimised; blank where not
  recorded) and on the saved image, each judge's top-1 / top-5 and mean
  target probability, seconds.
  """
  judges = list(dict.fromkeys(name for r in results for name in r["judges"]))
  lines = ["| recipe | self top-1 as optimised | self top-1 | " + " | ".join(
      f"{name} top-1 / top-5 (mean p)" for name in judges) + " | seconds |",
           "|---" * (len(judges) + 4) + "|"]
  order = {name: i for i, name in enumerate(recipes_lib.names())}
  rows = sorted(((result, recipe, score) for result in results
                 for recipe, score in result["recipes"].items()),
                key=lambda row: (order.get(row[1], len(order)),
                                 row[0].get("dtype", "float32") != "float32"))
  runs = collections.Counter((recipe, r.get("dtype", "float32")) for r, recipe, _ in rows)
  for result, recipe, score in rows:
    dtype = result.get("dtype", "float32")
    notes = [dtype] if dtype != "float32" else []
    if result.get("steps_scale", 1.0) != 1.0:
      notes.append(f"{result['steps_scale']:g}x steps")
    if runs[recipe, dtype] > 1:  # the same recipe run twice: say where
      notes.append(result.get("device", "?"))
    label = f"`{recipe}`" + (f" ({', '.join(notes)})" if notes else "")
    cells = []
    for name in judges:
      j = score["judges"].get(name)
      cells.append("" if j is None else
                   f"{j['top1']:.0%} / {j['top5']:.0%} ({j['mean_target_prob']:.2f})")
    raw = score.get("self_top1_as_optimised")
    lines.append(f"| {label} | {'' if raw is None else format(raw, '.0%')} | "
                 f"{score['self_top1']:.0%} | " + " | ".join(cells)
                 + f" | {score['seconds']:.0f} |")
  return "\n".join(lines)


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
      (``jnp.bfloat16``: ``engine.mixed_precision``); the images are judged,
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
  maker = generator if compute_dtype is None else engine.mixed_precision(generator, compute_dtype)
  scores, skipped = [], {}
  for recipe in recipes:
    recipe = recipes_lib.get(recipe, steps_scale=steps_scale)
    missing = [h for h in recipe.heads if h not in generator.heads]
    if missing:
      skipped[recipe.name] = (f"{generator.name} has no head {', '.join(missing)} (its heads: "
                              f"{', '.join(generator.heads)})")
      continue
    init = None
    if recipe.init == "photo":
      init = photo or str(importlib.resources.files("classgen_jax") / "assets" / "chelsea.jpg")
    start = time.perf_counter()
    result = engine.generate(maker, targets, recipe, seed=seed, batch_size=batch_size,
                             init=init)
    self_score = judge(generator, result.images, targets, self_judging=True)
    scores.append(RecipeScore(
        recipe.name, self_score.top1,
        {name: judge(clf, result.images, targets, self_judging=clf is generator
                     or name == generator.name)
         for name, clf in judges.items()},
        time.perf_counter() - start, result,
        float(np.mean(result.rank_as_optimised == 0))))
  return scores, skipped


def contact_sheet(score: RecipeScore, labels: Sequence[str], *, thumb: int = 160,
                  columns: int = 8) -> Image.Image:
  """A labelled grid: each image with its target and every judge's top-1."""
  result = score.generation
  captions = []
  for i, target in enumerate(result.targets):
    lines = [(f"{target} {labels[target]}", "black")]
    for name, verdict in score.judges.items():
      cls, prob = verdict.predictions[i]
      lines.append((f"{name[-5:]}: {labels[cls]} {prob:.0%}",
                    (0, 120, 0) if cls == target else (170, 0, 0)))
    captions.append(lines)
  return gallery.sheet(result.images, captions, thumbnail=thumb, columns=columns, padding=2)


# ----------------------------------------------------------------------------
# The article's claim about adversarial examples.


def sample_photos() -> dict[str, np.ndarray]:
  """The photos that ship with scikit-image, as RGB floats in [0, 1]."""
  try:
    import skimage.data
  except ImportError:
    raise ValueError("the photos come from scikit-image: pip install scikit-image") from None
  names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse",
           "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "text",
           "retina", "brick", "grass", "gravel", "colorwheel", "cell", "clock")
  photos = {}
  for name in names:
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
      image = image.astype(np.uint8) * 255
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    photos[name] = image[..., :3].astype(np.float32) / 255.0
  return photos


def adversarial_flip_rates(classifier: Classifier, photos: dict[str, np.ndarray],
                           epsilons: Sequence[float], *, random_draws: int = 5,
                           seed: int = 0, confident: float = 0.5) -> dict[str, list[float]]:
  """Fraction of photos whose top-1 class changes, per epsilon.

  Returns:
    ``{"random_sign": [...], "gradient_sign": [...]}``, one rate per epsilon:
    for random sign directions, averaged over ``random_draws`` draws; for the
    gradient sign, the direction that raises the loss of the photo's own
    top-1 class (FGSM, Goodfellow et al. 2014). The same two again over the
    photos the model classifies with probability >= ``confident``
    (``confident_random_sign``, ``confident_gradient_sign``; there are
    ``confident_photos`` of them): the article's claim is about images the
    model recognises, and a photo of text or gravel, whose top-1 is a guess
    at 5-20%, flips under almost any noise.
  """
  size = classifier.input_size
  images = jnp.stack([T.resize(jnp.asarray(p), size, method="bilinear")
                      for p in photos.values()])

  @jax.jit
  def top1(clf, x):
    return jnp.argmax(clf(jnp.clip(x, 0, 1), heads=("logits",))["logits"], axis=-1)

  @jax.jit
  def loss_sign(clf, x, labels):
    def loss(x):
      logits = clf(x, heads=("logits",))["logits"]
      return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    return jnp.sign(jax.grad(loss)(x))

  clean = top1(classifier, images)
  sure = np.asarray(class_probabilities(classifier, images)).max(axis=1) >= confident
  direction = loss_sign(classifier, images, clean)
  keys = jax.random.split(jax.random.key(seed), random_draws)
  rates = {"photos": list(photos), "confident_photos": int(sure.sum()), "random_sign": [],
           "gradient_sign": [], "confident_random_sign": [], "confident_gradient_sign": []}
  for eps in epsilons:
    random_flips = np.mean([np.asarray(top1(classifier, images + eps * jnp.sign(
        jax.random.normal(k, images.shape))) != clean) for k in keys], axis=0)
    gradient_flips = np.asarray(top1(classifier, images + eps * direction) != clean)
    rates["random_sign"].append(float(random_flips.mean()))
    rates["gradient_sign"].append(float(gradient_flips.mean()))
    for key, flips in (("confident_random_sign", random_flips),
                       ("confident_gradient_sign", gradient_flips)):
      rates[key].append(float(flips[sure].mean()) if sure.any() else float("nan"))
  return rates
