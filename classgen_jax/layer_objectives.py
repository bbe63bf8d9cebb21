"""Objectives on what a layer sees (Olah et al., "Feature Visualization",
Distill 2017): terms on named activations (``Classifier.layers()``,
``classgen_jax.activations``), recorded during the pass. Also in
``classgen_jax.objectives``."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from classgen_jax._classifier import Needs, Outputs
from classgen_jax._sums import pairwise_sum
from classgen_jax.activations import LayerError
from classgen_jax.terms import Objective, Term


def _activation(outputs: Outputs, layer: str, images) -> jax.Array:
  value = outputs.layers[layer]
  return value.astype(jnp.promote_types(images.dtype, jnp.float32))


def _check_unit(layer: str, value, channel: int, y: int | None = None,
                x: int | None = None) -> None:
  """Raises a ``LayerError`` for a unit outside the layer (at trace time: an
  index past the end would be clamped silently)."""
  channels = value.shape[-1]
  if not 0 <= channel < channels:
    raise LayerError(f"layer {layer!r} has {channels} channels (0-{channels - 1}); "
                     f"channel {channel} is outside it")
  if value.ndim == 4 and y is not None and not (0 <= y < value.shape[1]
                                                and 0 <= x < value.shape[2]):
    raise LayerError(f"layer {layer!r} is {value.shape[1]}x{value.shape[2]} here; neuron "
                     f"({y}, {x}) is outside it: give y and x inside, or leave them for "
                     "the centre")


def _of_target(values: jax.Array, targets: jax.Array) -> jax.Array:
  """Each image's target's column of ``values`` ``(N, K)`` (NaN past the end)."""
  return jnp.take_along_axis(values, targets[:, None], axis=1, mode="fill")[:, 0]


class LayerTerm(Term):
  """A term that reads the named activation ``layer``.

  A term whose targets index a layer's units (``Channel(layer)``,
  ``Neuron(layer)``, ``Directions``) also gives every unit's value,
  ``values(outputs, images) -> (N, K)``, and their names (``unit_names``):
  what ``Recipe.for_units`` needs to make one image per unit.
  """
  layer: str
  unit: ClassVar[str] = "unit"  # what one of the family is called

  @property
  def needs(self) -> Needs:
    return Needs(layers=(self.layer,))

  def values(self, outputs: Outputs, images: jax.Array) -> jax.Array:
    """``(N, K)``: every unit of the family, per image."""
    raise NotImplementedError(f"{type(self).__name__} is not a family of units")

  def unit_names(self, shape: tuple[int, ...]) -> tuple[str, ...]:
    """The family's units, named, for a layer of output ``shape`` (one image's)."""
    raise NotImplementedError(f"{type(self).__name__} is not a family of units")

  def check_layer(self, shape: tuple[int, ...]) -> None:
    """Raises a ``LayerError`` where the term does not fit a layer of output
    ``shape`` (one image's, at the native size)."""
    del shape

  def check_view(self, shape: tuple[int, ...], side: int) -> None:
    """Raises a ``LayerError`` where the term does not fit the layer's output
    ``shape`` for a view of ``side`` px (a neuron's position)."""
    del shape, side


def _check_channel(layer: str, shape: tuple[int, ...], channel: int | None) -> None:
  if channel is not None and not 0 <= channel < shape[-1]:
    raise LayerError(f"layer {layer!r} has {shape[-1]} channels (0-{shape[-1] - 1}); "
                     f"channel {channel} is outside it")


def _check_length(layer: str, shape: tuple[int, ...], length: int) -> None:
  if length != shape[-1]:
    raise LayerError(f"layer {layer!r} has {shape[-1]} channels; a direction has {length} "
                     "numbers: give one per channel")


@dataclasses.dataclass(frozen=True)
class Channel(LayerTerm):
  """The mean over positions of ``channel`` of ``layer`` (Lucid's
  ``objectives.channel``); a pooled layer's value itself. ``channel=None``:
  each image's target is its channel, so one compiled program makes every
  channel of a layer, a batch of them at a time (targets must then be
  channels of the layer; one past the end reads NaN)."""
  layer: str
  channel: int | None = None
  unit: ClassVar[str] = "channel"

  @property
  def indexes_units(self) -> bool:
    return self.channel is None

  def values(self, outputs, images):
    value = _activation(outputs, self.layer, images)
    return jnp.mean(value, axis=tuple(range(1, value.ndim - 1)))

  def unit_names(self, shape):
    return tuple(f"{self.layer} channel {c}" for c in range(shape[-1]))

  def check_layer(self, shape):
    _check_channel(self.layer, shape, self.channel)

  def __call__(self, outputs, images, targets):
    means = self.values(outputs, images)
    if self.channel is None:
      return _of_target(means, targets)
    _check_unit(self.layer, outputs.layers[self.layer], self.channel)
    return means[:, self.channel]

  def check(self, where: str) -> None:
    if self.channel is not None and self.channel < 0:
      raise ValueError(f"{where}: a channel is >= 0, got {self.channel}")


@dataclasses.dataclass(frozen=True)
class Neuron(LayerTerm):
  """One unit of ``layer``: ``channel`` at position ``(y, x)`` of its map,
  the centre by default (Lucid's ``objectives.neuron``). ``channel=None``:
  each image's target is its channel, at that position."""
  layer: str
  channel: int | None
  y: int | None = None
  x: int | None = None
  unit: ClassVar[str] = "neuron"

  @property
  def indexes_units(self) -> bool:
    return self.channel is None

  def values(self, outputs, images):
    """Every channel at the neuron's position, ``(N, C)``."""
    value = _activation(outputs, self.layer, images)
    if value.ndim == 2:
      return value
    y = value.shape[1] // 2 if self.y is None else self.y
    x = value.shape[2] // 2 if self.x is None else self.x
    _check_unit(self.layer, value, 0 if self.channel is None else self.channel, y, x)
    return value[:, y, x, :]

  def unit_names(self, shape):
    at = "" if self.y is None or len(shape) < 3 else f" at ({self.y}, {self.x})"
    return tuple(f"{self.layer} neuron {c}{at}" for c in range(shape[-1]))

  def check_layer(self, shape):
    _check_channel(self.layer, shape, self.channel)

  def check_view(self, shape, side):
    if self.y is not None and len(shape) == 3 and not (0 <= self.y < shape[0]
                                                       and 0 <= self.x < shape[1]):
      raise LayerError(f"layer {self.layer!r} is {shape[0]}x{shape[1]} in the recipe's {side} px "
                       f"views; neuron ({self.y}, {self.x}) is outside it: give a position "
                       f"inside (0-{shape[0] - 1}, 0-{shape[1] - 1}), or none for the centre")

  def __call__(self, outputs, images, targets):
    values = self.values(outputs, images)
    if self.channel is None:
      return _of_target(values, targets)
    _check_unit(self.layer, values, self.channel)
    return values[:, self.channel]

  def check(self, where: str) -> None:
    if (self.channel is not None and self.channel < 0) or (self.y is None) != (self.x is None):
      raise ValueError(f"{where}: a neuron has a channel >= 0 (or None: the target) and both "
                       f"y and x, or neither (the centre); got {self}")


@dataclasses.dataclass(frozen=True)
class Direction(LayerTerm):
  """The mean over positions of the dot product of ``layer``'s activation
  with ``vector`` (Lucid's ``objectives.direction``); with ``cosine_power``
  p > 0, each position's dot product is weighted by ``max(cos, 0.1)^p``, the
  cosine of the angle between the two (Lucid's ``cossim_pow``), which favours
  the direction over sheer magnitude."""
  layer: str
  vector: tuple[float, ...]
  cosine_power: float = 0.0

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    if value.shape[-1] != len(self.vector):
      raise LayerError(f"layer {self.layer!r} has {value.shape[-1]} channels; the "
                       f"direction has {len(self.vector)}")
    vector = jnp.asarray(self.vector, value.dtype)
    norms = jnp.sqrt(jnp.sum(jnp.square(value), axis=-1)) * jnp.sqrt(jnp.sum(vector**2))
    dot = _cosine_weighted(value @ vector, norms, self.cosine_power)
    return jnp.mean(dot, axis=tuple(range(1, dot.ndim)))

  def check(self, where: str) -> None:
    _check_direction(where, self.vector, self.cosine_power)

  def check_layer(self, shape):
    _check_length(self.layer, shape, len(self.vector))


def _cosine_weighted(dot, norms, power: float):
  """Lucid's ``cossim_pow``: ``dot`` weighted by ``max(cos, 0.1)^power``,
  ``norms`` the product of the two vectors' lengths."""
  if not power:
    return dot
  return dot * jnp.maximum(dot / (norms + 1e-6), 0.1) ** power


def _check_direction(where: str, vector, cosine_power: float) -> None:
  if not vector or not all(math.isfinite(v) for v in vector):
    raise ValueError(f"{where}: a direction is a non-empty vector of finite numbers")
  if not (math.isfinite(cosine_power) and cosine_power >= 0):
    raise ValueError(f"{where}: cosine_power must be finite and >= 0, got {cosine_power}")


@dataclasses.dataclass(frozen=True, repr=False)
class Directions(LayerTerm):
  """A table of directions in ``layer``'s channel space, one per target:
  image ``j`` raises ``Direction(layer, vectors[target_j], cosine_power)``
  (a unit atlas of directions, e.g. from a file of NMF or CAV vectors).
  Shown by its size and a digest, not its numbers."""
  layer: str
  vectors: tuple[tuple[float, ...], ...]
  cosine_power: float = 0.0
  unit: ClassVar[str] = "direction"

  @property
  def indexes_units(self) -> bool:
    return True

  def values(self, outputs, images):
    """Every direction's value, ``(N, D)``."""
    value = _activation(outputs, self.layer, images)
    if value.shape[-1] != len(self.vectors[0]):
      raise LayerError(f"layer {self.layer!r} has {value.shape[-1]} channels; the "
                       f"directions have {len(self.vectors[0])}")
    matrix = jnp.asarray(self.vectors, value.dtype)
    norms = (jnp.sqrt(jnp.sum(jnp.square(value), axis=-1, keepdims=True))
             * jnp.sqrt(jnp.sum(matrix**2, axis=1)))
    dot = _cosine_weighted(value @ matrix.T, norms, self.cosine_power)
    return jnp.mean(dot, axis=tuple(range(1, dot.ndim - 1)))

  def unit_names(self, shape):
    return tuple(f"{self.layer} direction {d}" for d in range(len(self.vectors)))

  def check_layer(self, shape):
    _check_length(self.layer, shape, len(self.vectors[0]))

  def __call__(self, outputs, images, targets):
    return _of_target(self.values(outputs, images), targets)

  def check(self, where: str) -> None:
    if not self.vectors or len({len(v) for v in self.vectors}) != 1:
      raise ValueError(f"{where}: directions are one table of vectors of one length, "
                       "non-empty")
    for vector in self.vectors:
      _check_direction(where, vector, self.cosine_power)

  def digest(self) -> str:
    """The first 12 hex digits of a SHA-256 of the vectors' float64 values."""
    data = ",".join(repr(float(v)) for vector in self.vectors for v in vector)
    return hashlib.sha256(data.encode()).hexdigest()[:12]

  def __repr__(self) -> str:
    return (f"Directions(layer={self.layer!r}, vectors=<{len(self.vectors)} x "
            f"{len(self.vectors[0]) if self.vectors else 0}, sha256:{self.digest()}>, "
            f"cosine_power={self.cosine_power!r})")

  __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class MeanSquare(LayerTerm):
  """DeepDream's objective: the mean square of ``layer``'s activation."""
  layer: str

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    return jnp.mean(jnp.square(value), axis=tuple(range(1, value.ndim)))


@dataclasses.dataclass(frozen=True)
class Diversity(LayerTerm):
  """Lucid's diversity term: images of one objective that differ from each
  other. Per image, minus the mean cosine similarity of its Gram matrix at
  ``layer`` (channels x channels, averaged over positions) with those of
  the other images of its group.

  This term couples images, so it works on explicit groups: every
  ``group`` consecutive images of a target (its restarts ``0..group-1``,
  then ``group..2*group-1``, ...), and ``generate`` needs ``restarts`` to
  be a multiple of ``group`` and one view per image. The images of a group
  are reproducible together: the same seed and the same group give the
  same images, bit for bit, whatever else is in the batch (the model then
  runs one image at a time, as for the BatchNorm prior). An image is no
  longer reproducible alone: it depends on the rest of its group.
  """
  layer: str
  group: int

  @property
  def couples(self) -> int:
    return self.group

  def __call__(self, outputs, images, targets):
    value = _activation(outputs, self.layer, images)
    n, k = value.shape[0], self.group
    if n % k:
      raise ValueError(f"diversity: a batch of {n} images is not whole groups of {k}")
    flat = value.reshape(n, -1, value.shape[-1])
    grams = jnp.einsum("npc,npd->ncd", flat, flat).reshape(n, -1) / flat.shape[1]
    norms = jnp.sqrt(pairwise_sum(jnp.square(grams), (1,)))
    grams = (grams / (norms[:, None] + 1e-12)).reshape(n // k, k, -1)
    similarity = pairwise_sum(grams[:, :, None, :] * grams[:, None, :, :], (3,))
    others = jnp.where(jnp.eye(k, dtype=bool), 0.0, similarity)
    return -(pairwise_sum(others, (2,)) / (k - 1)).reshape(n)

  def check(self, where: str) -> None:
    if self.group < 2:
      raise ValueError(f"{where}: diversity needs a group of at least 2 images, got "
                       f"group={self.group}: several images of one objective (e.g. group=4 "
                       "with restarts=4)")


def channel(layer: str, channel: int | None = None) -> Objective:
  """The mean of one channel of a layer over its positions (``Channel``;
  ``None``: the image's target is the channel)."""
  return Objective(((1.0, Channel(layer, None if channel is None else int(channel))),))


def neuron(layer: str, channel: int | None = None, y: int | None = None,
           x: int | None = None) -> Objective:
  """One unit of a layer, at the centre of its map by default (``Neuron``;
  ``channel=None``: the image's target is the channel)."""
  return Objective(((1.0, Neuron(layer, None if channel is None else int(channel),
                                 None if y is None else int(y),
                                 None if x is None else int(x))),))


def direction(layer: str, vector, cosine_power: float = 0.0) -> Objective:
  """A layer's activation along ``vector`` (one number per channel;
  ``Direction``)."""
  return Objective(((1.0, Direction(layer, tuple(float(v) for v in vector),
                                    float(cosine_power))),))


def directions(layer: str, vectors, cosine_power: float = 0.0) -> Objective:
  """A table of directions of a layer, one per target (``Directions``):
  ``vectors`` is ``(D, channels)``; image ``j`` raises row ``target_j``."""
  table = tuple(tuple(float(v) for v in row) for row in vectors)
  return Objective(((1.0, Directions(layer, table, float(cosine_power))),))


def layer(name: str) -> Objective:
  """DeepDream's objective on a layer: its mean square (``MeanSquare``)."""
  return Objective(((1.0, MeanSquare(name)),))


def diversity(layer: str, group: int) -> Objective:
  """Images of a group that differ at ``layer`` (``Diversity``): add it,
  weighted, to another objective, e.g. ``channel(l, 3) + 0.5 * diversity(l,
  4)`` with ``restarts=4``."""
  return Objective(((1.0, Diversity(layer, int(group))),))
