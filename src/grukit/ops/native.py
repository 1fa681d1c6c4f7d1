r"""The ``native`` engine: grukit's own fused GRU kernel (``csrc/native_gru.cpp``), for CPUs and systems without
oneDNN, the float64 path, and bfloat16 (a bf16 module, or CPU autocast to bf16): bf16 GEMM operands with
float32 accumulation, gate math in float32, states stored in bf16; under autocast the parameters' gradients come
back in float32. Where oneDNN runs bf16 in hardware, the forward of bf16 training at batch >= 2 is
:func:`grukit.ops.onednn.bf16_loop_forward` (oneDNN matmuls, ~2x this kernel's forward at c1), which saves the per-step
values in this kernel's layout for its backward.

Per layer and direction, with ``G_i = X W_ih^T + b_ih`` for all steps as one GEMM::

    forward, per step:   G_h = h_{t-1} W_hh^T + b_hh              (one GEMM; two for reset-before)
                         r, z, n, h_t from G_i[t], G_h             (one fused loop)
    backward, per step:  dG_i[t], dG_h[t] from dh_t and the saved r, z, n
                         dh_{t-1} = z ⊙ dh_t + dG_h[t] W_hh        (one GEMM)
    after the loop:      dX = dG_i W_ih,  dW_ih = dG_i^T X,  dW_hh = dG_h^T H_prev   (one GEMM each)

Single steps without an autograd graph (generation, serving) have their own kernel, :func:`gru_step`: the whole
stack in one call, each weight read once in torch's layout.

Same maths as :func:`grukit.ops.reference.gru_cell`, which the tests hold it to. Second derivatives go
through the reference (:mod:`grukit.ops.recompute`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from grukit.ops import extensions, onednn, recompute


def load() -> ModuleType | None:
    """The compiled kernel, or ``None`` (with one warning) when no compiler is available."""
    # -ffast-math and OpenMP SIMD let the compiler vectorize the gate loops, tanh included (glibc's libmvec).
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]
    return extensions.load("native_gru", ["native_gru.cpp"], cflags=flags)


def available() -> bool:
    return load() is not None


def _biases(b_ih: Tensor | None, b_hh: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    """``b_ih`` in ``like``'s dtype (it joins the input GEMM), ``b_hh`` as it is (the kernel adds it in the gate
    math's dtype); an absent bias as an empty tensor."""
    return (b_ih.to(like.dtype) if b_ih is not None else like.new_empty(0),
            b_hh if b_hh is not None else like.new_empty(0))


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a call on ``x`` computes in: bfloat16 where :func:`grukit.ops.onednn.wants_bf16` (``x`` is
    bfloat16, or CPU autocast to bfloat16 is on and ``x`` is float32), else ``x``'s own."""
    return torch.bfloat16 if onednn.wants_bf16(x) else x.dtype


class _GRUFunction(torch.autograd.Function):
    """One layer and direction: ``x`` ``(T, B, I)``, ``h0`` ``(B, H)`` -> ``y`` ``(T, B, H)`` in ``dtype``; the
    gradients come back in each argument's own dtype (float32 master weights under autocast)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reset_after, dtype):
        x_c, h0_c, w_ih_c, w_hh_c = (t.to(dtype) for t in (x, h0, w_ih, w_hh))
        if dtype == torch.bfloat16 and onednn.bf16_loop_applies(x):  # the forward as oneDNN matmuls on AMX
            y, saved = onednn.bf16_loop_forward(x_c, h0_c, w_ih, w_hh, b_ih, b_hh, reset_after)
        else:
            y, saved = load().forward(x_c, h0_c, w_ih_c, w_hh_c, *_biases(b_ih, b_hh, x_c), reset_after, True)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, x_c, h0_c, w_ih_c, w_hh_c, y, saved)
        ctx.reset_after, ctx.autocast = reset_after, onednn.autocast_bf16()
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, b_ih, b_hh, x_c, h0_c, w_ih_c, w_hh_c, y, saved = ctx.saved_tensors
        if recompute.needs_reference(dy):  # create_graph=True or a vmapped dy, see grukit.ops.recompute
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx.autocast):  # as the forward ran
                grads = recompute.gru_sequence_grads(
                    (x, h0, w_ih, w_hh, b_ih, b_hh), ctx.reset_after, ctx.needs_input_grad[:6], dy
                )
            return (*grads, None, None)
        dy_c = dy.to(y.dtype).contiguous()
        grads = load().backward(x_c, h0_c, w_ih_c, w_hh_c, y, saved, dy_c, ctx.reset_after)
        inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
        return (*(None if t is None else g.to(t.dtype) for t, g in zip(inputs, grads)), None, None)


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
    step's state ``(T, B, H)`` in :func:`compute_dtype`. Differentiable in every argument; float32, float64 or
    bfloat16 CPU tensors. In bfloat16 (a bf16 module, or float32 under CPU autocast) the arguments are cast to
    bf16 here and the kernel's GEMMs run in bf16 whatever autocast says; the gate math runs in float32."""
    dtype = compute_dtype(x)
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, reset_after, dtype)
    x_c, h0_c, w_ih_c, w_hh_c = (t.detach().to(dtype) for t in (x, h0, w_ih, w_hh))
    return load().forward(x_c, h0_c, w_ih_c, w_hh_c, *_biases(b_ih, b_hh, x_c), reset_after, False)[0]


def gru_step(x: Tensor, h: Tensor, weights: list[Tensor | None], reset_after: bool) -> tuple[Tensor, Tensor]:
    r"""One inference step of a stack of ``L`` left-to-right GRU layers (no autograd graph is recorded)::

        h_n[0] = cell(x, h[0]),   h_n[l] = cell(h_n[l - 1], h[l]),   output = h_n[L - 1]

    with ``cell`` :func:`grukit.ops.reference.gru_cell`. ``x`` ``(B, I)``, ``h`` ``(L, B, H)``, ``weights``
    ``[w_ih (3H, I_l), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None]`` per layer, torch's layout, read
    as they are (no conversion) -> ``(output (B, H), h_n (L, B, H))``, float32 or float64 CPU. Batches up to 8
    stream each weight row once into dot products with every row of the batch; larger ones run the sequence
    kernel at ``T = 1``."""
    return load().step(x, h, weights, reset_after)
