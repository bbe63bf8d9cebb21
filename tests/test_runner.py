"""One batch on the device: padded to its programs' size and cut back, and
read to the host with the NaN check naming the image and iteration."""

from __future__ import annotations

import numpy as np
import pytest

from classgen_jax import engine, plans, programs, runner
from classgen_jax.tracking import Tracker
from tests.helpers import CONTRACT, CONTRACT_GROUP, contract_runs, quick, tiny


@CONTRACT_GROUP
@pytest.mark.bit_exact
def test_a_padded_batch_is_cut_back_to_its_images():
  clf, runs = tiny(), contract_runs()
  planned = plans.plan(clf, CONTRACT)
  tracker = Tracker()
  programs.compile_all(clf, programs.signatures(clf, planned, 2, tracker))
  # One image run as a batch of 2 (the plain run's program): a copy of it
  # fills the batch and is dropped.
  batch = runner.Batch(np.asarray([2], np.int32), np.asarray([0], np.int32), None, 2)
  result = runner.finish(runner.dispatch(clf, CONTRACT, planned, batch, 11, tracker))
  assert result.images.shape == (1, 32, 32, 3) and result.trace.objective.shape == (7, 1)
  np.testing.assert_array_equal(result.images[0], runs.plain.images[1])
  assert list(result.targets) == [2] and result.snapshots is None
  assert result.stability["top1_fraction_per_octave"].shape == (1, 1)


def test_nan_stops_with_the_class_and_iteration():
  recipe = quick("gradient", 1e38, iterations=6)
  with pytest.raises(engine.GenerationError, match=r"class 7 \('cock'\), restart 0, at "
                                                   r"iteration \d \(octave 1\); lower the step"):
    engine.generate(tiny(), [7], recipe)
