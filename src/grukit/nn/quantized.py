r"""int8 inference on the CPU: :func:`quantize_int8` turns a float model's GRUs and linear layers into int8 ones.

Each quantised matrix is stored as int8 with one scale per output channel (or per tensor),
``W ≈ s · W_q``; activations are quantised to uint8 at run time and the products run as int8 GEMMs
(VNNI / AMX). The GRU's candidate form decides the kernel (:mod:`grukit.ops.int8`):

- reset-after (the default of grukit, torch and Keras): torch's dynamic int8 GRU, ``torch.quantized_gru``;
- reset-before: oneDNN's int8 ``gru`` primitive (oneDNN 3.2 has no int8 reset-after GRU).

The int8 copies are for inference only: they have no parameters to train, refuse to run in training mode or
on inputs that ask for gradients, and are not saved. Save the float model and rebuild the int8 copy after
loading it: ``quantize_int8(grukit.load(folder))``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from grukit.nn.recurrent import GRU, DTypeError, RecurrentBase
from grukit.ops import int8

NOT_SAVED = (
    "{name} holds int8 weights that grukit does not save; save the float model and rebuild the int8 copy "
    "after loading it: quantize_int8(grukit.load(folder))"
)


def _check_inference(name: str, module: nn.Module, *tensors: Tensor | None) -> None:
    """Refuse training mode and inputs that ask for gradients: int8 weights have none."""
    if module.training:
        raise RuntimeError(
            f"{name} is int8 and inference-only, but it is in training mode; call .eval() on it, "
            "or train the float model and quantise it again"
        )
    if torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in tensors):
        raise RuntimeError(
            f"{name} is int8 and inference-only: it has no gradients, but got an input that requires grad; "
            "run it under torch.no_grad() or on a detached input"
        )


class QuantizedGRU(RecurrentBase):
    r""":class:`grukit.nn.GRU` with int8 weights, for inference on the CPU: the same equations (both candidate
    forms), arguments of ``forward``, shapes, ``lengths``, ``PackedSequence``, ``batch_first``, layers and
    directions, with float32 inputs and outputs. Build one with :func:`quantize_int8` or
    :meth:`from_float`.

    Per layer and direction ``W_ih ≈ s_ih · W_ih,q`` and ``W_hh ≈ s_hh · W_hh,q`` (int8, one scale per output
    channel when ``per_channel``); ``x_t`` and ``h_{t-1}`` are quantised to uint8 when they meet a weight, and the
    gates are computed in float32 from the int32 products (see :mod:`grukit.ops.int8` for the kernels). The
    error against the float model is int8-sized: ~1e-2 on the outputs of a GRU with uniform ±1/√H weights.

    ``weight_ih_l0`` is the dequantised ``s · W_q`` of layer 0 (float32), for code that reads the float
    module's dtype and device from it.
    """

    gates = 3

    def __init__(self, gru: GRU, per_channel: bool = True, backend: str = "auto") -> None:
        nn.Module.__init__(self)  # no float parameters: the int8 weights live in self.directions
        if not isinstance(gru, GRU):
            raise TypeError(f"QuantizedGRU expected a grukit.nn.GRU, got {type(gru).__name__}")
        for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "init", "reset_after"):
            setattr(self, name, getattr(gru, name))
        self.per_channel = bool(per_channel)
        self.backend = int8.resolve_backend(backend)
        self.directions = [
            int8.GRUDirectionInt8(*gru.layer_weights(layer, direction), gru.reset_after, self.per_channel, self.backend)
            for layer in range(self.num_layers)
            for direction in range(self.num_directions)
        ]
        self.eval()

    @classmethod
    def from_float(cls, gru: GRU, per_channel: bool = True, backend: str = "auto") -> QuantizedGRU:
        """An int8 copy of ``gru``; ``gru`` is left as it is."""
        return cls(gru, per_channel, backend)

    @property
    def kernel(self) -> str:
        """What runs the recurrence: torch's int8 GRU (reset-after) or oneDNN's int8 ``gru`` (reset-before)."""
        return f"torch.quantized_gru ({self.backend})" if self.reset_after else "onednn int8 gru"

    @property
    def weight_ih_l0(self) -> Tensor:
        first = self.directions[0]
        return first.weight_ih_int8.float() * first.scale_ih[:, None]  # (3H, I)

    def extra_repr(self) -> str:
        form = "" if self.reset_after else ", reset_after=False"
        scales = "per channel" if self.per_channel else "per tensor"
        return f"{super().extra_repr()}{form}, int8 {scales}, kernel={self.kernel!r}"

    def _check_input(self, x: Tensor) -> tuple[Tensor, bool]:
        if isinstance(x, Tensor) and x.is_floating_point() and (x.dtype != torch.float32 or x.device.type != "cpu"):
            raise DTypeError(
                f"QuantizedGRU runs float32 inputs on the CPU, got {str(x.dtype).removeprefix('torch.')} on "
                f"{x.device}; call .float().cpu() on the input"
            )
        return super()._check_input(x)

    def _run_direction(self, x, state, layer, direction, lengths):
        if x.shape[1] == 0:  # an empty batch: nothing to run (the int8 kernels refuse empty tensors)
            return x.new_zeros(x.shape[0], 0, self.hidden_size), (state[0],)
        kernel = self.directions[layer * self.num_directions + direction]
        out, h_n = int8.gru_direction(kernel, x, state[0], lengths, reverse=direction == 1)
        return out, (h_n,)

    def forward(
        self, x: Tensor | PackedSequence, h0: Tensor | None = None, lengths: Tensor | list | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Returns ``(output, h_n)`` with :class:`grukit.nn.GRU`'s shapes; inference only."""
        _check_inference("QuantizedGRU", self, x.data if isinstance(x, PackedSequence) else x, h0)
        for name, tensor in (("input", x.data if isinstance(x, PackedSequence) else x), ("h0", h0)):
            if isinstance(tensor, Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"QuantizedGRU got NaN or infinite values in its {name}; int8 quantisation "
                                 "needs finite values (the float model would return NaN)")
        output, (h_n,) = self._forward(x, None if h0 is None else (h0,), lengths)
        return output, h_n

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        raise TypeError(NOT_SAVED.format(name="QuantizedGRU"))


class QuantizedLinear(nn.Module):
    r"""``torch.nn.Linear`` with int8 weights (torch's dynamic int8 linear): ``y = x Wᵀ + b``, ``W ≈ s · W_q``
    with one scale per output feature when ``per_channel``, ``x`` quantised to uint8 per call.
    ``x`` ``(..., in_features)`` float32 -> ``(..., out_features)`` float32; inference only."""

    def __init__(self, linear: nn.Linear, per_channel: bool = True, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantizedLinear expected a torch.nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.per_channel = bool(per_channel)
        self.linear = int8.LinearInt8(linear.weight, linear.bias, self.per_channel, int8.resolve_backend(backend))
        self.eval()

    def extra_repr(self) -> str:
        scales = "per channel" if self.per_channel else "per tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 {scales}"

    def forward(self, x: Tensor) -> Tensor:
        _check_inference("QuantizedLinear", self, x)
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[-1:] != (self.in_features,):
            raise DTypeError(
                f"QuantizedLinear expected a float32 CPU input of shape (..., {self.in_features}), got "
                f"{str(x.dtype).removeprefix('torch.')} on {x.device} of shape {tuple(x.shape)}"
            )
        return self.linear(x)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        raise TypeError(NOT_SAVED.format(name="QuantizedLinear"))


def quantize_int8(model: nn.Module, per_channel: bool = True, backend: str = "auto") -> nn.Module:
    """A new int8 copy of ``model`` for CPU inference: every :class:`grukit.nn.GRU` in the module tree becomes a
    :class:`QuantizedGRU` and every ``torch.nn.Linear`` a :class:`QuantizedLinear`; everything else (embeddings,
    Keras-style ``Dense`` layers, LSTMs, minGRUs) stays float32. ``model`` is left untouched. Works on a bare
    GRU, a :class:`grukit.models.Sequential` (its ``GRU`` layers wrap a :class:`grukit.nn.GRU`), a
    ``GRULanguageModel`` or any module holding them.

    Args:
        model: a float module tree on the CPU.
        per_channel: one weight scale per output channel (default) instead of one per matrix.
        backend: torch's quantised engine for the reset-after GRU and the linear layers: ``"auto"`` (the fastest
            available, ``onednn`` where present), ``"onednn"``, ``"x86"``, ``"fbgemm"`` or ``"qnnpack"``.

    Returns:
        the int8 copy, in eval mode. It is not saved: rebuild it from the float checkpoint,
        ``quantize_int8(grukit.load(folder))``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_int8 expected a torch.nn.Module, got {type(model).__name__}")
    int8.resolve_backend(backend)
    off_cpu = {str(t.device) for t in [*model.parameters(), *model.buffers()] if t.device.type != "cpu"}
    if off_cpu:
        raise ValueError(f"quantize_int8 quantises CPU models; this one has tensors on {sorted(off_cpu)}: call .cpu()")

    def convert(module: nn.Module) -> nn.Module | None:
        if isinstance(module, GRU):
            return QuantizedGRU(module, per_channel, backend)
        if type(module) is nn.Linear:  # subclasses (attention's projections) are read as plain weights elsewhere
            return QuantizedLinear(module, per_channel, backend)
        return None

    converted = convert(model)
    if converted is not None:
        return converted
    quantized = copy.deepcopy(model)
    count = 0
    for parent in list(quantized.modules()):
        for name, child in list(parent.named_children()):
            replacement = convert(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                count += 1
    if not count:
        raise ValueError(
            f"quantize_int8 found no grukit.nn.GRU or torch.nn.Linear in {type(model).__name__} to quantise"
        )
    quantized.eval()
    quantized.requires_grad_(False)
    return quantized
