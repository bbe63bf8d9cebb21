"""A call's result: batches joined in order."""

from __future__ import annotations

import numpy as np

from classgen_jax import results
from tests.helpers import CONTRACT_GROUP, contract_runs


@CONTRACT_GROUP
def test_batches_join_in_order():
  runs = contract_runs()
  first, second = runs.chunked, runs.again
  joined = results.concatenate([first, second])
  np.testing.assert_array_equal(joined.images, np.concatenate([first.images, second.images]))
  assert list(joined.targets) == [1, 2, 3, 4]
  assert joined.trace.objective.shape == (7, 4)  # iterations x images
  assert joined.snapshots.images[0].shape[0] == 4
  np.testing.assert_array_equal(joined.snapshots.iterations[0], first.snapshots.iterations[0])
  assert joined.stability["top1_fraction"].shape == (4,)
  assert results.concatenate([first]) is first
