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


randomize_batchnorm = converters.randomize_batchnorm


@functools.cache
def random_torch_model(name: str, seed: int = 0,
                       transform_input: bool | None = None) -> torch.nn.Module:
  """A torchvision model with random weights and randomised BN (cached)."""
  return converters.random_torch(name, seed=seed, transform_input=transform_input)
