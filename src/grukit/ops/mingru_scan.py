r"""minGRU over a whole sequence at once: the parallel (training) form of :func:`grukit.ops.reference.mingru_cell`.

The minGRU recurrence is linear in the state, ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``a_t = 1 − z_t`` and
``b_t = z_t ⊙ h̃_t``, so every step can be computed at once by a scan in log space (Heinsen 2023)::

    a*_t  = Σ_{s≤t} log a_s                                   (cumsum)
    h_t   = exp(a*_t + logcumsumexp_{s≤t}(log b_s − a*_s))     (+ the h_0 term, exp(a*_t) ⊙ h_0)

with ``log a = −softplus(g_z)`` and ``log z = −softplus(−g_z)`` computed stably from the gate pre-activation.
``h̃`` may be negative, so ``b`` is split into its positive and negative parts, each scanned in log space.
Time is cut into chunks of ``chunk`` steps: inside a chunk the scan runs in parallel from a zero state, and
a short loop over the chunks carries the state across (``h = local + exp(a*) ⊙ h_start``). Chunks keep
``|a*|`` small, which is what float32 accuracy needs: the error of ``a*_t + logcumsumexp(...)`` grows with
``|a*_t|``. Generation, one step at a time, uses the sequential cell.

On CPUs torch's ``logcumsumexp`` is scalar code and the scan costs more than the recurrence it parallelises,
so there :func:`scan_sequential` (the projection and gates still for all steps at once, then one fused
multiply-add per step with a hand-written backward) is the faster form; both are exact.

Shapes: ``T`` time, ``B`` batch, ``I`` input, ``H`` hidden; time-major.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from grukit.ops import reference

CHUNK = 4
_NEG = -1e4  # log of "no contribution": exp(-1e4) is 0 in every float dtype, and its gradients stay finite


def scan_log_space(log_a: Tensor, log_z: Tensor, values: Tensor, h0: Tensor, chunk: int = CHUNK) -> Tensor:
    r"""Solve ``h_t = exp(log_a_t) ⊙ h_{t-1} + exp(log_z_t) ⊙ values_t`` for every ``t`` at once.

    Args:
        log_a: ``(T, B, H)`` log of the decay ``a_t`` (``<= 0``).
        log_z: ``(T, B, H)`` log of the input gate ``z_t``.
        values: ``(T, B, H)`` the candidate ``h̃_t`` (any sign).
        h0: ``(B, H)`` the state before the first step.
        chunk: steps per parallel chunk.

    Returns:
        ``(T, B, H)`` every ``h_t``.
    """
    steps = log_a.shape[0]
    chunks = -(-steps // chunk)
    pad = chunks * chunk - steps
    if pad:
        log_a = torch.nn.functional.pad(log_a, (0, 0, 0, 0, 0, pad))  # a = 1
        log_z = torch.nn.functional.pad(log_z, (0, 0, 0, 0, 0, pad), value=_NEG)  # b = 0
        values = torch.nn.functional.pad(values, (0, 0, 0, 0, 0, pad))
    shape = (chunks, chunk, *log_a.shape[1:])
    log_a, log_z, values = log_a.reshape(shape), log_z.reshape(shape), values.reshape(shape)  # (K, C, B, H)
    tiny = torch.finfo(values.dtype).tiny
    a_star = log_a.cumsum(1)  # (K, C, B, H)
    log_pos = log_z + values.clamp_min(tiny).log() - a_star
    log_neg = log_z + (-values).clamp_min(tiny).log() - a_star
    local = (a_star + log_pos.logcumsumexp(1)).exp() - (a_star + log_neg.logcumsumexp(1)).exp()  # from h = 0
    decay = a_star.exp()  # (K, C, B, H): Π a over the chunk so far
    starts = []
    h = h0  # (B, H)
    for k in range(chunks):  # the only sequential part: T / chunk cheap steps
        starts.append(h)
        h = local[k, -1] + decay[k, -1] * h
    states = local + decay * torch.stack(starts, 0).unsqueeze(1)  # (K, C, B, H)
    return states.reshape(chunks * chunk, *states.shape[2:])[:steps]


class _LinearRecurrence(torch.autograd.Function):
    """``h_t = a_t ⊙ h_{t-1} + b_t`` with a hand-written backward::

        g_t = dL/dh_t (from the output) + a_{t+1} ⊙ g_{t+1}      (the one sequential loop, reversed)
        dL/da_t = g_t ⊙ h_{t-1},  dL/db_t = g_t,  dL/dh_0 = a_1 ⊙ g_1   (all steps at once)
    """

    @staticmethod
    def forward(ctx, a, b, h0):
        states = torch.empty_like(b)  # (T, B, H)
        h = h0
        for t, (a_t, b_t) in enumerate(zip(a.unbind(0), b.unbind(0))):
            h = torch.addcmul(b_t, a_t, h, out=states[t])
        ctx.save_for_backward(a, h0, states)
        return states

    @staticmethod
    @once_differentiable  # second derivatives would silently be wrong: raise instead
    def backward(ctx, d_states):
        a, h0, states = ctx.saved_tensors
        grads = torch.empty_like(states)  # (T, B, H): dL/dh_t in total
        carry = torch.zeros_like(h0)
        for t in range(states.shape[0] - 1, -1, -1):
            carry = torch.add(d_states[t], carry, out=grads[t])
            carry = a[t] * carry
        previous = torch.cat([h0.unsqueeze(0), states[:-1]], 0)  # (T, B, H): h_{t-1}
        return grads * previous, grads, carry


def scan_sequential(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Solve ``h_t = a_t ⊙ h_{t-1} + b_t`` step by step: ``a``, ``b`` ``(T, B, H)``, ``h0`` ``(B, H)`` ->
    ``(T, B, H)``. One fused multiply-add per step and a hand-written backward; the fastest form on CPUs, where
    a log-space scan's transcendental functions cost more than the recurrence they parallelise."""
    return _LinearRecurrence.apply(a, b, h0)


def mingru_sequence(
    x: Tensor,
    h0: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    lengths: Tensor | None = None,
    log_space: bool = True,
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    r"""A minGRU layer over a whole sequence at once; equals ``reference.scan(mingru_cell, ...)``.

    The projection of every step is one GEMM; the recurrence then runs either as the log-space parallel scan
    (:func:`scan_log_space`, ``log_space=True``) or as one fused multiply-add per step
    (:func:`scan_sequential`).

    Args:
        x: ``(T, B, I)``; h0: ``(B, H)``; w: ``(2H, I)`` stacked z, h̃; b: ``(2H,)`` or ``None``;
        lengths: ``(B,)`` in ``[1, T]`` or ``None``: steps past a sequence's end keep its state (``a = 1``,
        ``b = 0``) and output zeros.

    Returns:
        ``(output (T, B, H), h_n (B, H))``.
    """
    gate, candidate = torch.nn.functional.linear(x, w, b).chunk(2, dim=-1)  # (T, B, H) each: one GEMM
    valid = reference.valid_steps(x.shape[0], lengths, x.device) if lengths is not None else None  # (T, B, 1)
    if log_space:
        log_a = -torch.nn.functional.softplus(gate)  # log(1 - z)
        log_z = -torch.nn.functional.softplus(-gate)  # log z
        if valid is not None:
            log_a = log_a.masked_fill(~valid, 0.0)
            log_z = log_z.masked_fill(~valid, _NEG)
        states = scan_log_space(log_a, log_z, candidate, h0, chunk)  # (T, B, H)
    else:
        z = torch.sigmoid(gate)  # (T, B, H)
        if valid is not None:
            z = z.masked_fill(~valid, 0.0)
        states = scan_sequential(1 - z, z * candidate, h0)  # (T, B, H)
    h_n = states[-1]
    if lengths is not None:
        states = states.masked_fill(~valid, 0.0)
    return states, h_n
