"""The Keras-style layer: configuration in ``__init__``, weights created in ``build`` from the input shape
on first call, ``call(x, mask) -> (y, mask)`` so padding masks flow through a model, ``get_config()`` to
rebuild it from JSON.

Shapes use ``None`` for sizes not known in advance (the batch, and the time of variable-length input), as
Keras does: ``(None, None, 128)`` is "any batch of any-length sequences of 128 features".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

Shape = tuple  # of int | None

LAYERS: dict[str, type[Layer]] = {}


class Layer(nn.Module):
    """Base class of grukit's Keras-style layers.

    Subclasses implement ``build(input_shape)`` (create parameters), ``call(x, mask)`` returning
    ``(output, output_mask)``, ``compute_output_shape(input_shape)`` and ``get_config()``.
    ``mask`` is a ``(B, T)`` bool tensor, true at real (non-padding) steps, or ``None``.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        LAYERS[cls.__name__] = cls

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name or type(self).__name__.lower()
        self.built = False
        self.input_shape: Shape | None = None

    def build(self, input_shape: Shape) -> None:
        """Create the weights for inputs of ``input_shape``; the base version creates none."""
        self.input_shape = tuple(input_shape)
        self.built = True

    def call(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        return cls(**config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Build on first call (from ``x``'s shape, batch as ``None``), then ``call``."""
        if not self.built:
            self.build((None, *x.shape[1:]))
        return self.call(x, mask)

    @property
    def losses(self) -> list[Tensor]:
        """Regularization penalties of this layer's weights and of the layers inside it (Keras' ``layer.losses``);
        a ``Sequential`` adds them to its training loss."""
        return [loss for child in self.children() if isinstance(child, Layer) for loss in child.losses]

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays, in Keras' layout and order (``[kernel, bias]`` for ``Dense``)."""
        return [p.detach().cpu().numpy().copy() for p in self.parameters()]

    def set_weights(self, weights: list) -> None:
        """Load weights given as :meth:`get_weights` returns them (a Keras layer's ``get_weights()`` fits)."""
        parameters = list(self.parameters())
        expected = [tuple(p.shape) for p in parameters]
        got = [tuple(np.shape(w)) for w in weights]
        if got != expected:
            raise ValueError(f"{type(self).__name__} {self.name!r} expected weights of shapes {expected}, got {got}")
        with torch.no_grad():
            for parameter, value in zip(parameters, weights):
                parameter.copy_(as_tensor(value))

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")


def as_tensor(value: object) -> Tensor:
    """``value`` as a tensor: tensors pass through, numpy arrays and nested lists are converted (as Keras
    converts its inputs)."""
    return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))


def layer_from_config(entry: dict) -> Layer:
    """Rebuild a layer from ``{"class_name": ..., "config": {...}}``."""
    class_name = entry.get("class_name")
    if class_name not in LAYERS:
        raise ValueError(f"unknown layer class {class_name!r}; grukit has {sorted(LAYERS)}")
    return LAYERS[class_name].from_config(dict(entry["config"]))


def layer_to_config(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def check_last_dim(layer: Layer, x: Tensor) -> None:
    """Refuse input whose feature size differs from the one the layer was built for."""
    expected = layer.input_shape[-1]
    if x.dim() != len(layer.input_shape) or x.shape[-1] != expected:
        rank = len(layer.input_shape)
        # Only the rank and the last size are checked: a sequence's length is free even if the first call fixed it.
        shown = ", ".join(
            "batch" if i == 0 else ("time" if d is None or (i == 1 and rank > 2) else str(d))
            for i, d in enumerate(layer.input_shape)
        )
        raise ValueError(f"{type(layer).__name__} expected input of shape ({shown}), got {tuple(x.shape)}")
