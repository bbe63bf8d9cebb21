"""One iteration of an octave on a batch: ``step(state) -> (state, record)``.

``plan`` checks a recipe against a classifier and fixes each octave's static
facts (canvas sides, buffer size); ``make_step`` closes over an octave, the
classifier, the targets and the per-image keys, and returns the pure step
that ``octave.run`` scans. Inside one step, in order:

1. the ``before_resize`` operations, at the canvas's current side;
2. the cyclic resize, if the octave has one (the canvas lives in the
   top-left corner of a fixed buffer, and the rest of the step runs at the
   static side it was resized to, one ``lax.switch`` branch per side);
3. the ``before`` operations on the canvas; the ``view`` operations, the
   classifier and the objective, differentiated back to the canvas; the
   update rule's step; the ``after`` operations.

Every operation draws from the image's own key (``operations``), at the side
of the image it applies to.

Data contract: the canvas is ``(N, B, B, 3)`` float (float32, or float64 in
parity tests); the classifier sees its own dtype (bfloat16 with
``devices.mixed_precision``) and its outputs join the objective at the
canvas's precision.

Recipes whose image is not ``Pixels`` (``parameterisations``) keep their
parameters in the state instead of the canvas: the step renders the image
from them inside the differentiated function (before the view operations),
and the update rule acts on the parameters. ``init_state`` encodes an
image into them, ``canvas_images`` renders them back.

Several views a step (``Octave.views``): view 0 uses the step's draws, as
with one view, and view ``k`` the view operations' draws from the step key
folded with ``k``; the model sees the ``N * views`` views as one batch and
each image's objective is the mean over its views.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from classgen_jax import metrics
from classgen_jax._classifier import BATCHNORM_STATS, Classifier, InputError
from classgen_jax._sums import pairwise_mean
from classgen_jax.operations import Context, Operation
from classgen_jax.parameterisations import Parameterisation, Pixels
from classgen_jax.recipes import Octave, Recipe
from classgen_jax.updates import linear

# Every iteration's key is split into at least this many streams, one per
# random operation (see ``operations``).
_MIN_STREAMS = 5
_FIRST_FREE_STREAM = 5


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static facts of one octave: what its compiled program depends on.

  Attributes:
    octave: the octave.
    index: its position in the recipe (keys fold in ``index + 1``).
    sides: canvas sides the image can take (``[0]`` at the start).
    buffer: side of the buffer that holds the canvas (the largest side).
    snapshot_every: keep the image and logits every this many iterations.
    image: the recipe's image parameterisation.
  """
  octave: Octave
  index: int
  sides: tuple[int, ...]
  buffer: int
  snapshot_every: int = 0
  image: Parameterisation = Pixels()

  def final_side(self) -> int:
    """The canvas side after the octave's last iteration."""
    return self.sides[self.size_indices(self.octave.iterations - 1)[1]]

  def size_indices(self, iteration) -> tuple[int, int]:
    """``(from, to)`` indices into ``sides`` at ``iteration`` (host ints)."""
    if len(self.sides) == 1:
      return 0, 0
    from_index, to_index = self.octave.resize.indices(iteration, self.octave.iterations)
    return int(from_index), int(to_index)


def canvas_sides(recipe: Recipe) -> list[tuple[int, ...]]:
  """Per octave, the canvas sides its image can take (``[0]``: at its start)."""
  all_sides, side = [], recipe.size
  for octave in recipe.octaves:
    side = octave.canvas or side
    sides = (side,) if octave.resize is None else octave.resize.canvas_sides(side)
    all_sides.append(sides)
    if len(sides) > 1:
      plan = Plan(octave, 0, sides, max(sides))
      side = plan.final_side()
  return all_sides


def view_side(octave: Octave, side: int) -> int:
  """The side of the model's view of a ``side`` px canvas."""
  for op in octave.view:
    side = op.output_side(side)
  return side


def input_sides(octave: Octave, side: int, first_side: int | None = None) -> tuple[int, ...]:
  """The side of the image each of ``octave.operations`` receives: the
  canvas's before the resize (``first_side``, default ``side``) for the
  ``before_resize`` operations, the canvas's after it, or within the view
  the previous view operation's output."""
  canvas, view = side, []
  for op in octave.view:
    view.append(side)
    side = op.output_side(side)
  return (*[first_side or canvas] * len(octave.before_resize),
          *[canvas] * len(octave.before), *view, *[canvas] * len(octave.after))


def plan(classifier: Classifier, recipe: Recipe, snapshot_every: int = 0) -> list[Plan]:
  """Checks ``recipe`` against ``classifier`` and plans its octaves.

  Raises:
    ValueError: an operation that does not fit the canvas; a per-pixel
      update state with a cyclic resize.
    InputError: a head the classifier lacks, or views too small for it.
  """
  plans = []
  for index, (octave, sides) in enumerate(zip(recipe.octaves, canvas_sides(recipe))):
    where = f"recipe {recipe.name!r} octave {index + 1}"
    if len(sides) > 1 and octave.update.per_pixel_state:
      raise ValueError(f"{where}: the cyclic resize changes the image's size, which "
                       f"{type(octave.update).__name__}'s per-pixel state cannot follow; use "
                       "the Gradient, Sign or L1Normalised rule")
    for position, op in enumerate(octave.operations):
      op.check(where, tuple(input_sides(octave, s)[position] for s in sides))
    for side in sides:
      recipe.image.check(where, side)
    smallest_view = min(view_side(octave, s) for s in sides)
    for head in octave.heads:
      if head == BATCHNORM_STATS:
        if not classifier.has_batchnorm:
          raise ValueError(
              f"{where} objective: the BatchNorm statistics prior needs a model with "
              f"BatchNorm layers, and {classifier.name} has none; drop the term or use "
              "another model")
        continue
      if head not in classifier.heads:
        raise InputError(
            f"{where} uses head {head!r}, which {classifier.name} does not have (its heads: "
            f"{', '.join(classifier.heads)}); use recipes.get({recipe.name!r}).with_head"
            f"('logits') or a model with that head")
      need = classifier.min_input_size(head)
      if smallest_view < need:
        raise InputError(
            f"{where} shows {classifier.name}'s {head!r} head {smallest_view} px views, "
            f"but it needs at least {need} px; raise the recipe's size/crop")
    plans.append(Plan(octave, index, sides, max(sides), snapshot_every, recipe.image))
  return plans


# ----------------------------------------------------------------------------
# Draws.


def streams(operations: tuple[Operation, ...]) -> tuple[int, ...]:
  """The key stream of each operation (see ``operations``' module doc)."""
  taken, free, result = set(), _FIRST_FREE_STREAM, []
  for op in operations:
    fixed = type(op).stream
    if fixed is not None and fixed not in taken:
      taken.add(fixed)
      result.append(fixed)
    else:
      result.append(free)
      free += 1
  return tuple(result)


def fold_in(keys: jax.Array, data) -> jax.Array:
  """``fold_in`` of the same data into each key of a batch."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def draw(octave: Octave, keys: jax.Array, side: int, dtype: Any,
         first_side: int | None = None, *, view_only: bool = False) -> tuple[Any, ...]:
  """Every operation's draw for one iteration, from the per-image step keys.

  Args:
    octave: the octave.
    keys: ``(N,)`` per-image step keys.
    side: the canvas side after the iteration's resize.
    dtype: of the canvas.
    first_side: the side before it, at which the ``before_resize``
      operations draw (default: ``side``).
    view_only: draw only the ``view`` operations (with the streams they
      have among all of them).

  Returns:
    One entry per ``octave.operations`` (or per ``octave.view``): its
    parameters batched over the images (``None`` for operations that draw
    nothing).
  """
  ops = octave.operations
  ids = streams(ops)
  sides = input_sides(octave, side, first_side)
  count = max(_MIN_STREAMS, max(ids, default=0) + 1)
  split = jax.vmap(lambda k: jax.random.split(k, count))(keys)
  first = len(octave.before_resize) + len(octave.before)
  chosen = range(first, first + len(octave.view)) if view_only else range(len(ops))
  return tuple(jax.vmap(lambda k, j=j: ops[j].draw(k, sides[j], dtype))(split[:, ids[j]])
               for j in chosen)


def view_draws(octave: Octave, keys: jax.Array, side: int, dtype: Any) -> tuple[Any, ...]:
  """The view operations' draws of views ``1 .. views - 1`` (view 0 uses
  ``draw``'s): view ``k``'s come from the step keys folded with ``k``."""
  return tuple(draw(octave, fold_in(keys, k), side, dtype, view_only=True)
               for k in range(1, octave.views))


# ----------------------------------------------------------------------------
# The step.


class State(NamedTuple):
  """The loop state of an octave.

  Attributes:
    canvas: ``(N, B, B, 3)``: each image in the top-left corner of its buffer.
    opt_state: the update rule's optax state.
    iteration: int32 scalar, the next iteration within the octave.
  """
  canvas: jax.Array
  opt_state: Any
  iteration: jax.Array


class Record(NamedTuple):
  """What one step reports, per image.

  Attributes:
    trace: ``metrics.Trace`` of ``(N,)`` arrays.
    logits: ``(N, classes)`` the main head's logits for the view the model saw.
  """
  trace: metrics.Trace
  logits: jax.Array


def _apply(op: Operation, images, params, iteration, iterations: int, region):
  """``op`` on each image of a batch, with its draw and its context."""
  offsets = None if region is None else region[0]

  def one(image, p, offset):
    where = None if region is None else (offset, region[1])
    return op(image, p, Context(iteration, iterations, where))

  return jax.vmap(one)(images, params, offsets)


def _apply_all(ops, images, params, iteration, iterations: int, region):
  for op, p in zip(ops, params):
    images = _apply(op, images, p, iteration, iterations, region)
  return images


def _transformations(octave: Octave, sides: tuple[int, ...], pixels: bool = True):
  """The update rule's optax transformation for each canvas side (the L1 rule
  averages over the view's region, whose size can depend on the side; over
  every parameter when they are not pixels)."""
  schedule = linear(*octave.step_size, octave.iterations)
  result = {}
  for side in sides:
    region = view_side(octave, side)
    count = region * region * 3 if pixels and region < side else None
    result[side] = octave.update.transformation(schedule, count=count)
  return result


def init_state(plan_: Plan, canvas: jax.Array) -> State:
  """The state at the start of an octave, for ``canvas`` ``(N, B, B, 3)``
  (encoded into the recipe's image parameters, unless they are pixels)."""
  pixels = plan_.image.pixels
  update = _transformations(plan_.octave, plan_.sides[:1], pixels)[plan_.sides[0]]
  if not pixels:
    canvas = _encoder(plan_.image)(canvas)
  return State(canvas, update.init(canvas), jnp.zeros((), jnp.int32))


def canvas_images(plan_: Plan, canvas: Any) -> jax.Array:
  """The images ``(N, B, B, 3)`` of a state's canvas (its rendered parameters)."""
  return canvas if plan_.image.pixels else _renderer(plan_.image)(canvas)


def random_images(image: Parameterisation, keys: jax.Array, side: int) -> jax.Array:
  """``(N, side, side, 3)`` renders of ``image``'s random start, one per key."""
  return _random_images(image, side)(keys)


@functools.lru_cache(maxsize=16)
def _random_images(image: Parameterisation, side: int):
  return jax.jit(jax.vmap(lambda key: image.render(image.init(key, side, jnp.float32))))


@functools.lru_cache(maxsize=16)
def _encoder(image: Parameterisation):
  """``image.encode`` over a batch, compiled (see ``_renderer``)."""
  return jax.jit(jax.vmap(image.encode))


@functools.lru_cache(maxsize=16)
def _renderer(image: Parameterisation):
  """``image.render`` over a batch, compiled: run op by op, its matrix
  products would round differently for different batch sizes."""
  return jax.jit(jax.vmap(image.render))


def _stack_views(per_view: list) -> Any:
  """Draws of each view, ``[(N, ...)] * K``, as one ``(N * K, ...)`` batch,
  image-major (image 0's views first)."""
  def stack(*xs):
    if xs[0] is None:
      return None
    return jnp.stack(xs, axis=1).reshape(-1, *xs[0].shape[1:])
  return jax.tree_util.tree_map(stack, *per_view, is_leaf=lambda x: x is None)


def make_step(plan_: Plan, classifier: Classifier, targets: jax.Array,
              keys: jax.Array) -> Callable[[State], tuple[State, Record]]:
  """The pure step of one octave.

  Args:
    plan_: the octave's plan.
    classifier: the model (a pytree; trace it as an argument to reuse
      compiled programs across weights).
    targets: ``(N,)`` class indices.
    keys: ``(N,)`` per-image base keys (``engine.image_keys``).

  Returns:
    ``step(state) -> (state, record)``.
  """
  octave, sides, image = plan_.octave, plan_.sides, plan_.image
  keys = fold_in(keys, plan_.index + 1)
  updates = _transformations(octave, sides, image.pixels)
  first = len(octave.before_resize)
  groups = (first, first + len(octave.before), first + len(octave.before) + len(octave.view))
  heads = tuple(dict.fromkeys((*octave.heads, "logits")))
  views = octave.views
  # XLA's convolutions round differently for different batch sizes (on the
  # CPU, by the last bit). A class logit's gradient hardly depends on the
  # forward pass's rounding, but a prior on the activations (BatchNorm
  # statistics) does: such an objective runs the model on one image's views
  # at a time (a loop), so that an image does not depend on its batch. A
  # loop of one iteration would be compiled without the loop, and round
  # differently again: a lone image runs beside a copy of itself.
  per_image = BATCHNORM_STATS in heads

  def outputs_of(view):
    view = view.astype(classifier.dtype)
    if not per_image:
      return classifier(view, heads=heads)
    grouped = view.reshape(-1, views, *view.shape[1:])
    count = grouped.shape[0]
    if count == 1:
      grouped = jnp.concatenate([grouped, grouped])
    outputs = lax.map(lambda one: classifier(one, heads=heads), grouped)
    return jax.tree_util.tree_map(
        lambda value: value[:count].reshape(-1, *value.shape[2:]), outputs)

  def prepare_at_side(side, buffer, step_keys, iteration):
    images = buffer[:, :side, :side]
    params = draw(octave, step_keys, side, images.dtype)[:first]
    images = _apply_all(octave.before_resize, images, params, iteration, octave.iterations,
                        None)
    return buffer.at[:, :side, :side].set(images)

  def iterate(images, opt_state, step_keys, iteration, side):
    dtype = jax.tree_util.tree_leaves(images)[0].dtype
    params = draw(octave, step_keys, side, dtype)
    p_before = params[groups[0]:groups[1]]
    p_view = params[groups[1]:groups[2]]
    p_after = params[groups[2]:]
    region, view_input = None, side
    for op, p in zip(octave.view, p_view):
      # Only a region of the canvas itself (not of a padded view) is one.
      if view_input == side:
        region = region or op.region(p, side)
      view_input = op.output_side(view_input)

    def apply(ops, images, params, region=region):
      return _apply_all(ops, images, params, iteration, octave.iterations, region)

    images = apply(octave.before, images, p_before)
    if views > 1:
      p_views = _stack_views([p_view, *view_draws(octave, step_keys, side, dtype)])
      view_targets = jnp.repeat(targets, views)

    def loss(canvas):
      images = canvas if image.pixels else jax.vmap(image.render)(canvas)
      if views == 1:
        view = apply(octave.view, images, p_view)
        outputs = outputs_of(view)
        # A bfloat16 model's outputs join the objective at the canvas's
        # precision (a no-op when the dtypes agree).
        outputs = jax.tree_util.tree_map(lambda value: value.astype(images.dtype), outputs)
        values = octave.objective(outputs, view, targets)
        return -jnp.sum(values), (values, outputs["logits"].astype(jnp.float32))
      view = apply(octave.view, jnp.repeat(images, views, axis=0), p_views, region=None)
      outputs = outputs_of(view)
      outputs = jax.tree_util.tree_map(lambda value: value.astype(images.dtype), outputs)
      values = pairwise_mean(octave.objective(outputs, view, view_targets).reshape(-1, views),
                             (1,))
      logits = outputs["logits"].reshape(-1, views, outputs["logits"].shape[-1])[:, 0]
      return -jnp.sum(values), (values, logits.astype(jnp.float32))

    grads, (values, logits) = jax.grad(loss, has_aux=True)(images)
    step_updates, opt_state = updates[side].update(grads, opt_state, images)
    images = optax.apply_updates(images, step_updates)
    images = apply(octave.after, images, p_after)
    finite = jnp.isfinite(values)
    for leaf in jax.tree_util.tree_leaves(images):
      finite = jnp.all(jnp.isfinite(leaf), axis=tuple(range(1, leaf.ndim))) & finite
    return images, opt_state, Record(metrics.trace(values, logits, targets, finite), logits)

  def at_side(side, buffer, opt_state, step_keys, iteration):
    if not image.pixels:  # one canvas size: the parameters are the whole state
      return iterate(buffer, opt_state, step_keys, iteration, side)
    images, opt_state, record = iterate(buffer[:, :side, :side], opt_state, step_keys,
                                        iteration, side)
    return buffer.at[:, :side, :side].set(images), opt_state, record

  def step(state: State) -> tuple[State, Record]:
    buffer, opt_state, iteration = state
    step_keys = fold_in(keys, iteration)
    if len(sides) > 1:
      from_index, to_index = octave.resize.indices(iteration, octave.iterations)
      if first:
        branches = [functools.partial(prepare_at_side, s) for s in sides]
        buffer = lax.switch(from_index, branches, buffer, step_keys, iteration)
      params = (from_index, to_index, sides)
      buffer = jax.vmap(lambda b: octave.resize(b, params, None))(buffer)
      branches = [lambda *a, s=s: at_side(s, *a) for s in sides]
      buffer, opt_state, record = lax.switch(to_index, branches, buffer, opt_state,
                                             step_keys, iteration)
    else:
      if first:
        buffer = prepare_at_side(sides[0], buffer, step_keys, iteration)
      buffer, opt_state, record = at_side(sides[0], buffer, opt_state, step_keys, iteration)
    return State(buffer, opt_state, iteration + 1), record

  return step


def embed(images: jax.Array, buffer: int) -> jax.Array:
  """``(N, s, s, 3)`` images in the top-left corner of ``(N, buffer, buffer, 3)``."""
  pad = buffer - images.shape[1]
  return images if pad == 0 else jnp.pad(images, ((0, 0), (0, pad), (0, pad), (0, 0)))


__all__ = ["Plan", "Record", "State", "canvas_images", "canvas_sides", "draw", "embed",
           "fold_in", "init_state", "input_sides", "make_step", "plan", "random_images",
           "streams", "view_draws",
           "view_side"]
