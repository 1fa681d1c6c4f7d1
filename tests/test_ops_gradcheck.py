"""``torch.autograd.gradcheck`` (float64 finite differences against autograd) for every reference cell, with
respect to the input, the state and every weight, and for a whole layer with ``lengths``."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from grukit.nn import GRU
from grukit.ops import reference

BATCH, INPUT, HIDDEN = 2, 3, 4


def tensors(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_gradcheck(reset_after, bias):
    x, h, w_ih, w_hh, b_ih, b_hh = tensors(
        (BATCH, INPUT), (BATCH, HIDDEN), (3 * HIDDEN, INPUT), (3 * HIDDEN, HIDDEN), (3 * HIDDEN,), (3 * HIDDEN,)
    )
    if bias:
        assert gradcheck(lambda *a: reference.gru_cell(*a, reset_after=reset_after), (x, h, w_ih, w_hh, b_ih, b_hh))
    else:
        assert gradcheck(lambda *a: reference.gru_cell(*a, reset_after=reset_after), (x, h, w_ih, w_hh))


def test_lstm_cell_gradcheck():
    x, h, c, w_ih, w_hh, b_ih, b_hh = tensors(
        (BATCH, INPUT), (BATCH, HIDDEN), (BATCH, HIDDEN), (4 * HIDDEN, INPUT), (4 * HIDDEN, HIDDEN),
        (4 * HIDDEN,), (4 * HIDDEN,),
    )
    assert gradcheck(lambda x, h, c, *w: reference.lstm_cell(x, (h, c), *w), (x, h, c, w_ih, w_hh, b_ih, b_hh))


def test_mingru_cell_gradcheck():
    x, h, w, b = tensors((BATCH, INPUT), (BATCH, HIDDEN), (2 * HIDDEN, INPUT), (2 * HIDDEN,))
    assert gradcheck(reference.mingru_cell, (x, h, w, b))


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_bidirectional_reset_before_gru_with_lengths_gradcheck(engine):
    """torch has no reset-before GRU to compare gradients with, so check this layer against finite differences,
    with the reference cells and with the engine a user gets by default."""
    torch.manual_seed(0)
    model = GRU(INPUT, HIDDEN, bidirectional=True, reset_after=False, engine=engine).double()
    x, h0 = tensors((2, 4, INPUT), (2, 2, HIDDEN))
    names = [name for name, _ in model.named_parameters()]

    def run(x, h0, *weights):
        params = dict(zip(names, weights))
        output, h_n = torch.func.functional_call(model, params, (x, h0), dict(lengths=[4, 2]))
        return output, h_n

    weights = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    assert gradcheck(run, (x, h0, *weights))
