"""The article's claim about adversarial examples, measured on photos.

A perturbation of L-infinity size epsilon in a random sign direction rarely
changes a real photo's top-1 class; the same size in the gradient-sign
direction (FGSM, Goodfellow et al. 2014, "Explaining and harnessing
adversarial examples") usually does.

The photos are an argument, ``{name: (H, W, 3) float in [0, 1]}``, so that
the library depends on no photo collection: ``images.bundled_photos()`` has
two, ``scripts/evaluate_quality.py --adversarial`` takes scikit-image's 20.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax._files import write_text
from classgen_jax.weights import load_classifier


@jax.jit
def _top1(classifier: Classifier, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each image's top-1 class and its probability, clipped to [0, 1] as a saved image is."""
  logits = classifier(jnp.clip(images, 0, 1), heads=("logits",))["logits"]
  return jnp.argmax(logits, axis=-1), jnp.max(jax.nn.softmax(logits), axis=-1)


@jax.jit
def _loss_sign(classifier: Classifier, images: jax.Array, labels: jax.Array) -> jax.Array:
  """The sign of the gradient of the loss of each image's class ``labels``."""
  def loss(x):
    logits = classifier(x, heads=("logits",))["logits"]
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
  return jnp.sign(jax.grad(loss)(images))


def flip_rates(classifier: Classifier, photos: Mapping[str, np.ndarray],
               epsilons: Sequence[float], *, random_draws: int = 5, seed: int = 0,
               confident: float = 0.5) -> dict[str, list[float]]:
  """Fraction of photos whose top-1 class changes, per epsilon.

  Args:
    classifier: the model whose top-1 class is perturbed.
    photos: ``{name: (H, W, 3) float in [0, 1]}``, any sizes; each is
      resized (bilinear) to the model's native input size.
    epsilons: L-infinity sizes, on the [0, 1] scale (``2 / 255``).
    random_draws: random sign directions averaged per epsilon.
    seed: of the random directions.
    confident: the probability above which a photo counts as recognised.

  Returns:
    ``{"random_sign": [...], "gradient_sign": [...]}``, one rate per epsilon:
    for random sign directions, averaged over ``random_draws`` draws; for the
    gradient sign, the direction that raises the loss of the photo's own
    top-1 class. The same two again over the photos the model classifies
    with probability >= ``confident`` (``confident_random_sign``,
    ``confident_gradient_sign``; there are ``confident_photos`` of them, NaN
    rates where there are none): the article's claim is about images the
    model recognises, and a photo of text or gravel, whose top-1 is a guess
    at 5-20%, flips under almost any noise. ``photos`` lists the names.
  """
  size = classifier.input_size
  images = jnp.stack([T.resize(jnp.asarray(p, jnp.float32), size, method="bilinear")
                      for p in photos.values()])

  clean, probability = _top1(classifier, images)
  sure = np.asarray(probability) >= confident
  direction = _loss_sign(classifier, images, clean)
  keys = jax.random.split(jax.random.key(seed), random_draws)
  rates = {"photos": list(photos), "confident_photos": int(sure.sum()), "random_sign": [],
           "gradient_sign": [], "confident_random_sign": [], "confident_gradient_sign": []}
  for eps in epsilons:
    random_flips = np.mean([np.asarray(_top1(classifier, images + eps * jnp.sign(
        jax.random.normal(k, images.shape)))[0] != clean) for k in keys], axis=0)
    gradient_flips = np.asarray(_top1(classifier, images + eps * direction)[0] != clean)
    rates["random_sign"].append(float(random_flips.mean()))
    rates["gradient_sign"].append(float(gradient_flips.mean()))
    for key, flips in (("confident_random_sign", random_flips),
                       ("confident_gradient_sign", gradient_flips)):
      rates[key].append(float(flips[sure].mean()) if sure.any() else float("nan"))
  return rates


def rates_table(rates: Mapping, epsilons_255: Sequence[str]) -> str:
  """``flip_rates``'s result as the text table the script prints."""
  n, sure = len(rates["photos"]), rates["confident_photos"]
  lines = [f"top-1 changed, all {n} photos / the {sure} classified with p >= 0.5",
           f"{'epsilon':>10} {'random sign':>16} {'gradient sign':>16}"]
  for i, e in enumerate(epsilons_255):
    lines.append(
        f"{e + '/255':>10} {rates['random_sign'][i]:>7.0%} / "
        f"{rates['confident_random_sign'][i]:>4.0%} {rates['gradient_sign'][i]:>9.0%} / "
        f"{rates['confident_gradient_sign'][i]:>4.0%}")
  return "\n".join(lines)


def run(model: str | Classifier, photos: Mapping[str, np.ndarray],
        epsilons_255: Sequence[str | float], *,
        json_out: str | os.PathLike | None = None) -> str:
  """``flip_rates`` at epsilons given in 1/255 units, as a table, optionally saved.

  Args:
    model: a model name (loaded with ``load_classifier``) or a classifier.
    photos: as for ``flip_rates``.
    epsilons_255: L-infinity sizes in grey levels (``"0.5"``, ``2``).
    json_out: write ``{"model", "epsilons_255", **rates}`` here.

  Returns:
    The table (``rates_table``).

  Raises:
    ValueError: no photos, an epsilon that is not a number, an unknown model.
  """
  if not photos:
    raise ValueError("no photos to perturb")
  try:
    epsilons = [float(e) for e in epsilons_255]
  except ValueError:
    raise ValueError(f"epsilons must be numbers (in 1/255 units), got {epsilons_255}") from None
  labels = [format(e, "g") for e in epsilons]
  classifier = load_classifier(model) if isinstance(model, str) else model
  rates = flip_rates(classifier, photos, [e / 255 for e in epsilons])
  if json_out:
    name = model if isinstance(model, str) else classifier.name
    record = {"model": name, "epsilons_255": labels, **rates}
    write_text(json_out, json.dumps(record, indent=2) + "\n")
  return rates_table(rates, labels)
