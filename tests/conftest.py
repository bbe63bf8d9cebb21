"""Shared fixtures: float64 switching and random torchvision models with
non-trivial BatchNorm statistics (the default mean 0 / var 1 would hide a
swapped mapping)."""

from __future__ import annotations

import functools

import jax
import pytest
import torch

import converters


@pytest.fixture
def x64():
  """Run a test with ``jax_enable_x64`` on, restoring the setting after."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def randomize_batchnorm(module: torch.nn.Module, size: int, *, seed: int = 0,
                        batches: int = 2) -> torch.nn.Module:
  """Random affine BN parameters and running statistics from real batches."""
  generator = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.uniform_(0.5, 1.5, generator=generator)
        m.bias.normal_(0.0, 0.2, generator=generator)
      m.reset_running_stats()
      m.momentum = None  # cumulative average over the batches below
  module.train()
  with torch.no_grad():
    for _ in range(batches):
      module(torch.rand(2, 3, size, size, generator=generator) * 2 - 1)
  return module.eval()


@functools.cache
def random_torch_model(name: str, seed: int = 0,
                       transform_input: bool | None = None) -> torch.nn.Module:
  """A torchvision model with random weights and randomised BN (cached)."""
  torch.manual_seed(seed)
  module = converters.build_torch(name, transform_input=transform_input)
  for m in module.modules():  # init_weights=False leaves torch's default init
    if isinstance(m, torch.nn.Linear):
      torch.nn.init.normal_(m.weight, std=0.05)
  size = 299 if name == "inception_v3" else 224
  return randomize_batchnorm(module, size, seed=seed)
