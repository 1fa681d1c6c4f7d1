r"""Keras' weight constraints for the layers' ``*_constraint`` arguments: a projection applied to a weight after
every optimizer step, as Keras applies it. Norms are taken over ``axis`` of the weight in Keras' layout
(a kernel is ``(fan_in, fan_out)``; ``axis=0`` is the norm of each unit's incoming weights)::

    MaxNorm(max_value=2, axis=0):  w · clip(‖w‖, 0, max) / (ε + ‖w‖)          (name "max_norm")
    MinMaxNorm(min_value=0, max_value=1, rate=1, axis=0):
        w · (rate · clip(‖w‖, min, max) + (1 − rate) · ‖w‖) / (ε + ‖w‖)          (name "min_max_norm")
    UnitNorm(axis=0):  w / (ε + ‖w‖)                                          (name "unit_norm")
    NonNeg():  max(w, 0)                                                      (name "non_neg")

with ``ε = 1e-7`` (Keras' epsilon).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

EPSILON = 1e-7


class Constraint:
    """Base class: ``__call__(weight) -> projected weight`` and ``get_config()``."""

    def __call__(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class MinMaxNorm(Constraint):
    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: int = 0) -> None:
        self.min_value, self.max_value, self.rate, self.axis = float(min_value), float(max_value), float(rate), axis

    def __call__(self, weight: Tensor) -> Tensor:
        norms = weight.square().sum(self.axis, keepdim=True).sqrt()
        desired = self.rate * norms.clamp(self.min_value, self.max_value) + (1 - self.rate) * norms
        return weight * desired / (EPSILON + norms)

    def get_config(self) -> dict:
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


class MaxNorm(Constraint):
    def __init__(self, max_value: float = 2.0, axis: int = 0) -> None:
        self.max_value, self.axis = float(max_value), axis

    def __call__(self, weight: Tensor) -> Tensor:
        norms = weight.square().sum(self.axis, keepdim=True).sqrt()
        return weight * norms.clamp(0.0, self.max_value) / (EPSILON + norms)

    def get_config(self) -> dict:
        return {"max_value": self.max_value, "axis": self.axis}


class UnitNorm(Constraint):
    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def __call__(self, weight: Tensor) -> Tensor:
        return weight / (EPSILON + weight.square().sum(self.axis, keepdim=True).sqrt())

    def get_config(self) -> dict:
        return {"axis": self.axis}


class NonNeg(Constraint):
    def __call__(self, weight: Tensor) -> Tensor:
        return weight.clamp_min(0.0)


CONSTRAINTS: dict[str, type[Constraint]] = {c.__name__: c for c in (MaxNorm, MinMaxNorm, UnitNorm, NonNeg)}
NAMES = {"max_norm": "MaxNorm", "min_max_norm": "MinMaxNorm", "unit_norm": "UnitNorm", "non_neg": "NonNeg"}


class _Foreign(Constraint):
    """Any other ``project(weight) -> weight`` callable."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, weight: Tensor) -> Tensor:
        return torch.as_tensor(self.function(weight), dtype=weight.dtype, device=weight.device)


def get(identifier: object) -> Constraint | None:
    """A constraint from ``None``, a name, a ``{"class_name", "config"}`` dict, a :class:`Constraint`, or any
    callable ``project(weight)`` (a Keras constraint object becomes grukit's equivalent)."""
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, str):
        class_name = NAMES.get(identifier, identifier)
        if class_name not in CONSTRAINTS:
            raise ValueError(f"unknown constraint {identifier!r}; expected one of {sorted(NAMES)}")
        return CONSTRAINTS[class_name]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        class_name = identifier["class_name"]
        if class_name not in CONSTRAINTS:
            raise ValueError(f"unknown constraint class {class_name!r}; expected one of {sorted(CONSTRAINTS)}")
        return CONSTRAINTS[class_name](**identifier.get("config", {}))
    if callable(identifier):
        class_name = type(identifier).__name__
        if class_name in CONSTRAINTS and hasattr(identifier, "get_config"):
            return CONSTRAINTS[class_name](**identifier.get_config())
        return _Foreign(identifier)
    raise TypeError(f"expected None, a constraint name, object or callable, got {identifier!r}")


def serialize(constraint: Constraint | None) -> dict | None:
    if constraint is None:
        return None
    if isinstance(constraint, _Foreign):
        raise ValueError(f"cannot serialize the custom constraint {constraint.function!r}; use a named one")
    return {"class_name": type(constraint).__name__, "config": constraint.get_config()}
