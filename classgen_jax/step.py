"""One iteration of an octave on a batch: ``step(state) -> (state, trace)``.

``make_step`` closes over an octave's plan (``plans``), the classifier, the
targets and the per-image keys, and returns the pure step that ``octave.run``
scans. Inside one step, in order:

1. the ``before_resize`` operations, at the canvas's current side;
2. the cyclic resize, if the octave has one (the canvas lives in the
   top-left corner of a fixed buffer, and the rest of the step runs at the
   static side it was resized to, one ``lax.switch`` branch per side);
3. the ``before`` operations on the canvas; the ``view`` operations, the
   classifier and the objective, differentiated back to the canvas; the
   update rule's step; the ``after`` operations.

Every operation draws from the image's own key (``operations``), at the side
of the image it applies to: iteration ``i`` of octave ``o`` draws from
``iteration_keys`` (the image key folded with ``o + 1``, then ``i``), and
``random_draws`` replays those draws on the host for the torch reference.

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

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from classgen_jax import metrics
from classgen_jax import per_image as per_image_lib
from classgen_jax._classifier import Classifier, Needs
from classgen_jax._sums import pairwise_mean
from classgen_jax.draws import draw, iteration_keys, octave_keys, random_draws, streams, view_draws  # noqa: F401 (re-exported)
from classgen_jax.operations import Context
from classgen_jax.parameterisations import Parameterisation
from classgen_jax.plans import Plan, view_side
from classgen_jax.recipe import Octave
from classgen_jax.updates import linear

# The parts of a step, as named scopes of the compiled program (a profile's
# ops carry them; ``benchmark --breakdown`` sums its time by them): the
# forward pass (its input gradient is ``transpose(jvp(model))``), the view
# operations, the objective, the other operations, the update rule, the
# parameterisation's rendering and the trace's records.
SCOPES = ("model", "view", "objective", "operations", "update", "image", "trace")

# ----------------------------------------------------------------------------
# State.


class State(NamedTuple):
  """The loop state of an octave.

  Attributes:
    canvas: ``(N, B, B, 3)``: each image in the top-left corner of its buffer
      (or the image parameters, when the image is not pixels).
    opt_state: the update rule's optax state.
    iteration: int32 scalar, the next iteration within the octave.
    importance: with ``Octave.importance``, ``(N, B, B)``: the sum so far of
      the objective's gradient's size on each pixel of the image (over its
      channels); else None.
  """
  canvas: jax.Array
  opt_state: Any
  iteration: jax.Array
  importance: jax.Array | None = None


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


def init_state(plan: Plan, canvas: jax.Array) -> State:
  """The state at the start of an octave, for ``canvas`` ``(N, B, B, 3)``
  (encoded into the recipe's image parameters, unless they are pixels)."""
  pixels = plan.image.pixels
  update = _transformations(plan.octave, plan.sides[:1], pixels)[plan.sides[0]]
  importance = None
  if plan.octave.importance:
    importance = jnp.zeros(canvas.shape[:3], jnp.float32)
  if not pixels:
    canvas = _encoder(plan.image)(canvas)
  return State(canvas, update.init(canvas), jnp.zeros((), jnp.int32), importance)


def canvas_images(plan: Plan, canvas: Any) -> jax.Array:
  """The images ``(N, B, B, 3)`` of a state's canvas (its rendered parameters)."""
  return canvas if plan.image.pixels else _renderer(plan.image)(canvas)


@functools.lru_cache(maxsize=16)
def _encoder(image: Parameterisation):
  """``image.encode`` over a batch, compiled (see ``_renderer``)."""
  return jax.jit(jax.vmap(image.encode))


@functools.lru_cache(maxsize=16)
def _renderer(image: Parameterisation):
  """``image.render`` over a batch, compiled: run op by op, its matrix
  products would round differently for different batch sizes."""
  return jax.jit(jax.vmap(image.render))


def embed(images: jax.Array, buffer: int) -> jax.Array:
  """``(N, s, s, 3)`` images in the top-left corner of ``(N, buffer, buffer, 3)``."""
  pad = buffer - images.shape[1]
  return images if pad == 0 else jnp.pad(images, ((0, 0), (0, pad), (0, pad), (0, 0)))


# ----------------------------------------------------------------------------
# The step.


def _apply(ops, images, params, iteration, iterations: int, region,
           scope: str = "operations"):
  """``ops`` in turn on each image of a batch, with its draws and context."""
  offsets = None if region is None else region[0]
  with jax.named_scope(scope):
    for op, p in zip(ops, params):
      def one(image, p, offset, op=op):
        where = None if region is None else (offset, region[1])
        return op(image, p, Context(iteration, iterations, where))
      images = jax.vmap(one)(images, p, offsets)
  return images


def _stack_views(per_view: list) -> Any:
  """Draws of each view, ``[(N, ...)] * K``, as one ``(N * K, ...)`` batch,
  image-major (image 0's views first)."""
  def stack(*xs):
    if xs[0] is None:
      return None
    return jnp.stack(xs, axis=1).reshape(-1, *xs[0].shape[1:])
  return jax.tree_util.tree_map(stack, *per_view, is_leaf=lambda x: x is None)


class _Step:
  """``make_step``'s step: see there and the module doc."""

  def __init__(self, plan: Plan, classifier: Classifier, targets: jax.Array, keys: jax.Array,
               images: int | None = None):
    octave = plan.octave
    # The images the per-image loop runs (``make_step``'s lone image is
    # one of a batch of two).
    self.images = targets.shape[0] if images is None else images
    self.plan, self.octave, self.classifier, self.targets = plan, octave, classifier, targets
    self.keys = octave_keys(plan, keys)
    self.updates = _transformations(octave, plan.sides, plan.image.pixels)
    first = len(octave.before_resize)
    self.groups = (first, first + len(octave.before),
                   first + len(octave.before) + len(octave.view))
    # The trace ranks each target among the classes, or among its family's
    # units (which then need no pass beyond their layer).
    self.units = plan.units
    self.needs = octave.objective.needs | (Needs(("logits",)) if plan.units is None
                                           else plan.units.needs)
    # A prior on the activations (BatchNorm statistics) and diversity's
    # groups run the model one image at a time (``per_image``): with groups
    # in a differentiable loop of the model's pass; without, each image's
    # gradient is taken inside the loop too.
    self.grouped = octave.objective.group > 1
    self.gradient_per_image = self.needs.batchnorm and not self.grouped

  def outputs(self, view):
    """The forward pass on ``view`` at the canvas's precision (a bfloat16
    model's outputs join the objective at it; a no-op when the dtypes
    agree): the whole batch at once, or with groups one image's views at a
    time."""
    def one_pass(views):
      outputs = self.classifier.outputs(views.astype(self.classifier.dtype), self.needs)
      return jax.tree_util.tree_map(lambda value: value.astype(views.dtype), outputs)
    with jax.named_scope("model"):
      if not self.grouped:
        return one_pass(view)
      return per_image_lib.map_images(
          one_pass, view.reshape(-1, self.octave.views, *view.shape[1:]))

  def evaluate(self, view, targets):
    """Per view: the objective's value and the ``scores``."""
    if self.gradient_per_image:
      return per_image_lib.values_with_gradients(self._evaluate, view, targets,
                                                 self.octave.views, self.images)
    return self._evaluate(view, targets)

  def _evaluate(self, view, targets):
    outputs = self.outputs(view)
    with jax.named_scope("objective"):
      values = self.octave.objective(outputs, view, targets)
    return values, self.scores(outputs, view)

  def scores(self, outputs, view):
    """What the trace ranks a target among: the main head's logits, or
    every unit of the recipe's family (``Recipe.units``)."""
    if self.units is None:
      return outputs.heads["logits"]
    return self.units.values(outputs, view)

  def loss(self, canvas, p_view, p_views, region, iteration):
    """Minus the objective summed over the batch, and ``(values, logits)``:
    per image, the objective (the mean over its views) and the ``scores``
    for its (first) view."""
    image = self.plan.image
    if not image.pixels:
      with jax.named_scope("image"):
        canvas = jax.vmap(image.render)(canvas)
    return self.loss_of_images(canvas, p_view, p_views, region, iteration)

  def loss_of_images(self, images, p_view, p_views, region, iteration):
    """``loss`` of the rendered images."""
    octave, views = self.octave, self.octave.views
    if views == 1:
      view = _apply(octave.view, images, p_view, iteration, octave.iterations, region, "view")
      values, scores = self.evaluate(view, self.targets)
      return -jnp.sum(values), (values, scores.astype(jnp.float32))
    view = _apply(octave.view, jnp.repeat(images, views, axis=0), p_views, iteration,
                  octave.iterations, None, "view")
    values, scores = self.evaluate(view, jnp.repeat(self.targets, views))
    with jax.named_scope("objective"):
      values = pairwise_mean(values.reshape(-1, views), (1,))
    scores = scores.reshape(-1, views, scores.shape[-1])[:, 0]
    return -jnp.sum(values), (values, scores.astype(jnp.float32))

  def iterate(self, images, opt_state, step_keys, iteration, side, importance=None):
    """One step at a static canvas side: the operations before, the
    gradient of the views' objective, the update, the operations after;
    with an ``importance`` map, its sum goes on."""
    octave, (a, b, c) = self.octave, self.groups
    dtype = jax.tree_util.tree_leaves(images)[0].dtype
    params = draw(octave, step_keys, side, dtype)
    p_before, p_view, p_after = params[a:b], params[b:c], params[c:]
    region, view_input = None, side
    for op, p in zip(octave.view, p_view):
      # Only a region of the canvas itself (not of a padded view) is one.
      if view_input == side:
        region = region or op.region(p, side)
      view_input = op.output_side(view_input)
    images = _apply(octave.before, images, p_before, iteration, octave.iterations, region)
    p_views = None
    if octave.views > 1:
      p_views = _stack_views([p_view, *view_draws(octave, step_keys, side, dtype)])
    if importance is None:
      grads, (values, logits) = jax.grad(self.loss, has_aux=True)(
          images, p_view, p_views, region, iteration)
    else:  # the gradient on the rendered image too, and its size per pixel
      image = self.plan.image
      rendered, back = jax.vjp(
          lambda c: c if image.pixels else jax.vmap(image.render)(c), images)
      on_image, (values, logits) = jax.grad(self.loss_of_images, has_aux=True)(
          rendered, p_view, p_views, region, iteration)
      (grads,) = back(on_image)
      importance = importance + jnp.abs(on_image).sum(axis=-1).astype(importance.dtype)
    with jax.named_scope("update"):
      step_updates, opt_state = self.updates[side].update(grads, opt_state, images)
      images = optax.apply_updates(images, step_updates)
    images = _apply(octave.after, images, p_after, iteration, octave.iterations, region)
    with jax.named_scope("trace"):
      finite = jnp.isfinite(values)
      for leaf in jax.tree_util.tree_leaves(images):
        finite = jnp.all(jnp.isfinite(leaf), axis=tuple(range(1, leaf.ndim))) & finite
      trace = metrics.trace(values, logits, self.targets, finite)
    return images, opt_state, trace, importance

  def at_side(self, side, buffer, opt_state, step_keys, iteration, importance=None):
    if not self.plan.image.pixels:  # one canvas size: the parameters are the whole state
      return self.iterate(buffer, opt_state, step_keys, iteration, side, importance)
    images, opt_state, trace, importance = self.iterate(
        buffer[:, :side, :side], opt_state, step_keys, iteration, side,
        None if importance is None else importance[:, :side, :side])
    return buffer.at[:, :side, :side].set(images), opt_state, trace, importance

  def before_resize(self, side, buffer, step_keys, iteration):
    octave = self.octave
    images = buffer[:, :side, :side]
    params = draw(octave, step_keys, side, images.dtype)[:self.groups[0]]
    images = _apply(octave.before_resize, images, params, iteration, octave.iterations, None)
    return buffer.at[:, :side, :side].set(images)

  def __call__(self, state: State) -> tuple[State, metrics.Trace]:
    buffer, opt_state, iteration, importance = state
    octave, sides = self.octave, self.plan.sides
    step_keys = iteration_keys(self.keys, iteration)
    if len(sides) > 1:
      from_index, to_index = octave.resize.indices(iteration, octave.iterations)
      if self.groups[0]:
        branches = [functools.partial(self.before_resize, s) for s in sides]
        buffer = lax.switch(from_index, branches, buffer, step_keys, iteration)
      buffer = jax.vmap(lambda b: octave.resize(b, (from_index, to_index, sides), None))(buffer)
      branches = [functools.partial(self.at_side, s) for s in sides]
      buffer, opt_state, trace, _ = lax.switch(to_index, branches, buffer, opt_state,
                                               step_keys, iteration)
    else:
      if self.groups[0]:
        buffer = self.before_resize(sides[0], buffer, step_keys, iteration)
      buffer, opt_state, trace, importance = self.at_side(
          sides[0], buffer, opt_state, step_keys, iteration, importance)
    return State(buffer, opt_state, iteration + 1, importance), trace


def make_step(plan: Plan, classifier: Classifier, targets: jax.Array,
              keys: jax.Array) -> Callable[[State], tuple[State, metrics.Trace]]:
  """The pure step of one octave.

  Args:
    plan: the octave's plan (``plans.plan``).
    classifier: the model (a pytree; trace it as an argument to reuse
      compiled programs across weights).
    targets: ``(N,)`` class indices.
    keys: ``(N,)`` per-image base keys (``starts.image_keys``).

  Returns:
    ``step(state) -> (state, trace)``, ``trace`` a ``metrics.Trace`` of
    ``(N,)`` records.
  """
  probe = _Step(plan, classifier, targets, keys)
  if not probe.gradient_per_image or targets.shape[0] != 1:
    return probe
  return per_image_lib.as_one_of_two(_Step(plan, classifier, jnp.concatenate([targets, targets]),
                                           jnp.concatenate([keys, keys]), images=1))


__all__ = ["SCOPES", "State", "canvas_images", "draw", "embed", "init_state", "iteration_keys",
           "make_step", "octave_keys", "random_draws", "streams", "view_draws"]
