"""Shared fixtures: float64 switching and random torchvision models with
non-trivial BatchNorm statistics (the default mean 0 / var 1 would hide a
swapped mapping)."""

from __future__ import annotations

import dataclasses
import functools
import types

import jax
import pytest
import torch
import torchvision

import classgen_jax
import converters
from classgen_jax import objectives as obj
from classgen_jax import operations, recipes, updates
from classgen_jax.recipes import Octave, Recipe
from classgen_jax.starts import Uniform


@pytest.fixture
def x64():
  """Run a test with ``jax_enable_x64`` on, restoring the setting after."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


randomize_batchnorm = converters.randomize_batchnorm


@functools.cache
def random_torch_model(name: str, seed: int = 0,
                       transform_input: bool | None = None) -> torch.nn.Module:
  """A torchvision model with random weights and randomised BN (cached)."""
  return converters.random_torch(name, seed=seed, transform_input=transform_input)


# ----------------------------------------------------------------------------
# Tiny models and short recipes shared by the engine, atlas, gallery, video,
# quality and benchmark tests.


@functools.cache
def tiny_torch() -> torch.nn.Module:
  """A one-block-per-stage random ResNet: every mechanism, little compute."""
  torch.manual_seed(0)
  module = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
  torch.nn.init.normal_(module.fc.weight, std=0.05)
  return randomize_batchnorm(module, 64)


@functools.cache
def tiny() -> classgen_jax.Classifier:
  """``tiny_torch`` converted."""
  return converters.from_torchvision(tiny_torch())


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


def quick(rule: str = "gradient", lr: float = 0.05, iterations: int = 4, **octave) -> Recipe:
  """A one-octave recipe on a 48 px canvas."""
  return Recipe("quick", Uniform(), 48,
                (Octave(iterations, obj.class_logit(), updates.get(rule), (lr, lr), **octave),))


# A recipe for the tool's tests (atlas, gallery, video) and its classes.
QUICK = Recipe("quick", Uniform(), 32, (
    Octave(3, obj.class_logit(), updates.Gradient(), (0.5, 0.5),
           after=(operations.Blur((0.8, 0.8)),)),))
CLASSES = [0, 1, 2, 3]


# One tiny compiled run that the contract tests of several modules read
# (snapshots, chunks, progress reports, the program cache), rather than each
# compiling its own: 7 iterations with a scheduled blur (whose iteration must
# not be folded into constants), in chunks of 2 with snapshots every 3, and
# the same run whole.
CONTRACT = Recipe("contract", Uniform(), 48, (
    Octave(7, obj.class_logit(), updates.get("gradient"), (0.05, 0.05),
           after=(operations.Blur((1.5, 0.5)),)),))


@functools.cache
def contract_runs() -> types.SimpleNamespace:
  """``chunked``: ``CONTRACT`` on targets 1, 2 with ``chunk=2``,
  ``snapshot_every=3`` and progress ``events``; ``compiled``: the programs
  that call compiled; ``plain``: the same images made whole, without
  snapshots; ``again``: the chunked call repeated on targets 3, 4, with
  ``again_events`` (nothing to compile) and ``again_compiled``."""
  from classgen_jax import engine, programs
  events, again_events = [], []
  before = programs.count()
  chunked = engine.generate(tiny(), [1, 2], CONTRACT, snapshot_every=3, chunk=2,
                            progress=events.append)
  compiled = programs.count() - before
  before = programs.count()
  again = engine.generate(tiny(), [3, 4], CONTRACT, snapshot_every=3, chunk=2,
                          progress=again_events.append)
  again_compiled = programs.count() - before
  plain = engine.generate(tiny(), [1, 2], CONTRACT)
  return types.SimpleNamespace(chunked=chunked, events=events, compiled=compiled,
                               again=again, again_events=again_events,
                               again_compiled=again_compiled, plain=plain)
