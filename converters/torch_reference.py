"""The torch reference path: what the article's PyTorch code computes, batched.

``torch_outputs`` runs a torchvision module on NHWC images in [0, 1] and
returns the same named outputs as ``classgen_jax.Classifier`` (aux heads in
inference mode, which torchvision never runs: the article does the same by
calling the submodules one by one).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torchvision

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def to_nchw(images) -> torch.Tensor:
  """NHWC (numpy, jax or torch) to a torch NCHW tensor, dtype kept."""
  if not isinstance(images, torch.Tensor):
    import numpy as np
    images = torch.from_numpy(np.array(images))
  return images.permute(0, 3, 1, 2)


def normalize(x: torch.Tensor) -> torch.Tensor:
  mean = torch.tensor(_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
  std = torch.tensor(_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
  return (x - mean) / std


def torch_outputs(module: torch.nn.Module, x: torch.Tensor,
                  heads: Sequence[str] = ("logits",)) -> dict[str, torch.Tensor]:
  """Named outputs of an eval-mode torchvision classifier.

  Args:
    module: torchvision ``GoogLeNet``, ``Inception3`` or ``ResNet``, in eval
      mode.
    x: NCHW images in [0, 1] (normalised here, as torchvision's transforms do).
    heads: outputs to compute.
  """
  x = normalize(x)
  out: dict[str, torch.Tensor] = {}
  m = module
  if isinstance(m, torchvision.models.GoogLeNet):
    x = m._transform_input(x)
    x = m.maxpool1(m.conv1(x))
    x = m.maxpool2(m.conv3(m.conv2(x)))
    x = m.maxpool3(m.inception3b(m.inception3a(x)))
    x = m.inception4a(x)
    if "aux1" in heads:
      out["aux1"] = m.aux1(x)
    x = m.inception4d(m.inception4c(m.inception4b(x)))
    if "aux2" in heads:
      out["aux2"] = m.aux2(x)
    if "logits" in heads:
      x = m.maxpool4(m.inception4e(x))
      x = m.inception5b(m.inception5a(x))
      out["logits"] = m.fc(torch.flatten(m.avgpool(x), 1))
    return out
  if isinstance(m, torchvision.models.Inception3):
    x = m._transform_input(x)
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                 "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2", "Mixed_5b",
                 "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                 "Mixed_6d", "Mixed_6e"):
      x = getattr(m, name)(x)
    if "aux" in heads:
      out["aux"] = m.AuxLogits(x)
    if "logits" in heads:
      x = m.Mixed_7c(m.Mixed_7b(m.Mixed_7a(x)))
      out["logits"] = m.fc(torch.flatten(m.avgpool(x), 1))
    return out
  out["logits"] = m(x)
  return out


# ----------------------------------------------------------------------------
# The recipes in torch: the article's loop, batched, with injected randomness.


def _torch_objective(objective, outputs, images, targets):
  """``classgen_jax.objectives.Objective`` evaluated on torch tensors (NCHW)."""
  total = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)
  index = targets[:, None]
  for weight, term in objective.terms:
    if term.kind == "logit":
      value = outputs[term.head].gather(1, index)[:, 0]
    elif term.kind == "log_probability":
      value = torch.log_softmax(outputs[term.head], dim=1).gather(1, index)[:, 0]
    elif term.kind == "logit_distance":
      value = -(term.constant - outputs[term.head].gather(1, index)[:, 0]).abs()
    elif term.kind == "l1":
      value = images.abs().sum(dim=(1, 2, 3))
    elif term.kind == "total_variation":
      value = ((images[:, :, 1:] - images[:, :, :-1]).abs().sum(dim=(1, 2, 3))
               + (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().sum(dim=(1, 2, 3)))
    elif term.kind == "l2":
      value = (images - 0.5).square().sum(dim=(1, 2, 3))
    else:
      raise ValueError(f"unknown objective term {term.kind!r}")
    total = total + weight * value
  return total


class _TorchUpdate:
  """The update rules of ``classgen_jax.updates``, written out in torch."""

  def __init__(self, update, count):
    self.update, self.count, self.t = update, count, 0
    self.mu = self.nu = None

  def __call__(self, grad: torch.Tensor, lr: float) -> torch.Tensor:
    rule = self.update.rule
    if rule == "gradient":
      return -lr * grad
    if rule == "sign":
      return -lr * torch.sign(grad)
    if rule == "l1":
      count = self.count or grad[0].numel()
      mean = grad.abs().sum(dim=(1, 2, 3), keepdim=True) / count
      return -lr * grad / (mean + 1e-12)
    u = self.update  # Adam, as optax.scale_by_adam computes it
    self.t += 1
    if self.mu is None:
      self.mu, self.nu = torch.zeros_like(grad), torch.zeros_like(grad)
    self.mu = u.b1 * self.mu + (1 - u.b1) * grad
    self.nu = u.b2 * self.nu + (1 - u.b2) * grad.square()
    mu_hat = self.mu / (1 - u.b1 ** self.t)
    nu_hat = self.nu / (1 - u.b2 ** self.t)
    return -lr * mu_hat / (nu_hat.sqrt() + u.eps)


def _linear(pair, iterations, i):
  start, end = pair
  n = max(iterations, 1)
  return start + (end - start) * min(i, n) / n


def _blur(x, *, octave, offsets, crop_side, sigma):
  from converters import torch_transforms as TT
  if octave.blur_region == "crop" and crop_side:
    return TT.gaussian_blur_region(x, offsets, size=crop_side, sigma=sigma,
                                   kernel_size=octave.blur_kernel)
  return TT.gaussian_blur(x, sigma=sigma, kernel_size=octave.blur_kernel)


def torch_generate(module: torch.nn.Module, targets, recipe, init, draws) -> torch.Tensor:
  """A recipe run in torch, one iteration at a time, as the article's code.

  Args:
    module: an eval-mode torchvision classifier (its dtype and device set
      the run's: move it to CUDA to run the reference on a GPU).
    targets: ``(N,)`` class indices.
    recipe: a ``classgen_jax.recipes.Recipe``.
    init: ``(N, size, size, 3)`` starting images (NHWC, as the engine's).
    draws: ``classgen_jax.engine.random_draws(...)`` for the same images.

  Returns:
    The final images, NHWC, on the module's device, unclipped unless the
    recipe clips.
  """
  from classgen_jax import engine  # the sizes' bookkeeping is shared, not copied
  from converters import torch_transforms as TT

  parameter = next(module.parameters())
  x = to_nchw(init).to(parameter.device, parameter.dtype)
  targets = torch.as_tensor(targets, dtype=torch.long, device=parameter.device)
  for octave, sizes, octave_draws in zip(recipe.octaves, engine.octave_sizes(recipe), draws):
    o = octave
    if o.canvas is not None and o.canvas != x.shape[-1]:
      x = TT.resize(x, o.canvas, method="bilinear")
    update = None
    for i, d in enumerate(octave_draws):
      from_index, to_index = engine.cycle_index(o, len(sizes), i)
      side = sizes[to_index]
      if side != x.shape[-1]:
        x = TT.resize(x, side, method=o.interpolation)
      crop_side = o.crop if o.crop is not None and o.crop < side else None
      count = crop_side * crop_side * 3 if crop_side else None
      if update is None or update.count != count:
        update = update or _TorchUpdate(o.update, count)
        update.count = count
      if o.pad_value is not None:
        x = TT.fill_border(x, width=o.pad_width, value=o.pad_value)
      if o.brightness or o.contrast or o.saturation:
        enabled = (bool(o.brightness), bool(o.contrast), bool(o.saturation))
        x = TT.adjust_color(x, d.color.factors, d.color.order, enabled=enabled)
      blur_on = o.blur_sigma is not None and (o.blur_iterations is None
                                              or i < o.blur_iterations)
      sigma = _linear(o.blur_sigma, o.iterations, i) if o.blur_sigma else None
      blur = functools.partial(_blur, octave=o, offsets=d.crop, crop_side=crop_side,
                               sigma=sigma)
      if blur_on and o.blur_order == "before":
        x = blur(x)
      x = x.detach().requires_grad_(True)
      view = TT.crop(x, d.crop, size=crop_side) if crop_side else x
      if o.jitter:
        view = TT.shift(view, d.shift)
      if o.flip:
        view = TT.flip_horizontal(view, d.flip)
      outputs = torch_outputs(module, view, o.heads)
      loss = -_torch_objective(o.objective, outputs, view, targets).sum()
      (grad,) = torch.autograd.grad(loss, x)
      x = (x + update(grad, _linear(o.step_size, o.iterations, i))).detach()
      if blur_on and o.blur_order == "after":
        x = blur(x)
      if o.clip:
        x = TT.clip(x)
  return x.permute(0, 2, 3, 1)
