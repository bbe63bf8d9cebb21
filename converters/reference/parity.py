"""JAX against torch on the device at hand, measured against a float64 truth.

The tests check parity on the CPU in float64. On a GPU the question is
different: both frameworks run float32 convolutions through cuDNN, by
default in TF32 (a 10-bit mantissa), so they agree only as well as TF32
rounds. ``compare`` runs the same random-weight model four ways on the same
images:

* the truth: torch, float64, on the CPU;
* torch, float32, on its device (CUDA if present), TF32 off;
* JAX, float32, on its default device, ``jax.default_matmul_precision("highest")``
  (TF32 off);
* JAX, float32, default precision (TF32 where the device has it);

and reports each head's logits (max abs difference over max |truth|) and
the input gradient of a target logit (relative L2 against the truth).
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from converters.reference.loop import to_nchw, torch_outputs
from converters.torchvision import from_torchvision, random_torch


def _torch_outputs_and_grads(module, images: np.ndarray, heads, target: int, device: str):
  x = to_nchw(images).to(device, next(module.parameters()).dtype).requires_grad_(True)
  outputs = torch_outputs(module, x, heads)
  result = {}
  for head in heads:
    (grad,) = torch.autograd.grad(outputs[head][:, target].sum(), x, retain_graph=True)
    result[head] = (outputs[head].detach().cpu().double().numpy(),
                    grad.permute(0, 2, 3, 1).cpu().double().numpy())
  return result


def _jax_outputs_and_grads(classifier, images: np.ndarray, heads, target: int):
  result = {}
  for head in heads:
    # The classifier an argument, not a constant of the program: XLA would
    # fold its weights' flips and transposes while compiling (8x longer).
    def logit(x, classifier, head=head):
      out = classifier(x, heads=(head,))[head]
      return out[:, target].sum(), out
    (_, out), grad = jax.jit(jax.value_and_grad(logit, has_aux=True))(
        jnp.asarray(images), classifier)
    result[head] = (np.asarray(out, np.float64), np.asarray(grad, np.float64))
  return result


def _errors(got, truth) -> dict[str, float]:
  out, grad = got
  true_out, true_grad = truth
  return {"logits_rel_max": float(np.abs(out - true_out).max() / np.abs(true_out).max()),
          "grad_rel_l2": float(np.linalg.norm(grad - true_grad) / np.linalg.norm(true_grad))}


def compare(name: str, *, size: int | None = None, batch: int = 2, seed: int = 0,
            target: int = 7) -> dict[str, Any]:
  """Errors of torch and JAX float32 against the float64 truth, per head.

  Returns:
    ``{"model", "size", "devices": {"torch", "jax"}, "heads": {head:
    {"torch_fp32": errors, "jax_fp32": errors, "jax_default_precision":
    errors, "jax_vs_torch_logits_rel_max": e}}}``, errors being
    ``{"logits_rel_max", "grad_rel_l2"}``.
  """
  module = random_torch(name, seed=seed)
  classifier = from_torchvision(module, name=name)
  size = size or classifier.input_size
  heads = tuple(h for h in classifier.heads if classifier.min_input_size(h) <= size)
  images = np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)

  truth = _torch_outputs_and_grads(copy.deepcopy(module).double(), images.astype(np.float64),
                                   heads, target, "cpu")
  device = "cuda" if torch.cuda.is_available() else "cpu"
  cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  try:
    torch_fp32 = _torch_outputs_and_grads(copy.deepcopy(module).to(device), images, heads,
                                          target, device)
  finally:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = (
        cudnn_tf32, matmul_tf32)
  with jax.default_matmul_precision("highest"):
    jax_fp32 = _jax_outputs_and_grads(classifier, images, heads, target)
  jax_default = _jax_outputs_and_grads(classifier, images, heads, target)

  report = {}
  for head in heads:
    report[head] = {
        "torch_fp32": _errors(torch_fp32[head], truth[head]),
        "jax_fp32": _errors(jax_fp32[head], truth[head]),
        "jax_default_precision": _errors(jax_default[head], truth[head]),
        "jax_vs_torch_logits_rel_max": float(
            np.abs(jax_fp32[head][0] - torch_fp32[head][0]).max()
            / np.abs(torch_fp32[head][0]).max()),
    }
  return {"model": name, "size": size, "batch": batch,
          "devices": {"torch": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                      "jax": jax.devices()[0].device_kind},
          "heads": report}


def report_lines(result: dict[str, Any]) -> list[str]:
  """One line per head: each path's logits and gradient error."""
  lines = []
  for head, errors in result["heads"].items():
    cells = "  ".join(
        f"{path} {errors[path]['logits_rel_max']:.1e}/{errors[path]['grad_rel_l2']:.1e}"
        for path in ("torch_fp32", "jax_fp32", "jax_default_precision"))
    lines.append(f"{result['model']:>13} {result['size']} {head:>6}: {cells}  "
                 f"jax-torch {errors['jax_vs_torch_logits_rel_max']:.1e}")
  return lines
