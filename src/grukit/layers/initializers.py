r"""Keras' weight initializers, by name (``"glorot_uniform"``, ``"orthogonal"``, ``"zeros"``, …) or as objects
(``Constant(0.01)``, ``GlorotUniform(seed=1)``), for the layers' ``*_initializer`` arguments.

An initializer is called with a shape in Keras' layout (a kernel is ``(fan_in, fan_out)``) and returns a
float32 tensor of that shape. Variance scaling draws with variance ``scale / n``, ``n`` = ``fan_in``,
``fan_out`` or their mean: glorot (``scale = 1``, mean fans), he (``2``, fan_in), lecun (``1``, fan_in);
uniform in ``±sqrt(3 scale / n)``, or truncated normal with that variance. Seeded initializers repeat their
draws; they do not draw Keras' numbers, which come from Keras' own generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


class Initializer:
    """Base class: ``__call__(shape, dtype=torch.float32) -> Tensor`` and ``get_config()``."""

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    def _generator(self) -> torch.Generator | None:
        seed = getattr(self, "seed", None)
        return None if seed is None else torch.Generator().manual_seed(int(seed))


class Zeros(Initializer):
    def __call__(self, shape, dtype=torch.float32):
        return torch.zeros(shape, dtype=dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype=torch.float32):
        return torch.ones(shape, dtype=dtype)


class Constant(Initializer):
    """Every element ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, shape, dtype=torch.float32):
        return torch.full(shape, self.value, dtype=dtype)

    def get_config(self) -> dict:
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None) -> None:
        self.minval, self.maxval, self.seed = float(minval), float(maxval), seed

    def __call__(self, shape, dtype=torch.float32):
        return torch.empty(shape).uniform_(self.minval, self.maxval, generator=self._generator()).to(dtype)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def __call__(self, shape, dtype=torch.float32):
        return torch.empty(shape).normal_(self.mean, self.stddev, generator=self._generator()).to(dtype)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """Normal draws cut at two standard deviations from the mean."""

    def __call__(self, shape, dtype=torch.float32):
        low, high = self.mean - 2 * self.stddev, self.mean + 2 * self.stddev
        values = torch.empty(shape)
        torch.nn.init.trunc_normal_(values, self.mean, self.stddev, low, high, generator=self._generator())
        return values.to(dtype)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(Initializer):
    """Draws of variance ``scale / n`` (see the module docstring)."""

    def __init__(
        self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal", seed: int | None = None
    ) -> None:
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling expected mode 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(
                "VarianceScaling expected distribution 'uniform', 'truncated_normal' or 'untruncated_normal', "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution, self.seed = float(scale), mode, distribution, seed

    def __call__(self, shape, dtype=torch.float32):
        fan_in, fan_out = _fans(tuple(shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        values = torch.empty(shape)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return values.uniform_(-limit, limit, generator=self._generator()).to(dtype)
        if self.distribution == "untruncated_normal":
            return values.normal_(0.0, math.sqrt(variance), generator=self._generator()).to(dtype)
        stddev = math.sqrt(variance) / 0.87962566103423978  # std of a unit normal truncated at ±2
        torch.nn.init.trunc_normal_(values, 0.0, stddev, -2 * stddev, 2 * stddev, generator=self._generator())
        return values.to(dtype)

    def get_config(self) -> dict:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _scaling(name: str, scale: float, mode: str, distribution: str) -> type[VarianceScaling]:
    def __init__(self, seed: int | None = None) -> None:
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config})


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain``, from the QR decomposition of a normal draw."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain, self.seed = float(gain), seed

    def __call__(self, shape, dtype=torch.float32):
        return torch.nn.init.orthogonal_(torch.empty(shape), self.gain, generator=self._generator()).to(dtype)

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    """``gain`` times the identity (for 2-D shapes; a rectangular one has ones on its main diagonal)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def __call__(self, shape, dtype=torch.float32):
        if len(shape) != 2:
            raise ValueError(f"Identity initializer expected a 2-D shape, got {tuple(shape)}")
        return self.gain * torch.eye(*shape, dtype=dtype)

    def get_config(self) -> dict:
        return {"gain": self.gain}


INITIALIZERS: dict[str, type[Initializer]] = {
    cls.__name__: cls
    for cls in (
        Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling, GlorotUniform,
        GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal, Identity,
    )
}
NAMES = {
    "zeros": "Zeros", "ones": "Ones", "constant": "Constant", "random_uniform": "RandomUniform",
    "random_normal": "RandomNormal", "truncated_normal": "TruncatedNormal", "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform",
    "he_normal": "HeNormal", "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal", "identity": "Identity",
}  # fmt: skip


class _Foreign(Initializer):
    """Any other ``init(shape, dtype)`` callable (a Keras initializer, say), its result made a tensor."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, shape, dtype=torch.float32):
        values = self.function(tuple(shape))
        values = values.detach().cpu() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
        return values.to(dtype)


def get(identifier: object) -> Initializer:
    """An initializer from a name, a ``{"class_name", "config"}`` dict, an :class:`Initializer`, or any callable
    ``init(shape)`` (a Keras initializer object works: its class name and config are kept)."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        class_name = NAMES.get(identifier, identifier)
        if class_name not in INITIALIZERS:
            raise ValueError(f"unknown initializer {identifier!r}; expected one of {sorted(NAMES)}")
        return INITIALIZERS[class_name]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        class_name = identifier["class_name"]
        if class_name not in INITIALIZERS:
            raise ValueError(f"unknown initializer class {class_name!r}; expected one of {sorted(INITIALIZERS)}")
        return INITIALIZERS[class_name](**identifier.get("config", {}))
    if callable(identifier):
        class_name = type(identifier).__name__
        if class_name in INITIALIZERS and hasattr(identifier, "get_config"):
            return INITIALIZERS[class_name](**identifier.get_config())
        return _Foreign(identifier)
    raise TypeError(f"expected an initializer name, object or callable, got {identifier!r}")


def is_named(initializer: Initializer, name: str) -> bool:
    """Whether ``initializer`` is the one the name gives (e.g. an unseeded ``GlorotUniform()`` for
    ``"glorot_uniform"``)."""
    return type(initializer).__name__ == NAMES[name] and initializer.get_config() == get(name).get_config()


def serialize(initializer: Initializer) -> str | dict:
    """The JSON form :func:`get` reads back: the Keras name for an argument-free default, else a dict."""
    if isinstance(initializer, _Foreign):
        raise ValueError(f"cannot serialize the custom initializer {initializer.function!r}; use a named one")
    config = initializer.get_config()
    name = type(initializer).__name__
    if config == INITIALIZERS[name]().get_config():
        return next(key for key, value in NAMES.items() if value == name)
    return {"class_name": name, "config": config}
