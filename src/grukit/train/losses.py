r"""Losses with Keras' names and semantics, masked: ``loss(outputs, targets, mask=None) -> scalar``.

Each loss first computes one value per element ``ℓ`` (per sample, or per time step for sequence outputs),
then reduces over the positions the mask keeps::

    loss = Σ mask ⊙ ℓ / Σ mask          (mean of ℓ without a mask)

so padded positions count for nothing, as in Keras. ``mask`` is a boolean tensor of ``ℓ``'s shape.

Probabilities are clipped to ``[ε, 1 − ε]`` with ``ε = 1e-7`` before the logarithm, as Keras does for
``from_logits=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

EPSILON = 1e-7

LossFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def reduce_masked(per_element: Tensor, mask: Tensor | None) -> Tensor:
    """``Σ mask ⊙ ℓ / Σ mask`` (``ℓ.mean()`` without a mask); 0 when the mask keeps nothing."""
    if mask is None:
        return per_element.mean()
    if mask.shape != per_element.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match the loss's per-element shape {tuple(per_element.shape)}"
        )
    weights = mask.to(per_element.dtype)
    return (per_element * weights).sum() / weights.sum().clamp_min(1.0)


def _match_last_axis(outputs: Tensor, targets: Tensor) -> Tensor:
    """Targets ``(B,)`` against outputs ``(B, 1)``: add the unit axis, as Keras does."""
    if targets.dim() == outputs.dim() - 1 and outputs.shape[-1] == 1:
        targets = targets.unsqueeze(-1)
    if targets.shape != outputs.shape:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match outputs of shape {tuple(outputs.shape)}"
        )
    return targets.to(outputs.dtype)


def sparse_categorical_crossentropy(
    probabilities: Tensor, targets: Tensor, mask: Tensor | None = None, from_logits: bool = False
) -> Tensor:
    r"""``ℓ = −log p[target]``. ``probabilities`` ``(..., C)`` (a softmax output, or logits with
    ``from_logits``), ``targets`` ``(...)`` integer class ids in ``[0, C)``."""
    classes = probabilities.shape[-1]
    if targets.shape != probabilities.shape[:-1]:
        raise ValueError(
            f"sparse_categorical_crossentropy expected integer targets of shape {tuple(probabilities.shape[:-1])} "
            f"for outputs of shape {tuple(probabilities.shape)}, got {tuple(targets.shape)}"
        )
    targets = targets.long()
    if mask is not None:
        targets = targets.masked_fill(~mask, 0)  # padded positions may hold any id; they are weighted out
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(
            f"sparse_categorical_crossentropy got class ids in [{int(targets.min())}, {int(targets.max())}] "
            f"but the model outputs {classes} classes (ids must lie in [0, {classes - 1}])"
        )
    if from_logits:
        log_p = torch.log_softmax(probabilities, dim=-1)
    else:
        log_p = probabilities.clamp(EPSILON, 1.0 - EPSILON).log()
    per_element = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (...)
    return reduce_masked(per_element, mask)


def categorical_crossentropy(
    probabilities: Tensor, targets: Tensor, mask: Tensor | None = None, from_logits: bool = False
) -> Tensor:
    r"""``ℓ = −Σ_c y_c log p_c`` with one-hot (or soft) targets of the outputs' shape ``(..., C)``."""
    targets = _match_last_axis(probabilities, targets)
    if from_logits:
        log_p = torch.log_softmax(probabilities, dim=-1)
    else:
        probabilities = probabilities / probabilities.sum(-1, keepdim=True)
        log_p = probabilities.clamp(EPSILON, 1.0 - EPSILON).log()
    return reduce_masked(-(targets * log_p).sum(-1), mask)


def binary_crossentropy(
    probabilities: Tensor, targets: Tensor, mask: Tensor | None = None, from_logits: bool = False
) -> Tensor:
    r"""``ℓ = mean_last_axis(−y log p − (1 − y) log(1 − p))`` for sigmoid outputs ``(..., K)``."""
    targets = _match_last_axis(probabilities, targets)
    if from_logits:
        per_unit = torch.nn.functional.binary_cross_entropy_with_logits(probabilities, targets, reduction="none")
    else:
        p = probabilities.clamp(EPSILON, 1.0 - EPSILON)
        per_unit = -(targets * p.log() + (1 - targets) * (1 - p).log())
    return reduce_masked(per_unit.mean(-1), mask)


def mean_squared_error(outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""``ℓ = mean_last_axis((y − ŷ)²)``."""
    targets = _match_last_axis(outputs, targets)
    return reduce_masked((outputs - targets).square().mean(-1), mask)


def mean_absolute_error(outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""``ℓ = mean_last_axis(|y − ŷ|)``."""
    targets = _match_last_axis(outputs, targets)
    return reduce_masked((outputs - targets).abs().mean(-1), mask)


LOSSES: dict[str, LossFn] = {
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
}


def _positional_parameters(fn: Callable) -> int | None:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in parameters)


def get_loss(loss: str | LossFn) -> LossFn:
    """A loss by its Keras name, or a callable. A callable of three arguments is grukit's
    ``loss(outputs, targets, mask) -> scalar`` and is returned as is; one of two is a Keras custom loss
    ``loss(y_true, y_pred)`` returning per-element values, which are then reduced over the mask."""
    if callable(loss):
        if _positional_parameters(loss) != 2:
            return loss

        def keras_style(outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
            values = loss(targets, outputs)
            if values.dim() == 0:
                return values
            return reduce_masked(values, mask if mask is not None and mask.shape == values.shape else None)

        return keras_style
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected a callable or one of {sorted(LOSSES)}")
    return LOSSES[loss]
