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
so there :func:`scan_gated` (the projection and gates still for all steps at once, then one fused lerp per
step with a hand-written backward) is the faster form; both are exact.

Shapes: ``T`` time, ``B`` batch, ``I`` input, ``H`` hidden; time-major.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grukit.ops import recompute, reference

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


class _GatedScan(torch.autograd.Function):
    r"""minGRU's recurrence from the projections of every step ``[g | h̃]``, with a hand-written backward::

        z_t = σ(g_t) (0 past a sequence's end),   h_t = h_{t-1} + z_t ⊙ (h̃_t − h_{t-1})     (one lerp per step)
        G_t = dL/dh_t + (1 − z_{t+1}) ⊙ G_{t+1}                 (the one sequential loop, reversed)
        dL/dh̃_t = z_t ⊙ G_t,   dL/dg_t = z_t (1 − z_t) ⊙ (h̃_t − h_{t-1}) ⊙ G_t,   dL/dh_0 = (1 − z_1) ⊙ G_1

    The gradient of ``[g | h̃]`` is written into one tensor, so the projection's backward needs no ``cat``.
    Second derivatives go through :func:`_gated_reference` (:mod:`grukit.ops.recompute`).
    """

    @staticmethod
    def forward(ctx, projected, h0, valid):
        gate, candidate = projected.chunk(2, dim=-1)  # (T, B, H) each
        z = torch.sigmoid(gate)  # (T, B, H)
        if valid is not None:
            z.masked_fill_(~valid, 0.0)  # z = 0: the state is kept past a sequence's end
        states = torch.empty(candidate.shape, dtype=candidate.dtype, device=candidate.device)  # (T, B, H)
        h = h0
        for t, (z_t, candidate_t) in enumerate(zip(z.unbind(0), candidate.unbind(0))):
            h = torch.lerp(h, candidate_t, z_t, out=states[t])
        ctx.save_for_backward(z, projected, h0, states, valid)
        return states

    @staticmethod
    def backward(ctx, d_states):
        z, projected, h0, states, valid = ctx.saved_tensors
        if recompute.needs_reference(d_states):  # create_graph=True or a vmapped gradient, see grukit.ops.recompute
            grads = recompute.grads_through(
                lambda p, h: _gated_reference(p, h, valid), (projected, h0), ctx.needs_input_grad[:2], d_states
            )
            return (*grads, None)
        candidate = projected.chunk(2, dim=-1)[1]
        grads = torch.empty_like(states)  # (T, B, H): dL/dh_t in total
        carry = torch.zeros_like(h0)
        for t in range(states.shape[0] - 1, -1, -1):
            carry = torch.add(d_states[t], carry, out=grads[t])
            carry = torch.addcmul(carry, carry, z[t], value=-1)  # (1 - z_t) G_t
        d_projected = torch.empty_like(projected)  # (T, B, 2H)
        d_gate, d_candidate = d_projected.chunk(2, dim=-1)
        torch.mul(grads, z, out=d_candidate)
        torch.sub(candidate[0], h0, out=d_gate[0])  # h̃_t − h_{t-1}
        torch.sub(candidate[1:], states[:-1], out=d_gate[1:])
        d_gate.mul_(grads).mul_(torch.addcmul(z, z, z, value=-1))  # ⊙ G_t ⊙ z (1 − z)
        return d_projected, carry, None


def _gated_reference(projected: Tensor, h0: Tensor, valid: Tensor | None) -> Tensor:
    """:class:`_GatedScan`'s forward in plain differentiable ops (for second derivatives)."""
    gate, candidate = projected.chunk(2, dim=-1)  # (T, B, H) each
    z = torch.sigmoid(gate)
    if valid is not None:
        z = z.masked_fill(~valid, 0.0)
    states, h = [], h0
    for z_t, candidate_t in zip(z.unbind(0), candidate.unbind(0)):
        h = torch.lerp(h, candidate_t, z_t)  # (B, H)
        states.append(h)
    return torch.stack(states, 0)  # (T, B, H)


def _log_space_states(projected: Tensor, h0: Tensor, valid: Tensor | None, chunk: int) -> Tensor:
    """minGRU's states from ``[g | h̃]`` ``(T, B, 2H)`` through :func:`scan_log_space` -> ``(T, B, H)``."""
    gate, candidate = projected.chunk(2, dim=-1)  # (T, B, H) each
    log_a = -torch.nn.functional.softplus(gate)  # log(1 - z)
    log_z = -torch.nn.functional.softplus(-gate)  # log z
    if valid is not None:
        log_a = log_a.masked_fill(~valid, 0.0)
        log_z = log_z.masked_fill(~valid, _NEG)
    return scan_log_space(log_a, log_z, candidate, h0, chunk)


class _LogSpaceScan(torch.autograd.Function):
    """:func:`_log_space_states` with first-order gradients through the scan's own graph, and differentiable
    gradients (``create_graph=True``) recomputed through :func:`_gated_reference`: the backward of torch's
    ``logcumsumexp`` takes the log of the incoming gradient, so its own derivative is NaN where that vanishes."""

    @staticmethod
    def forward(ctx, projected, h0, valid, chunk):
        inputs = (projected.detach().requires_grad_(), h0.detach().requires_grad_())
        with torch.enable_grad():
            states = _log_space_states(*inputs, valid, chunk)  # (T, B, H), with its graph
        ctx.save_for_backward(projected, h0, valid)
        ctx.graph = (inputs, states)
        return states.detach()

    @staticmethod
    def backward(ctx, d_states):
        projected, h0, valid = ctx.saved_tensors
        if recompute.needs_reference(d_states):  # create_graph=True or a vmapped gradient, see grukit.ops.recompute
            grads = recompute.grads_through(
                lambda p, h: _gated_reference(p, h, valid), (projected, h0), ctx.needs_input_grad[:2], d_states
            )
            return (*grads, None, None)
        inputs, states = ctx.graph
        return (*torch.autograd.grad(states, inputs, d_states, retain_graph=True), None, None)


def scan_gated(projected: Tensor, h0: Tensor, valid: Tensor | None = None) -> Tensor:
    """Solve ``h_t = (1 − σ(g_t)) ⊙ h_{t-1} + σ(g_t) ⊙ h̃_t`` step by step from ``projected`` ``(T, B, 2H)``
    (``g`` then ``h̃``), ``h0`` ``(B, H)`` and ``valid`` ``(T, B, 1)`` or ``None`` -> ``(T, B, H)``. One fused
    lerp per step and a hand-written backward; the fastest form on CPUs, where a log-space scan's
    transcendental functions cost more than the recurrence they parallelise."""
    return _GatedScan.apply(projected, h0, valid)


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
    (:func:`scan_log_space`, ``log_space=True``) or as one fused lerp per step
    (:func:`scan_gated`).

    Args:
        x: ``(T, B, I)``; h0: ``(B, H)``; w: ``(2H, I)`` stacked z, h̃; b: ``(2H,)`` or ``None``;
        lengths: ``(B,)`` in ``[1, T]`` or ``None``: steps past a sequence's end keep its state (``a = 1``,
        ``b = 0``) and output zeros.

    Returns:
        ``(output (T, B, H), h_n (B, H))``.
    """
    projected = torch.nn.functional.linear(x, w, b)  # (T, B, 2H): one GEMM
    valid = reference.valid_steps(x.shape[0], lengths, x.device) if lengths is not None else None  # (T, B, 1)
    if log_space and torch.is_grad_enabled() and (projected.requires_grad or h0.requires_grad):
        states = _LogSpaceScan.apply(projected, h0, valid, chunk)  # (T, B, H)
    elif log_space:
        states = _log_space_states(projected, h0, valid, chunk)  # (T, B, H)
    else:
        states = scan_gated(projected, h0, valid)  # (T, B, H)
    h_n = states[-1]
    if lengths is not None:
        states = states.masked_fill(~valid, 0.0)
    return states, h_n
