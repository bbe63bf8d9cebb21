"""What the test modules share: random torchvision models with non-trivial
BatchNorm statistics (the default mean 0 / var 1 would hide a swapped
mapping), the tiny model's torch twin, short recipes, and the contract runs.

Imported by the test modules (in the xdist workers), never by conftest.py:
the controller process then imports neither torch nor JAX, and the workers
start 4 s sooner.)"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torchvision

import converters
from classgen_jax import folders, operations, recipes, updates
from classgen_jax import objectives as obj
from classgen_jax.recipe import Octave, Recipe
from classgen_jax.starts import Uniform
from tests.shared import CLASSES, QUICK, quick, tiny  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[1]

randomize_batchnorm = converters.randomize_batchnorm
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # (tests/__init__.py)


@functools.cache
def random_torch_model(name: str, seed: int = 0,
                       transform_input: bool | None = None) -> torch.nn.Module:
  """A torchvision model with random weights and randomised BN (cached)."""
  return converters.random_torch(name, seed=seed, transform_input=transform_input)


# ----------------------------------------------------------------------------
# Tiny models and short recipes shared by the engine, atlas, gallery, video,
# quality and benchmark tests.


TINY_WIDTH = 16  # torchvision's ResNets: 64


class _NarrowResNet(torchvision.models.ResNet):
  """torchvision's ResNet with ``TINY_WIDTH`` channels where it has 64 (and
  so on, doubling at each stage): the same modules and names, fewer weights."""

  def __init__(self, layers: list[int]):
    super().__init__(torchvision.models.resnet.BasicBlock, layers)
    self.conv1 = torch.nn.Conv2d(3, TINY_WIDTH, 7, 2, 3, bias=False)
    torch.nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
    self.bn1 = torch.nn.BatchNorm2d(TINY_WIDTH)
    self.fc = torch.nn.Linear(TINY_WIDTH * 8, self.fc.out_features)

  def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
    if planes == 64:  # the first stage: its input is the narrow stem
      self.inplanes = TINY_WIDTH
    return super()._make_layer(block, planes * TINY_WIDTH // 64, blocks, stride, dilate)


@functools.cache
def tiny_torch() -> torch.nn.Module:
  """A one-block-per-stage random ResNet, a quarter of ResNet-18's widths:
  every mechanism, little compute."""
  torch.manual_seed(0)
  module = _NarrowResNet([1, 1, 1, 1])
  torch.nn.init.normal_(module.fc.weight, std=0.05)
  return randomize_batchnorm(module, 64)


# A two-block ViT of torchvision's class: 8 px patches on a 32 px native
# side (a 4x4 grid), two heads of width 8.
TINY_VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                mlp_dim=32)


@functools.cache
def tiny_vit_torch() -> torch.nn.Module:
  """A random ``TINY_VIT``, its constant initialisations randomised."""
  torch.manual_seed(0)
  return converters.randomize_constants(torchvision.models.VisionTransformer(**TINY_VIT))


def small(recipe: Recipe, iterations: int = 3) -> Recipe:
  """The recipe at a fifth of its sizes and a few iterations per octave."""
  def side(n):
    return None if n is None else max(24, n // 5)

  def shrink(op):
    return operations.Crop(side(op.size) - 4) if isinstance(op, operations.Crop) else op

  octaves = []
  for o in recipe.octaves:
    scaled = o.scaled(iterations / o.iterations)
    resize = None if o.resize is None else dataclasses.replace(
        scaled.resize, sizes=tuple(side(s) for s in o.resize.sizes))
    octaves.append(dataclasses.replace(
        scaled, iterations=iterations, canvas=side(o.canvas), resize=resize,
        view=tuple(shrink(op) for op in scaled.view)))
  return dataclasses.replace(recipe, size=side(recipe.size), octaves=tuple(octaves))


def model_for(recipe: Recipe) -> torch.nn.Module:
  """GoogLeNet (with its aux heads) where a recipe reads an aux head."""
  if any(h != "logits" for h in recipe.heads):
    return random_torch_model("googlenet")
  return tiny_torch()


def runnable(name: str) -> Recipe:
  """The named recipe, small, on heads a random GoogLeNet or ResNet has."""
  recipe = small(recipes.get(name))
  if "aux" in recipe.heads:  # Inception's aux head needs 299 px: use GoogLeNet's
    recipe = recipe.with_head("aux1")
  return recipe


# quick, QUICK, CLASSES and tiny live in tests/shared.py (torch-free, for child processes).



# One tiny compiled run that the contract tests of several modules read
# (batch independence, restarts, snapshots, chunks, progress reports, the
# program cache, padding), rather than each compiling its own: sign steps
# (a sign does not pass a batched convolution's last-bit rounding on, so an
# image is bit-equal whatever its batch), colour jitter, crop, roll and flip
# views, and a scheduled blur (whose iteration must not be folded into
# constants); 7 iterations on a 32 px canvas.
CONTRACT = Recipe("contract", Uniform(), 32, (
    Octave(7, obj.class_logit(), updates.get("sign"), (0.02, 0.02),
           before=(operations.ColourJitter(brightness=0.05),),
           view=(operations.Crop(26), operations.Roll(3), operations.Flip()),
           after=(operations.Blur((1.5, 0.5)),)),))


# The tests that read them run on one worker (``--dist loadgroup``).
CONTRACT_GROUP = pytest.mark.xdist_group("contract")


@functools.cache
def contract_runs() -> types.SimpleNamespace:
  """``CONTRACT`` run several ways (seed 11 unless said):

  * ``chunked``: targets 1, 2 with ``chunk=2``, ``snapshot_every=3`` and
    progress ``events``; ``compiled``: the programs it compiled;
  * ``again``: the same on targets 3, 4 (``again_events``, ``again_compiled``);
  * ``plain``: targets 1, 2 made whole, without snapshots;
  * ``alone``: target 2 alone (a batch of one); ``repeated``: target 2 with
    ``restarts=2``; ``twice``: targets 2, 2 (its second restart);
    ``other_seed``: target 2 at seed 12.
  """
  from classgen_jax import engine, programs

  def generate(targets, **kwargs):
    return engine.generate(tiny(), targets, CONTRACT, **{"seed": 11, **kwargs})

  events, again_events = [], []
  before = programs.count()
  chunked = generate([1, 2], snapshot_every=3, chunk=2, progress=events.append)
  compiled = programs.count() - before
  before = programs.count()
  again = generate([3, 4], snapshot_every=3, chunk=2, progress=again_events.append)
  again_compiled = programs.count() - before
  return types.SimpleNamespace(
      chunked=chunked, events=events, compiled=compiled, again=again,
      again_events=again_events, again_compiled=again_compiled, plain=generate([1, 2]),
      alone=generate([2]), repeated=generate([2], restarts=2), twice=generate([2, 2]),
      other_seed=generate([2], seed=12))


def kill_once_rows_are_written(script: str, argument: str, out, *,
                               timeout: float = 120) -> None:
  """Runs ``script`` (Python source, given ``argument``) in a child that
  sleeps after each batch it writes (``CLASSGEN_JAX_ATLAS_SLEEP``), and kills
  it (-9) once the atlas folder ``out`` has summary rows."""
  env = dict(os.environ, CLASSGEN_JAX_ATLAS_SLEEP="120", JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", script, argument], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + timeout
    while not folders.read_summary(out):
      assert child.poll() is None, child.stderr.read().decode()[-2000:]
      assert time.monotonic() < deadline, "the child wrote no batch in time"
      time.sleep(0.2)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  assert child.returncode == -signal.SIGKILL


def plant_partial_files(out, names) -> None:
  """Writes, for each of ``names`` not complete in ``out``, the temporary
  file a writer killed mid-write leaves (a resumed run must remove it)."""
  for name in names:
    if not (Path(out) / name).exists():
      (Path(out) / f".{name}.k1ll3d.tmp").write_bytes(b"\x89PNG half")
