"""An octave's scan: run whole or in chunks (the last one past the octave's
end skipped inside the program), with or without snapshots, the same images."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from classgen_jax import starts
from tests.helpers import CONTRACT, CONTRACT_GROUP, contract_runs, tiny


@CONTRACT_GROUP
@pytest.mark.bit_exact
def test_chunks_and_snapshots_change_no_image():
  runs = contract_runs()
  # 7 iterations in chunks of 3 (2 rounded up to the snapshot interval): the
  # last chunk's two iterations past the end are skipped.
  np.testing.assert_array_equal(runs.chunked.images, runs.plain.images)
  np.testing.assert_array_equal(runs.chunked.trace.objective, runs.plain.trace.objective)
  assert runs.chunked.trace.objective.shape == (7, 2)


@CONTRACT_GROUP
def test_snapshots_hold_the_canvas_before_each_kth_iteration():
  runs = contract_runs()
  snaps = runs.chunked.snapshots
  assert snaps.images[0].shape == (2, 2, 32, 32, 3) and snaps.logits[0].shape == (2, 2, 1000)
  assert list(snaps.iterations[0]) == [0, 3] and list(snaps.sides[0]) == [32, 32]
  # Frame 0 is the starting image, its logits the model's for it whole (not
  # for the step's cropped, rolled, flipped view).
  start = starts.initial_images(CONTRACT, starts.image_keys(11, [1, 2], [0, 0]))
  np.testing.assert_array_equal(snaps.images[0][:, 0], start)
  np.testing.assert_array_equal(snaps.image(1, 0, 0), np.asarray(start)[1])
  logits = jax.jit(lambda c, x: c(x)["logits"])(tiny(), start)
  np.testing.assert_allclose(snaps.logits[0][:, 0], logits, rtol=1e-5, atol=1e-5)
  assert runs.plain.snapshots is None and runs.plain.importance is None
