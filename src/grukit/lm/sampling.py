"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One token per row of ``logits`` ``(B, V)``; returns ``(B,)`` int64.

    ``p = softmax((logits − max(logits)) / temperature)``, which is ``softmax(logits / temperature)``,
    restricted to the ``top_k`` largest and then to the smallest set whose mass reaches ``top_p``,
    renormalised, sampled with ``generator``. ``temperature == 0`` is the argmax; as the temperature goes to
    0 the distribution concentrates on it. Logits holding NaN or +inf (or only -inf) are refused.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a non-negative number, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if bool((logits.isnan() | (logits == math.inf)).any() or (logits == -math.inf).all(-1).any()):
        raise ValueError(
            "sample_next got logits holding NaN or +inf, or a row of only -inf: the model's weights are not finite "
            "numbers (did its training diverge?)"
        )
    if temperature == 0:
        return logits.argmax(-1)
    # Shifting each row by its maximum leaves the softmax unchanged and keeps a tiny temperature from overflowing;
    # one below float32's smallest normal number acts as that number (all mass on the maximum, as in the limit).
    temperature = max(temperature, torch.finfo(torch.float32).tiny)
    logits = (logits.float() - logits.float().amax(-1, keepdim=True)) / temperature  # (B, V), at most 0
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)  # (B, V)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)  # (B, V)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the first token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
