r"""Non-recurrent layers: Embedding, Dense, Dropout, TimeDistributed and the global poolings.

Initialisation follows Keras so that a grukit model starts where the same Keras model would: embeddings
uniform in ±0.05, dense kernels glorot-uniform, biases zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from grukit.layers.base import Layer, Shape, check_last_dim, layer_from_config, layer_to_config

ACTIVATIONS = {
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "gelu": nn.functional.gelu,
    "elu": nn.functional.elu,
    "selu": nn.functional.selu,
    "softplus": nn.functional.softplus,
    "swish": nn.functional.silu,
    "silu": nn.functional.silu,
}


def check_activation(owner: str, activation: str | None) -> str | None:
    if activation not in ACTIVATIONS:
        names = sorted(k for k in ACTIVATIONS if k is not None)
        raise ValueError(f"{owner} got unknown activation {activation!r}; expected None or one of {names}")
    return activation


def _check_units(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} expected {name} to be a positive integer, got {value!r}")
    return value


class Embedding(Layer):
    r"""Token ids ``(B, T)`` → vectors ``(B, T, output_dim)``: ``y[b, t] = W[x[b, t]]``, ``W`` ``(input_dim,
    output_dim)``.

    With ``mask_zero=True`` id 0 is padding: the output mask is ``x != 0``, which tells the recurrent layers
    each sequence's length and keeps padded steps out of the loss and metrics (so ``input_dim`` must count
    the padding id, as in Keras).
    """

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.input_dim = _check_units("Embedding", "input_dim", input_dim)
        self.output_dim = _check_units("Embedding", "output_dim", output_dim)
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape: Shape) -> None:
        self.embeddings = nn.Parameter(torch.empty(self.input_dim, self.output_dim).uniform_(-0.05, 0.05))
        super().build(input_shape)

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if x.is_floating_point():
            if not torch.equal(x, x.round()):
                raise TypeError(f"Embedding expected integer token ids, got non-integral values of dtype {x.dtype}")
            x = x.long()
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.input_dim):
            raise ValueError(
                f"Embedding(input_dim={self.input_dim}) got token ids in [{int(x.min())}, {int(x.max())}]; "
                f"ids must lie in [0, {self.input_dim - 1}]"
            )
        output = nn.functional.embedding(x, self.embeddings)  # (B, T, E)
        if self.mask_zero:
            own = x != 0  # (B, T)
            mask = own if mask is None else mask & own
        return output, mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "mask_zero": self.mask_zero,
        }


class Dense(Layer):
    r"""``y = activation(x W + b)`` on the last axis: ``(..., I)`` → ``(..., units)``; ``W`` ``(I, units)``
    glorot-uniform (stored as ``kernel`` in Keras' ``(in, out)`` layout), ``b`` zeros."""

    def __init__(
        self, units: int, activation: str | None = None, use_bias: bool = True, name: str | None = None
    ) -> None:
        super().__init__(name)
        self.units = _check_units("Dense", "units", units)
        self.activation = check_activation("Dense", activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape: Shape) -> None:
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"Dense needs a known last dimension to build, got input shape {tuple(input_shape)}")
        self.kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.units, features)).T.contiguous())
        self.bias = nn.Parameter(torch.zeros(self.units)) if self.use_bias else None
        super().build(input_shape)

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if x.shape[-1] != self.input_shape[-1]:
            raise ValueError(f"Dense expected input with last dimension {self.input_shape[-1]}, got {tuple(x.shape)}")
        y = x @ self.kernel  # (..., units)
        if self.bias is not None:
            y = y + self.bias
        return ACTIVATIONS[self.activation](y), mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "activation": self.activation, "use_bias": self.use_bias}


class Dropout(Layer):
    """Zero each input element with probability ``rate`` in training, scaling the rest by ``1/(1 − rate)``;
    the identity in evaluation."""

    def __init__(self, rate: float, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout expected rate in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return nn.functional.dropout(x, self.rate, self.training), mask

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


class TimeDistributed(Layer):
    """Apply ``layer`` to every time step independently: ``(B, T, ...)`` → ``(B, T, ...')``, by folding time
    into the batch. The mask passes through."""

    def __init__(self, layer: Layer, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed expected a grukit layer, got {type(layer).__name__}")
        self.layer = layer

    def build(self, input_shape: Shape) -> None:
        if len(input_shape) < 3:
            raise ValueError(f"TimeDistributed expected input of shape (batch, time, ...), got {tuple(input_shape)}")
        self.layer.build((None, *input_shape[2:]))
        super().build(input_shape)

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        batch, steps = x.shape[:2]
        y, _ = self.layer(x.reshape(batch * steps, *x.shape[2:]))  # (B*T, ...')
        return y.reshape(batch, steps, *y.shape[1:]), mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:2], *self.layer.compute_output_shape((None, *input_shape[2:]))[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "layer": layer_to_config(self.layer)}

    @classmethod
    def from_config(cls, config: dict) -> TimeDistributed:
        config["layer"] = layer_from_config(config["layer"])
        return cls(**config)


class GlobalAveragePooling1D(Layer):
    r"""``(B, T, C)`` → ``(B, C)``: the mean over time of the real steps, ``Σ_t m_t x_t / Σ_t m_t``."""

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, None]:
        check_last_dim(self, x)
        if mask is None:
            return x.mean(1), None
        weights = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0), None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], input_shape[-1])


class GlobalMaxPooling1D(Layer):
    r"""``(B, T, C)`` → ``(B, C)``: the maximum over time of the real steps."""

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, None]:
        check_last_dim(self, x)
        if mask is None:
            return x.amax(1), None
        return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1), None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], input_shape[-1])
