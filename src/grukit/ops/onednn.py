r"""The ``onednn`` engine: one GRU layer and direction through oneDNN's fused RNN primitives.

oneDNN's ``lbr_gru`` ("linear before reset") is exactly the reset-after GRU of PyTorch and cuDNN, and its
``gru`` primitive is the reset-before form (Cho et al. 2014). oneDNN orders the gates u (update), r (reset),
o (candidate) and wants the weights as ``ldigo`` ``(layers, directions, input, gates, hidden)``; torch stores
``(3H, I)`` with gates r, z, n. The biases fold as::

    lbr_gru: b_u = b_iz + b_hz,  b_r = b_ir + b_hr,  b_o = b_in,  b_u' = b_hn   (4, H)
    gru:     b_u = b_iz + b_hz,  b_r = b_ir + b_hr,  b_o = b_in + b_hn          (3, H)

The weights are converted on every call: a cache keyed on the parameters' ``_version`` served stale weights
after fused optimizers (``Adam(fused=True)`` updates in place without bumping ``_version``) and ``.data``
writes, and conversion reads the weights once, ~1/(B·T) of the GEMM work of a call. The C++ side caches the
primitives per shape; each call owns its scratchpad, stream and reordered weights, so the engine runs from
any thread (a web server's request threads) and stays sound when a call is interrupted. float32 only; the
runtime comes from the ``onednn-cpu-gomp`` wheel. Second derivatives go through the reference
(:mod:`grukit.ops.recompute`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from grukit.ops import extensions, recompute


def load() -> ModuleType | None:
    """The compiled binding, or ``None`` (with one warning) when oneDNN or a compiler is missing."""
    prefix = extensions.venv_prefix()
    lib = prefix / "lib"

    def missing() -> str | None:
        if (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists() and any(lib.glob("libdnnl.so*")):
            return None
        return f"grukit's onednn engine needs the oneDNN 3.2 runtime and headers under {prefix} (grukit[fast])"

    return extensions.load(
        "onednn_gru",
        ["onednn_gru.cpp"],
        cflags=["-O3", "-fopenmp"],
        ldflags=[f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-fopenmp"],
        include_dirs=[str(prefix / "include")],
        missing=missing,
    )


def available() -> bool:
    return load() is not None


class _Prepared:
    """Weights of one layer and direction in oneDNN's order and layout."""

    def __init__(self, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, reset_after: bool):
        hidden = w_hh.shape[1]
        with torch.no_grad():
            self.w_layer = _to_ldigo(w_ih)  # (I, 3H)
            self.w_iter = _to_ldigo(w_hh)  # (H, 3H)
            zeros = w_ih.new_zeros(3 * hidden)
            b_ir, b_iz, b_in = (b_ih if b_ih is not None else zeros).chunk(3)
            b_hr, b_hz, b_hn = (b_hh if b_hh is not None else zeros).chunk(3)
            if reset_after:
                self.bias = torch.stack([b_iz + b_hz, b_ir + b_hr, b_in, b_hn]).contiguous()  # (4, H)
            else:
                self.bias = torch.stack([b_iz + b_hz, b_ir + b_hr, b_in + b_hn]).contiguous()  # (3, H)


def _to_ldigo(weight: Tensor) -> Tensor:
    """torch ``(3H, K)`` gates r, z, n -> oneDNN ``(K, 3H)`` gates u (= z), r, o (= n)."""
    r, z, n = weight.chunk(3, dim=0)
    return torch.cat([z, r, n], dim=0).t().contiguous()


def _from_ldigo(grad: Tensor) -> Tensor:
    """Inverse of :func:`_to_ldigo` for gradients: ``(K, 3H)`` u, r, o -> ``(3H, K)`` r, z, n."""
    u, r, o = grad.t().chunk(3, dim=0)
    return torch.cat([r, u, o], dim=0)


def prepare(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, reset_after: bool) -> _Prepared:
    """The weights of one layer and direction converted for oneDNN, as they are now."""
    return _Prepared(w_ih, w_hh, b_ih, b_hh, reset_after)


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, prepared, reset_after):
        y, workspace = load().forward(
            x.contiguous(), h0.contiguous(), prepared.w_layer, prepared.w_iter, prepared.bias, reset_after, True
        )
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, y, workspace)
        ctx.prepared, ctx.reset_after = prepared, reset_after
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h0, w_ih, w_hh, b_ih, b_hh, y, workspace = ctx.saved_tensors
        if recompute.needs_reference(dy):  # create_graph=True or a vmapped dy, see grukit.ops.recompute
            grads = recompute.gru_sequence_grads(
                (x, h0, w_ih, w_hh, b_ih, b_hh), ctx.reset_after, ctx.needs_input_grad[:6], dy
            )
            return (*grads, None, None)
        prepared = ctx.prepared
        dx, dh0, dw_layer, dw_iter, dbias = load().backward(
            x.contiguous(),
            h0.contiguous(),
            prepared.w_layer,
            prepared.w_iter,
            prepared.bias,
            y,
            dy.contiguous(),
            workspace,
            ctx.reset_after,
        )
        db_ih = db_hh = None
        if ctx.reset_after:
            db_u, db_r, db_o, db_u2 = dbias.unbind(0)
            db_ih, db_hh = torch.cat([db_r, db_u, db_o]), torch.cat([db_r, db_u, db_u2])
        else:
            db_u, db_r, db_o = dbias.unbind(0)
            db_ih = db_hh = torch.cat([db_r, db_u, db_o])
        return (
            dx,
            dh0,
            _from_ldigo(dw_layer),
            _from_ldigo(dw_iter),
            db_ih if ctx.has_bias[0] else None,
            db_hh if ctx.has_bias[1] else None,
            None,
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
    step's state ``(T, B, H)``. Differentiable in every argument; float32 CPU only."""
    prepared = prepare(w_ih, w_hh, b_ih, b_hh, reset_after)
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, prepared, reset_after)
    y, _ = load().forward(
        x.contiguous(),
        h0.contiguous(),
        prepared.w_layer,
        prepared.w_iter,
        prepared.bias,
        reset_after,
        False,
    )
    return y
