"""The tracker of a call: its chunk policy, its reports one chunk behind,
handed on to the next call, and its compile time."""

from __future__ import annotations

import jax.numpy as jnp

from classgen_jax import plans
from classgen_jax.tracking import CHUNKS_WITH_PROGRESS, Tracker, chunk_length
from tests.helpers import CONTRACT, CONTRACT_GROUP, contract_runs, quick


def test_the_chunk_policy():
  plan = plans.octave_plans(quick(iterations=100))[0]
  assert Tracker().chunk_length(plan) == 100  # no reports: the octave at once
  assert Tracker(chunk=30).chunk_length(plan) == 30
  assert Tracker(print).chunk_length(plan) == -(-100 // CHUNKS_WITH_PROGRESS)
  snapshots = plans.octave_plans(quick(iterations=100), snapshot_every=7)[0]
  assert chunk_length(snapshots, 10) == 14 and chunk_length(snapshots, 500) == 100


def test_chunks_are_reported_one_behind_and_handed_to_the_next_call():
  heard = []
  first = Tracker(heard.append, octaves=1, total=4)
  done = jnp.ones(())
  first.queued(0, 2, 1, done)
  assert heard == []  # reported once the next chunk is queued
  first.queued(0, 4, 1, done)
  assert [e.done for e in heard] == [2]
  second = Tracker(heard.append, octaves=1, total=4)
  second.follow(first)
  first.flush()  # handed over: nothing left here
  assert [e.done for e in heard] == [2]
  second.compiling(0, 1)  # a compile would hold the report up: it is made first
  assert [(e.event, e.done) for e in heard[1:]] == [("iterations", 4), ("compiling", 0)]
  second.compiled(0, 1, 1.5)
  second.add_compile_time(1.5)
  assert heard[-1].seconds == 1.5 and second.compile_seconds == 1.5
  quiet = Tracker()
  quiet.queued(0, 1, 1, done)
  quiet.flush()  # no callback, nothing deferred


@CONTRACT_GROUP
def test_a_run_reports_compiling_then_each_chunk_in_order():
  runs = contract_runs()
  kinds = [e.event for e in runs.events]
  assert kinds == ["compiling", "compiled", "iterations", "iterations", "iterations"]
  assert runs.events[1].seconds > 0
  assert [e.done for e in runs.events if e.event == "iterations"] == [3, 6, 7]
  assert all(e.total == 7 and e.batch == 2 and e.octaves == 1 for e in runs.events)
  assert [e.event for e in runs.again_events] == ["iterations"] * 3  # compiled already
  assert CONTRACT.iterations == 7
