"""The program cache: one compiled program per signature, shared by equal
plans, chunks and batches of one size; compiled all at once before a run."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from classgen_jax import engine, plans, programs, recipes
from classgen_jax.operations import Blur
from classgen_jax.tracking import Tracker
from tests.helpers import CONTRACT, CONTRACT_GROUP, contract_runs, quick, small, tiny


@CONTRACT_GROUP
def test_a_run_compiles_once_and_equal_calls_reuse_it():
  runs = contract_runs()
  assert runs.compiled == 1 and runs.chunked.compile_seconds > 0  # the chunked octave
  assert runs.again_compiled == 0 and runs.again.compile_seconds == 0.0
  plan = plans.plan(tiny(), CONTRACT, snapshot_every=3)[0]
  length = Tracker(chunk=2).chunk_length(plan)
  assert length == 3  # a multiple of the snapshot interval
  signature = programs.Signature.of(plan, 3, 2, tiny())
  assert programs.cached(signature)
  # An equal recipe built anew (equal objectives, rules, operations hash equal)
  # has the same signature; another blur, another batch or chunk do not.
  again = dataclasses.replace(CONTRACT, octaves=(dataclasses.replace(CONTRACT.octaves[0]),))
  assert programs.Signature.of(plans.plan(tiny(), again, 3)[0], 3, 2, tiny()) == signature
  other = dataclasses.replace(CONTRACT, octaves=(dataclasses.replace(
      CONTRACT.octaves[0], after=(Blur((1.5, 0.4)),)),))
  assert programs.Signature.of(plans.plan(tiny(), other, 3)[0], 3, 2, tiny()) != signature
  assert programs.Signature.of(plan, 3, 4, tiny()) != signature
  assert programs.Signature.of(plan, 7, 2, tiny()) != signature
  assert programs.Signature.of(plan, 3, 2, tiny(), jnp.float16) != signature


def test_a_signature_names_the_classifiers_shapes_not_its_weights():
  plan = plans.octave_plans(CONTRACT)[0]
  clf = tiny()
  doubled = dataclasses.replace(clf, variables={**clf.variables})
  assert programs.Signature.of(plan, 7, 2, doubled) == programs.Signature.of(plan, 7, 2, clf)
  assert programs.Signature.of(plan, 7, 2, clf.astype(jnp.float16)) != (
      programs.Signature.of(plan, 7, 2, clf))


def test_later_octaves_compile_behind_the_first_while_it_runs():
  # Two octaves of CONTRACT (two programs: a plan knows its octave), on a
  # batch of three no other test compiles.
  octave = dataclasses.replace(CONTRACT.octaves[0], iterations=3)
  recipe = dataclasses.replace(CONTRACT, name="behind", octaves=(octave, octave))
  clf = tiny()
  events = []
  first, second = programs.signatures(clf, plans.plan(clf, recipe), 3, Tracker(events.append))
  before = programs.count()
  result = engine.generate(clf, [1, 2, 3], recipe, seed=4, progress=events.append)
  heard = [(e.event, e.octave) for e in events]
  # Both announced, only the first waited for before its iterations; the
  # second's "compiled" comes when octave 2 starts, after octave 1's chunks
  # (every one of them: the report before it is made first).
  assert heard[:3] == [("compiling", 0), ("compiling", 1), ("compiled", 0)]
  later = heard.index(("compiled", 1))
  assert heard[3:later] == [("iterations", 0)] * octave.iterations
  assert set(heard[later + 1:]) == {("iterations", 1)}
  assert events[later].seconds > 0 and result.compile_seconds > 0
  assert programs.count() == before + 2 and programs.cached(first) and programs.cached(second)
  assert programs.wait(clf, second) == 0.0  # compiled: nothing to wait for
  assert result.images.shape == (3, 32, 32, 3) and np.isfinite(result.images).all()


@pytest.mark.slow  # three compiles, ~20 s
def test_every_octave_is_compiled_before_the_first_runs():
  recipe = dataclasses.replace(small(recipes.get("octaves_padded"), iterations=2),
                               name="precompiled")
  clf = tiny()
  planned = plans.plan(clf, recipe)
  heard = []
  tracker = Tracker(heard.append, octaves=3)  # with progress, octaves run in chunks
  signatures = programs.signatures(clf, planned, 2, tracker)
  before = programs.count()
  seconds = programs.compile_all(clf, signatures, tracker, 2)
  assert programs.count() == before + 3 and tracker.compile_seconds == seconds > 0
  assert [e.event for e in heard] == ["compiling"] * 3 + ["compiled"] * 3
  assert programs.compile_all(clf, signatures, tracker, 2) == 0.0  # done already
  assert all(programs.memory_bytes(s) > 0 for s in signatures)
  events = []
  result = engine.generate(clf, [1, 2], recipe, progress=events.append)
  assert not [e for e in events if e.event == "compiling"]  # the run found them
  assert result.compile_seconds == 0.0 and programs.count() == before + 3


@pytest.mark.slow
def test_batches_of_one_size_share_one_program_and_change_no_image():
  recipe = quick("sign", 0.02, iterations=2)
  whole = engine.generate(tiny(), [1, 2, 3, 4, 5], recipe, seed=3)
  before = programs.count()
  chunked = engine.generate(tiny(), [1, 2, 3, 4, 5], recipe, seed=3, batch_size=2)
  # Batches of 2, 2 and 1 padded to 2: one new program, not two.
  assert programs.count() == before + 1
  # A caller's last, smaller batch padded to its full ones: no new program.
  tail = engine.generate(tiny(), [4, 5], recipe, seed=3, batch_size=3, pad_to=3)
  engine.generate(tiny(), [1, 2, 3], recipe, seed=3, batch_size=3)
  assert programs.count() == before + 2  # batches of 2 (above) and of 3
  import numpy as np
  np.testing.assert_array_equal(whole.images, chunked.images)
  np.testing.assert_array_equal(tail.images, whole.images[3:])
  assert len(chunked.images) == len(chunked.rank_as_optimised) == 5
