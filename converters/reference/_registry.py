"""Twins registered by the type of the library value they mirror."""

from __future__ import annotations

from collections.abc import Callable


class Twins:
  """A mapping from library types to their torch twins."""

  def __init__(self, kind: str):
    self.kind = kind
    self.twins: dict[type, Callable] = {}

  def register(self, cls: type) -> Callable[[Callable], Callable]:
    def decorate(fn: Callable) -> Callable:
      self.twins[cls] = fn
      return fn
    return decorate

  def __call__(self, value, *args, **kwargs):
    twin = self.twins.get(type(value))
    if twin is None:
      raise NotImplementedError(
          f"no torch twin for the {self.kind} {type(value).__name__}; register one in "
          f"converters/reference with @{self.kind.upper()}.register({type(value).__name__})")
    return twin(value, *args, **kwargs)
