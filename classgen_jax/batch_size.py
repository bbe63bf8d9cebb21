"""How many images a batch holds: what fits the free device memory.

``choose`` compiles a recipe's octaves for a first guess (all images, at
most 256 per device; 8 per device on a CPU, whose step is compute-bound from
a few images on) and compares XLA's memory analysis of each program with 80%
of the free memory (``free_memory``). Only the first octave's program is
waited for: a later one, compiling behind it, is estimated from the first by
the pixels its model sees, and waited for and measured only when its
estimate comes within half of the budget. When the largest does not fit, the
batch shrinks by an affine fit of memory in images (the weights, or the
fixed part measured from two sizes, plus a part per image) and is compiled
and checked again. The programs compiled for the size chosen are the ones
that run. Batches are balanced: 1000 images run as 4 x 250, not 3 x 256 and
a padded 232.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from classgen_jax import devices, programs
from classgen_jax import plans as plans_lib
from classgen_jax import recipes as recipes_lib
from classgen_jax._classifier import Classifier
from classgen_jax.plans import Plan
from classgen_jax.recipe import Recipe
from classgen_jax.tracking import Progress, Tracker

# The first guess per device: on an accelerator, as many as the memory
# allows up to this; on a CPU, a batch the size of the benchmarks'.
_GUESS_PER_DEVICE = {"cpu": 8}
_MAX_PER_DEVICE = 256
# The share of a device's free memory a batch may plan to use (XLA's
# estimate leaves out fragmentation and the runtime's own buffers).
MEMORY_SHARE = 0.8
# Compiles tried before a size that fits is found (or not one image fits).
_SIZE_TRIES = 4


class BatchSizeError(ValueError):
  """Not even one image per device fits in the free memory."""


def free_memory() -> int | None:
  """Bytes free on the fullest of the batch's devices; on CPUs, the host's
  available memory shared by its CPU devices. None where it cannot be known.
  A job spanning processes agrees on the least of theirs."""
  local = devices.batch_mesh().local_devices
  free = []
  for device in local:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
      free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if not free:
    available = _host_available_memory()
    free = [] if available is None else [available // max(1, len(local))]
  if devices.spans_processes():  # every process must run the same batch
    free = devices.to_host(np.asarray([min(free) if free else -1], np.int64))
    free = [f for f in free if f >= 0]
  return min(free) if free else None


def _host_available_memory() -> int | None:
  try:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
      for line in meminfo:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def balanced(n: int, per_device: int, count: int) -> int:
  """Images per device: at most ``per_device``, in batches as equal as the
  device ``count`` allows (1000 images in batches of 250, not 256 and a
  padded 232); 0 when ``per_device`` is."""
  if per_device < 1:
    return 0
  n = max(n, 1)
  batches = -(-n // (per_device * count))
  per_batch = -(-n // batches)
  return -(-per_batch // count)


def per_call(n: int, batch_size: int | None, pad_to: int = 0,
             group: int = 1) -> tuple[int, int]:
  """``(images per batch, the size each batch is padded to)`` for ``n`` images.

  Equal batches of at most ``batch_size``, the last one padded up to the
  same size: every batch runs the same compiled octaves (padding wastes
  fewer images than there are batches; a recompile costs seconds to a
  minute). ``pad_to``: a caller's last, smaller call padded to its full ones.
  ``group``: batches of whole groups of this many images (``n`` a multiple
  of it; at least one group a batch, whatever ``batch_size``).
  """
  if group > 1:
    per_batch, size = per_call(n // group, None if batch_size is None
                               else max(1, batch_size // group), -(-pad_to // group))
    return per_batch * group, size * group
  per_batch = -(-n // -(-n // (batch_size or n)))
  return per_batch, max(per_batch, min(pad_to, batch_size or pad_to))


def choose(classifier: Classifier, recipe: str | Recipe, n: int, *, snapshot_every: int = 0,
           chunk: int | None = None, progress: Callable[[Progress], None] | None = None,
           free_bytes: int | None = None) -> int:
  """A batch size for ``n`` images of ``recipe`` that fits the devices'
  memory (see the module doc); ``free_bytes`` (default: ``free_memory()``)
  is what is free per device. ``chunk`` and ``progress`` as for
  ``engine.generate``: they decide which programs run.

  Returns:
    Images per batch, a multiple of the device count (at most ``n`` rounded
    up to it), as even as batches of at most the size that fits can be.

  Raises:
    BatchSizeError: one image per device does not fit; the message says how
      much it needs and how much is free.
  """
  recipe = recipes_lib.get(recipe) if isinstance(recipe, str) else recipe
  planned = plans_lib.plan(classifier, recipe, snapshot_every)
  tracker = Tracker(progress, chunk, octaves=len(planned), total=recipe.iterations)
  return choose_planned(classifier, recipe.name, planned, n, tracker, free_bytes)


def choose_planned(classifier: Classifier, name: str, plans: Sequence[Plan], n: int,
                   tracker: Tracker, free_bytes: int | None = None) -> int:
  """``choose`` for the recipe ``name``, planned as ``plans``, its programs'
  chunks and compile reports as ``tracker`` says.

  Returns:
    Images per batch, a multiple of the device count (at most ``n`` rounded
    up to it), as even as batches of at most the size that fits can be.

  Raises:
    BatchSizeError: one image per device does not fit; the message says how
      much it needs and how much is free.
  """
  mesh = devices.batch_mesh()
  count = mesh.size
  platform = mesh.devices.flat[0].platform
  per_device = balanced(n, _GUESS_PER_DEVICE.get(platform, _MAX_PER_DEVICE), count)
  free = free_memory() if free_bytes is None else free_bytes
  if free is None:
    return per_device * count
  budget = MEMORY_SHARE * free
  weights = sum(x.nbytes for x in jax.tree_util.tree_leaves(classifier) if hasattr(x, "nbytes"))
  tried = []  # (images per device, bytes per device) that did not fit
  for _ in range(_SIZE_TRIES):
    programs_of_size = programs.signatures(classifier, plans, per_device * count, tracker)
    # The first octave's program is waited for, the later ones compile behind
    # it (the run starts sooner); ``_need`` waits for one only when its
    # estimate comes near the budget.
    programs.compile_all(classifier, programs_of_size, tracker, per_device * count, first=1)
    need = _need(programs_of_size, plans, budget)
    if need is None or need <= budget:
      if tried:
        logging.info("batch size %d: %s per device free", per_device * count, _gib(free))
      return per_device * count
    tried.append((per_device, need))
    if len(tried) == 1:
      fixed, per_image = weights, max(1.0, (need - weights) / per_device)
    else:
      (small, small_need), (large, large_need) = sorted(tried[-2:])
      per_image = max(1.0, (large_need - small_need) / max(large - small, 1))
      fixed = small_need - per_image * small
    fits = int((budget - fixed) // per_image)
    if fits >= 8:
      fits -= fits % 8
    per_device = balanced(n, min(fits, per_device - 1), count)
    if per_device < 1:
      break
  raise BatchSizeError(
      f"recipe {name!r} needs about {_gib(min(b for _, b in tried))} of device memory "
      f"for {min(k for k, _ in tried)} image(s) per device, but {_gib(free)} is free: free the "
      "device, or use a smaller recipe or model")


def _need(signatures: Sequence[programs.Signature], plans: Sequence[Plan],
          budget: float) -> int | None:
  """The most memory per device that ``signatures``' programs need (None:
  the backend does not say).

  The first program is compiled. A later one still compiling is estimated
  from the first, scaled by the pixels its model sees per image (views
  times the view's side squared) against the first's, and only waited for
  and measured when twice its estimate passes ``budget``.
  """
  first = programs.memory_bytes(signatures[0])
  if first is None:
    return None
  needs = [first]
  pixels = [plan.octave.views * plans_lib.view_side(plan.octave, plan.buffer) ** 2
            for plan in plans]
  for signature, seen in zip(signatures[1:], pixels[1:]):
    estimate = first * max(1.0, seen / pixels[0])
    if programs.cached(signature) or 2 * estimate > budget:
      needs.append(programs.memory_bytes(signature) or 0)
    else:
      needs.append(int(estimate))
  return max(needs)


def _gib(size: float) -> str:
  return f"{size / 2**30:.2f} GiB"
