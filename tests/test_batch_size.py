"""The batch size: balanced batches, and what fits the free device memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from classgen_jax import batch_size, plans, programs
from classgen_jax.operations import Crop
from classgen_jax.tracking import Tracker
from tests.helpers import quick, tiny


def test_batches_are_balanced():
  assert batch_size.balanced(1000, 256, 1) == 250  # 4 x 250, not 3 x 256 + 232
  assert batch_size.balanced(10, 8, 1) == 5
  assert batch_size.balanced(10, 8, 4) == 3  # one batch of 12 on 4 devices, 2 padded
  assert batch_size.balanced(3, 0, 1) == 0
  assert batch_size.per_call(5, 2) == (2, 2)  # 2, 2 and 1 padded to 2
  assert batch_size.per_call(5, None) == (5, 5)
  assert batch_size.per_call(2, 3, pad_to=3) == (2, 3)  # a caller's last, smaller batch
  # Whole groups (diversity): 15 images in groups of 3, at most 9 a batch:
  # 2 batches of 3 groups (the second, 2 groups and a padded one).
  assert batch_size.per_call(15, 9, group=3) == (9, 9)
  assert batch_size.per_call(8, 3, group=2) == (2, 2)  # one group a batch: 3 is not whole
  assert batch_size.per_call(6, 1, group=3) == (3, 3)  # at least one group
  assert batch_size.per_call(4, None, pad_to=6, group=2) == (4, 6)


def _program_bytes(clf, recipe, size):
  plan = plans.plan(clf, recipe)[0]
  signature = programs.Signature.of(plan, plan.octave.iterations, size, clf)
  programs.compile_all(clf, [signature])
  return programs.memory_bytes(signature)


@pytest.mark.slow  # eight small compiles, ~12 s
def test_the_batch_size_fits_the_free_memory():
  clf, recipe = tiny(), quick(iterations=2, view=(Crop(40),))
  assert batch_size.choose(clf, recipe, 5, free_bytes=2**40) == 5  # all
  assert batch_size.choose(clf, recipe, 48, free_bytes=2**40) == 8  # a CPU's guess
  assert batch_size.choose(clf, recipe, 10, free_bytes=2**40) == 5  # 5 + 5, not 8 + 2
  # Room for fewer than 8: the tiny model's programs have a large fixed part
  # (63 MB at 1 image, 20 MB of it weights), which the second try measures.
  one, eight = _program_bytes(clf, recipe, 1), _program_bytes(clf, recipe, 8)
  free = int((one + eight) / 2 / batch_size.MEMORY_SHARE)
  chosen = batch_size.choose(clf, recipe, 50, free_bytes=free)
  assert 2 <= chosen < 8
  assert _program_bytes(clf, recipe, chosen) <= 0.8 * free < _program_bytes(clf, recipe, 8)
  with pytest.raises(batch_size.BatchSizeError, match=r"'quick' needs about .* GiB .* is free"):
    batch_size.choose(clf, recipe, 50, free_bytes=1000)


@pytest.mark.slow  # six small compiles, ~10 s
def test_a_later_octave_that_would_not_fit_shrinks_the_batch():
  # A second octave on a canvas twice the side (4x the pixels): its program
  # compiles behind the first's, but where it comes near the budget the
  # choice waits for it and measures it, so the batch fits every octave.
  clf = tiny()
  first = quick(iterations=2, view=(Crop(40),))
  recipe = dataclasses.replace(first, name="growing", octaves=(
      first.octaves[0], dataclasses.replace(first.octaves[0], canvas=96, view=(Crop(88),))))
  planned = plans.plan(clf, recipe)

  def program_bytes(octave, size):
    signature = programs.signatures(clf, planned, size, Tracker())[octave]
    programs.wait(clf, signature)
    return programs.memory_bytes(signature)

  # Room for eight of the first octave's images, not for eight of the second's.
  free = int(program_bytes(1, 8) * 0.9 / batch_size.MEMORY_SHARE)
  assert program_bytes(0, 8) <= batch_size.MEMORY_SHARE * free  # the first alone fits 8
  chosen = batch_size.choose(clf, recipe, 50, free_bytes=free)
  assert chosen < 8
  assert max(program_bytes(0, chosen), program_bytes(1, chosen)) <= batch_size.MEMORY_SHARE * free
  # With room to spare the second octave's program is not waited for.
  assert batch_size.choose(clf, recipe, 16, free_bytes=2**40) == 8


def test_free_memory_is_known_on_a_cpu_and_unknown_memory_takes_the_guess(monkeypatch):
  assert batch_size.free_memory() > 0  # the host's available memory
  monkeypatch.setattr(batch_size, "free_memory", lambda: None)
  clf, recipe = tiny(), quick(iterations=1)
  planned = plans.plan(clf, recipe)
  before = programs.count()
  assert batch_size.choose_planned(clf, "quick", planned, 20, Tracker()) == 7  # 3 x 7
  assert programs.count() == before  # nothing compiled to find out
  assert np.isfinite(batch_size.MEMORY_SHARE)
