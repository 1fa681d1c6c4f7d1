r"""Higher-order gradients for the fast kernels: their hand-written backwards are first-order only, so when
autograd asks for a differentiable gradient (``create_graph=True``, which runs a backward with grad mode on)
they recompute the forward with the reference ops and differentiate that instead::

    backward(dy):  grad mode off -> the kernel's fused backward             (training: the fast path)
                   grad mode on  -> autograd.grad(reference(inputs), inputs, dy, create_graph=True)

The recomputed gradient is a function of the inputs and of ``dy`` in autograd's graph, so a second
backward (gradient penalties, Hessian-vector products) is exact, at the reference engine's speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from grukit.ops import reference


def grads_through(
    forward: Callable[..., Tensor], inputs: Sequence[Tensor | None], needs: Sequence[bool], grad_output: Tensor
) -> tuple[Tensor | None, ...]:
    """``d(forward(*inputs)) / d(inputs)`` applied to ``grad_output``, with a graph; ``None`` where
    ``needs`` is false (and for inputs the output does not depend on)."""
    wanted = [t for t, need in zip(inputs, needs) if need]
    with torch.enable_grad():
        output = forward(*inputs)
        grads = iter(torch.autograd.grad(output, wanted, grad_output, create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in needs)


def gru_sequence(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    reset_after: bool,
) -> Tensor:
    """The reference of the fast kernels' ``gru_sequence``: ``x`` ``(T, B, I)``, ``h0`` ``(B, H)`` ->
    every step's state ``(T, B, H)``, through :func:`grukit.ops.reference.gru_cell`."""

    def cell(x_t: Tensor, h: Tensor) -> Tensor:
        return reference.gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, reset_after)

    return reference.scan(cell, x, h0)[0]
