"""An octave's static facts, checked against a classifier: ``plan``.

A recipe's octave runs as one compiled program; what that program depends
on besides the array shapes is a ``Plan``: the octave, its index (which its
keys fold in), the canvas sides the image takes during it (a cyclic resize
gives several; the canvas then lives in the top-left corner of a buffer of
the largest), the snapshot interval and the image parameterisation.
``plan(classifier, recipe)`` checks the recipe against the classifier
(heads, sizes, operations that fit the canvas) and returns one per octave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from classgen_jax import activations, layer_objectives
from classgen_jax._classifier import Classifier, InputError
from classgen_jax.parameterisations import Parameterisation, Pixels
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.terms import Term


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
    units: the recipe's family of units (``Recipe.units``), or None.
  """
  octave: Octave
  index: int
  sides: tuple[int, ...]
  buffer: int
  snapshot_every: int = 0
  image: Parameterisation = Pixels()
  units: Term | None = None

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
  plans = octave_plans(recipe, snapshot_every)
  for plan_ in plans:
    octave, index, sides = plan_.octave, plan_.index, plan_.sides
    where = f"recipe {recipe.name!r} octave {index + 1}"
    if len(sides) > 1 and octave.importance:
      raise ValueError(f"{where}: the importance map is kept at one canvas size, and the "
                       "cyclic resize changes it; drop Octave.importance or the resize")
    if len(sides) > 1 and octave.update.per_pixel_state:
      raise ValueError(f"{where}: the cyclic resize changes the image's size, which "
                       f"{type(octave.update).__name__}'s per-pixel state cannot follow; use "
                       "the Gradient, Sign or L1Normalised rule")
    for position, op in enumerate(octave.operations):
      op.check(where, tuple(input_sides(octave, s)[position] for s in sides))
    for side in sides:
      recipe.image_of(index).check(where, side)
    if octave.objective.group > 1 and octave.views > 1:
      raise ValueError(f"{where}: diversity compares images with one view each, and the "
                       f"octave shows {octave.views}; set views=1")
    needs = octave.objective.needs
    if needs.batchnorm and not classifier.has_batchnorm:
      raise ValueError(
          f"{where} objective: the BatchNorm statistics prior needs a model with "
          f"BatchNorm layers, and {classifier.name} has none; drop the term or use "
          "another model")
    for term in (*(t for _, t in octave.objective.terms), recipe.units):
      if not isinstance(term, layer_objectives.LayerTerm):
        continue
      try:
        term.check_layer(layer_shape(classifier, term.layer))
        for view in sorted({view_side(octave, s) for s in sides}):
          term.check_view(layer_shape(classifier, term.layer, view), view)
      except activations.LayerError as error:
        raise activations.LayerError(f"{where} objective: {error}") from None
    smallest_view = min(view_side(octave, s) for s in sides)
    for head in needs.heads:
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
  return plans


def target_labels(classifier: Classifier, recipe: Recipe) -> tuple[str, ...]:
  """What a target index names: a class of ``classifier``, or one of the
  recipe's units (``Recipe.units``: ``"inception4a channel 7"``).

  Raises:
    LayerError: the units' layer is not one of the classifier's.
  """
  units = recipe.units
  if units is None:
    return classifier.labels
  return units.unit_names(layer_shape(classifier, units.layer))


def layer_shape(classifier: Classifier, name: str, side: int | None = None) -> tuple[int, ...]:
  """The output shape of one image at layer ``name``, for ``side`` px
  images (default: the native size).

  Raises:
    LayerError: the classifier has no such layer (the closest named).
  """
  activations.resolve(classifier.module, classifier.input_size, name, classifier.name)
  layers = activations.layers(classifier.module, side or classifier.input_size)
  return next(layer.shape for layer in layers if layer.name == name)


def group(plans: Sequence[Plan]) -> int:
  """How many consecutive images of a target the plans' objectives couple
  (``Objective.group``; 1: none)."""
  return max((p.octave.objective.group for p in plans), default=1)


def octave_plans(recipe: Recipe, snapshot_every: int = 0) -> list[Plan]:
  """The recipe's plans, unchecked (``plan`` checks them against a model)."""
  return [Plan(octave, index, sides, max(sides), snapshot_every, recipe.image_of(index),
               recipe.units)
          for index, (octave, sides) in enumerate(zip(recipe.octaves, canvas_sides(recipe)))]


__all__ = ["Plan", "canvas_sides", "input_sides", "layer_shape", "octave_plans", "plan",
           "target_labels", "view_side"]
