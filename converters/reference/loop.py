"""The torch reference path: what the article's PyTorch code computes, batched.

``torch_outputs`` runs a torchvision module on NHWC images in [0, 1] and
returns the same named outputs as ``classgen_jax.Classifier`` (aux heads in
inference mode, which torchvision never runs: the article does the same by
calling the submodules one by one); ``torch_pass`` what an objective needs
of the pass, as ``Classifier.outputs`` (recorded with forward hooks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision

from classgen_jax import Needs, Outputs
from converters.reference import transforms as TT
from converters.reference import vit
from converters.reference.objectives import objective
from converters.reference.operations import OPERATIONS, Context, linear
from converters.reference.parameterisations import encode, render
from converters.reference.updates import stepper

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_nchw(images) -> torch.Tensor:
  """NHWC (numpy, jax or torch) to a torch NCHW tensor, dtype kept."""
  if not isinstance(images, torch.Tensor):
    import numpy as np
    images = torch.from_numpy(np.array(images))
  return images.permute(0, 3, 1, 2)


def normalize(x: torch.Tensor) -> torch.Tensor:
  mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
  return (x - mean) / std


def torch_outputs(module: torch.nn.Module, x: torch.Tensor,
                  heads: Sequence[str] = ("logits",),
                  normalisation: str = "imagenet") -> dict[str, torch.Tensor]:
  """Named outputs of an eval-mode torchvision classifier.

  Args:
    module: torchvision ``GoogLeNet``, ``Inception3``, ``ResNet`` or
      ``VisionTransformer`` (at any size: ``vit.forward``), or
      ``efficientnet_lite_pytorch``'s EfficientNet-Lite (its checkpoint's
      own input scaling, ``(255 x - 127) / 128``), in eval mode.
    x: NCHW images in [0, 1].
    heads: outputs to compute.
    normalisation: ``"imagenet"``: normalised here, as torchvision's
      transforms do; ``"none"``: fed as they are, as the article's code does
      (``classgen_jax.Classifier.normalisation``).
  """
  if normalisation not in ("imagenet", "none"):
    raise ValueError(f"normalisation must be 'imagenet' or 'none', got {normalisation!r}")
  out: dict[str, torch.Tensor] = {}
  m = module
  if type(m).__module__.startswith("efficientnet_lite_pytorch"):
    # The checkpoint's own scaling, whatever the normalisation (as the port).
    out["logits"] = m((255.0 * x - 127.0) / 128.0)
    return out
  if normalisation == "imagenet":
    x = normalize(x)
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
  if isinstance(m, torchvision.models.VisionTransformer):
    out["logits"] = vit.forward(m, x)  # other sizes too, as classgen_jax's port
    return out
  out["logits"] = m(x)
  return out


def torch_pass(module: torch.nn.Module, x: torch.Tensor, needs: Needs,
               normalisation: str = "imagenet") -> Outputs:
  """What ``needs`` asks of one forward pass, as ``Classifier.outputs``:
  ``Outputs.batchnorm`` holds, recorded with forward hooks (as DeepInversion
  does), ``(input, layer)`` of every ``BatchNorm2d`` the pass runs, in order;
  ``Outputs.layers`` each named module's output (NCHW, or ``(N, C)``), by a
  forward hook on ``module.get_submodule(name)`` (a ViT's: ``vit.hook``)."""
  heads = needs.heads or ("logits",)
  if not needs.batchnorm and not needs.layers:
    return Outputs(torch_outputs(module, x, heads, normalisation))
  recorded, layers = [], {}
  hooks = [] if not needs.batchnorm else [layer.register_forward_hook(
      lambda layer, inputs, output: recorded.append((inputs[0], layer)))
      for layer in module.modules() if isinstance(layer, torch.nn.BatchNorm2d)]

  def keep(name):
    def hook(layer, inputs, output):
      # A copy: torchvision's in-place ReLUs would overwrite a BatchNorm's
      # output after the hook (a hook that returns None keeps the output).
      layers.setdefault(name, output.clone())
    return hook

  for name in needs.layers:
    if isinstance(module, torchvision.models.VisionTransformer):
      grid = (x.shape[2] // module.patch_size, x.shape[3] // module.patch_size)
      hooks.append(vit.hook(module, name, grid, layers))
    else:
      hooks.append(module.get_submodule(name).register_forward_hook(keep(name)))
  try:
    out = torch_outputs(module, x, heads, normalisation)
  finally:
    for hook in hooks:
      hook.remove()
  return Outputs(out, tuple(recorded), layers)


# ----------------------------------------------------------------------------
# The recipes in torch: the article's loop, batched, with injected randomness.


def torch_generate(module: torch.nn.Module, targets, recipe, init, draws,
                   normalisation: str = "imagenet") -> torch.Tensor:
  """A recipe run in torch, one iteration at a time, as the article's code.

  Every operation, objective term, update rule and image parameterisation
  runs as its torch twin (``operations``, ``objectives``, ``updates``,
  ``parameterisations`` of this package), with the engine's own draws.
  A recipe whose image is not pixels encodes the image at each octave's
  start, renders it every step, and steps its parameters.

  Args:
    module: an eval-mode torchvision classifier (its dtype and device set
      the run's: move it to CUDA to run the reference on a GPU).
    targets: ``(N,)`` class indices.
    recipe: a ``classgen_jax.recipes.Recipe``.
    init: ``(N, size, size, 3)`` starting images (NHWC, as the engine's).
    draws: ``classgen_jax.step.random_draws(...)`` for the same images.
    normalisation: the input normalisation, as the classifier's
      (``torch_outputs``).

  Returns:
    The final images, NHWC, on the module's device, unclipped unless the
    recipe clips.
  """
  from classgen_jax import plans as plans_lib  # the sizes' bookkeeping is shared, not copied

  parameter = next(module.parameters())
  x = to_nchw(init).to(parameter.device, parameter.dtype)
  targets = torch.as_tensor(targets, dtype=torch.long, device=parameter.device)
  for plan, octave_draws in zip(plans_lib.octave_plans(recipe), draws):
    octave, sides = plan.octave, plan.sides
    if octave.canvas is not None and octave.canvas != x.shape[-1]:
      x = TT.resize(x, octave.canvas, method="bilinear")
    count = [None]
    step = stepper(octave.update, lambda count=count: count[0])
    first = len(octave.before_resize)
    first_view = first + len(octave.before)
    first_after = first_view + len(octave.view)
    image, views = plan.image, octave.views
    pixels = image.pixels
    if not pixels:
      x = encode(image, x).detach()
    for i, params in enumerate(octave_draws):
      side = sides[plan.size_indices(i)[1]]
      for op, p in zip(octave.before_resize, params[:first]):
        x = OPERATIONS(op, x, p, Context(i, octave.iterations, None))
      if octave.resize is not None:
        x = OPERATIONS(octave.resize, x, side, None)
      region, view_input = None, side
      for op, p in zip(octave.view, params[first_view:first_after]):
        if view_input == side:
          region = region or op.region(p, side)
        view_input = op.output_side(view_input)
      count[0] = region[1] * region[1] * 3 if region and pixels else None
      context = Context(i, octave.iterations, region)

      def apply(ops, params, x, context=context):
        for op, p in zip(ops, params):
          x = OPERATIONS(op, x, p, context)
        return x

      x = apply(octave.before, params[first:first_view], x)
      x = x.detach().requires_grad_(True)
      images = x if pixels else render(image, x)
      view_params = params[first_view:first_after]
      if views == 1:
        view = apply(octave.view, view_params, images)
        view_targets = targets
      else:
        # Image-major, as the engine batches them: image 0's views first.
        per_view = [view_params, *params[len(octave.operations)]]
        view_params = [_interleave([v[j] for v in per_view]) for j in range(len(octave.view))]
        view = apply(octave.view, view_params, images.repeat_interleave(views, dim=0),
                     context._replace(region=None))
        view_targets = targets.repeat_interleave(views)
      outputs = torch_pass(module, view, octave.objective.needs, normalisation)
      values = objective(octave.objective, outputs, view, view_targets)
      loss = -values.reshape(-1, views).mean(dim=1).sum()
      (grad,) = torch.autograd.grad(loss, x)
      x = (x + step(grad, linear(octave.step_size, i, octave.iterations))).detach()
      x = apply(octave.after, params[first_after:], x)
    if not pixels:
      x = render(image, x).detach()
  return x.permute(0, 2, 3, 1)


def _interleave(draws):
  """Per-view draws ``[(N, ...)] * K`` as one image-major ``(N * K, ...)`` batch."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if draws[0] is None:
    return None
  return np.stack([np.asarray(d) for d in draws], axis=1).reshape(-1, *np.shape(draws[0])[1:])
