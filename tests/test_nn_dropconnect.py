"""grukit.nn.drop_connect: the one DropConnect behind Keras-style recurrent_dropout and the language model's
weight drop."""

import pytest
import torch
from torch import nn

from grukit.nn import drop_connect


def test_off_in_evaluation_or_at_rate_zero():
    weight = torch.randn(6, 4)
    assert drop_connect(weight, 0.5, training=False) is weight
    assert drop_connect(weight, 0.0) is weight


def test_elements_draw_exactly_what_dropout_draws():
    weight = torch.randn(9, 3, requires_grad=True)
    torch.manual_seed(1)
    dropped = drop_connect(weight, 0.3)
    torch.manual_seed(1)
    torch.testing.assert_close(dropped, nn.functional.dropout(weight, 0.3, training=True), rtol=0, atol=0)
    dropped.sum().backward()
    kept = dropped.detach() != 0
    torch.testing.assert_close(weight.grad, kept.float() / 0.7)  # gradient flows to the kept entries only


def test_columns_drop_whole_input_units_and_rescale():
    torch.manual_seed(0)
    weight = torch.ones(6, 200)
    dropped = drop_connect(weight, 0.25, columns=True)
    column = dropped[0]
    assert bool((dropped == column).all())  # the same mask on every row
    assert set(column.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert 0.1 < float((column == 0).float().mean()) < 0.4
    torch.manual_seed(5)
    dropped = drop_connect(weight, 0.25, columns=True)
    torch.manual_seed(5)
    assert torch.equal(dropped, weight * torch.bernoulli(torch.full((1, 200), 0.75)) / 0.75)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match=r"p in \[0, 1\), got 1.0"):
        drop_connect(torch.ones(2, 2), 1.0)
    with pytest.raises(ValueError, match=r"shape \(out, in\), got \(2, 2, 2\)"):
        drop_connect(torch.ones(2, 2, 2), 0.1)
