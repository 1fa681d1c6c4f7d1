r"""The ``native`` engine: grukit's own fused GRU kernel (``csrc/native_gru.cpp``), for CPUs and systems without
oneDNN, and the float64 path.

Per layer and direction, with ``G_i = X W_ih^T + b_ih`` for all steps as one GEMM::

    forward, per step:   G_h = h_{t-1} W_hh^T + b_hh              (one GEMM; two for reset-before)
                         r, z, n, h_t from G_i[t], G_h             (one fused loop)
    backward, per step:  dG_i[t], dG_h[t] from dh_t and the saved r, z, n
                         dh_{t-1} = z ⊙ dh_t + dG_h[t] W_hh        (one GEMM)
    after the loop:      dX = dG_i W_ih,  dW_ih = dG_i^T X,  dW_hh = dG_h^T H_prev   (one GEMM each)

Same maths as :func:`grukit.ops.reference.gru_cell`, which the tests hold it to. Second derivatives go
through the reference (:mod:`grukit.ops.recompute`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from grukit.ops import extensions, recompute


def load() -> ModuleType | None:
    """The compiled kernel, or ``None`` (with one warning) when no compiler is available."""
    # -ffast-math and OpenMP SIMD let the compiler vectorize the gate loops, tanh included (glibc's libmvec).
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]
    return extensions.load("native_gru", ["native_gru.cpp"], cflags=flags)


def available() -> bool:
    return load() is not None


def _bias(bias: Tensor | None, like: Tensor) -> Tensor:
    return bias if bias is not None else like.new_empty(0)


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reset_after):
        y, saved = load().forward(x, h0, w_ih, w_hh, _bias(b_ih, x), _bias(b_hh, x), reset_after, True)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, y, saved)
        ctx.reset_after = reset_after
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, b_ih, b_hh, y, saved = ctx.saved_tensors
        if recompute.needs_reference(dy):  # create_graph=True or a vmapped dy, see grukit.ops.recompute
            grads = recompute.gru_sequence_grads(
                (x, h0, w_ih, w_hh, b_ih, b_hh), ctx.reset_after, ctx.needs_input_grad[:6], dy
            )
            return (*grads, None)
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = load().backward(x, h0, w_ih, w_hh, y, saved, dy, ctx.reset_after)
        return (
            dx,
            dh0,
            dw_ih,
            dw_hh,
            db_ih if ctx.has_bias[0] else None,
            db_hh if ctx.has_bias[1] else None,
            None,
        )


def gru_sequence(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    reset_after: bool,
) -> Tensor:
    """Run one left-to-right GRU layer over time-major ``x`` ``(T, B, I)`` from ``h0`` ``(B, H)``; returns every
    step's state ``(T, B, H)``. Differentiable in every argument; float32 or float64 CPU."""
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, reset_after)
    w_ih, w_hh = w_ih.detach(), w_hh.detach()
    return load().forward(x, h0, w_ih, w_hh, _bias(b_ih, x), _bias(b_hh, x), reset_after, False)[0]
