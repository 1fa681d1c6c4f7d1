r"""Higher-order gradients for the fast kernels: their hand-written backwards are first-order only, so when
autograd asks for a differentiable gradient (``create_graph=True``, which runs a backward with grad mode on)
they recompute the forward with the reference ops and differentiate that instead::

    backward(dy):  grad mode off -> the kernel's fused backward             (training: the fast path)
                   grad mode on  -> autograd.grad(reference(inputs), inputs, dy, create_graph=True)

The recomputed gradient is a function of the inputs and of ``dy`` in autograd's graph, so a second
backward (gradient penalties, Hessian-vector products) is exact, at the reference engine's speed.

The same holds under ``torch.func`` transforms: a batched ``dy`` (``vmap`` over a backward, as
``gradcheck(check_batched_grad=True)`` and ``jacobian(vectorize=True)`` do) has no storage for a fused kernel
to read, so it too goes through the reference (:func:`needs_reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from grukit.ops import reference


def _without_storage(tensor: Tensor) -> bool:
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return True
    try:  # the batched tensors of autograd's own vmap (is_grads_batched, gradcheck) are not functorch's
        tensor.data_ptr()
    except RuntimeError:
        return True
    return False


def is_transformed(*tensors: Tensor | None) -> bool:
    """Whether any of ``tensors`` is wrapped by a vmap or ``torch.func`` transform (a batched tensor of
    ``vmap``, a gradient-tracking tensor of ``grad`` / ``jacrev``): such tensors have no storage of their own
    for a fused kernel to read."""
    return any(t is not None and _without_storage(t) for t in tensors)


def needs_reference(grad_output: Tensor) -> bool:
    """Whether a fast kernel's backward must recompute through the reference: a differentiable gradient was
    asked for (grad mode on in the backward), or ``grad_output`` is batched by ``vmap``."""
    return torch.is_grad_enabled() or is_transformed(grad_output)


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


def gru_sequence_grads(
    inputs: Sequence[Tensor | None], reset_after: bool, needs: Sequence[bool], grad_output: Tensor
) -> tuple[Tensor | None, ...]:
    """The fused GRU kernels' backward through the reference: :func:`grads_through` of :func:`gru_sequence` on
    ``inputs`` = ``(x, h0, w_ih, w_hh, b_ih, b_hh)``."""
    return grads_through(lambda *tensors: gru_sequence(*tensors, reset_after), inputs, needs, grad_output)
