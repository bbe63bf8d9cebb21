"""One batch on the device: queue its octaves (``dispatch``), then read it
back (``finish``).

``dispatch`` pads the batch to the size its programs were compiled for
(copies of its first image, dropped at the end: every draw comes from the
image's own key, so padding and sharding change no image), places it on the
batch mesh, and queues each octave's compiled program (``programs``) back
to back, in chunks when the tracker's policy says so, then the final
scores; nothing waits for the device. ``finish`` reads the batch to the
host: the NaN check, scores, snapshots, images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import devices, metrics, programs, starts
from classgen_jax import plans as plans_lib
from classgen_jax import step as step_lib
from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax.metrics import stability
from classgen_jax.plans import Plan
from classgen_jax.recipe import Recipe
from classgen_jax.results import Generation, GenerationError, Snapshots
from classgen_jax.tracking import Tracker


class Batch(NamedTuple):
  """The images of one batch: what ``dispatch`` makes.

  Attributes:
    targets, restarts: ``(n,)`` per image.
    photos: one start photo per image, or None.
    size: the batch size the programs were compiled for (padded to it).
  """
  targets: np.ndarray
  restarts: np.ndarray
  photos: Sequence[Any] | None
  size: int


class Dispatched(NamedTuple):
  """A batch queued on the device: its final canvases, traces, snapshots and
  scores (device arrays), and what reading them needs."""
  plans: Sequence[Plan]
  targets: np.ndarray
  restarts: np.ndarray
  images: jax.Array  # clipped to [0, 1]
  traces: list
  snapshots: list
  scores: tuple
  labels: tuple[str, ...]
  importance: jax.Array | None  # the last octave's that kept one, at its side


def dispatch(classifier: Classifier, recipe: Recipe, plans: Sequence[Plan], batch: Batch,
             seed: int, tracker: Tracker) -> Dispatched:
  """Queues ``batch``'s octaves and final scores on the device."""
  n = len(batch.targets)
  mesh = devices.batch_mesh()
  padded = programs.padded_batch(n, batch.size)
  index = np.concatenate([np.arange(n), np.zeros(padded - n, int)])
  targets, restarts = np.asarray(batch.targets)[index], np.asarray(batch.restarts)[index]
  keys = starts.image_keys(seed, targets, restarts)
  photos = None if batch.photos is None else [batch.photos[i] for i in index]
  images = starts.initial_images(recipe, keys, photos)
  keys, images, targets_device = jax.device_put((keys, images, targets),
                                                devices.batch_sharding(mesh))
  classifier = jax.device_put(classifier, devices.replicated(mesh))
  traces, snapshots, importance = [], [], None
  side, offset = recipe.size, 0
  for plan in plans:
    if plan.octave.canvas is not None and plan.octave.canvas != side:
      images = jax.vmap(lambda x, s=plan.octave.canvas: T.resize(x, s, method="bilinear"))(
          images)
    buffer, trace, snaps, kept = _run_octave(
        plan, classifier, step_lib.embed(images, plan.buffer), targets_device, keys, tracker,
        offset, n)
    side = plan.final_side()
    images = buffer[:, :side, :side]
    if kept is not None:
      importance = kept[:, :side, :side]
    traces.append(trace)
    snapshots.append(snaps)
    offset += plan.octave.iterations
  scores = metrics.final_scores(classifier, images, targets_device, recipe.units)
  return Dispatched(plans, np.asarray(batch.targets), np.asarray(batch.restarts),
                    T.clip(images), traces, snapshots, scores,
                    plans_lib.target_labels(classifier, recipe), importance)


def _run_octave(plan: Plan, classifier: Classifier, canvas: jax.Array, targets: jax.Array,
                keys: jax.Array, tracker: Tracker, offset: int, n: int):
  """One octave on ``canvas`` ``(N, B, B, 3)``, queued in chunks of the
  tracker's length; each chunk is reported once the next is queued.

  Returns:
    ``(images, trace, snapshots, importance)`` (device arrays; importance
    None unless the octave keeps it).
  """
  iterations = plan.octave.iterations
  length = tracker.chunk_length(plan)
  signature = programs.Signature.of(plan, length, canvas.shape[0], classifier, canvas.dtype)
  programs.wait(classifier, signature, tracker, n)  # a no-op once compiled
  state = step_lib.init_state(plan, canvas)
  traces, snapshots = [], []
  for begin in range(0, iterations, length):
    state, trace, snaps = programs.run(signature, classifier, state, targets, keys)
    traces.append(trace)
    snapshots.append(snaps)
    # The state is donated to the next chunk; the trace is not.
    tracker.queued(plan.index, offset + min(begin + length, iterations), n, trace.finite)
  trace = traces[0] if len(traces) == 1 else jax.tree_util.tree_map(
      lambda *xs: jnp.concatenate(xs)[:iterations], *traces)
  if snapshots[0] is not None:
    frames = iterations // plan.snapshot_every
    snapshots = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:frames], *snapshots)
  else:
    snapshots = None
  return step_lib.canvas_images(plan, state.canvas), trace, snapshots, state.importance


def _check_finite(trace: metrics.Trace, plan: Plan, offset: int, batch: Dispatched) -> None:
  finite = np.asarray(trace.finite)[:, :len(batch.targets)]
  if finite.all():
    return
  iteration, image = np.argwhere(~finite)[0]
  target = int(batch.targets[image])
  kind = "class" if plan.units is None else "unit"
  raise GenerationError(
      f"NaN or Inf in the image of {kind} {target} ({batch.labels[target]!r}), restart "
      f"{int(batch.restarts[image])}, at iteration {offset + int(iteration)} (octave "
      f"{plan.index + 1}); lower the step size or clip the image")


def finish(batch: Dispatched) -> Generation:
  """Reads a queued batch to the host: the NaN check, scores, snapshots.

  Raises:
    GenerationError: a step produced NaN or Inf.
  """
  plans, n = batch.plans, len(batch.targets)
  traces, offset = devices.to_host(batch.traces), 0
  for plan, trace in zip(plans, traces):
    _check_finite(trace, plan, offset, batch)
    logging.debug("octave %d done", plan.index + 1)
    offset += plan.octave.iterations
  trace = jax.tree_util.tree_map(lambda *xs: np.concatenate([x[:, :n] for x in xs]), *traces)
  snapshots = _snapshots(plans, batch.snapshots, n)
  images, target_logit, probability, rank, top, top_probability, rank_raw = devices.to_host(
      (batch.images, *batch.scores))
  importance = None if batch.importance is None else devices.to_host(batch.importance)[:n]
  return Generation(
      images=images[:n], targets=batch.targets, restarts=batch.restarts,
      target_logit=target_logit[:n], probability=probability[:n], rank=rank[:n], trace=trace,
      stability=stability(trace, [p.octave.iterations for p in plans]),
      snapshots=snapshots if plans[0].snapshot_every else None,
      rank_as_optimised=rank_raw[:n], importance=importance, top_class=top[:n],
      top_probability=top_probability[:n])


def _snapshots(plans: Sequence[Plan], per_octave: list, n: int) -> Snapshots:
  snapshots, offset = Snapshots([], [], [], []), 0
  for plan, entry in zip(plans, per_octave):
    if entry is not None:
      frames, logits = devices.to_host(entry)
      local = np.arange(frames.shape[0]) * plan.snapshot_every
      sides = np.asarray([plan.sides[plan.size_indices(i)[0]] for i in local])
      largest = sides.max()
      snapshots.images.append(frames[:, :n, :largest, :largest].swapaxes(0, 1))
      snapshots.logits.append(logits[:, :n].swapaxes(0, 1))
      snapshots.iterations.append(offset + local)
      snapshots.sides.append(sides)
    offset += plan.octave.iterations
  return snapshots
