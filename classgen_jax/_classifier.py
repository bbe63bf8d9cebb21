"""The ``Classifier``: a Flax model, its weights, and what a caller needs to know.

Data contract: ``clf(images)`` takes NHWC floating images in [0, 1]; the
model applies its own input normalisation. It returns a mapping of named
outputs (``"logits"`` always; ``"aux"``, ``"aux1"``, ``"aux2"`` where the
model has them). ``outputs(images, needs)`` returns what an objective needs
of one forward pass: its heads, and intermediate values recorded during the
pass only when asked (``Needs``), such as every BatchNorm layer's input
statistics.

Input normalisation (``Classifier.normalisation``), the one choice a caller
makes at the model boundary:

* ``"imagenet"`` (default): ImageNet's mean/std, as torchvision's transforms
  feed its models, then (GoogLeNet, Inception-v3) torchvision's
  ``transform_input``. What the weights were trained on.
* ``"none"``: the article's code as printed, which feeds [0, 1] images
  straight into the torchvision model: no normalisation beyond the model's
  own ``transform_input``. The model sees a dimmer, lower-contrast image,
  and every gradient with respect to the image is about std = 0.23 times
  the ``"imagenet"`` one, so a step size tuned under one reading is about
  4.4 times too large (or small) under the other.

EfficientNet-Lite's input scaling, ``(255 x - 127) / 128``, is the model's
own (like ``transform_input``): both readings give it the same input.

A ``Classifier`` is a pytree whose only leaves are its weights, so it can be
passed straight into ``jax.jit``/``vmap``/``grad``: the weights reach the
compiled program as an argument, never as constants folded into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import activations, imagenet, models
from classgen_jax.models import GoogLeNet, Inception3, ResNet, VisionTransformer
from classgen_jax.models._layers import IMAGENET_MEAN, IMAGENET_STD

_MAX_SIDE = 8192
NORMALISATIONS = ("imagenet", "none")
# The ports that normalise with ImageNet's statistics (EfficientNet-Lite's
# scaling is its own).
_IMAGENET_NORMALISED = (GoogLeNet, Inception3, ResNet, VisionTransformer)

class InputError(ValueError):
  """Images that the classifier cannot take (rank, channels, dtype, size)."""


@dataclasses.dataclass(frozen=True)
class Needs:
  """What an objective reads of a forward pass (``Objective.needs``).

  Attributes:
    heads: class outputs, by name (``Classifier.heads``).
    batchnorm: every BatchNorm layer's input statistics (DeepInversion's
      feature prior, ``objectives.BatchNormStatistics``); only models with
      BatchNorm have them.
    layers: named activations (``Classifier.layers()``), by torch name.
  """
  heads: tuple[str, ...] = ()
  batchnorm: bool = False
  layers: tuple[str, ...] = ()

  def __or__(self, other: Needs) -> Needs:
    """What either needs (heads and layers in first-use order)."""
    return Needs(tuple(dict.fromkeys((*self.heads, *other.heads))),
                 self.batchnorm or other.batchnorm,
                 tuple(dict.fromkeys((*self.layers, *other.layers))))


class BatchNormInput(NamedTuple):
  """One BatchNorm layer's input statistics, each ``(N, C)``: the mean and
  (biased) variance over each image's own pixels, and the layer's running
  statistics (the same for every image)."""
  mean: Any
  var: Any
  running_mean: Any
  running_var: Any


class Outputs(NamedTuple):
  """What one forward pass gives an objective (``Classifier.outputs``).

  Attributes:
    heads: ``{head: (N, num_classes)}`` for the heads asked for.
    batchnorm: with ``Needs.batchnorm``, a ``BatchNormInput`` per BatchNorm
      layer, in the order the pass meets them; else ``()``.
    layers: ``{name: (N, H, W, C) or (N, C)}`` for ``Needs.layers``.
  """
  heads: Mapping[str, Any]
  batchnorm: tuple[BatchNormInput, ...] = ()
  layers: Mapping[str, Any] = {}  # (a pytree; never written to)


@functools.cache
def _min_side(module: nn.Module, head: str) -> int:
  low, high = 1, _MAX_SIDE
  while low < high:  # spatial_size is non-decreasing in the input side
    mid = (low + high) // 2
    if module.spatial_size(mid, head) >= 1:
      high = mid
    else:
      low = mid + 1
  return low


@dataclasses.dataclass(frozen=True)
class Classifier:
  """An ImageNet classifier in Flax.

  Attributes:
    module: the Flax module (architecture and configuration).
    variables: its weights, ``{"params": ..., "batch_stats": ...}``.
    name: model name, e.g. ``"googlenet"``.
    input_size: native input side in pixels (224 for GoogLeNet).
    labels: one name per class.
    normalisation: ``"imagenet"`` or ``"none"`` (the article's reading); see
      the module doc.
  """
  module: nn.Module
  variables: Any
  name: str
  input_size: int
  labels: tuple[str, ...] = imagenet.LABELS
  normalisation: str = "imagenet"

  def __post_init__(self):
    if self.normalisation not in NORMALISATIONS:
      raise InputError(f"Classifier.normalisation must be one of {', '.join(NORMALISATIONS)}; "
                       f"got {self.normalisation!r}")

  @property
  def heads(self) -> tuple[str, ...]:
    """Names of the outputs this model can compute."""
    return tuple(self.module.heads)

  @property
  def has_batchnorm(self) -> bool:
    """Whether the model has BatchNorm layers (running statistics)."""
    return bool(jax.tree_util.tree_leaves((self.variables or {}).get("batch_stats", {})))

  @property
  def num_classes(self) -> int:
    return self.module.num_classes

  @property
  def dtype(self) -> jnp.dtype:
    """dtype of the weights."""
    return jax.tree_util.tree_leaves(self.variables.get("params", self.variables))[0].dtype

  def with_gradient_kernels(self) -> Classifier:
    """The same classifier, with each convolution's input-gradient kernel
    (its kernel flipped and transposed) computed once and kept beside its
    weights. For a program that takes many input gradients with the same
    weights, such as an octave's loop: call it inside the program, before
    the loop (XLA does not hoist that work out of a loop by itself).
    Gradients and outputs are unchanged, bit for bit."""
    layers = models.conv_layers(self.module, self.input_size)
    return dataclasses.replace(
        self, variables=models.with_gradient_kernels(layers, self.variables))

  def min_input_size(self, head: str = "logits") -> int:
    """The smallest image side that ``head`` can be computed at."""
    self._check_heads((head,))
    return _min_side(self.module, head)

  def layers(self) -> tuple[activations.Layer, ...]:
    """Every named activation an objective can read (``objectives.channel``
    and its kin), in the order the forward pass meets them: torch's module
    names, and each output's shape for one image at the native input size
    (see ``classgen_jax.activations``).

    >>> [l.name for l in load_classifier("resnet18").layers()][:3]  # doctest: +SKIP
    ['conv1', 'bn1', 'layer1.0.conv1']
    """
    return activations.layers(self.module, self.input_size)

  def parameter_counts(self) -> list[tuple[str, int]]:
    """``(name, size)`` of every parameter tensor, in torch's dotted naming.

    BatchNorm running statistics are state, not parameters, and are left out,
    as ``torch.nn.Module.named_parameters`` does.
    """
    flat = flax.traverse_util.flatten_dict(self.variables.get("params", {}))
    return [(".".join(path), int(np.prod(leaf.shape))) for path, leaf in flat.items()]

  def with_normalisation(self, normalisation: str) -> Classifier:
    """The same classifier with another input normalisation (``NORMALISATIONS``).

    >>> article = load_classifier("inception_v3").with_normalisation("none")  # doctest: +SKIP
    """
    return dataclasses.replace(self, normalisation=normalisation)

  def astype(self, dtype: Any) -> Classifier:
    """The same classifier with its weights cast to ``dtype``."""
    cast = jax.tree_util.tree_map(lambda v: v.astype(dtype), self.variables)
    return dataclasses.replace(self, variables=cast)

  def __call__(self, images: jax.Array, *,
               heads: Sequence[str] | None = None) -> Mapping[str, jax.Array]:
    """Class outputs for a batch of images.

    Args:
      images: ``(N, H, W, 3)`` floats in [0, 1].
      heads: the outputs to compute (default: all). Heads not asked for cost
        nothing: the forward pass stops after the last one needed.

    Returns:
      ``{head: (N, num_classes) array}``.

    Raises:
      InputError: wrong rank, channel count, dtype, or a size the head cannot
        take.
    """
    heads = self.heads if heads is None else heads
    needs = Needs(heads if isinstance(heads, str) else tuple(heads))
    if isinstance(images, jax.core.Tracer):  # inside the caller's jit or grad
      return self.outputs(images, needs).heads
    # Called eagerly: one compiled program rather than one per layer (its
    # checks raise while tracing, as eagerly).
    return _compiled_heads(self, images, needs)

  def outputs(self, images: jax.Array, needs: Needs) -> Outputs:
    """What ``needs`` asks of one forward pass over ``images``.

    The values recorded during the pass (``Needs.batchnorm``,
    ``Needs.layers``) are read by intercepting the layers as the pass runs;
    a pass that does not ask for them pays nothing (it is the bare model's).
    The pass stops after the last head needed (the first head, when only
    recorded values are; under ``jax.jit`` XLA drops what no output uses).

    Raises:
      InputError: as ``__call__``; BatchNorm statistics of a model without
        BatchNorm.
      LayerError: a layer the model does not have.
    """
    if needs.batchnorm and not self.has_batchnorm:
      raise InputError(f"{self.name} has no BatchNorm layer, so no BatchNorm statistics; "
                       "drop the objective's BatchNorm term or use a model with BatchNorm")
    wanted: dict[str, list[tuple[str, str]]] = {}
    for name in needs.layers:
      source = activations.resolve(self.module, self.input_size, name, self.name)
      wanted.setdefault(source.module, []).append((name, source.part))
    heads = needs.heads or (self.heads[:1] if needs.batchnorm or needs.layers else ())
    self._check_heads(heads)
    self._check_images(images, heads)
    if self.normalisation == "none" and isinstance(self.module, _IMAGENET_NORMALISED):
      # The port normalises inside; mapping x to x * std + mean first makes
      # it see x itself (exact up to rounding), without a second port.
      mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
      std = jnp.asarray(IMAGENET_STD, images.dtype)
      images = images * std + mean
    if not needs.batchnorm and not wanted:
      return Outputs(self.module.apply(self.variables, images, heads=heads))
    statistics, recorded = [], {}
    with contextlib.ExitStack() as stack:
      if needs.batchnorm:
        stack.enter_context(nn.intercept_methods(
            functools.partial(_record_batchnorm_input, statistics)))
      if wanted:
        stack.enter_context(nn.intercept_methods(
            activations.recorder(self.module, wanted, recorded, images.shape)))
      outputs = self.module.apply(self.variables, images, heads=heads)
    return Outputs(outputs, tuple(statistics),
                   {name: recorded[name] for name in needs.layers})

  def _check_heads(self, heads: tuple[str, ...]) -> None:
    if isinstance(heads, str):
      raise InputError(f"heads must be a sequence of names, e.g. ({heads!r},)")
    unknown = [h for h in heads if h not in self.heads]
    if unknown or not heads:
      raise InputError(
          f"{self.name} has no head {unknown[0] if unknown else '(none asked)'}"
          f"; its heads are {', '.join(self.heads)}")

  def _check_images(self, images: Any, heads: tuple[str, ...]) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
      extra = ("; add a batch axis with images[None]"
               if shape is not None and len(shape) == 3 else "")
      raise InputError(f"{self.name} takes a batch of images of shape "
                       f"(N, H, W, 3), got shape {shape}{extra}")
    if shape[-1] != 3:
      raise InputError(
          f"{self.name} takes RGB images with 3 channels on the last axis "
          f"(NHWC), got {shape[-1]} in shape {tuple(shape)}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise InputError(f"{self.name} takes floating images in [0, 1], got "
                       f"{images.dtype}; convert with images / 255.0")
    height, width = shape[1:3]
    for head in heads:
      need = _min_side(self.module, head)
      if min(height, width) < need:
        raise InputError(
            f"{self.name}'s {head!r} head needs images of at least "
            f"{need}x{need} (native {self.input_size}x{self.input_size}), got "
            f"{height}x{width}; resize the images or pick another head")


@functools.partial(jax.jit, static_argnames="needs")
def _compiled_heads(classifier: Classifier, images: jax.Array,
                    needs: Needs) -> Mapping[str, jax.Array]:
  return classifier.outputs(images, needs).heads


def _record_batchnorm_input(statistics: list, next_fun, args, kwargs, context):
  """A Flax method interceptor: appends each BatchNorm call's input statistics."""
  module = context.module
  if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
    x = args[0]
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean, var = _moments(x, tuple(range(1, x.ndim - 1)))
    # The running statistics repeated per image: every output has the batch
    # axis first, so callers can split and join batches uniformly.
    running = [jnp.broadcast_to(module.get_variable("batch_stats", name).astype(x.dtype),
                                mean.shape) for name in ("mean", "var")]
    statistics.append(BatchNormInput(mean, var, *running))
  return next_fun(*args, **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _moments(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """The mean and biased variance of ``x`` over ``axes``.

  Its gradient is one elementwise pass, ``(g_mean + 2 (x - mean) g_var) / n``
  (the variance's term through the mean is zero: the deviations sum to
  zero); autodiff's took several passes over every BatchNorm layer's input,
  a fifth of DeepInversion's step on the CPU.
  """
  mean = jnp.mean(x, axis=axes)
  return mean, jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)


def _moments_fwd(x, axes):
  mean, var = _moments(x, axes)
  return (mean, var), (x, mean)


def _moments_bwd(axes, residuals, cotangents):
  x, mean = residuals
  g_mean, g_var = (jnp.expand_dims(g, axes) for g in cotangents)
  count = np.prod([x.shape[a] for a in axes])
  return ((g_mean + 2 * (x - jnp.expand_dims(mean, axes)) * g_var) / count,)


_moments.defvjp(_moments_fwd, _moments_bwd)


jax.tree_util.register_dataclass(
    Classifier, data_fields=["variables"],
    meta_fields=["module", "name", "input_size", "labels", "normalisation"])
