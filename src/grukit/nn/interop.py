"""Weight conversion between grukit, ``torch.nn.GRU`` / ``torch.nn.LSTM`` and Keras 3.

Layouts (``H`` hidden size, ``I`` input size):

============  ==========================  =========================  ==========================================
              input weights               recurrent weights          biases
============  ==========================  =========================  ==========================================
torch/grukit  ``weight_ih (3H, I)`` r,z,n  ``weight_hh (3H, H)`` r,z,n ``bias_ih (3H,)``, ``bias_hh (3H,)``
Keras GRU     ``kernel (I, 3H)`` z,r,h     ``recurrent_kernel (H, 3H)``  ``(2, 3H)`` [input; recurrent] if
                                                                      ``reset_after`` else ``(3H,)``
torch LSTM    ``weight_ih (4H, I)`` i,f,g,o ``weight_hh (4H, H)``     ``bias_ih``, ``bias_hh`` ``(4H,)``
Keras LSTM    ``kernel (I, 4H)`` i,f,c,o   ``recurrent_kernel (H, 4H)``  ``(4H,)``
============  ==========================  =========================  ==========================================

A reset-before GRU and an LSTM have one Keras bias: torch's two biases enter them only as a sum
(for reset-before, ``b_hn`` sits outside ``r ⊙ ·``), so ``bias = b_ih + b_hh`` is exact and the way back
puts it all in ``b_ih``. A module with ``bias=False`` matches Keras' ``use_bias=False``: two arrays per layer and
direction, ``[kernel, recurrent_kernel]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Keras' gate order, as indices into torch's gate blocks.
_KERAS_FROM_TORCH = {3: [1, 0, 2], 4: [0, 1, 2, 3]}  # GRU: z, r, n <- r, z, n; LSTM: same order


def _reorder(blocks: torch.Tensor, gates: int, axis: int) -> torch.Tensor:
    """Permute the ``gates`` stacked blocks of ``blocks`` along ``axis`` between torch and Keras order."""
    order = _KERAS_FROM_TORCH[gates]  # the permutation is its own inverse for both cells
    return torch.cat([blocks.chunk(gates, dim=axis)[g] for g in order], dim=axis)


def _copy_config(module: nn.Module) -> dict:
    config = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=bool(module.bias),
        batch_first=bool(module.batch_first),
        dropout=float(module.dropout),
        bidirectional=bool(module.bidirectional),
    )
    if getattr(module, "proj_size", 0):  # LSTM with projections
        config["proj_size"] = module.proj_size
    return config


def from_torch(cls, module: nn.Module, torch_cls: type) -> nn.Module:
    if not isinstance(module, torch_cls):
        raise TypeError(f"{cls.__name__}.from_torch expected a {torch_cls.__module__}.{torch_cls.__name__}, "
                        f"got {type(module).__name__}")
    ours = cls(**_copy_config(module))
    ours = ours.to(dtype=next(module.parameters()).dtype, device=next(module.parameters()).device)
    ours.load_state_dict(module.state_dict())
    return ours


def to_torch(ours: nn.Module, torch_cls: type) -> nn.Module:
    theirs = torch_cls(**_copy_config(ours))
    param = next(ours.parameters())
    theirs = theirs.to(dtype=param.dtype, device=param.device)
    theirs.load_state_dict(ours.state_dict())
    return theirs


def to_keras(ours: nn.Module) -> list[np.ndarray]:
    """Keras weights of every layer and direction, concatenated in ``get_weights()`` order (no bias arrays
    for ``bias=False``, as Keras' ``use_bias=False``)."""
    if getattr(ours, "proj_size", 0):
        raise ValueError(f"Keras' LSTM has no projection; this {type(ours).__name__} has proj_size={ours.proj_size}")
    gates = ours.gates
    reset_after = getattr(ours, "reset_after", False)
    weights: list[np.ndarray] = []
    with torch.no_grad():
        for layer in range(ours.num_layers):
            for direction in range(ours.num_directions):
                tensors = ours.layer_weights(layer, direction)
                w_ih, w_hh, b_ih, b_hh = (None if t is None else t.detach().cpu() for t in tensors)
                kernel = _reorder(w_ih, gates, 0).T  # (I, G*H)
                recurrent = _reorder(w_hh, gates, 0).T  # (H, G*H)
                weights += [kernel.numpy().copy(), recurrent.numpy().copy()]
                if not ours.bias:
                    continue
                if gates == 3 and reset_after:
                    bias = torch.stack([_reorder(b_ih, gates, 0), _reorder(b_hh, gates, 0)])  # (2, 3H)
                else:
                    bias = _reorder(b_ih + b_hh, gates, 0)  # (G*H,)
                weights.append(bias.numpy().copy())
    return weights


def from_keras(cls, weights: list, bidirectional: bool = False, **kwargs) -> nn.Module:
    """Build ``cls`` from Keras weights; the layer count follows from the list's length. With ``bias=False``
    in ``kwargs`` (Keras' ``use_bias=False``) each layer and direction has no bias array."""
    name = f"{cls.__name__}.from_keras_weights"
    directions = 2 if bidirectional else 1
    per_cell = 3 if kwargs.get("bias", True) else 2
    if not isinstance(weights, (list, tuple)) or not weights or len(weights) % (per_cell * directions):
        got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
        names = "kernel, recurrent_kernel, bias" if per_cell == 3 else "kernel, recurrent_kernel (bias=False)"
        raise ValueError(
            f"{name} expected a list of [{names}] per layer and direction "
            f"(a multiple of {per_cell * directions} arrays), got {got}"
        )
    arrays = [torch.as_tensor(np.asarray(w)) for w in weights]
    gates = cls.gates
    kernel0, recurrent0 = arrays[0], arrays[1]
    if kernel0.dim() != 2 or recurrent0.dim() != 2 or recurrent0.shape[1] != gates * recurrent0.shape[0]:
        raise ValueError(
            f"{name} expected kernel (I, {gates}H) and recurrent_kernel (H, {gates}H), "
            f"got {tuple(kernel0.shape)} and {tuple(recurrent0.shape)}"
        )
    hidden = recurrent0.shape[0]
    num_layers = len(arrays) // (per_cell * directions)
    ours = cls(kernel0.shape[0], hidden, num_layers=num_layers, bidirectional=bidirectional, **kwargs)
    ours = ours.to(dtype=kernel0.dtype if kernel0.is_floating_point() else torch.float32)
    reset_after = getattr(ours, "reset_after", False)
    two_biases = gates == 3 and reset_after
    with torch.no_grad():
        for index in range(num_layers * directions):
            layer, direction = divmod(index, directions)
            kernel, recurrent, *bias_array = arrays[per_cell * index : per_cell * (index + 1)]
            w_ih, w_hh, b_ih, b_hh = ours.layer_weights(layer, direction)
            expected = {
                "kernel": ((w_ih.shape[1], gates * hidden), kernel),
                "recurrent_kernel": ((hidden, gates * hidden), recurrent),
            }
            if bias_array:
                expected["bias"] = ((2, gates * hidden) if two_biases else (gates * hidden,), bias_array[0])
            for what, (shape, array) in expected.items():
                if tuple(array.shape) != shape:
                    hint = f" (reset_after={reset_after})" if gates == 3 and what == "bias" else ""
                    raise ValueError(
                        f"{name}: layer {layer} direction {direction} expected {what} of shape {shape}{hint}, "
                        f"got {tuple(array.shape)}"
                    )
            w_ih.copy_(_reorder(kernel.T, gates, 0))
            w_hh.copy_(_reorder(recurrent.T, gates, 0))
            if not bias_array:
                continue
            bias = bias_array[0]
            if two_biases:
                b_ih.copy_(_reorder(bias[0], gates, 0))
                b_hh.copy_(_reorder(bias[1], gates, 0))
            else:
                b_ih.copy_(_reorder(bias, gates, 0))
                b_hh.zero_()
    return ours
