"""Tests of classgen_jax.metrics on hand-made logits, traces and a stand-in model."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import Classifier, metrics


def test_target_logit_and_rank_counts_strictly_larger_logits():
  logits = jnp.array([[1.0, 3.0, 2.0],   # target is the top-1: rank 0
                      [1.0, 3.0, 2.0],   # one logit above it
                      [5.0, 5.0, 5.0],   # ties do not count against it
                      [0.0, -1.0, 7.0]])  # the lowest: rank 2
  targets = jnp.array([1, 2, 2, 1])
  logit, rank = metrics.target_logit_and_rank(logits, targets)
  np.testing.assert_array_equal(logit, [3.0, 2.0, 5.0, -1.0])
  np.testing.assert_array_equal(rank, [0, 1, 0, 2])


def test_trace_records_the_target_and_its_zscore():
  logits = jnp.array([[1.0, 3.0, 2.0], [4.0, 4.0, 4.0]])
  values, finite = jnp.array([0.5, -2.0]), jnp.array([True, False])
  record = metrics.trace(values, logits, jnp.array([1, 0]), finite)
  np.testing.assert_array_equal(record.objective, values)
  np.testing.assert_array_equal(record.finite, finite)
  np.testing.assert_array_equal(record.target_logit, [3.0, 4.0])
  np.testing.assert_array_equal(record.target_rank, [0, 0])
  # (3 - mean 2) / std sqrt(2/3); constant logits give 0, not a NaN.
  np.testing.assert_allclose(record.target_zscore, [np.sqrt(1.5), 0.0], rtol=1e-6)


def _trace(rank, zscore) -> metrics.Trace:
  rank, zscore = np.asarray(rank), np.asarray(zscore, np.float32)
  zeros = np.zeros(rank.shape, np.float32)
  return metrics.Trace(zeros, zeros, rank, zscore, np.ones(rank.shape, bool))


# Two images over 6 iterations: ``(iterations, N)``.
RANK = [[0, 3], [0, 1], [2, 0], [0, 0], [0, 0], [1, 0]]
ZSCORE = [[1.0, 0.0], [2.0, 0.0], [2.0, 1.0], [5.0, 1.0], [4.0, 1.0], [4.0, 3.0]]


def test_stability_over_the_whole_run():
  result = metrics.stability(_trace(RANK, ZSCORE))
  assert set(result) == {"top1_fraction", "zscore_jitter"}
  np.testing.assert_allclose(result["top1_fraction"], [4 / 6, 4 / 6])
  # Mean |change| over the 5 steps: image 0 moves 1, 0, 3, 1, 0; image 1 0, 1, 0, 0, 2.
  np.testing.assert_allclose(result["zscore_jitter"], [5 / 5, 3 / 5])


def test_stability_per_octave_leaves_out_the_jump_between_octaves():
  result = metrics.stability(_trace(RANK, ZSCORE), octaves=[3, 3])
  np.testing.assert_allclose(result["top1_fraction"], [4 / 6, 4 / 6])
  assert result["top1_fraction_per_octave"].shape == (2, 2)  # (N, octaves)
  np.testing.assert_allclose(result["top1_fraction_per_octave"], [[2 / 3, 2 / 3], [1 / 3, 1.0]])
  # Image 0's jump from 2 to 5 between iterations 2 and 3 is in neither octave.
  np.testing.assert_allclose(result["zscore_jitter_per_octave"], [[1 / 2, 1 / 2], [1 / 2, 2 / 2]])
  # A one-iteration octave has no change to measure.
  single = metrics.stability(_trace(RANK, ZSCORE), octaves=[1, 5])
  np.testing.assert_array_equal(single["zscore_jitter_per_octave"][:, 0], [0.0, 0.0])
  np.testing.assert_array_equal(single["top1_fraction_per_octave"][:, 0], [1.0, 0.0])


def test_stability_of_a_single_iteration_has_no_jitter():
  result = metrics.stability(_trace(RANK[:1], ZSCORE[:1]))
  np.testing.assert_array_equal(result["zscore_jitter"], [0.0, 0.0])
  np.testing.assert_array_equal(result["top1_fraction"], [1.0, 0.0])


@pytest.mark.parametrize("octaves", [[2, 3], [4, 4], []])
def test_stability_refuses_octaves_that_do_not_cover_the_trace(octaves):
  with pytest.raises(ValueError, match="do not cover a trace of 6"):
    metrics.stability(_trace(RANK, ZSCORE), octaves=octaves)


class _MeanColour(nn.Module):
  """A stand-in classifier with three classes: logit ``c`` is the mean of channel ``c``."""
  heads: tuple[str, ...] = ("logits",)
  num_classes: int = 3

  def spatial_size(self, side: int, head: str) -> int:
    del head
    return side

  @nn.compact
  def __call__(self, images, heads=("logits",)):
    scale = self.param("scale", nn.initializers.ones, ())
    return {"logits": scale * jnp.mean(images, axis=(1, 2))}


def test_final_scores_clip_and_resize_to_the_native_size():
  module = _MeanColour()
  classifier = Classifier(module, {"params": {"scale": jnp.ones(())}}, "mean_colour",
                          input_size=8, labels=("red", "green", "blue"))
  images = np.zeros((2, 16, 16, 3), np.float32)
  # Image 0: red is 0.1 but for a 4x4 patch of 5.0, which clipping brings to 1.0;
  # green 0.3, blue 0.2. Raw, red leads (mean 0.40625); clipped, green (0.3).
  images[0, ..., 0], images[0, 4:8, 8:12, 0] = 0.1, 5.0
  images[0, ..., 1], images[0, ..., 2] = 0.3, 0.2
  images[1] = 0.5  # a three-way tie: rank 0, probability 1/3
  logit, probability, rank, top, top_probability, rank_as_optimised = metrics.final_scores(
      classifier, jnp.asarray(images), jnp.array([1, 2]))
  np.testing.assert_allclose(logit, [0.3, 0.5], rtol=1e-6)
  clipped = np.array([0.1 + 16 / 256 * 0.9, 0.3, 0.2])
  softmax = np.exp(clipped) / np.exp(clipped).sum()
  np.testing.assert_allclose(probability, [softmax[1], 1 / 3], rtol=1e-5)
  np.testing.assert_array_equal(rank, [0, 0])
  np.testing.assert_array_equal(rank_as_optimised, [1, 0])
  np.testing.assert_array_equal(top, [1, 0])  # green; a tie goes to the first
  np.testing.assert_allclose(top_probability, [softmax[1], 1 / 3], rtol=1e-5)
