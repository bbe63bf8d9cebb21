"""Shared fixtures: float64 switching and random torchvision models with
non-trivial BatchNorm statistics (the default mean 0 / var 1 would hide a
swapped mapping)."""

from __future__ import annotations

import functools

import jax
import pytest
import torch
import torchvision

import classgen_jax
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


@functools.cache
def tiny_torch() -> torch.nn.Module:
  """A one-block-per-stage random ResNet: every mechanism, little compute."""
  torch.manual_seed(0)
  module = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
  torch.nn.init.normal_(module.fc.weight, std=0.05)
  return randomize_batchnorm(module, 64)


@functools.cache
def tiny() -> classgen_jax.Classifier:
  """``tiny_torch`` converted: the fast model of tests that need any classifier."""
  return converters.from_torchvision(tiny_torch())
