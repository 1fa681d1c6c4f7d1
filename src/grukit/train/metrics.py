r"""Streaming metrics: ``update(outputs, targets, mask)`` per batch, ``result()`` over everything since
``reset()``. Each one averages a per-element value over the positions the mask keeps, so padding counts
for nothing and the epoch figure is the exact token (or sample) average, not a mean of batch means.
"""

from __future__ import annotations

from torch import Tensor


class Metric:
    """Mean of a per-element value ``v`` over kept positions: ``Σ mask ⊙ v / Σ mask``."""

    name = "metric"

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The per-element values (the shape a mask has)."""
        raise NotImplementedError

    def update(self, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> None:
        values = self.values(outputs.detach(), targets)
        if mask is not None:
            values = values[mask]
        self.total += float(values.double().sum())
        self.count += values.numel()

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0


class SparseCategoricalAccuracy(Metric):
    """``argmax(outputs, -1) == targets`` with outputs ``(..., C)`` and integer targets ``(...)``."""

    name = "accuracy"

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(-1) == targets).float()


class CategoricalAccuracy(Metric):
    """``argmax(outputs, -1) == argmax(targets, -1)`` with one-hot targets."""

    name = "accuracy"

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(-1) == targets.argmax(-1)).float()


class BinaryAccuracy(Metric):
    """Mean over the last axis of ``(outputs > 0.5) == targets``."""

    name = "accuracy"

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if targets.dim() == outputs.dim() - 1 and outputs.shape[-1] == 1:
            targets = targets.unsqueeze(-1)
        return ((outputs > self.threshold).float() == targets.float()).float().mean(-1)


class MeanSquaredError(Metric):
    name = "mse"

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if targets.dim() == outputs.dim() - 1 and outputs.shape[-1] == 1:
            targets = targets.unsqueeze(-1)
        return (outputs - targets).square().mean(-1)


class MeanAbsoluteError(Metric):
    name = "mae"

    def values(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if targets.dim() == outputs.dim() - 1 and outputs.shape[-1] == 1:
            targets = targets.unsqueeze(-1)
        return (outputs - targets).abs().mean(-1)


ACCURACY_FOR_LOSS = {
    "sparse_categorical_crossentropy": SparseCategoricalAccuracy,
    "categorical_crossentropy": CategoricalAccuracy,
    "binary_crossentropy": BinaryAccuracy,
}

METRICS = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
}


def get_metric(metric: str | Metric, loss: object = None) -> Metric:
    """A metric by Keras name, or a :class:`Metric` returned as is. ``"accuracy"`` / ``"acc"`` picks the
    accuracy that fits ``loss`` (by name), sparse categorical when the loss is a callable, as Keras does."""
    if isinstance(metric, Metric):
        return metric
    if metric in ("accuracy", "acc"):
        return ACCURACY_FOR_LOSS.get(loss if isinstance(loss, str) else "", SparseCategoricalAccuracy)()
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected a Metric or one of {sorted([*METRICS, 'accuracy'])}")
    instance = METRICS[metric]()
    instance.name = metric
    return instance
