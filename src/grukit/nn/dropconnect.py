r"""DropConnect (Wan et al. 2013): dropout on a weight matrix instead of on activations.

For ``W`` ``(out, in)`` and keep probability ``q = 1 − p``, one draw per call::

    elements:  W' = W ⊙ M / q,        M_ij ~ Bernoulli(q)      (out, in)
    columns:   W' = W diag(m) / q,    m_j  ~ Bernoulli(q)      (1, in) broadcast over the rows

On a recurrent matrix ``W_hh`` ``(G·H, H)``, dropping columns removes hidden unit ``j`` of ``h_{t−1}`` from
every gate's recurrent product, which is variational dropout on ``h`` (Gal & Ghahramani 2016) with one
mask per call; dropping elements is AWD-LSTM's weight drop (Merity et al. 2017). The dropped matrix is
passed to the module functionally, so the parameter itself never changes and its gradient flows through.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def drop_connect(weight: Tensor, p: float, training: bool = True, columns: bool = False) -> Tensor:
    """``weight`` ``(out, in)`` with DropConnect at rate ``p`` (see the module docstring); unchanged when not
    ``training`` or ``p == 0``. ``columns`` draws one mask entry per input column instead of per element."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"drop_connect expected p in [0, 1), got {p!r}")
    if weight.dim() != 2:
        raise ValueError(f"drop_connect expected a weight matrix of shape (out, in), got {tuple(weight.shape)}")
    if not training or p == 0:
        return weight
    if not columns:
        return nn.functional.dropout(weight, p, training=True)  # (out, in)
    keep = 1.0 - p
    mask = torch.bernoulli(torch.full((1, weight.shape[1]), keep, dtype=weight.dtype, device=weight.device)) / keep
    return weight * mask  # (out, in), whole columns zeroed
