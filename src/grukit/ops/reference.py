r"""The recurrent cells written from their equations: readable, autograd-differentiable, and the oracle
that every fast engine in grukit is tested against.

Weights follow PyTorch's layout so that a ``torch.nn.GRU`` / ``torch.nn.LSTM`` state dict applies directly:
``w_ih`` is ``(G*H, I)``, ``w_hh`` is ``(G*H, H)``, biases ``(G*H,)``, with the gates stacked in the order
given by each cell (GRU: r, z, n; LSTM: i, f, g, o; minGRU: z, h̃).

Shapes: ``B`` batch, ``T`` time, ``I`` input size, ``H`` hidden size. Sequence functions are time-major:
``x`` is ``(T, B, I)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    r"""One GRU step.

    Reset-after (cuDNN, PyTorch, Keras ``reset_after=True``)::

        r  = σ(W_ir x + b_ir + W_hr h + b_hr)
        z  = σ(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    Reset-before (Cho et al. 2014, Keras ``reset_after=False``) differs only in the candidate::

        n  = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)

    Args:
        x: ``(B, I)`` input at this step.
        h: ``(B, H)`` previous hidden state.
        w_ih: ``(3H, I)`` input weights, gates r, z, n.
        w_hh: ``(3H, H)`` recurrent weights, gates r, z, n.
        b_ih, b_hh: ``(3H,)`` biases, or ``None``.
        reset_after: which candidate form to use.

    Returns:
        ``(B, H)`` the new hidden state.
    """
    gi = torch.nn.functional.linear(x, w_ih, b_ih)  # (B, 3H)
    gi_r, gi_z, gi_n = gi.chunk(3, dim=-1)  # (B, H) each
    w_hr, w_hz, w_hn = w_hh.chunk(3, dim=0)  # (H, H) each
    b_hr, b_hz, b_hn = b_hh.chunk(3) if b_hh is not None else (None, None, None)
    r = torch.sigmoid(gi_r + torch.nn.functional.linear(h, w_hr, b_hr))  # (B, H)
    z = torch.sigmoid(gi_z + torch.nn.functional.linear(h, w_hz, b_hz))  # (B, H)
    if reset_after:
        n = torch.tanh(gi_n + r * torch.nn.functional.linear(h, w_hn, b_hn))  # (B, H)
    else:
        n = torch.tanh(gi_n + torch.nn.functional.linear(r * h, w_hn, b_hn))  # (B, H)
    return (1 - z) * n + z * h


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step (PyTorch gate order i, f, g, o)::

        i  = σ(W_ii x + b_ii + W_hi h + b_hi)
        f  = σ(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    Args:
        x: ``(B, I)``; state: ``(h, c)``, each ``(B, H)``; w_ih ``(4H, I)``; w_hh ``(4H, H)``;
        b_ih, b_hh: ``(4H,)`` or ``None``.

    Returns:
        ``(h', c')``, each ``(B, H)``.
    """
    h, c = state
    gates = torch.nn.functional.linear(x, w_ih, b_ih) + torch.nn.functional.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)  # (B, H) each
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)  # (B, H)
    return h_new, c_new


def mingru_cell(x: Tensor, h: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    r"""One minGRU step (Feng et al. 2024, "Were RNNs all we needed?").

    The gates read only the input, which is what makes a parallel scan over time possible::

        z  = σ(W_z x + b_z)
        h̃  = W_h x + b_h
        h' = (1 − z) ⊙ h + z ⊙ h̃

    Args:
        x: ``(B, I)``; h: ``(B, H)``; w: ``(2H, I)`` stacked z, h̃; b: ``(2H,)`` or ``None``.

    Returns:
        ``(B, H)``.
    """
    gz, h_tilde = torch.nn.functional.linear(x, w, b).chunk(2, dim=-1)  # (B, H) each
    z = torch.sigmoid(gz)
    return (1 - z) * h + z * h_tilde


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of time-major ``x`` ``(T, B, ...)`` within its own length.

    Steps at ``t >= lengths[b]`` stay where they are, so applying it twice gives ``x`` back. Without
    ``lengths`` it is a plain flip over time.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def valid_steps(steps: int, lengths: Tensor, device: torch.device) -> Tensor:
    """``(T, B, 1)`` boolean mask, true where step ``t`` lies inside sequence ``b``."""
    return (torch.arange(steps, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)).unsqueeze(-1)


def scan(cell, x: Tensor, state, lengths: Tensor | None = None, reverse: bool = False):
    """Run ``cell(x_t, state) -> state`` over time-major ``x`` ``(T, B, I)``.

    ``state`` is one ``(B, H)`` tensor or a tuple of them; the first is the output. With ``lengths`` ``(B,)``,
    steps at ``t >= lengths[b]`` keep the state unchanged and output zeros, so the final state is each
    sequence's state at its last valid step. ``reverse`` runs each sequence from its last valid step back
    to its first, the result of a packed sequence through a reverse direction, and returns outputs in the
    original time order.

    Returns:
        ``(outputs (T, B, H), final_state)``.
    """
    if reverse:
        x = reverse_padded(x, lengths)
    mask = valid_steps(x.shape[0], lengths, x.device) if lengths is not None else None
    outputs = []
    for t, x_t in enumerate(x.unbind(0)):  # unbind, not x[t]: indexing's backward writes a full tensor each step
        new_state = cell(x_t, state)
        if mask is not None:
            keep = mask[t]  # (B, 1)
            if isinstance(new_state, tuple):
                new_state = tuple(torch.where(keep, n, s) for n, s in zip(new_state, state))
            else:
                new_state = torch.where(keep, new_state, state)
        state = new_state
        out = state[0] if isinstance(state, tuple) else state
        outputs.append(out if mask is None else out.masked_fill(~mask[t], 0.0))
    output = torch.stack(outputs, 0)  # (T, B, H)
    if reverse:
        output = reverse_padded(output, lengths)
    return output, state
