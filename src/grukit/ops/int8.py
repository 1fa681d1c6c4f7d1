r"""int8 inference kernels for one GRU layer and direction, and for a linear layer, on the CPU.

Weights are quantised symmetrically to int8, one scale per output channel (a row of torch's ``(3H, K)``
matrix) or one per tensor::

    s = max |W_row| / 127,    W_q = round(W / s) ∈ [-127, 127],    W ≈ s · W_q

Activations are quantised to uint8 on the fly and every product runs as an int8 GEMM with int32 accumulation
(VNNI / AMX where the CPU has them); the gate nonlinearities stay float32. Which kernel runs depends on the
candidate form, because oneDNN 3.2's int8 RNN covers only the reset-before GRU:

- reset-after (torch's and Keras' default, grukit's default): torch's dynamic int8 GRU (``torch.quantized_gru``)
  with weights prepacked for one of torch's quantised backends (``onednn``, ``x86``, ``fbgemm``). The input
  projection of all steps is one int8 GEMM; at each step ``h_{t-1}`` is quantised to uint8 with its own range
  (dynamic quantisation), ``W_hh h_{t-1}`` is an int8 GEMM, the gates run in float32.
- reset-before: oneDNN's int8 ``gru`` primitive (``onednn_gru.forward_int8``). oneDNN quantises the input and
  the states with one static scale and shift, ``x_u8 = round(a·x + 128)``; here ``a = 127 / m`` with ``m`` the
  largest ``|x|`` and ``|h0|`` of the call (at least 1, the range of a GRU state) rounded up to a power of two, so
  that few primitives are built. oneDNN shares each channel's weight scale between ``W_ih`` and ``W_hh``.

Both run the foundation's ``lengths`` semantics through :func:`grukit.ops.engines.run_lengths`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from grukit.ops import engines, onednn, reference

BACKENDS = ("onednn", "x86", "fbgemm", "qnnpack")  # torch's quantised engines, fastest first on AVX-512 / AMX


def resolve_backend(backend: str) -> str:
    """The torch quantised engine that ``backend`` names here: ``"auto"`` is the first of :data:`BACKENDS` this
    torch build supports (``onednn`` ran torch's int8 GRU 1.6x faster than ``x86``/``fbgemm`` on an AMX Xeon)."""
    supported = torch.backends.quantized.supported_engines
    if backend == "auto":
        for name in BACKENDS:
            if name in supported:
                return name
        raise RuntimeError(f"this torch build has no int8 CPU backend (supported engines: {supported})")
    if backend not in BACKENDS or backend not in supported:
        choices = ("auto", *(name for name in BACKENDS if name in supported))
        raise ValueError(f"quantize_int8 expected backend in {choices}, got {backend!r}")
    return backend


@contextmanager
def _packing_for(backend: str) -> Iterator[None]:
    """Prepack under ``backend``: the packed weights keep that backend's layout and kernels whatever the global
    engine is when they run. Silences torch's notice that quantised tensors are deprecated (they are the
    format its int8 GEMMs take)."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
            yield
    finally:
        torch.backends.quantized.engine = before


def quantize_weight(weight: Tensor, per_channel: bool) -> tuple[Tensor, Tensor]:
    """``(W_q, s)``: ``W`` ``(rows, K)`` as int8 ``(rows, K)`` and float32 scales ``(rows,)`` (all equal when not
    ``per_channel``), with ``W ≈ s[:, None] · W_q`` (see the module docstring)."""
    weight = weight.detach().float()
    peak = weight.abs().amax(dim=1) if per_channel else weight.abs().amax().expand(weight.shape[0])  # (rows,)
    scales = (peak / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    values = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)  # (rows, K)
    return values, scales.contiguous()


def _as_qint8(values: Tensor, scales: Tensor, per_channel: bool) -> Tensor:
    """torch's quantised-tensor form of ``(W_q, s)``, which its prepack functions take."""
    if per_channel:
        zero_points = torch.zeros_like(scales, dtype=torch.int64)
        return torch._make_per_channel_quantized_tensor(values, scales.double(), zero_points, 0)
    return torch._make_per_tensor_quantized_tensor(values, float(scales[0]), 0)


def _biases(w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    zeros = torch.zeros(w_ih.shape[0])
    return (zeros if b_ih is None else b_ih.detach().float()), (zeros if b_hh is None else b_hh.detach().float())


class LinearInt8:
    """``y = x Wᵀ + b`` with int8 ``W`` ``(out, in)`` and ``x`` quantised per call (torch's dynamic int8 linear):
    ``x`` ``(..., in)`` float32 -> ``(..., out)`` float32."""

    def __init__(self, weight: Tensor, bias: Tensor | None, per_channel: bool, backend: str) -> None:
        self.backend = backend
        self.weight_int8, self.weight_scale = quantize_weight(weight, per_channel)
        with _packing_for(backend):
            qweight = _as_qint8(self.weight_int8, self.weight_scale, per_channel)
            self.packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())
        # fbgemm's AVX2 path can saturate 16-bit sums of u8 x s8 pairs; its usual cure is a 7-bit input range.
        self.reduce_range = backend in ("fbgemm", "x86")

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)


class GRUDirectionInt8:
    """One layer and direction of a GRU with int8 weights: ``(x (T, B, I), h0 (B, H)) -> every state (T, B, H)``
    over full-length sequences (see the module docstring for the two kernels).

    Keeps ``weight_ih_int8`` ``(3H, I)``, ``weight_hh_int8`` ``(3H, H)`` and their float32 ``scales`` ``(3H,)``
    (shared by both matrices for the reset-before form, oneDNN's constraint), torch's gate order r, z, n.
    """

    def __init__(
        self,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        reset_after: bool,
        per_channel: bool,
        backend: str,
    ) -> None:
        self.reset_after = reset_after
        w_ih, w_hh = w_ih.detach().float(), w_hh.detach().float()
        b_ih, b_hh = _biases(w_ih, b_ih, b_hh)
        if reset_after:
            self.weight_ih_int8, self.scale_ih = quantize_weight(w_ih, per_channel)
            self.weight_hh_int8, self.scale_hh = quantize_weight(w_hh, per_channel)
            with _packing_for(backend):
                packed_ih = torch.ops.quantized.linear_prepack(
                    _as_qint8(self.weight_ih_int8, self.scale_ih, per_channel), b_ih
                )
                packed_hh = torch.ops.quantized.linear_prepack(
                    _as_qint8(self.weight_hh_int8, self.scale_hh, per_channel), b_hh
                )
                self.cell_params = torch.ops.quantized.make_quantized_cell_params_dynamic(
                    packed_ih, packed_hh, b_ih, b_hh, True
                )
            return
        if onednn.load() is None:
            raise RuntimeError(
                "int8 inference of a reset_after=False GRU runs on oneDNN's int8 gru primitive, which needs "
                "grukit's onednn binding (grukit[fast]: the oneDNN 3.2 runtime and a C++ compiler)"
            )
        _, scales = quantize_weight(torch.cat([w_ih, w_hh], dim=1), per_channel)  # (3H,) shared by both
        self.weight_ih_int8 = torch.round(w_ih / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        self.weight_hh_int8 = torch.round(w_hh / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        self.scale_ih = self.scale_hh = scales
        # oneDNN quantises f32 weights itself (w_s8 = round(w / s)); handing it s · W_q gives back exactly W_q.
        self.w_layer = onednn._to_ldigo(self.weight_ih_int8.float() * scales[:, None])  # (I, 3H) gates u, r, o
        self.w_iter = onednn._to_ldigo(self.weight_hh_int8.float() * scales[:, None])  # (H, 3H)
        self.bias = onednn._fold_bias(w_ih, b_ih, b_hh, reset_after=False)  # (3, H)
        r, z, n = (1.0 / scales).chunk(3)
        self.onednn_scales = (torch.cat([z, r, n]) if per_channel else (1.0 / scales[:1])).contiguous()

    def __call__(self, x: Tensor, h0: Tensor) -> Tensor:
        if self.reset_after:
            output, _ = torch.quantized_gru(
                x.contiguous(), h0.unsqueeze(0).contiguous(), [self.cell_params], True, 1, 0.0, False, False, False
            )
            return output  # (T, B, H)
        peak = max(1.0, float(x.abs().amax()), float(h0.abs().amax()) if h0.numel() else 0.0)
        data_scale = 127.0 / 2.0 ** math.ceil(math.log2(peak))
        x_u8 = torch.round(x * data_scale + 128.0).clamp_(0, 255).to(torch.uint8)  # (T, B, I)
        return onednn.load().forward_int8(
            x_u8.contiguous(), h0.contiguous(), self.w_layer, self.w_iter, self.bias, self.onednn_scales,
            data_scale, 128.0,
        )


def gru_direction(
    kernel: GRUDirectionInt8, x: Tensor, h0: Tensor, lengths: Tensor | None, reverse: bool
) -> tuple[Tensor, Tensor]:
    """One int8 GRU layer and direction with the semantics of ``reference.scan(gru_cell, ...)``: ``x``
    ``(T, B, I)``, ``h0`` ``(B, H)``, ``lengths`` ``(B,)`` or ``None`` -> ``(output (T, B, H), h_n (B, H))``."""
    if reverse:
        x = reference.reverse_padded(x, lengths)
    output, h_n = engines.run_lengths(kernel, x, h0, lengths)
    if reverse:
        output = reference.reverse_padded(output, lengths)
    return output, h_n
