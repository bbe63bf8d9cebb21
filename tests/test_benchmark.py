"""The benchmark script's JSON: its structure and that it measured something."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_script_writes_the_documented_json(tmp_path):
  out = tmp_path / "bench.json"
  subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--model=resnet18", "--image_size=32",
       "--batch_size=1", "--steps=2", "--repeats=1", "--sweep", "--max_batch=1",
       "--breakdown", f"--json_out={out}"], cwd=_ROOT, check=True, timeout=600)
  result = json.loads(out.read_text())
  assert set(result["results"]) == {"torch_sequential", "torch_batched", "jax"}
  for name, measured in result["results"].items():
    for field in ("image_iters_per_s", "ms_per_step", "peak_rss_mb"):
      assert measured[field] > 0, (name, field)
    assert measured["compile_s"] >= 0 and len(measured["seconds"]) == 1
  jax_result = result["results"]["jax"]
  assert jax_result["flops_per_image_iter"] > 1e6 and jax_result["achieved_gflops"] > 0
  assert set(result["ratios"]) == {"jax_vs_torch_batched", "jax_vs_torch_sequential"}
  assert all(r > 0 for r in result["ratios"].values())
  sweep = result["sweep"]
  assert [p["batch_size"] for p in sweep["points"]] == [1]
  assert sweep["saturates_at"] == sweep["best_batch_size"] == 1
  breakdown = result["breakdown"]
  assert breakdown["step_ms"] == jax_result["ms_per_step"]
  assert sum(p["ms"] for p in breakdown["parts"].values()) == pytest.approx(
      breakdown["step_ms"])


def test_flops_table_counts_resnet18():
  from converters.reference import benchmark
  row = benchmark.flops_table(["resnet18"])["resnet18"]
  # torchvision's ResNet-18: 1.81 G multiply-adds per 224 px forward pass.
  assert row["image_size"] == 224 and 3.2 < row["forward_gflops"] < 3.8
  # The input gradient costs about one more forward pass; the transforms little.
  assert 1.8 < row["gflops_per_image_iter"] / row["forward_gflops"] < 2.3


@pytest.mark.slow
def test_bfloat16_model_keeps_a_float32_canvas():
  """``devices.mixed_precision``, the benchmark's ``--dtype=bfloat16``."""
  import functools

  import jax
  import jax.numpy as jnp
  import numpy as np

  from classgen_jax import devices, engine, octave, plans, starts, step
  from classgen_jax.operations import Blur, Crop, Roll
  from tests.helpers import quick, tiny

  fast = devices.mixed_precision(tiny())
  assert fast.dtype == jnp.bfloat16 and fast.module.dtype == jnp.bfloat16
  recipe = quick("gradient", 0.05, view=(Crop(40), Roll(3)), after=(Blur((1.0, 0.5)),))
  keys = starts.image_keys(0, [1, 2], [0, 0])
  images = starts.initial_images(recipe, keys)
  assert fast(images, heads=("logits",))["logits"].dtype == jnp.bfloat16
  # The gradient reaches the canvas as float32, and the octave's canvas stays so.
  grad = jax.grad(lambda x: fast(x.astype(fast.dtype))["logits"][:, 1].sum())(images)
  assert grad.dtype == jnp.float32
  plan = plans.plan(fast, recipe)[0]
  state, trace, _ = jax.eval_shape(functools.partial(octave.run, plan, plan.octave.iterations),
                                   fast, step.init_state(plan, images), jnp.asarray([1, 2]), keys)
  assert state.canvas.dtype == jnp.float32 and trace.objective.dtype == jnp.float32
  result = engine.generate(fast, [1, 2], recipe)
  full = engine.generate(tiny(), [1, 2], recipe)
  assert result.images.dtype == np.float32 and np.isfinite(result.images).all()
  assert np.isfinite(result.trace.objective).all()
  # bfloat16 changes the images a little, not wholesale.
  assert 0 < np.abs(result.images - full.images).mean() < 0.05


@pytest.mark.slow
def test_time_recipes_reports_every_recipe_asked():
  import dataclasses

  from classgen_jax import recipes
  from converters.reference import benchmark
  from tests.helpers import small, tiny
  quick = dataclasses.replace(small(recipes.get("sign")), name="sign")
  original = recipes.RECIPES["sign"]
  recipes.RECIPES["sign"] = quick
  try:
    results = benchmark.time_recipes(tiny(), steps_scale=1.0, names=("sign",))
  finally:
    recipes.RECIPES["sign"] = original
  assert set(results) == {"sign"}
  assert results["sign"]["iterations"] == 3 and results["sign"]["ms_per_iter"] > 0


@pytest.mark.slow
def test_time_pieces_times_each_piece_alone():
  from converters.reference import benchmark
  from tests.helpers import tiny
  recipes_ = benchmark.pieces(2, side=32)
  base = recipes_["pixels"]
  for name, recipe in recipes_.items():  # each differs from the plain recipe in one place
    if name != "pixels":
      assert (recipe.image != base.image) + (recipe.octaves != base.octaves) == 1, name
  results = benchmark.time_pieces(tiny(), iterations=2, batch=2, side=32)
  assert set(results) == set(recipes_)
  assert all(r["ms_per_image_iter"] > 0 for r in results.values())
  assert results["pixels"]["extra"] == 0


def test_breakdown_gives_each_op_of_the_octave_to_its_part():
  """The breakdown is measured inside the compiled octave: every op's time
  goes to the part of the step its name stack says."""
  from converters.reference import benchmark
  from tests.helpers import tiny
  # Eight steps: a preemption under load lands in one op of one step.
  config = benchmark.Config(model="tiny", image_size=64, batch_size=2, steps=8)
  result = benchmark.breakdown(tiny(), config, step_ms=10.0)
  parts = result["parts"]
  assert list(parts) == [*benchmark.PARTS, "rest"]
  assert sum(p["share"] for p in parts.values()) == pytest.approx(1.0)
  assert sum(p["ms"] for p in parts.values()) == pytest.approx(10.0)
  # The octaves recipe's first octave: a ResNet forward and its input
  # gradient (the bulk, of like size: the gradient's ops are not lumped in
  # with the forward's), an objective, an update and a blur after it; no
  # view operations. (Op times, so the bounds leave room for a loaded CPU:
  # idle, the gradient is 2.2-2.5x the forward since its strided convs are
  # matrix products (1.4-1.5x before; 4.2 once under load), and the two are
  # 0.7-0.75 of the op time, 0.26 once under load: the tiny model's own ops
  # got 2x faster with those products, the rest did not.)
  op_ms = {part: round(p["op_ms"], 2) for part, p in parts.items()}
  for part in ("model forward", "input gradient", "objective", "operations"):
    assert op_ms[part] > 0, (part, op_ms)
  assert op_ms["views"] == 0, op_ms
  model = parts["model forward"]["share"] + parts["input gradient"]["share"]
  assert model > 0.15, op_ms
  assert 0.5 < op_ms["input gradient"] / op_ms["model forward"] < 8, op_ms
  assert parts["rest"]["share"] < model, op_ms


def test_an_op_belongs_to_the_part_its_name_stack_says():
  from converters.reference.benchmark import _part
  body = "jit(run)/while/body/closed_call"
  assert _part(f"{body}/jvp(model)/conv_general_dilated") == "model forward"
  assert _part(f"{body}/transpose(jvp(model))/conv_general_dilated") == "input gradient"
  assert _part(f"{body}/transpose(jvp(view))/jvp(model_zoo)/pad") == "views"
  assert _part(f"{body}/update/mul") == "update"
  assert _part(f"{body}/jvp(operations)/blur") == "operations"
  assert _part(f"{body}/switch/resize") == "rest" and _part("") == "rest"


@pytest.mark.slow
def test_trace_summary_names_the_convolutions(tmp_path):
  from converters.reference import benchmark
  from tests.helpers import tiny
  config = benchmark.Config(model="tiny", image_size=64, batch_size=2, steps=2)
  summary = benchmark.trace_summary(tiny(), config, str(tmp_path / "trace"))
  assert list((tmp_path / "trace").rglob("*.xplane.pb"))
  assert summary["total_ms"] > 0 and 0 < len(summary["ops"]) <= 12
  assert sum(op["share"] for op in summary["ops"]) <= 1 + 1e-9
  # A ResNet's step is mostly convolutions, forward and backward.
  assert "conv_general_dilated" in summary["kinds"]
  assert not any(op["name"].startswith("$") for op in summary["ops"])  # no Python frames


@pytest.mark.parametrize("kind,size,padding,out", [
    ("conv_forward", 30, (0, 0), 4), ("max_forward", 13, (1, 1), 0),
    ("avg_forward", 13, (1, 1), 0)])
def test_layer_benchmark_times_the_forward_rows(kind, size, padding, out):
  """``scripts/benchmark_layers.py``'s [fwd] rows: XLA's forward and the
  ports' agree (``measure`` checks) and both are timed."""
  from converters.reference import layer_benchmark as LB
  op = LB.Op(f"[fwd] {kind}", kind, size, 3, 3, 1, padding, out)
  result = LB.measure(op, batch_size=1, repeats=1)
  assert result["used"] and result["forward"] > 0 and result["default_grad"] > 0
  assert "[fwd]" in LB.report({op.name: result}, 1)


def test_layer_benchmark_loop_times_a_conv_both_ways():
  """``scripts/benchmark_layers.py --loop``: a dense conv's forward and input
  gradient inside a jitted loop, as a convolution and as a matrix product
  (``measure_loop`` checks that both give the same output), with its rule."""
  from converters.reference import layer_benchmark as LB
  op = LB._conv("small 3x3/2 8->16 @9", 9, 8, 16, 3, 2, (1, 1))
  result = LB.measure_loop(op, batch_size=1, repeats=1, iterations=2)
  assert result["convolution"] > 0 and result["products"] > 0 and result["gflop"] > 0
  assert result["rule"] == "patches"  # strided, 8 input channels, on a CPU
  table = LB.report_loop({op.name: result}, 1)
  assert op.name in table and "patches" in table
