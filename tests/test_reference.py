"""The torch reference path: every library value that computes has a torch
twin, found by type, and a missing one is named."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from classgen_jax import objectives, operations, parameterisations, updates
from converters.reference import objectives as torch_objectives
from converters.reference import operations as torch_operations
from converters.reference import parameterisations as torch_parameterisations
from converters.reference import updates as torch_updates


def _concrete(module, base):
  return [v for v in vars(module).values()
          if inspect.isclass(v) and issubclass(v, base) and v is not base
          and dataclasses.is_dataclass(v)]


@pytest.mark.parametrize("module, base, twins", [
    (operations, operations.Operation, torch_operations.OPERATIONS),
    (objectives, objectives.Term, torch_objectives.TERMS),
    (updates, updates.Rule, torch_updates.RULES),
    (parameterisations, parameterisations.Parameterisation, torch_parameterisations.RENDER),
    (parameterisations, parameterisations.Parameterisation, torch_parameterisations.ENCODE),
])
def test_every_value_has_a_torch_twin(module, base, twins):
  kinds = _concrete(module, base)
  assert len(kinds) >= 4
  missing = [k.__name__ for k in kinds if k not in twins.twins]
  assert not missing, f"no torch twin for {missing}"


def test_a_value_without_twin_is_named():
  @dataclasses.dataclass(frozen=True)
  class Sharpen(operations.Operation):
    def __call__(self, image, params, context):
      return image

  with pytest.raises(NotImplementedError, match="no torch twin for the operation Sharpen"):
    torch_operations.OPERATIONS(Sharpen(), None, None, None)
