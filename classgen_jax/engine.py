"""The generation engine: a recipe's octaves, run on a batch of targets.

``generate`` optimises a batch of images (targets x restarts) together. Each
octave is one jit-compiled program (``octave.compiled``) that runs its
iterations as a ``lax.scan`` of ``step.make_step`` on device: per-image
operations (crop, jitter, blur, colour, padding, clipping), the cyclic
resize, the objective's gradient for the whole batch and the optax update.
No Python loop per iteration, no host transfer inside an octave (or inside
a chunk of one, when progress is reported), and a second call with the same
shapes reuses the compiled program (the classifier's weights are an argument
of it).

Randomness: image ``j`` draws everything from
``key_j = fold_in(fold_in(key(seed), target_j), restart_j)``; octave ``o``
uses ``fold_in(key_j, o + 1)`` and its iteration ``i`` ``fold_in(., i)``. No
draw depends on the batch, so an image is the same whatever batch made it.

Devices: the batch is sharded over every visible device (``devices``). A
batch that does not divide evenly is padded with copies of its first image,
dropped afterwards; since every draw comes from the image's own key,
padding and sharding change no image.

Mixed precision: ``devices.mixed_precision(classifier)`` runs the model in
bfloat16 while the canvas, its gradient and the update stay float32.

Data contract: images are NHWC float32 in [0, 1] (during optimisation a
recipe without clipping may leave that range; results are clipped).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import devices, imagenet, metrics
from classgen_jax import octave as octave_lib
from classgen_jax import recipes as recipes_lib
from classgen_jax import step as step_lib
from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier
from classgen_jax.devices import mixed_precision  # noqa: F401  (generate's companion)
from classgen_jax.images import load_image
from classgen_jax.metrics import Trace, stability
from classgen_jax.recipes import Recipe


class GenerationError(RuntimeError):
  """The optimisation produced NaN or Inf."""


@dataclasses.dataclass
class Snapshots:
  """Images and logits every ``snapshot_every`` iterations, per octave.

  Attributes:
    images: one ``(N, frames, H, W, 3)`` array per octave (canvas sizes
      differ between octaves). During a cyclic resize the canvas changes
      size within the octave: each frame holds its image in the top-left
      corner, ``sides`` gives its side (``image`` cuts it out).
    logits: one ``(N, frames, classes)`` array per octave: the main head's
      logits for the frame's image as it is (whole, at its side), not for
      the jittered, cropped or resized view the step showed the model.
    iterations: one ``(frames,)`` array per octave, the global iteration
      index of each frame (the image *before* that iteration's update).
    sides: one ``(frames,)`` array per octave, each frame's canvas side.
  """
  images: list[np.ndarray]
  logits: list[np.ndarray]
  iterations: list[np.ndarray]
  sides: list[np.ndarray]

  def image(self, index: int, octave: int, frame: int) -> np.ndarray:
    """Image ``index``'s frame ``frame`` of octave ``octave``, ``(side, side, 3)``."""
    side = int(self.sides[octave][frame])
    return self.images[octave][index, frame, :side, :side]


@dataclasses.dataclass
class Generation:
  """What ``generate`` returns.

  Attributes:
    images: ``(N, H, W, 3)`` float32 in [0, 1]; image ``j`` is target
      ``targets[j]``, restart ``restarts[j]``.
    targets, restarts: ``(N,)`` int arrays.
    target_logit, probability, rank: ``(N,)`` the classifier's main-head
      logit, softmax probability and rank (0 = top-1) of the target for the
      final image as returned (clipped to [0, 1]), resized to the
      classifier's native input size: what a reader of the PNG would get.
    trace: per-iteration records (``Trace`` of ``(iterations, N)`` arrays).
    stability: ``{"top1_fraction", "zscore_jitter"}``, each ``(N,)``, and
      the same per octave, ``{"top1_fraction_per_octave",
      "zscore_jitter_per_octave"}``, each ``(N, octaves)``; see
      ``metrics.stability``.
    snapshots: with ``snapshot_every > 0``.
    seconds: wall-clock time, compilation included.
    compile_seconds: the part of it spent compiling programs (``precompile``
      and any first call of an octave's program).
    rank_as_optimised: ``(N,)`` the target's rank for the final canvas as
      the optimisation left it: unclipped, at the canvas size, not resized.
      Adversarial images (the gradient and sign recipes) rank first here and
      lose it once clipped and resized.
  """
  images: np.ndarray
  targets: np.ndarray
  restarts: np.ndarray
  target_logit: np.ndarray
  probability: np.ndarray
  rank: np.ndarray
  trace: Trace
  stability: dict[str, np.ndarray]
  snapshots: Snapshots | None = None
  seconds: float = 0.0
  rank_as_optimised: np.ndarray | None = None
  compile_seconds: float = 0.0


class Progress(NamedTuple):
  """Where a ``generate`` call is, for a progress report.

  Attributes:
    event: ``"compiling"`` (an octave's program is about to be compiled:
      its first use with these shapes), ``"compiled"`` (``seconds`` it
      took), or ``"iterations"`` (a chunk of iterations has run).
    octave: the octave (0-based) and ``octaves`` their number.
    done: iterations of the recipe done for the current batch.
    total: iterations of the recipe.
    batch: images in the current batch.
    seconds: with ``"compiled"``, the compile time.
  """
  event: str
  octave: int
  octaves: int
  done: int
  total: int
  batch: int
  seconds: float = 0.0


# With progress reports and no chunk given, each octave runs in this many
# chunks: a report every few seconds on a CPU, negligible cost on any device.
_CHUNKS_WITH_PROGRESS = 16

# Programs already compiled in this process: (plan, chunk length, canvas
# shape and dtype, model dtype, devices), for the "compiling" report and
# ``precompile``.
_COMPILED: set[tuple] = set()
# What ``precompile`` compiled, by the same key: called directly, so the
# octave's first call does not trace and lower it again.
_EXECUTABLES: dict[tuple, Any] = {}


def image_keys(seed: int, targets: Sequence[int], restarts: Sequence[int]) -> jax.Array:
  """The per-image base keys: ``fold_in(fold_in(key(seed), target), restart)``."""
  base = jax.random.key(seed)
  targets = jnp.asarray(targets, jnp.uint32)
  restarts = jnp.asarray(restarts, jnp.uint32)
  return jax.vmap(lambda t, r: jax.random.fold_in(jax.random.fold_in(base, t), r))(
      targets, restarts)


def initial_images(recipe: Recipe, keys: jax.Array, init: Any = None) -> jax.Array:
  """The starting canvases ``(N, size, size, 3)``.

  Args:
    recipe: gives the start (``recipe.init``) and the canvas side.
    keys: per-image base keys.
    init: photos for a transfiguration: one ``(H, W, 3)`` array or path for
      every image, or one per image (a sequence or ``(N, H, W, 3)``); each is
      resized to the canvas with antialiasing, as torchvision's ``Resize``.
  """
  n, size = keys.shape[0], recipe.size
  init_keys = step_lib.fold_in(keys, 0)
  if init is not None:
    photos = _photos(init, n)
    # As torchvision's Resize, which the article loads its photos with.
    return jnp.stack([T.resize(jnp.asarray(p), size, method="bilinear", antialias=True)
                      for p in photos])
  if recipe.init == "photo":
    raise ValueError(f"recipe {recipe.name!r} starts from a photo: pass init= (an image file, "
                     "an (H, W, 3) array, or one per target)")
  if recipe.init == "parameters":
    return step_lib.random_images(recipe.image, init_keys, size)
  shape = (size, size, 3)
  uniform = jax.vmap(lambda k: jax.random.uniform(k, shape))(init_keys)
  if recipe.init == "uniform":
    return uniform
  if recipe.init == "scaled_uniform":
    return uniform / 25.0 + 0.5
  normal = jax.vmap(lambda k: jax.random.normal(k, shape))(init_keys)
  return recipe.init_mean + recipe.init_std * normal


def _as_float_image(photo: Any) -> np.ndarray:
  photo = np.asarray(photo)
  if np.issubdtype(photo.dtype, np.integer):
    return photo.astype(np.float32) / 255.0
  return photo if photo.dtype == np.float64 else photo.astype(np.float32)


def _photos(init: Any, n: int) -> list[np.ndarray]:
  if isinstance(init, (str, bytes)) or hasattr(init, "__fspath__"):
    init = [init]
  elif isinstance(init, np.ndarray | jax.Array) and init.ndim == 3:
    init = [init]
  photos = [load_image(p) if isinstance(p, (str, bytes)) or hasattr(p, "__fspath__")
            else _as_float_image(p) for p in init]
  if len(photos) == 1:
    photos = photos * n
  if len(photos) != n:
    raise ValueError(f"init has {len(photos)} photos for {n} images: give one photo, or one "
                     "per target (each target's restarts share it)")
  for photo in photos:
    if photo.ndim != 3 or photo.shape[-1] != 3:
      raise ValueError(f"an init photo must be (H, W, 3), got shape {photo.shape}")
  return photos


def random_draws(recipe: Recipe, targets: Sequence[int], restarts: Sequence[int], seed: int,
                 dtype: Any = jnp.float32) -> list[list[tuple[Any, ...]]]:
  """Every draw ``generate`` makes, per octave and iteration, as numpy.

  Each iteration's entry has one item per ``octave.operations``, and with
  ``octave.views > 1`` one more: the other views' draws
  (``step.view_draws``). The torch reference path replays these, so that
  both paths see the same crops, shifts, flips and colour jitter
  (``converters/reference/loop.py``).
  """
  keys = image_keys(seed, targets, restarts)
  result = []
  for index, (octave, sides) in enumerate(zip(recipe.octaves, step_lib.canvas_sides(recipe))):
    plan = step_lib.Plan(octave, index, sides, max(sides))
    octave_keys = step_lib.fold_in(keys, index + 1)
    draws = []
    for iteration in range(octave.iterations):
      step_keys = step_lib.fold_in(octave_keys, iteration)
      from_index, to_index = plan.size_indices(iteration)
      side = sides[to_index]
      entry = step_lib.draw(octave, step_keys, side, dtype, first_side=sides[from_index])
      if octave.views > 1:
        entry = (*entry, step_lib.view_draws(octave, step_keys, side, dtype))
      draws.append(jax.tree_util.tree_map(np.asarray, entry))
    result.append(draws)
  return result


def _check_finite(trace: Trace, plan: step_lib.Plan, offset: int, targets, restarts,
                  classifier: Classifier) -> None:
  finite = np.asarray(trace.finite)[:, :len(targets)]
  if finite.all():
    return
  iteration, image = np.argwhere(~finite)[0]
  target = int(targets[image])
  raise GenerationError(
      f"NaN or Inf in the image of class {target} ({classifier.labels[target]!r}), restart "
      f"{int(restarts[image])}, at iteration {offset + int(iteration)} (octave "
      f"{plan.index + 1}); lower the step size or clip the image")


def generate(classifier: Classifier, targets: Sequence[int | str] | int | str,
             recipe: str | Recipe = recipes_lib.DEFAULT, *, seed: int = 0, init: Any = None,
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
    recipe: a recipe name (``recipes.names()``) or a ``Recipe``.
    seed: the run's seed; with the target and restart index it determines
      every random draw of an image.
    init: photos to start from (transfiguration): a path, an ``(H, W, 3)``
      array in [0, 1], or one per target.
    restarts: images per target, each from its own random start.
    snapshot_every: keep the image and logits every this many iterations.
    batch_size: images optimised at once, sharded over all devices; results
      do not depend on it nor on the device count. Default
      (``choose_batch_size``): all, as far as the free device memory allows
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

  def __init__(self, began: float, first: _Dispatched, begins: Sequence[int],
               dispatch: Callable[[int, Callable[[], None] | None], _Dispatched],
               timing: dict[str, float]):
    self._began, self._first, self._begins = began, first, list(begins)
    self._dispatch, self._timing = dispatch, timing
    self._result: Generation | None = None

  def result(self) -> Generation:
    """The ``Generation`` (waits for the device; once, then cached).

    Raises:
      GenerationError: a step produced NaN or Inf.
    """
    if self._result is None:
      parts, previous = [], self._first
      for begin in self._begins:
        # Queued before the host reads the previous batch, which reports
        # its last chunk once this one's first is queued.
        queued = self._dispatch(begin, previous.behind)
        parts.append(_finish_batch(previous._replace(behind=None)))
        previous = queued
      parts.append(_finish_batch(previous))
      result = _concatenate(parts)
      result.seconds = time.perf_counter() - self._began
      result.compile_seconds = self._timing["compile"]
      self._result = result
    return self._result

  def _hand_over(self) -> Callable[[], None] | None:
    """The last chunk's progress report, for the next call to make once its
    own first chunk is queued (reports then come in order); None where
    batches of this call are still to be queued."""
    if self._begins or self._result is not None:
      return None
    behind, self._first = self._first.behind, self._first._replace(behind=None)
    return behind


def start(classifier: Classifier, targets: Sequence[int | str] | int | str,
          recipe: str | Recipe = recipes_lib.DEFAULT, *, seed: int = 0, init: Any = None,
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
  recipe = recipes_lib.get(recipe) if isinstance(recipe, str) else recipe
  if isinstance(targets, (int, str, np.integer)):
    targets = [targets]
  indices = imagenet.class_indices(targets, classifier.labels)
  if not indices:
    raise ValueError("no targets given: pass class indices or names")
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}")
  plans = step_lib.plan(classifier, recipe, snapshot_every)
  target_ids = np.repeat(np.asarray(indices, np.int32), restarts)
  # A repeated target would otherwise repeat its keys, and so its images.
  occurrence = [indices[:i].count(t) for i, t in enumerate(indices)]
  restart_ids = (np.repeat(np.asarray(occurrence, np.int32), restarts) * restarts
                 + np.tile(np.arange(restarts, dtype=np.int32), len(indices)))
  photos = None
  if init is not None:
    photos = _photos(init, len(indices))
    photos = [p for p in photos for _ in range(restarts)]
  n = len(target_ids)
  timing = {"compile": 0.0}
  if batch_size is None:
    batch_size, timing["compile"] = _choose_batch_size(
        classifier, recipe.name, plans, max(n, pad_to), chunk=chunk, progress=progress)
  per_batch, size = _batch_sizes(n, batch_size, pad_to)
  timing["compile"] += precompile(classifier, plans, size, chunk=chunk, progress=progress)

  def dispatch(begin: int, behind: Callable[[], None] | None) -> _Dispatched:
    sl = slice(begin, begin + per_batch)
    return _dispatch_batch(classifier, recipe, plans, target_ids[sl], restart_ids[sl], seed,
                           None if photos is None else photos[sl], size=size, chunk=chunk,
                           progress=progress, timing=timing, behind=behind)

  first = dispatch(0, follows._hand_over() if follows is not None else None)
  return Pending(began, first, range(per_batch, n, per_batch), dispatch, timing)


def _batch_sizes(n: int, batch_size: int | None, pad_to: int) -> tuple[int, int]:
  """``(images per call, the size each call is padded to)`` for ``n`` images.

  Equal chunks of at most batch_size, the last one padded up to the same
  size: every chunk runs the same compiled octaves (padding wastes fewer
  images than there are chunks; a recompile costs seconds to a minute).
  """
  per_batch = -(-n // -(-n // (batch_size or n)))
  return per_batch, max(per_batch, min(pad_to, batch_size or pad_to))


def _chunk_length(plan: step_lib.Plan, chunk: int | None, reporting: bool) -> int:
  if chunk is None and reporting:
    chunk = -(-plan.octave.iterations // _CHUNKS_WITH_PROGRESS)
  return octave_lib.chunk_length(plan, chunk)


def _signature(plan, length, canvas, classifier) -> tuple:
  return (plan, length, tuple(canvas.shape), str(canvas.dtype), str(classifier.dtype),
          tuple(d.id for d in devices.batch_mesh().devices.flat))


def precompile(classifier: Classifier, plans: Sequence[step_lib.Plan], size: int, *,
               chunk: int | None = None,
               progress: Callable[[Progress], None] | None = None) -> float:
  """Compiles the octaves' programs for batches of ``size`` images, all at
  once, before the first runs; returns the wall seconds it took.

  Each octave is traced here, one after another, and compiled on its own
  thread (XLA releases the GIL while compiling, and compiles a program on
  one core), so a three-octave recipe waits for its slowest octave instead
  of the sum; the octave's first call then finds its executable compiled.
  Programs compiled before in this process are skipped.
  """
  return _compile(classifier, plans, size, chunk=chunk, progress=progress, at_least=2)[1]


def _compile(classifier, plans, size, *, chunk, progress, at_least=1) -> tuple[list, float]:
  """``precompile``, compiling only when at least ``at_least`` programs are
  new (one program compiles as fast on its first call); returns the
  octaves' executables (None where not compiled) and the seconds."""
  mesh = devices.batch_mesh()
  padded = devices.padded_size(size, mesh)
  batch = devices.batch_sharding(mesh)
  todo, signatures = [], []
  for plan in plans:
    canvas = jax.ShapeDtypeStruct((padded, plan.buffer, plan.buffer, 3), jnp.float32,
                                  sharding=batch)
    length = _chunk_length(plan, chunk, progress is not None)
    signatures.append(_signature(plan, length, canvas, classifier))
    # Skipped: what was compiled before, here or by a first call (a program
    # that ran at this size needs no memory check either).
    if signatures[-1] not in _COMPILED:
      todo.append((plan, length, canvas, signatures[-1]))
  seconds, total = 0.0, sum(plan.octave.iterations for plan in plans)
  if len(todo) >= at_least:
    start = time.perf_counter()
    replicated = jax.device_put(classifier, devices.replicated(mesh))
    targets = jax.device_put(np.zeros(padded, np.int32), batch)
    keys = jax.device_put(image_keys(0, np.zeros(padded, np.int32),
                                     np.zeros(padded, np.int32)), batch)
    lowered = []
    for plan, length, canvas, _ in todo:
      if progress is not None:
        progress(Progress("compiling", plan.index, len(plans), 0, total, size))
      state = step_lib.init_state(plan, jax.device_put(jnp.zeros(canvas.shape, canvas.dtype),
                                                       batch))
      lowered.append(octave_lib.compiled(plan, length).lower(replicated, state, targets, keys))
    with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
      for (*_, signature), executable in zip(todo, pool.map(lambda low: low.compile(),
                                                             lowered)):
        _COMPILED.add(signature)
        _EXECUTABLES[signature] = executable
    seconds = time.perf_counter() - start
    if progress is not None:
      for plan, *_ in todo:
        progress(Progress("compiled", plan.index, len(plans), 0, total, size, seconds))
    logging.debug("compiled %d octaves at once in %.1f s", len(todo), seconds)
  return [_EXECUTABLES.get(signature) for signature in signatures], seconds


# Without a batch size, the first guess per device: on an accelerator, as
# many as the memory allows up to this; on a CPU, whose step is
# compute-bound from a few images on, a batch the size of the benchmarks'.
_GUESS_PER_DEVICE = {"cpu": 8}
_MAX_PER_DEVICE = 256
# The share of a device's free memory a batch may plan to use (XLA's
# estimate leaves out fragmentation and the runtime's own buffers).
_MEMORY_SHARE = 0.8
# Compiles tried before a size that fits is found (or not one image fits).
_SIZE_TRIES = 4


class BatchSizeError(ValueError):
  """Not even one image per device fits in the free memory."""


def free_memory() -> int | None:
  """Bytes free on the fullest of the batch's devices; on CPUs, the host's
  available memory shared by its CPU devices. None where it cannot be known.
  A job spanning processes agrees on the least of theirs."""
  local = devices.batch_mesh().local_devices
  free = []
  for device in local:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
      free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if not free:
    available = _host_available_memory()
    free = [] if available is None else [available // max(1, len(local))]
  if devices.spans_processes():  # every process must run the same batch
    free = devices.to_host(np.asarray([min(free) if free else -1], np.int64))
    free = [f for f in free if f >= 0]
  return min(free) if free else None


def _host_available_memory() -> int | None:
  try:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
      for line in meminfo:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def choose_batch_size(classifier: Classifier, recipe: str | Recipe, n: int, *,
                      snapshot_every: int = 0, chunk: int | None = None,
                      progress: Callable[[Progress], None] | None = None,
                      free_bytes: int | None = None) -> int:
  """A batch size for ``n`` images of ``recipe`` that fits the devices' memory.

  The first guess is all ``n`` (at most 256 per device; on CPUs 8 per
  device). The recipe's octaves are compiled for it and XLA's memory
  analysis of each program (arguments, outputs and temporaries, per device)
  is compared with ``free_bytes`` (default: ``free_memory()``). If the
  largest needs more than 80% of it, the batch shrinks in proportion (a
  program's memory is affine in its images: the weights, or the fixed part
  measured from two sizes, plus a part per image) and is compiled and
  checked again. The programs compiled for the size returned are the ones
  ``generate`` runs.

  Returns:
    Images per batch, a multiple of the device count (at most ``n`` rounded
    up to it), as even as batches of at most the size that fits can be.

  Raises:
    BatchSizeError: one image per device does not fit; the message says how
      much it needs and how much is free.
  """
  recipe = recipes_lib.get(recipe) if isinstance(recipe, str) else recipe
  plans = step_lib.plan(classifier, recipe, snapshot_every)
  return _choose_batch_size(classifier, recipe.name, plans, n, chunk=chunk, progress=progress,
                            free_bytes=free_bytes)[0]


def _choose_batch_size(classifier, name, plans, n, *, chunk=None, progress=None,
                       free_bytes=None) -> tuple[int, float]:
  """``choose_batch_size`` for the recipe ``name``'s ``plans``; also returns
  the seconds spent compiling."""
  mesh = devices.batch_mesh()
  count = mesh.size
  platform = mesh.devices.flat[0].platform
  per_device = _balanced(n, _GUESS_PER_DEVICE.get(platform, _MAX_PER_DEVICE), count)
  free = free_memory() if free_bytes is None else free_bytes
  if free is None:
    return per_device * count, 0.0
  budget = _MEMORY_SHARE * free
  weights = sum(x.nbytes for x in jax.tree_util.tree_leaves(classifier) if hasattr(x, "nbytes"))
  tried, seconds = [], 0.0  # (images per device, bytes per device) that did not fit
  for _ in range(_SIZE_TRIES):
    executables, took = _compile(classifier, plans, per_device * count, chunk=chunk,
                                 progress=progress)
    seconds += took
    need = max((b for b in map(_program_bytes, executables) if b is not None), default=None)
    if need is None or need <= budget:
      if tried:
        logging.info("batch size %d: %s per device free", per_device * count, _gib(free))
      return per_device * count, seconds
    tried.append((per_device, need))
    # Memory is affine in the batch: the weights (or, from two sizes, the
    # measured fixed part) plus a part per image.
    if len(tried) == 1:
      fixed, per_image = weights, max(1.0, (need - weights) / per_device)
    else:
      (small, small_need), (large, large_need) = sorted(tried[-2:])
      per_image = max(1.0, (large_need - small_need) / max(large - small, 1))
      fixed = small_need - per_image * small
    fits = int((budget - fixed) // per_image)
    if fits >= 8:
      fits -= fits % 8
    per_device = _balanced(n, min(fits, per_device - 1), count)
    if per_device < 1:
      break
  raise BatchSizeError(
      f"recipe {name!r} needs about {_gib(min(b for _, b in tried))} of device memory "
      f"for {min(k for k, _ in tried)} image(s) per device, but {_gib(free)} is free: free the "
      "device, or use a smaller recipe or model")


def _balanced(n: int, per_device: int, count: int) -> int:
  """At most ``per_device`` images per device, in batches as equal as the
  device count allows (1000 images in batches of 250, not 256 and a padded
  232); 0 when ``per_device`` is."""
  if per_device < 1:
    return 0
  n = max(n, 1)
  batches = -(-n // (per_device * count))
  per_batch = -(-n // batches)
  return -(-per_batch // count)


def _program_bytes(executable) -> int | None:
  try:
    stats = executable.memory_analysis()
  except Exception:  # noqa: BLE001  (a backend without the analysis)
    return None
  if stats is None:
    return None
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _gib(size: float) -> str:
  return f"{size / 2**30:.2f} GiB"


def _run_octave(plan: step_lib.Plan, classifier, canvas, targets, keys, *, chunk, report,
                timing=None, behind=None):
  """One octave on ``canvas`` ``(N, B, B, 3)``, in chunks of ``chunk``
  iterations when given; ``report(event, done, seconds)`` hears of compiling
  and of each chunk once it has run; ``timing["compile"]`` adds up the
  seconds spent compiling.

  Chunks are reported one behind: the host waits for a chunk only once the
  next is queued, so the device does not idle between chunks. ``behind``
  (the previous octave's last report, or None) is made once this octave's
  first chunk is queued; the return value's last item is this octave's.

  Returns:
    ``(canvas, trace, snapshots, behind)``.
  """
  n = plan.octave.iterations
  length = _chunk_length(plan, chunk, report is not None)
  run = octave_lib.compiled(plan, length)
  state = step_lib.init_state(plan, canvas)
  traces, snapshots = [], []
  signature = _signature(plan, length, canvas, classifier)
  for begin in range(0, n, length):
    compiling = signature not in _COMPILED
    if compiling and behind is not None:  # the compile blocks anyway: report first
      behind, _ = None, behind()
    if compiling and report is not None:
      report("compiling", begin, 0.0)
    start = time.perf_counter()
    # Dispatch returns once the program is compiled; it runs asynchronously.
    executable = _EXECUTABLES.get(signature)
    if executable is not None:
      try:
        state, trace, snaps = executable(classifier, state, targets, keys)
      except (TypeError, ValueError) as error:  # shardings or layouts differ: jit's own
        logging.debug("precompiled octave %d not usable (%s)", plan.index, error)
        _EXECUTABLES.pop(signature, None)
        executable = None
    if executable is None:
      state, trace, snaps = run(classifier, state, targets, keys)
    _COMPILED.add(signature)
    if compiling:
      seconds = time.perf_counter() - start
      if timing is not None:
        timing["compile"] += seconds
      if report is not None:
        report("compiled", begin, seconds)
    traces.append(trace)
    snapshots.append(snaps)
    if behind is not None:
      behind, _ = None, behind()
    if report is not None:  # (the state is donated to the next chunk; the trace is not)
      behind = functools.partial(_report_when_done, report, trace.finite,
                                 min(begin + length, n))
  trace = traces[0] if len(traces) == 1 else jax.tree_util.tree_map(
      lambda *xs: jnp.concatenate(xs)[:n], *traces)
  if snapshots[0] is not None:
    frames = n // plan.snapshot_every
    snapshots = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:frames], *snapshots)
  else:
    snapshots = None
  return step_lib.canvas_images(plan, state.canvas), trace, snapshots, behind


def _report_when_done(report, output: jax.Array, done: int) -> None:
  devices.wait(output)
  report("iterations", done, 0.0)


def _dispatch_batch(classifier, recipe, plans, targets, restarts, seed, photos, size=0, *,
                    chunk=None, progress=None, timing=None, behind=None) -> _Dispatched:
  """Queues a batch's octaves and final scores on the device (without
  progress reports, nothing here waits for it); ``_finish_batch`` reads it.
  ``behind``: an earlier batch's last progress report, made once this
  batch's first chunk is queued."""
  n = len(targets)
  mesh = devices.batch_mesh()
  # Pad to ``size`` and a multiple of the device count with copies of the
  # first image: they compute what it computes and are dropped at the end.
  padded = devices.padded_size(n, mesh, size)
  index = np.concatenate([np.arange(n), np.zeros(padded - n, int)])
  all_targets, all_restarts = np.asarray(targets)[index], np.asarray(restarts)[index]
  keys = image_keys(seed, all_targets, all_restarts)
  images = initial_images(recipe, keys, None if photos is None else [photos[i] for i in index])
  keys, images, targets_device = jax.device_put((keys, images, all_targets),
                                                devices.batch_sharding(mesh))
  classifier = jax.device_put(classifier, devices.replicated(mesh))
  traces, snaps_per_octave = [], []
  side, offset = recipe.size, 0
  # Octaves are queued back to back; the host reads their traces (for the
  # NaN check) only once all are queued, and with progress reports waits
  # for a chunk only once the next is queued, so the device never waits.
  for plan in plans:
    if plan.octave.canvas is not None and plan.octave.canvas != side:
      images = jax.vmap(lambda x, s=plan.octave.canvas: T.resize(x, s, method="bilinear"))(
          images)
    report = None
    if progress is not None:
      def report(event, done, seconds, plan=plan, offset=offset):
        progress(Progress(event, plan.index, len(plans), offset + done, recipe.iterations, n,
                          seconds))
    buffer, trace, snaps, behind = _run_octave(
        plan, classifier, step_lib.embed(images, plan.buffer), targets_device, keys,
        chunk=chunk, report=report, timing=timing, behind=behind)
    side = plan.final_side()
    images = buffer[:, :side, :side]
    traces.append(trace)
    snaps_per_octave.append(snaps)
    offset += plan.octave.iterations
  scores = metrics.final_scores(classifier, images, targets_device)
  return _Dispatched(plans, np.asarray(targets), np.asarray(restarts), T.clip(images), traces,
                     snaps_per_octave, scores, classifier, behind)


class _Dispatched(NamedTuple):
  """A batch queued on the device: its final canvases, traces, snapshots and
  scores (device arrays), and what reading them needs."""
  plans: Sequence[step_lib.Plan]
  targets: np.ndarray
  restarts: np.ndarray
  images: jax.Array  # clipped to [0, 1]
  traces: list
  snapshots: list
  scores: tuple
  classifier: Classifier
  behind: Callable[[], None] | None  # the last chunk's progress report, when it has run


def _finish_batch(batch: _Dispatched) -> Generation:
  """Reads a queued batch to the host: the NaN check, scores, snapshots."""
  if batch.behind is not None:
    batch.behind()
  plans, targets, restarts, classifier = (batch.plans, batch.targets, batch.restarts,
                                          batch.classifier)
  traces, snaps_per_octave, images = batch.traces, batch.snapshots, batch.images
  n = len(targets)
  target_logit, probability, rank, rank_raw = batch.scores
  traces, offset = devices.to_host(traces), 0
  for plan, trace in zip(plans, traces):
    _check_finite(trace, plan, offset, targets, restarts, classifier)
    logging.debug("octave %d done", plan.index + 1)
    offset += plan.octave.iterations
  keep = slice(0, n)
  trace = jax.tree_util.tree_map(lambda *xs: np.concatenate([x[:, keep] for x in xs]),
                                 *traces)
  snapshots, offset = Snapshots([], [], [], []), 0
  for plan, entry in zip(plans, snaps_per_octave):
    if entry is not None:
      frames, logits = devices.to_host(entry)
      local = np.arange(frames.shape[0]) * plan.snapshot_every
      sides = np.asarray([plan.sides[plan.size_indices(i)[0]] for i in local])
      largest = sides.max()
      snapshots.images.append(frames[:, keep, :largest, :largest].swapaxes(0, 1))
      snapshots.logits.append(logits[:, keep].swapaxes(0, 1))
      snapshots.iterations.append(offset + local)
      snapshots.sides.append(sides)
    offset += plan.octave.iterations
  images, target_logit, probability, rank, rank_raw = devices.to_host(
      (images, target_logit, probability, rank, rank_raw))
  return Generation(
      images=images[keep], targets=np.asarray(targets),
      restarts=np.asarray(restarts), target_logit=target_logit[keep],
      probability=probability[keep], rank=rank[keep], trace=trace,
      stability=stability(trace, [p.octave.iterations for p in plans]),
      snapshots=snapshots if plans[0].snapshot_every else None,
      rank_as_optimised=rank_raw[keep])


def _concatenate(parts: list[Generation]) -> Generation:
  if len(parts) == 1:
    return parts[0]
  cat = lambda *xs: np.concatenate(xs, axis=0)  # noqa: E731
  snapshots = None
  if parts[0].snapshots is not None:
    snapshots = Snapshots(
        [cat(*xs) for xs in zip(*(p.snapshots.images for p in parts))],
        [cat(*xs) for xs in zip(*(p.snapshots.logits for p in parts))],
        parts[0].snapshots.iterations, parts[0].snapshots.sides)
  trace = Trace(*(np.concatenate(xs, axis=1) for xs in zip(*(p.trace for p in parts))))
  return Generation(
      images=cat(*(p.images for p in parts)), targets=cat(*(p.targets for p in parts)),
      restarts=cat(*(p.restarts for p in parts)),
      target_logit=cat(*(p.target_logit for p in parts)),
      probability=cat(*(p.probability for p in parts)),
      rank=cat(*(p.rank for p in parts)), trace=trace,
      stability={k: cat(*(p.stability[k] for p in parts)) for k in parts[0].stability},
      snapshots=snapshots, rank_as_optimised=cat(*(p.rank_as_optimised for p in parts)))
