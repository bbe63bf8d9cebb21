"""The generation engine: a recipe's octaves, run on a batch of targets.

``generate`` optimises a batch of images (targets x restarts) together and
returns a ``Generation``; ``start`` does the same but returns once the first
batch is queued, so a caller can read one batch while the next computes.
How a call goes, top to bottom:

1. ``plans.plan`` checks the recipe against the classifier, one ``Plan`` per
   octave;
2. ``batch_size.choose`` picks the batch size that fits the free device
   memory (unless given), and ``batch_size.per_call`` splits the images
   into equal batches;
3. ``programs.compile_all`` compiles the first octave's program, and the
   later octaves' behind it while it runs;
4. ``runner.dispatch`` queues a batch's octaves on the device (each a
   ``lax.scan`` of ``step.make_step``: per-image operations, the cyclic
   resize, the objective's gradient for the whole batch and the optax
   update; no Python loop per iteration, no host transfer inside an
   octave), and ``runner.finish`` reads it back.

A ``tracking.Tracker`` carries the caller's progress callback, the chunk
policy and the compile time through all of it.

Randomness (``starts``): image ``j`` draws everything from
``fold_in(fold_in(key(seed), target_j), restart_j)``; no draw depends on the
batch, so an image is the same whatever batch made it. Devices: the batch
is sharded over every visible device (``devices``); a batch that does not
divide evenly is padded with copies of its first image, dropped afterwards.
Mixed precision: ``devices.mixed_precision(classifier)`` runs the model in
bfloat16 while the canvas, its gradient and the update stay float32.

Data contract: images are NHWC float32 in [0, 1] (during optimisation a
recipe without clipping may leave that range; results are clipped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from classgen_jax import batch_size as batch_size_lib
from classgen_jax import devices, imagenet, plans, programs, runner, starts
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax.devices import mixed_precision  # noqa: F401  (generate's companion)
from classgen_jax.recipe import Recipe
from classgen_jax.results import Generation, GenerationError, Snapshots, concatenate
from classgen_jax.tracking import Progress, Tracker

__all__ = ["Generation", "GenerationError", "Pending", "Progress", "Snapshots", "generate",
           "start"]


def generate(classifier: Classifier, targets: Sequence[int | str] | int | str,
             recipe: str | Recipe | None = None, *, seed: int = 0, init: Any = None,
             restarts: int = 1, snapshot_every: int = 0,
             batch_size: int | None = None, pad_to: int = 0, chunk: int | None = None,
             progress: Callable[[Progress], None] | None = None) -> Generation:
  """Images that ``classifier`` sees as each target, made together.

  Args:
    classifier: a ``Classifier``.
    targets: class indices or names (one or several). A target given again
      continues its restarts: its ``k``-th repeat (from 0) makes restarts
      ``k * restarts`` to ``(k + 1) * restarts - 1``, so every image has its
      own key, and each is the image that ``generate([t],
      restarts=(k + 1) * restarts)`` makes at that restart.
    recipe: a recipe name (``recipes.names()``) or a ``Recipe``; default
      ``recipes.default_for(classifier)``.
    seed: the run's seed; with the target and restart index it determines
      every random draw of an image.
    init: photos to start from (transfiguration): a path, an ``(H, W, 3)``
      array in [0, 1], or one per target.
    restarts: images per target, each from its own random start.
    snapshot_every: keep the image and logits every this many iterations.
    batch_size: images optimised at once, sharded over all devices; results
      do not depend on it nor on the device count. Default
      (``batch_size.choose``): all, as far as the free device memory allows
      (on CPUs, 8 per device).
    pad_to: run fewer images than this as a batch of this many (copies,
      dropped afterwards), so that a caller's last, smaller batch reuses the
      programs compiled for its full ones.
    chunk: run each octave this many iterations per compiled call (default:
      all at once, or a sixteenth of the octave with ``progress``), so that
      ``progress`` hears between chunks; images do not change. With
      ``progress``, the host waits for each chunk in a loop that lets a
      KeyboardInterrupt through at once.
    progress: called with a ``Progress`` when an octave's program is
      compiled and after each chunk has run.

  Returns:
    A ``Generation``; images are ordered target-major (all restarts of the
    first target, then the next).

  Raises:
    UnknownClassError, ValueError, InputError: bad targets, recipe or sizes.
    BatchSizeError: not one image fits the free device memory.
    GenerationError: a step produced NaN or Inf.
  """
  return start(classifier, targets, recipe, seed=seed, init=init, restarts=restarts,
               snapshot_every=snapshot_every, batch_size=batch_size, pad_to=pad_to,
               chunk=chunk, progress=progress).result()


class Pending:
  """A ``generate`` call whose first batch is queued on the device.

  ``start`` returns one; ``result`` runs the rest and returns the
  ``Generation``. Between the two the host is free: an atlas starts its
  next batch, then reads this one (NaN checks, scores, PNGs) while the
  device computes that one.
  """

  def __init__(self, began: float, dispatch: Callable[[int], runner.Dispatched],
               begins: Sequence[int], tracker: Tracker):
    self._began, self._dispatch, self.tracker = began, dispatch, tracker
    self._begins = list(begins)
    self._first = dispatch(self._begins.pop(0))
    self._result: Generation | None = None

  def result(self) -> Generation:
    """The ``Generation`` (waits for the device; once, then cached).

    Raises:
      GenerationError: a step produced NaN or Inf.
    """
    if self._result is None:
      parts, previous = [], self._first
      for begin in self._begins:
        # Batch k + 1 is queued before the host reads batch k (whose last
        # chunk is reported once k + 1's first is queued).
        queued = self._dispatch(begin)
        parts.append(runner.finish(previous))
        previous = queued
      self._begins = []
      self.tracker.flush()
      parts.append(runner.finish(previous))
      result = concatenate(parts)
      result.seconds = time.perf_counter() - self._began
      result.compile_seconds = self.tracker.compile_seconds
      self._result = result
    return self._result


def start(classifier: Classifier, targets: Sequence[int | str] | int | str,
          recipe: str | Recipe | None = None, *, seed: int = 0, init: Any = None,
          restarts: int = 1, snapshot_every: int = 0,
          batch_size: int | None = None, pad_to: int = 0, chunk: int | None = None,
          progress: Callable[[Progress], None] | None = None,
          follows: Pending | None = None) -> Pending:
  """``generate``, returning once its first batch is queued on the device.

  Arguments as for ``generate``; bad ones raise here. Batches after the
  first are queued by ``Pending.result`` one ahead of the host: while batch
  ``k + 1`` computes, the host reads batch ``k`` (its NaN check, scores and
  images), so the device does not wait for the host between batches.
  ``follows``: the call before this one, not yet read; its last progress
  report is made once this call's first chunk is queued, so reports stay
  in order.
  """
  began = time.perf_counter()
  recipe = recipes_lib.default_for(classifier) if recipe is None else recipe
  recipe = recipes_lib.get(recipe) if isinstance(recipe, str) else recipe
  planned = plans.plan(classifier, recipe, snapshot_every)
  target_ids, restart_ids = _images(targets, restarts, plans.target_labels(classifier, recipe),
                                    recipe.units)
  group = plans.group(planned)
  if restarts % group:
    raise ValueError(f"recipe {recipe.name!r} makes groups of {group} images of a target that "
                     f"differ (diversity): restarts must be a multiple of {group}, got "
                     f"{restarts}")
  starts.check(recipe, init)
  photos = None
  if init is not None:
    photos = [p for p in starts.photos(init, len(target_ids) // restarts)
              for _ in range(restarts)]
  n = len(target_ids)
  tracker = Tracker(progress, chunk, octaves=len(planned), total=recipe.iterations)
  if follows is not None and not follows._begins:
    tracker.follow(follows.tracker)
  if batch_size is None:
    batch_size = batch_size_lib.choose_planned(classifier, recipe.name, planned,
                                               max(n, pad_to), tracker)
  per_batch, size = batch_size_lib.per_call(n, batch_size, pad_to, group)
  if group > 1:  # whole groups on every device count, padding included
    whole = math.lcm(group, devices.batch_mesh().size)
    size = -(-size // whole) * whole
  # The first octave's program is waited for; the later ones compile while
  # it runs (on a CPU, the cores the step leaves idle).
  programs.compile_all(classifier, programs.signatures(classifier, planned, size, tracker),
                       tracker, size, first=1)

  def dispatch(begin: int) -> runner.Dispatched:
    part = slice(begin, begin + per_batch)
    batch = runner.Batch(target_ids[part], restart_ids[part],
                         None if photos is None else photos[part], size)
    return runner.dispatch(classifier, recipe, planned, batch, seed, tracker)

  return Pending(began, dispatch, range(0, n, per_batch), tracker)


def _images(targets, restarts: int, labels, units=None) -> tuple[np.ndarray, np.ndarray]:
  """``(targets, restarts)`` per image, target-major; a repeated target
  continues its restarts (it would otherwise repeat its keys, and so its
  images). With ``units``, targets are unit indices (``labels`` names them)."""
  if isinstance(targets, (int, str, np.integer)):
    targets = [targets]
  indices = imagenet.class_indices(targets, labels) if units is None else unit_indices(
      targets, labels, units)
  if not indices:
    raise ValueError("no targets given: pass class indices or names")
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}")
  target_ids = np.repeat(np.asarray(indices, np.int32), restarts)
  occurrence = [indices[:i].count(t) for i, t in enumerate(indices)]
  restart_ids = (np.repeat(np.asarray(occurrence, np.int32), restarts) * restarts
                 + np.tile(np.arange(restarts, dtype=np.int32), len(indices)))
  return target_ids, restart_ids


def unit_indices(targets, labels: tuple[str, ...], units) -> list[int]:
  """Targets that index ``units`` (``Recipe.units``), named by ``labels``.

  Raises:
    ValueError: a target that is not an index of one of the units.
  """
  indices = []
  for target in targets:
    index = int(target) if isinstance(target, (int, np.integer)) or (
        isinstance(target, str) and target.strip().isdigit()) else None
    if index is None or not 0 <= index < len(labels):
      raise ValueError(f"{units.unit} {target!r} is not one of the {len(labels)} {units.unit}s of "
                       f"layer {units.layer!r}: use 0 to {len(labels) - 1}")
    indices.append(index)
  return indices
