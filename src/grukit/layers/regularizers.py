r"""Keras' weight regularizers for the layers' ``*_regularizer`` arguments: a penalty on a weight, added to the
training loss through ``layer.losses``::

    L1(l1):      l1 · Σ |w|          (name "l1": l1 = 0.01)
    L2(l2):      l2 · Σ w²           (name "l2": l2 = 0.01)
    L1L2(l1, l2): both               (name "l1_l2": l1 = l2 = 0.01; "l1l2": both 0, as in Keras)

The sums do not depend on how a weight is laid out, so they equal Keras' on its kernels exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


class Regularizer:
    """Base class: ``__call__(weight) -> scalar tensor`` and ``get_config()``."""

    def __call__(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


def _factor(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{owner} expected {name} to be a non-negative number, got {value!r}")
    return float(value)


class L1L2(Regularizer):
    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _factor(type(self).__name__, "l1", l1)
        self.l2 = _factor(type(self).__name__, "l2", l2)

    def __call__(self, weight: Tensor) -> Tensor:
        penalty = weight.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * weight.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * weight.square().sum()
        return penalty

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {"L1": L1, "L2": L2, "L1L2": L1L2}
# "l1_l2" as Keras documents it; "l1l2" as Keras' lookup by snake-case class name gives it (no penalty).
NAMES: dict[str, Callable[[], Regularizer]] = {
    "l1": L1, "l2": L2, "l1_l2": lambda: L1L2(l1=0.01, l2=0.01), "l1l2": L1L2,
}  # fmt: skip


class _Foreign(Regularizer):
    """Any other ``penalty(weight) -> scalar`` callable."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, weight: Tensor) -> Tensor:
        return self.function(weight)


def get(identifier: object) -> Regularizer | None:
    """A regularizer from ``None``, a name, a ``{"class_name", "config"}`` dict, a :class:`Regularizer`, or any
    callable ``penalty(weight)`` (a Keras ``L1`` / ``L2`` / ``L1L2`` object becomes grukit's equivalent)."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        if identifier in NAMES:
            return NAMES[identifier]()
        if identifier in REGULARIZERS:
            return REGULARIZERS[identifier]()
        raise ValueError(f"unknown regularizer {identifier!r}; expected one of {sorted(NAMES)}")
    if isinstance(identifier, dict) and "class_name" in identifier:
        class_name = identifier["class_name"]
        if class_name not in REGULARIZERS:
            raise ValueError(f"unknown regularizer class {class_name!r}; expected one of {sorted(REGULARIZERS)}")
        return REGULARIZERS[class_name](**identifier.get("config", {}))
    if callable(identifier):
        class_name = type(identifier).__name__
        if class_name in REGULARIZERS and hasattr(identifier, "get_config"):
            return REGULARIZERS[class_name](**identifier.get_config())
        return _Foreign(identifier)
    raise TypeError(f"expected None, a regularizer name, object or callable, got {identifier!r}")


def serialize(regularizer: Regularizer | None) -> dict | None:
    if regularizer is None:
        return None
    if isinstance(regularizer, _Foreign):
        raise ValueError(f"cannot serialize the custom regularizer {regularizer.function!r}; use L1, L2 or L1L2")
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
