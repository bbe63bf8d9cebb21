"""The generation engine: a recipe's octaves as compiled, batched scans.

``generate`` optimises a batch of images (targets x restarts) together. Each
octave is one jit-compiled program that runs all its iterations as a
``lax.scan`` on device: per-image random crop and jitter, the cyclic resize,
the objective's gradient for the whole batch, the optax update, the blur,
colour jitter, padding and clipping. No Python loop per iteration, no host
transfer inside an octave, and a second call with the same shapes reuses the
compiled program (the classifier's weights are an argument of it).

Randomness: image ``j`` draws everything from
``key_j = fold_in(fold_in(key(seed), target_j), restart_j)``; octave ``o``
uses ``fold_in(key_j, o + 1)`` and its iteration ``i`` ``fold_in(., i)``. No
draw depends on the batch, so an image is the same whatever batch made it.

Devices: the batch is sharded over every visible device (a 1-D ``Mesh``
with axis ``"batch"``; images, keys and targets ``P("batch")``, weights
replicated), on one device as on many, and across hosts after
``jax.distributed.initialize()``. A batch that does not divide evenly is
padded with copies of its first image, dropped afterwards; since every draw
comes from the image's own key, padding and sharding change no image.

Mixed precision: ``mixed_precision(classifier)`` runs the model in bfloat16
while the canvas, its gradient and the update stay float32.

Data contract: images are NHWC float32 in [0, 1] (during optimisation a
recipe without clipping may leave that range; results are clipped).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from classgen_jax import imagenet
from classgen_jax import recipes as recipes_lib
from classgen_jax import transforms as T
from classgen_jax._classifier import Classifier, InputError
from classgen_jax.images import load_image
from classgen_jax.recipes import Octave, Recipe
from classgen_jax.updates import linear


class GenerationError(RuntimeError):
  """The optimisation produced NaN or Inf."""


class Trace(NamedTuple):
  """Per-iteration, per-image records (scan outputs), each ``(iterations, N)``."""
  objective: jax.Array
  target_logit: jax.Array
  target_rank: jax.Array
  target_zscore: jax.Array
  finite: jax.Array


@dataclasses.dataclass
class Snapshots:
  """Images and logits every ``snapshot_every`` iterations, per octave.

  Attributes:
    images: one ``(N, frames, H, W, 3)`` array per octave (canvas sizes
      differ between octaves).
    logits: one ``(N, frames, classes)`` array per octave: the main head's
      logits for the view the model saw at that iteration.
    iterations: one ``(frames,)`` array per octave, the global iteration
      index of each frame (the image *before* that iteration's update).
  """
  images: list[np.ndarray]
  logits: list[np.ndarray]
  iterations: list[np.ndarray]


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
    stability: ``{"top1_fraction", "zscore_jitter"}``, each ``(N,)``; see
      ``stability``.
    snapshots: with ``snapshot_every > 0``.
    seconds: wall-clock time, compilation included.
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


def stability(trace: Trace) -> dict[str, np.ndarray]:
  """How steady the model's classification of its own image is.

  The article compares how stable each model's output is from one
  iteration to the next (Inception-v3 less than GoogLeNet). Two numbers per
  image, over all iterations of the run:

  * ``top1_fraction``: the fraction of iterations in which the target was
    the model's top-1 class for the view it was shown;
  * ``zscore_jitter``: the mean absolute change, from one iteration to the
    next, of the target logit's z-score among all the logits (its distance
    from the mean logit in standard deviations). It is scale-free, so models
    with different logit scales compare; lower is steadier.
  """
  rank = np.asarray(trace.target_rank)
  z = np.asarray(trace.target_zscore)
  jitter = np.abs(np.diff(z, axis=0)).mean(axis=0) if z.shape[0] > 1 else np.zeros(z.shape[1])
  return {"top1_fraction": (rank == 0).mean(axis=0), "zscore_jitter": jitter}


# ----------------------------------------------------------------------------
# Planning: sizes per octave, checked before anything is compiled.


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static facts of one octave: what the compiled program depends on."""
  octave: Octave
  index: int
  sizes: tuple[int, ...]  # canvas sides the image can have; sizes[0] at the start
  buffer: int
  snapshot_every: int


def octave_sizes(recipe: Recipe) -> list[tuple[int, ...]]:
  """Per octave, the canvas sides its image can have (``[0]``: at its start)."""
  all_sizes = []
  size = recipe.size
  for index, octave in enumerate(recipe.octaves):
    if octave.canvas is not None:
      size = octave.canvas
    sizes = (size,)
    if octave.resize_cycle and octave.resize_iterations > 0:
      if octave.update.rule == "adam":
        raise ValueError(f"recipe {recipe.name!r} octave {index + 1}: the cyclic resize "
                         "changes the image's size, which Adam's per-pixel state cannot "
                         "follow; use the gradient, sign or l1 rule")
      sizes = (size, *octave.resize_cycle)
      size = sizes[cycle_index(octave, len(sizes), octave.iterations - 1)[1]]
    all_sizes.append(sizes)
  return all_sizes


def cycle_index(octave: Octave, num_sizes: int, iteration: int) -> tuple[int, int]:
  """``(from, to)`` indices into an octave's sizes at ``iteration`` (host ints)."""
  if num_sizes == 1:
    return 0, 0
  from_index, to_index = T.cyclic_size_indices(
      iteration, num_sizes=num_sizes - 1, stop=min(octave.resize_iterations, octave.iterations))
  return int(from_index), int(to_index)


def _plan(classifier: Classifier, recipe: Recipe, snapshot_every: int) -> list[_Plan]:
  plans = []
  for index, (octave, sizes) in enumerate(zip(recipe.octaves, octave_sizes(recipe))):
    where = f"recipe {recipe.name!r} octave {index + 1}"
    view_sides = [min(s, octave.crop) if octave.crop else s for s in sizes]
    if octave.crop is not None and octave.crop > min(sizes):
      raise ValueError(f"{where}: crop {octave.crop} is larger than the canvas "
                       f"{min(sizes)}; make the crop smaller or the canvas larger")
    for head in octave.heads:
      if head not in classifier.heads:
        raise InputError(
            f"{where} uses head {head!r}, which {classifier.name} does not have (its heads: "
            f"{', '.join(classifier.heads)}); use recipes.get({recipe.name!r}).with_head"
            f"('logits') or a model with that head")
      need = classifier.min_input_size(head)
      if min(view_sides) < need:
        raise InputError(
            f"{where} shows {classifier.name}'s {head!r} head {min(view_sides)} px views, "
            f"but it needs at least {need} px; raise the recipe's size/crop")
    plans.append(_Plan(octave, index, sizes, max(sizes), snapshot_every))
  return plans


# ----------------------------------------------------------------------------
# One iteration, on a batch of images of one static size.


def _schedule(pair: tuple[float, float] | None, iterations: int):
  return None if pair is None else linear(pair[0], pair[1], iterations)


class Draws(NamedTuple):
  """One iteration's random draws for a batch (what the torch reference replays).

  Attributes:
    crop: ``(N, 2)`` (top, left) of the view's crop (zeros without a crop).
    shift: ``(N, 2)`` roll of the view (zeros without jitter).
    flip: ``(N,)`` whether the view is mirrored.
    color: colour jitter factors ``(N, 3)`` and orders ``(N, 3)``.
  """
  crop: jax.Array
  shift: jax.Array
  flip: jax.Array
  color: T.ColorJitterParams


def _crop_side(octave: Octave, side: int) -> int | None:
  return octave.crop if octave.crop is not None and octave.crop < side else None


def _draw(octave: Octave, keys: jax.Array, side: int, dtype: Any) -> Draws:
  """The draws of one iteration from its per-image keys."""
  o, n = octave, keys.shape[0]
  split = jax.vmap(lambda k: jax.random.split(k, 5))(keys)
  crop_side = _crop_side(o, side)
  crop = (jax.vmap(functools.partial(T.draw_crop_offset, image_size=side, size=crop_side))(
      split[:, 0]) if crop_side else jnp.zeros((n, 2), jnp.int32))
  shift = (jax.vmap(functools.partial(T.draw_shift, max_shift=o.jitter))(split[:, 1])
           if o.jitter else jnp.zeros((n, 2), jnp.int32))
  flip = jax.vmap(T.draw_flip)(split[:, 2]) if o.flip else jnp.zeros((n,), bool)
  strengths = dict(brightness=o.brightness, contrast=o.contrast, saturation=o.saturation)
  color = jax.vmap(functools.partial(T.draw_color_jitter, **strengths, dtype=dtype))(
      split[:, 3])
  return Draws(crop, shift, flip, color)


def _step(classifier: Classifier, octave: Octave, targets, keys, images, opt_state,
          iteration, head: str):
  """One iteration on ``images`` ``(N, s, s, 3)``: returns images, state, records."""
  side = images.shape[1]
  o = octave
  draws = _draw(o, keys, side, images.dtype)

  if o.pad_value is not None:
    images = jax.vmap(functools.partial(T.fill_border, width=o.pad_width,
                                        value=o.pad_value))(images)
  if o.brightness or o.contrast or o.saturation:
    enabled = (bool(o.brightness), bool(o.contrast), bool(o.saturation))
    images = jax.vmap(functools.partial(T.adjust_color, enabled=enabled))(images, draws.color)

  sigma_schedule = _schedule(o.blur_sigma, o.iterations)
  blur_on = (iteration < o.blur_iterations) if o.blur_iterations is not None else True
  crop_side = _crop_side(o, side)
  offsets = draws.crop

  def blur(images):
    sigma = sigma_schedule(iteration)
    if o.blur_region == "crop" and crop_side:
      fn = functools.partial(T.gaussian_blur_region, size=crop_side, sigma=sigma,
                             kernel_size=o.blur_kernel)
      blurred = jax.vmap(fn)(images, offsets)
    else:
      fn = functools.partial(T.gaussian_blur, sigma=sigma, kernel_size=o.blur_kernel)
      blurred = jax.vmap(fn)(images)
    return jnp.where(blur_on, blurred, images)

  if sigma_schedule is not None and o.blur_order == "before":
    images = blur(images)

  def loss(images):
    view = images
    if crop_side:
      view = jax.vmap(functools.partial(T.crop, size=crop_side))(view, offsets)
    if o.jitter:
      view = jax.vmap(T.shift)(view, draws.shift)
    if o.flip:
      view = jax.vmap(T.flip_horizontal)(view, draws.flip)
    heads = tuple(dict.fromkeys((*o.heads, head)))
    outputs = classifier(view.astype(classifier.dtype), heads=heads)
    # A bfloat16 model's outputs join the objective at the canvas's precision
    # (a no-op when the dtypes agree, so float32 and float64 runs are untouched).
    outputs = {name: value.astype(images.dtype) for name, value in outputs.items()}
    values = o.objective(outputs, view, targets)
    return -jnp.sum(values), (values, outputs[head].astype(jnp.float32))

  grads, (values, logits) = jax.grad(loss, has_aux=True)(images)
  count = crop_side * crop_side * images.shape[-1] if crop_side else None
  update = o.update.transformation(_schedule(o.step_size, o.iterations), count=count)
  updates, opt_state = update.update(grads, opt_state, images)
  images = optax.apply_updates(images, updates)

  if sigma_schedule is not None and o.blur_order == "after":
    images = blur(images)
  if o.clip:
    images = T.clip(images)

  target = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
  rank = jnp.sum(logits > target[:, None], axis=1)
  zscore = (target - logits.mean(axis=1)) / (logits.std(axis=1) + 1e-12)
  finite = jnp.all(jnp.isfinite(images), axis=(1, 2, 3)) & jnp.isfinite(values)
  record = Trace(values, target, rank, zscore, finite)
  return images, opt_state, record, logits


# ----------------------------------------------------------------------------
# One octave: a compiled scan.


def _run_octave(plan: _Plan, head: str, classifier: Classifier, buffer, targets, keys):
  """Runs one octave on ``buffer`` ``(N, B, B, 3)`` holding images of ``sizes[0]``."""
  o, sizes = plan.octave, plan.sizes
  keys = _fold_in(keys, plan.index + 1)
  update = o.update.transformation(_schedule(o.step_size, o.iterations))
  cycle = len(sizes) > 1

  def step_at(side, buffer, opt_state, step_keys, iteration):
    images = buffer[:, :side, :side]
    images, opt_state, record, logits = _step(classifier, o, targets, step_keys, images,
                                              opt_state, iteration, head)
    return buffer.at[:, :side, :side].set(images), opt_state, record, logits

  def body(carry, iteration):
    buffer, opt_state = carry
    step_keys = _fold_in(keys, iteration)
    if cycle:
      from_index, to_index = T.cyclic_size_indices(
          iteration, num_sizes=len(sizes) - 1, stop=min(o.resize_iterations, o.iterations))
      resize = functools.partial(T.resize_within, sizes=sizes, method=o.interpolation)
      buffer = jax.vmap(resize, in_axes=(0, None, None))(buffer, from_index, to_index)
      branches = [functools.partial(step_at, s) for s in sizes]
      buffer, opt_state, record, logits = lax.switch(
          to_index, branches, buffer, opt_state, step_keys, iteration)
    else:
      buffer, opt_state, record, logits = step_at(sizes[0], buffer, opt_state, step_keys,
                                                  iteration)
    return (buffer, opt_state), (record, logits)

  opt_state = update.init(buffer)
  iterations = jnp.arange(o.iterations, dtype=jnp.int32)
  every = plan.snapshot_every
  if not every:
    def scan_body(carry, iteration):
      carry, (record, _) = body(carry, iteration)
      return carry, record
    (buffer, _), trace = lax.scan(scan_body, (buffer, opt_state), iterations)
    return buffer, trace, None

  # Snapshots: an outer scan over chunks of `every` iterations; each frame is
  # the image before the chunk's first step and the logits of that step.
  frames = o.iterations // every
  rest = o.iterations - frames * every

  def chunk(carry, first):
    image_before = carry[0]
    def inner(carry, i):
      carry, (record, logits) = body(carry, first + i)
      return carry, (record, logits)
    carry, (records, logits) = lax.scan(inner, carry, jnp.arange(every, dtype=jnp.int32))
    return carry, (records, image_before, logits[0])

  starts = jnp.arange(frames, dtype=jnp.int32) * every
  (buffer, opt_state), (records, images, logits) = lax.scan(
      chunk, (buffer, opt_state), starts)
  trace = jax.tree_util.tree_map(lambda r: r.reshape(frames * every, *r.shape[2:]), records)
  if rest:
    def scan_body(carry, iteration):
      carry, (record, _) = body(carry, iteration)
      return carry, record
    (buffer, _), tail = lax.scan(scan_body, (buffer, opt_state),
                                 jnp.arange(frames * every, o.iterations, dtype=jnp.int32))
    trace = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), trace, tail)
  return buffer, trace, (images, logits)


@functools.lru_cache(maxsize=64)
def _compiled_octave(plan: _Plan, head: str):
  # The canvas buffer is donated: each octave writes its result in place of
  # its input instead of holding both (the caller never reads it again).
  return jax.jit(functools.partial(_run_octave, plan, head), donate_argnums=(1,))


# ----------------------------------------------------------------------------
# Precision and devices.


def mixed_precision(classifier: Classifier, dtype: Any = jnp.bfloat16) -> Classifier:
  """The classifier computing in ``dtype`` (bfloat16), for ``generate``.

  Weights are cast and the module's ``dtype`` set, so convolutions, BatchNorm
  and dense layers run in ``dtype``. ``generate`` keeps the canvas, the
  objective, the gradient (cast back to float32 where the view enters the
  model) and the update in float32.

  >>> fast = mixed_precision(load_classifier("googlenet"))  # doctest: +SKIP
  >>> generate(fast, "tabby", "octaves")  # doctest: +SKIP

  Args:
    classifier: a float32 ``Classifier``.
    dtype: the compute dtype, normally ``jnp.bfloat16``.

  Returns:
    A ``Classifier`` whose ``dtype`` is ``dtype``.
  """
  module = classifier.module.clone(dtype=dtype)
  return dataclasses.replace(classifier.astype(dtype), module=module)


def batch_mesh() -> Mesh:
  """A 1-D mesh over every visible device (all hosts'), axis ``"batch"``."""
  return Mesh(np.asarray(jax.devices()), ("batch",))


def _to_host(tree):
  """Numpy copies of (possibly sharded, possibly multi-host) arrays."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree_util.tree_map(np.asarray, tree)


# ----------------------------------------------------------------------------
# Public entry point.


def _fold_in(keys: jax.Array, data) -> jax.Array:
  """``fold_in`` of the same data into each key of a batch."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


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
      every image, or one per image (a sequence or ``(N, H, W, 3)``).
  """
  n, size = keys.shape[0], recipe.size
  init_keys = _fold_in(keys, 0)
  if init is not None:
    photos = _photos(init, n)
    return jnp.stack([T.resize(jnp.asarray(p), size, method="bilinear") for p in photos])
  if recipe.init == "photo":
    raise ValueError(f"recipe {recipe.name!r} starts from a photo: pass init= (an image file, "
                     "an (H, W, 3) array, or one per target)")
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
                 dtype: Any = jnp.float32) -> list[list[Draws]]:
  """Every draw ``generate`` makes, per octave and iteration, as numpy.

  The torch reference path replays these, so that both paths see the same
  crops, shifts, flips and colour jitter (``converters/torch_reference.py``).
  """
  keys = image_keys(seed, targets, restarts)
  result = []
  for index, (octave, sizes) in enumerate(zip(recipe.octaves, octave_sizes(recipe))):
    octave_keys = _fold_in(keys, index + 1)
    draws = []
    for iteration in range(octave.iterations):
      step_keys = _fold_in(octave_keys, iteration)
      side = sizes[cycle_index(octave, len(sizes), iteration)[1]]
      draws.append(jax.tree_util.tree_map(np.asarray, _draw(octave, step_keys, side, dtype)))
    result.append(draws)
  return result


def _target_metrics(classifier: Classifier, images, targets):
  logits = classifier(images.astype(classifier.dtype), heads=("logits",))["logits"]
  logits = logits.astype(jnp.float32)
  target = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
  probability = jnp.take_along_axis(jax.nn.softmax(logits), targets[:, None], axis=1)[:, 0]
  return target, probability, jnp.sum(logits > target[:, None], axis=1)


@jax.jit
def _final_metrics(classifier: Classifier, images, targets):
  """Target logit, probability and rank of the clipped images at the native
  size; and the rank of the raw canvas, as optimised."""
  size = classifier.input_size
  resized = jax.vmap(lambda x: T.resize(x, size, method="bilinear"))(T.clip(images))
  as_optimised = _target_metrics(classifier, images, targets)[2]
  return (*_target_metrics(classifier, resized, targets), as_optimised)


def _check_finite(trace: Trace, plan: _Plan, offset: int, targets, restarts,
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
             batch_size: int | None = None, pad_to: int = 0) -> Generation:
  """Images that ``classifier`` sees as each target, made together.

  Args:
    classifier: a ``Classifier``.
    targets: class indices or names (one or several).
    recipe: a recipe name (``recipes.names()``) or a ``Recipe``.
    seed: the run's seed; with the target and restart index it determines
      every random draw of an image.
    init: photos to start from (transfiguration): a path, an ``(H, W, 3)``
      array in [0, 1], or one per target.
    restarts: images per target, each from its own random start.
    snapshot_every: keep the image and logits every this many iterations.
    batch_size: images optimised at once (default: all), sharded over all
      devices; results do not depend on it nor on the device count.
    pad_to: run fewer images than this as a batch of this many (copies,
      dropped afterwards), so that a caller's last, smaller batch reuses the
      programs compiled for its full ones.

  Returns:
    A ``Generation``; images are ordered target-major (all restarts of the
    first target, then the next).

  Raises:
    UnknownClassError, ValueError, InputError: bad targets, recipe or sizes.
    GenerationError: a step produced NaN or Inf.
  """
  start = time.perf_counter()
  recipe = recipes_lib.get(recipe) if isinstance(recipe, str) else recipe
  if isinstance(targets, (int, str, np.integer)):
    targets = [targets]
  indices = imagenet.class_indices(targets, classifier.labels)
  if not indices:
    raise ValueError("no targets given: pass class indices or names")
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}")
  plans = _plan(classifier, recipe, snapshot_every)
  head = "logits"
  target_ids = np.repeat(np.asarray(indices, np.int32), restarts)
  restart_ids = np.tile(np.arange(restarts, dtype=np.int32), len(indices))
  photos = None
  if init is not None:
    photos = _photos(init, len(indices))
    photos = [p for p in photos for _ in range(restarts)]
  n = len(target_ids)
  # Equal chunks of at most batch_size, the last one padded up to the same
  # size: every chunk runs the same compiled octaves (padding wastes fewer
  # images than there are chunks; a recompile costs seconds to a minute).
  chunk = -(-n // -(-n // (batch_size or n)))
  size = max(chunk, min(pad_to, batch_size or pad_to))
  parts = []
  for begin in range(0, n, chunk):
    sl = slice(begin, begin + chunk)
    parts.append(_generate_batch(classifier, recipe, plans, head, target_ids[sl],
                                 restart_ids[sl], seed,
                                 None if photos is None else photos[sl], size=size))
  result = _concatenate(parts)
  result.seconds = time.perf_counter() - start
  return result


def _generate_batch(classifier, recipe, plans, head, targets, restarts, seed, photos,
                    size=0):
  n = len(targets)
  mesh = batch_mesh()
  # Pad to ``size`` and a multiple of the device count with copies of the
  # first image: they compute what it computes and are dropped at the end.
  padded = -(-max(n, size) // mesh.size) * mesh.size
  index = np.concatenate([np.arange(n), np.zeros(padded - n, int)])
  all_targets, all_restarts = np.asarray(targets)[index], np.asarray(restarts)[index]
  batch = NamedSharding(mesh, P("batch"))
  keys = image_keys(seed, all_targets, all_restarts)
  images = initial_images(recipe, keys, None if photos is None else [photos[i] for i in index])
  keys, images, targets_device = jax.device_put((keys, images, all_targets), batch)
  classifier = jax.device_put(classifier, NamedSharding(mesh, P()))
  traces, snaps_per_octave = [], []
  side = recipe.size
  # Octaves are dispatched back to back; the host reads their traces (for the
  # NaN check) only once all are queued, so the device never waits on it.
  for plan in plans:
    if plan.octave.canvas is not None and plan.octave.canvas != side:
      images = jax.vmap(lambda x, s=plan.octave.canvas: T.resize(x, s, method="bilinear"))(
          images)
    side = plan.sizes[0]
    buffer = images
    if plan.buffer != side:
      buffer = jnp.pad(images, ((0, 0), (0, plan.buffer - side), (0, plan.buffer - side),
                                (0, 0)))
    run = _compiled_octave(plan, head)
    buffer, trace, snaps = run(classifier, buffer, targets_device, keys)
    side = plan.sizes[cycle_index(plan.octave, len(plan.sizes), plan.octave.iterations - 1)[1]]
    images = buffer[:, :side, :side]
    traces.append(trace)
    snaps_per_octave.append(None if snaps is None else (snaps, side))
  target_logit, probability, rank, rank_raw = _final_metrics(classifier, images,
                                                             targets_device)
  traces, offset = _to_host(traces), 0
  for plan, trace in zip(plans, traces):
    _check_finite(trace, plan, offset, targets, restarts, classifier)
    logging.debug("octave %d done", plan.index + 1)
    offset += plan.octave.iterations
  keep = slice(0, n)
  trace = jax.tree_util.tree_map(lambda *xs: np.concatenate([x[:, keep] for x in xs]),
                                 *traces)
  snapshots, offset = Snapshots([], [], []), 0
  for plan, entry in zip(plans, snaps_per_octave):
    if entry is not None:
      (frames, logits), side = _to_host(entry[0]), entry[1]
      snapshots.images.append(frames[:, keep, :side, :side].swapaxes(0, 1))
      snapshots.logits.append(logits[:, keep].swapaxes(0, 1))
      snapshots.iterations.append(offset + np.arange(frames.shape[0]) * plan.snapshot_every)
    offset += plan.octave.iterations
  images, target_logit, probability, rank, rank_raw = _to_host(
      (T.clip(images), target_logit, probability, rank, rank_raw))
  return Generation(
      images=images[keep], targets=np.asarray(targets),
      restarts=np.asarray(restarts), target_logit=target_logit[keep],
      probability=probability[keep], rank=rank[keep], trace=trace,
      stability=stability(trace),
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
        parts[0].snapshots.iterations)
  trace = Trace(*(np.concatenate(xs, axis=1) for xs in zip(*(p.trace for p in parts))))
  return Generation(
      images=cat(*(p.images for p in parts)), targets=cat(*(p.targets for p in parts)),
      restarts=cat(*(p.restarts for p in parts)),
      target_logit=cat(*(p.target_logit for p in parts)),
      probability=cat(*(p.probability for p in parts)),
      rank=cat(*(p.rank for p in parts)), trace=trace,
      stability={k: cat(*(p.stability[k] for p in parts)) for k in parts[0].stability},
      snapshots=snapshots, rank_as_optimised=cat(*(p.rank_as_optimised for p in parts)))
