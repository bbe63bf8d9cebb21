"""What a run measures: per-iteration records, final scores and stability.

The target's logit and rank are computed here and nowhere else: during the
optimisation (for each view the model saw), and at the end (for the image
as returned, and for the raw canvas as optimised).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier, Needs
from classgen_jax.terms import Term


class Trace(NamedTuple):
  """Per-iteration, per-image records: ``(N,)`` from a step, ``(iterations, N)``
  over a run."""
  objective: jax.Array
  target_logit: jax.Array
  target_rank: jax.Array
  target_zscore: jax.Array
  finite: jax.Array


def target_logit_and_rank(logits: jax.Array, targets: jax.Array):
  """``(N,)`` the target's logit and its rank (0 = top-1) among ``(N, C)`` logits."""
  target = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
  return target, jnp.sum(logits > target[:, None], axis=1)


def trace(values, logits, targets, finite) -> Trace:
  """One step's record from its objective values and the view's logits."""
  target, rank = target_logit_and_rank(logits, targets)
  zscore = (target - logits.mean(axis=1)) / (logits.std(axis=1) + 1e-12)
  return Trace(values, target, rank, zscore, finite)


def _scores(classifier: Classifier, images, targets, units):
  outputs = classifier.outputs(images.astype(classifier.dtype), Needs(("logits",)) | (
      Needs() if units is None else units.needs))
  logits = outputs.heads["logits"].astype(jnp.float32)
  probabilities = jax.nn.softmax(logits)
  top = jnp.argmax(logits, axis=1)
  top_probability = jnp.take_along_axis(probabilities, top[:, None], axis=1)[:, 0]
  if units is None:
    scores = logits
    probability = jnp.take_along_axis(probabilities, targets[:, None], axis=1)[:, 0]
  else:  # a unit has no probability
    scores = units.values(outputs, images).astype(jnp.float32)
    probability = jnp.full(targets.shape, jnp.nan, jnp.float32)
  target, rank = target_logit_and_rank(scores, targets)
  return target, probability, rank, top, top_probability


@functools.partial(jax.jit, static_argnames="units")
def final_scores(classifier: Classifier, images, targets, units: Term | None = None):
  """The target's score (its logit, or with ``units`` its unit's value),
  probability (NaN for a unit) and rank (among the classes or the units),
  and the model's top class and its probability, for the clipped images at
  the classifier's native size; and the target's rank for the raw canvas,
  as optimised."""
  size = classifier.input_size
  resized = jax.vmap(lambda x: T.resize(x, size, method="bilinear"))(T.clip(images))
  as_optimised = _scores(classifier, images, targets, units)[2]
  return (*_scores(classifier, resized, targets, units), as_optimised)


def _stability(rank: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  jitter = np.abs(np.diff(z, axis=0)).mean(axis=0) if z.shape[0] > 1 else np.zeros(z.shape[1])
  return (rank == 0).mean(axis=0), jitter


def stability(trace: Trace, octaves: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """How steady the model's classification of its own image is.

  The article compares how stable each model's output is from one
  iteration to the next (Inception-v3 less than GoogLeNet, "particularly in
  the second octave"). Two numbers per image, over all iterations of the
  run:

  * ``top1_fraction``: the fraction of iterations in which the target was
    the model's top-1 class for the view it was shown;
  * ``zscore_jitter``: the mean absolute change, from one iteration to the
    next, of the target logit's z-score among all the logits (its distance
    from the mean logit in standard deviations). It is scale-free, so models
    with different logit scales compare; lower is steadier.

  With ``octaves`` (the iterations of each octave, summing to the trace's
  length), the same two per octave, ``(N, octaves)`` each, under
  ``top1_fraction_per_octave`` and ``zscore_jitter_per_octave``; the jitter
  of an octave counts only changes within it (not the jump at a resize
  between octaves).
  """
  rank = np.asarray(trace.target_rank)
  z = np.asarray(trace.target_zscore)
  top1, jitter = _stability(rank, z)
  result = {"top1_fraction": top1, "zscore_jitter": jitter}
  if octaves is not None:
    if sum(octaves) != rank.shape[0]:
      raise ValueError(f"octaves of {list(octaves)} iterations do not cover a trace of "
                       f"{rank.shape[0]}")
    bounds = np.cumsum([0, *octaves])
    parts = [_stability(rank[a:b], z[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    result["top1_fraction_per_octave"] = np.stack([p[0] for p in parts], axis=1)
    result["zscore_jitter_per_octave"] = np.stack([p[1] for p in parts], axis=1)
  return result
