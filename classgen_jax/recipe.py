"""What a recipe is: a starting image and its octaves, as frozen values.

A recipe is a start (``classgen_jax.starts``), a canvas size and a list of
octaves. An octave is a run of iterations at one canvas size; each
iteration does, in this order:

1. ``before_resize``: operations on the canvas at the size the previous
   iteration left it (the article's colour jitter, which its resilience
   code applies before the resize);
2. ``resize``: the cyclic resize of the canvas, if any (the article's
   resilience recipe);
3. ``before``: operations on the canvas itself (padding ring, the
   smoothing blur);
4. ``view``: the model's view of the canvas (random crop, roll, flip, ...),
   the objective on it, its gradient back to the canvas, and the update
   rule's step (step size following ``step_size`` linearly);
5. ``after``: operations on the canvas after the update (the octaves' blur,
   clipping).

What the steps change is the recipe's ``image`` (``classgen_jax.
parameterisations``), or an octave's own. The catalogue of named recipes is
``classgen_jax.recipes``.
"""

from __future__ import annotations

import dataclasses

from classgen_jax import objectives as obj
from classgen_jax.layer_objectives import LayerTerm
from classgen_jax.operations import Operation, ResizeCycle
from classgen_jax.parameterisations import Parameterisation, Pixels
from classgen_jax.starts import Start
from classgen_jax.terms import Term
from classgen_jax.updates import Gradient, Rule


@dataclasses.dataclass(frozen=True)
class Octave:
  """One stage of the optimisation at a fixed canvas size.

  Attributes:
    iterations: steps in this octave.
    objective: what the steps raise (``classgen_jax.objectives``).
    update: the update rule (``classgen_jax.updates``).
    step_size: (first, last) step size; linear in between.
    canvas: resize the image to this side (bilinear) before the octave;
      None keeps the size it has.
    resize: the cyclic resize within the octave (``ResizeCycle``), or None.
    before_resize: operations on the canvas before the cyclic resize, at
      the size the previous iteration left it, in order (without a resize,
      the same as the first of ``before``). They see no view region.
    before: operations on the canvas before the gradient, in order.
    view: operations from the canvas to the model's input, in order.
    after: operations on the canvas after the update, in order.
    views: augmented views per step: each draws its own ``view``
      operations (view 0 from the step's key, view ``k`` from the step key
      folded with ``k``), the model sees them as one batch, and the
      objective is their mean (Lucid's and MACO's several crops a step).
    image: what this octave's steps change, when not the recipe's ``image``
      (``Recipe.image_of``): an octave may take up the image the one before
      left in another parameterisation (it is encoded into it first).
    importance: also accumulate MACO's importance map: over the steps, the
      sum of the objective's gradient's size on each pixel of the image
      (Fel et al. 2023's transparency; ``Generation.importance``).
  """
  iterations: int
  objective: obj.Objective = obj.class_logit()
  update: Rule = Gradient()
  step_size: tuple[float, float] = (1.0, 1.0)
  canvas: int | None = None
  resize: ResizeCycle | None = None
  before_resize: tuple[Operation, ...] = ()
  before: tuple[Operation, ...] = ()
  view: tuple[Operation, ...] = ()
  after: tuple[Operation, ...] = ()
  views: int = 1
  image: Parameterisation | None = None
  importance: bool = False

  def __post_init__(self):
    if self.iterations < 1:
      raise ValueError(f"an octave needs at least 1 iteration, got {self.iterations}")
    if self.views < 1:
      raise ValueError(f"Octave.views must be at least 1, got {self.views}")
    for field in ("before_resize", "before", "view", "after"):
      for op in getattr(self, field):
        if not isinstance(op, Operation) or isinstance(op, ResizeCycle):
          raise ValueError(f"Octave.{field} takes operations of classgen_jax.operations "
                           f"(a ResizeCycle goes in Octave.resize), got {op!r}")

  @property
  def heads(self) -> tuple[str, ...]:
    return self.objective.heads

  @property
  def operations(self) -> tuple[Operation, ...]:
    """Every per-iteration operation, in the order they are applied."""
    return (*self.before_resize, *self.before, *self.view, *self.after)

  def scaled(self, factor: float) -> Octave:
    """The octave with every iteration count scaled by ``factor``."""
    scale = lambda ops: tuple(op.scaled(factor) for op in ops)  # noqa: E731
    return dataclasses.replace(
        self, iterations=max(1, round(self.iterations * factor)),
        resize=None if self.resize is None else self.resize.scaled(factor),
        before_resize=scale(self.before_resize), before=scale(self.before),
        view=scale(self.view), after=scale(self.after))


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A starting image and its octaves.

  Attributes:
    name: the recipe's name.
    start: the starting canvas (``classgen_jax.starts``): ``Uniform()``
      U(0, 1); ``Uniform(25, 0.5)`` U(0, 1)/25 + 0.5 (the article's stabler
      start); ``Normal(mean, std)``; ``Photo()`` (needs ``init=`` photos);
      ``Parameters()``: the image parameterisation's own random start
      (Lucid's small random spectrum).
    size: side of the starting canvas (a photo is resized to it).
    octaves: the stages, in order.
    description: one line, and where the technique comes from.
    image: what the steps change (``classgen_jax.parameterisations``):
      ``Pixels()``, or e.g. ``Sigmoid(Decorrelated(Fourier()))``. Any other
      than pixels takes no canvas operations (``before_resize``, ``before``,
      ``after``, ``resize``), which act on pixels.
    units: what a target is. None: a class of the main head. Else a family
      of a layer's units whose targets index them (``objectives.Channel(
      layer)``, ``Neuron(layer, None)``, ``Directions``; set by
      ``for_units``): the trace and final scores then rank a target among
      the family's units instead of the classes.
  """
  name: str
  start: Start
  size: int
  octaves: tuple[Octave, ...]
  description: str = ""
  image: Parameterisation = Pixels()
  units: Term | None = None

  def __post_init__(self):
    if not isinstance(self.start, Start):
      raise ValueError(f"recipe {self.name!r}: Recipe.start takes a start of "
                       "classgen_jax.starts (Uniform(), Uniform(25, 0.5), Normal(mean, std), "
                       f"Photo(), Parameters()), got {self.start!r}")
    if not self.octaves:
      raise ValueError("a recipe needs at least one octave")
    if self.units is not None and not _is_family(self.units):
      raise ValueError(f"recipe {self.name!r}: Recipe.units takes a family of units whose "
                       "targets index them, e.g. objectives.Channel(layer) (no channel), "
                       f"got {self.units}")
    for index, octave in enumerate(self.octaves):
      where = f"recipe {self.name!r} octave {index + 1}"
      octave.objective.check(f"{where} objective")
      image = self.image_of(index)
      if image.pixels:
        continue
      for field in ("before_resize", "before", "after", "resize"):
        if getattr(octave, field):
          raise ValueError(
              f"{where}: Octave.{field} acts on the canvas's pixels, but the recipe "
              f"optimises {image}; move the operation to Octave.view or use Pixels()")

  def image_of(self, index: int) -> Parameterisation:
    """What octave ``index``'s steps change: its own ``image``, else the recipe's."""
    return self.octaves[index].image or self.image

  @property
  def heads(self) -> tuple[str, ...]:
    """Every classifier head (class output) the recipe reads."""
    return tuple(dict.fromkeys(h for octave in self.octaves for h in octave.heads))

  @property
  def iterations(self) -> int:
    return sum(o.iterations for o in self.octaves)

  def scaled(self, factor: float) -> Recipe:
    """Every octave shortened (or lengthened) proportionally."""
    if factor <= 0:
      raise ValueError(f"steps_scale must be positive, got {factor}")
    return dataclasses.replace(self, octaves=tuple(o.scaled(factor) for o in self.octaves))

  def for_units(self, units: obj.Objective | Term) -> Recipe:
    """The recipe for a family of a layer's units (one image per unit):
    every octave's class terms replaced by ``units`` at their summed
    weight, its priors kept, ``Recipe.units`` set.

    >>> recipe = recipes.get("units").for_units(objectives.channel("inception4a"))

    Raises:
      ValueError: ``units`` is not one family whose targets index units, or
        an octave reads no class to replace.
    """
    terms = units.terms if isinstance(units, obj.Objective) else ((1.0, units),)
    if len(terms) != 1 or terms[0][0] != 1.0 or not _is_family(terms[0][1]):
      raise ValueError(f"for_units takes one family of units whose targets index them, e.g. "
                       f"objectives.channel(layer) without a channel; got {units}")
    family, octaves = terms[0][1], []
    for index, octave in enumerate(self.octaves):
      classes = [(w, t) for w, t in octave.objective.terms if t.head is not None]
      if not classes:
        raise ValueError(f"recipe {self.name!r} octave {index + 1} reads no class to replace "
                         "with the units")
      rest = tuple((w, t) for w, t in octave.objective.terms if t.head is None)
      weight = sum(w for w, _ in classes)
      octaves.append(dataclasses.replace(
          octave, objective=obj.Objective(((weight, family), *rest))))
    return dataclasses.replace(self, octaves=tuple(octaves), units=family)

  def with_head(self, head: str) -> Recipe:
    """The recipe with every objective term moved to ``head``."""
    return dataclasses.replace(self, octaves=tuple(
        dataclasses.replace(o, objective=o.objective.with_head(head)) for o in self.octaves))


def _is_family(term: Term) -> bool:
  return isinstance(term, LayerTerm) and term.indexes_units


__all__ = ["Octave", "Recipe"]
