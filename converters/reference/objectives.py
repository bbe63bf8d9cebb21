"""Torch twins of ``classgen_jax.objectives``' terms, found by type.

Each twin takes the term, the forward pass's outputs (``loop.torch_pass``:
``Outputs`` of torch tensors), the NCHW view and the ``(N,)`` targets, and
returns ``(N,)`` values, higher is better.
"""

from __future__ import annotations

import torch

from classgen_jax import objectives as obj
from converters.reference._registry import Twins

TERMS = Twins("term")


def _target(outputs, head, targets):
  return outputs.heads[head].gather(1, targets[:, None])[:, 0]


@TERMS.register(obj.Logit)
def _logit(term, outputs, images, targets):
  return _target(outputs, term.head, targets)


@TERMS.register(obj.LogProbability)
def _log_probability(term, outputs, images, targets):
  return torch.log_softmax(outputs.heads[term.head], dim=1).gather(1, targets[:, None])[:, 0]


@TERMS.register(obj.LogitDistance)
def _logit_distance(term, outputs, images, targets):
  return -(term.constant - _target(outputs, term.head, targets)).abs()


@TERMS.register(obj.L1)
def _l1(term, outputs, images, targets):
  return images.abs().sum(dim=(1, 2, 3))


@TERMS.register(obj.TotalVariation)
def _total_variation(term, outputs, images, targets):
  return ((images[:, :, 1:] - images[:, :, :-1]).abs().sum(dim=(1, 2, 3))
          + (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().sum(dim=(1, 2, 3)))


@TERMS.register(obj.L2)
def _l2(term, outputs, images, targets):
  return (images - 0.5).square().sum(dim=(1, 2, 3))


@TERMS.register(obj.TotalVariationL2)
def _total_variation_l2(term, outputs, images, targets):
  diffs = (images[:, :, :, :-1] - images[:, :, :, 1:],
           images[:, :, :-1, :] - images[:, :, 1:, :],
           images[:, :, 1:, :-1] - images[:, :, :-1, 1:],
           images[:, :, :-1, :-1] - images[:, :, 1:, 1:])
  return sum(d.flatten(1).norm(dim=1) for d in diffs)


@TERMS.register(obj.L2Norm)
def _l2_norm(term, outputs, images, targets):
  return (images - 0.5).flatten(1).norm(dim=1)


@TERMS.register(obj.BatchNormStatistics)
def _batchnorm_statistics(term, outputs, images, targets):
  """DeepInversion's hook arithmetic, per image: ``outputs.batchnorm`` holds
  each BatchNorm2d's input, as ``loop.torch_pass`` records it with forward
  hooks, and the layer."""
  total = 0.0
  for index, (x, layer) in enumerate(outputs.batchnorm):
    mean = x.mean(dim=(2, 3))
    var = x.var(dim=(2, 3), unbiased=False)
    term_ = ((mean - layer.running_mean.to(x.dtype)).norm(dim=1)
             + (var - layer.running_var.to(x.dtype)).norm(dim=1))
    total = total + (term.first_layer if index == 0 else 1.0) * term_
  return total


@TERMS.register(obj.Channel)
def _channel(term, outputs, images, targets):
  value = outputs.layers[term.layer]
  means = value.flatten(2).mean(dim=2) if value.ndim > 2 else value
  if term.channel is None:
    return means.gather(1, targets[:, None])[:, 0]
  return means[:, term.channel]


@TERMS.register(obj.Neuron)
def _neuron(term, outputs, images, targets):
  value = outputs.layers[term.layer]
  if value.ndim > 2:
    y = value.shape[2] // 2 if term.y is None else term.y
    x = value.shape[3] // 2 if term.x is None else term.x
    value = value[:, :, y, x]
  if term.channel is None:
    return value.gather(1, targets[:, None])[:, 0]
  return value[:, term.channel]


@TERMS.register(obj.Direction)
def _direction(term, outputs, images, targets):
  """Lucid's dot product, and its ``cossim_pow`` weighting, per position."""
  value = outputs.layers[term.layer]
  vector = torch.tensor(term.vector, dtype=value.dtype, device=value.device)
  shape = (1, -1) + (1,) * (value.ndim - 2)
  dot = (value * vector.view(shape)).sum(dim=1)
  if term.cosine_power:
    cosine = dot / (value.norm(dim=1) * vector.norm() + 1e-6)
    dot = dot * cosine.clamp(min=0.1) ** term.cosine_power
  return dot.flatten(1).mean(dim=1) if dot.ndim > 1 else dot


@TERMS.register(obj.Directions)
def _directions(term, outputs, images, targets):
  """``_direction`` with each image's target's row of the table."""
  value = outputs.layers[term.layer]
  vectors = torch.tensor(term.vectors, dtype=value.dtype, device=value.device)[targets]
  shape = (value.shape[0], -1) + (1,) * (value.ndim - 2)
  dot = (value * vectors.view(shape)).sum(dim=1)
  if term.cosine_power:
    norms = vectors.norm(dim=1).view((-1,) + (1,) * (dot.ndim - 1))
    cosine = dot / (value.norm(dim=1) * norms + 1e-6)
    dot = dot * cosine.clamp(min=0.1) ** term.cosine_power
  return dot.flatten(1).mean(dim=1) if dot.ndim > 1 else dot


@TERMS.register(obj.MeanSquare)
def _mean_square(term, outputs, images, targets):
  value = outputs.layers[term.layer]
  return value.square().flatten(1).mean(dim=1)


@TERMS.register(obj.Diversity)
def _diversity(term, outputs, images, targets):
  """Lucid's diversity, per image: minus its Gram matrix's mean cosine
  similarity with the others of its group (every ``group`` images)."""
  value = outputs.layers[term.layer]
  flat = value.flatten(2) if value.ndim > 2 else value[:, :, None]  # (N, C, positions)
  grams = torch.bmm(flat, flat.transpose(1, 2)).flatten(1) / flat.shape[2]
  grams = torch.nn.functional.normalize(grams, dim=1, eps=0.0)
  values = []
  for block in grams.split(term.group):
    similarity = block @ block.T
    values.append(-(similarity.sum(dim=1) - similarity.diagonal()) / (term.group - 1))
  return torch.cat(values)


def objective(objective: obj.Objective, outputs, images, targets) -> torch.Tensor:
  """``Objective`` evaluated on torch tensors: its weighted sum of twins."""
  total = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)
  for weight, term in objective.terms:
    total = total + weight * TERMS(term, outputs, images, targets)
  return total
