"""Initialisation (``init="torch"`` and ``init="keras"``) and weight interop that needs no Keras: torch state
dicts, ``from_torch`` / ``to_torch`` round trips, and the Keras gate layout written out by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import torch

from grukit.nn import GRU, LSTM, GRUCell, LSTMCell, MinGRU

HIDDEN = 8


def keras_view_recurrent_kernels(model) -> list[np.ndarray]:
    """Each layer and direction's ``recurrent_kernel`` ``(H, G*H)`` as Keras lays it out."""
    return model.to_keras_weights()[1::3]


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_keras_init_recurrent_kernel_has_orthonormal_rows(cls):
    torch.manual_seed(0)
    model = cls(5, HIDDEN, num_layers=2, bidirectional=True, init="keras")
    kernels = keras_view_recurrent_kernels(model)
    assert len(kernels) == 4
    for kernel in kernels:  # (H, G*H): H orthonormal rows, W W^T = I, as Keras' Orthogonal initialiser gives
        np.testing.assert_allclose(kernel @ kernel.T, np.eye(HIDDEN), atol=1e-5)
    # Keras' own layer has the same property (so we compare like with like).
    keras.utils.set_random_seed(0)
    layer = (keras.layers.GRU if cls is GRU else keras.layers.LSTM)(HIDDEN)
    layer.build((None, 3, 5))
    theirs = layer.get_weights()[1]
    np.testing.assert_allclose(theirs @ theirs.T, np.eye(HIDDEN), atol=1e-5)


def test_keras_init_input_kernel_is_glorot_uniform_and_gru_biases_zero():
    torch.manual_seed(0)
    model = GRU(5, HIDDEN, num_layers=2, init="keras")
    for layer, fan_in in ((0, 5), (1, HIDDEN)):
        weight = getattr(model, f"weight_ih_l{layer}")  # Keras kernel (fan_in, 3H), transposed
        limit = math.sqrt(6 / (fan_in + 3 * HIDDEN))
        assert weight.abs().max() <= limit
        assert weight.abs().max() > 0.8 * limit  # spread over the range, not a tiny constant
    for name, param in model.named_parameters():
        if name.startswith("bias"):
            assert torch.equal(param, torch.zeros_like(param)), name


def test_keras_init_lstm_forget_bias_is_one_as_keras_unit_forget_bias():
    model = LSTM(5, HIDDEN, bidirectional=True, init="keras")
    for bias in model.to_keras_weights()[2::3]:  # Keras bias (4H,), gates i, f, c, o
        expected = np.zeros(4 * HIDDEN, dtype=np.float32)
        expected[HIDDEN : 2 * HIDDEN] = 1.0
        np.testing.assert_array_equal(bias, expected)
    keras_bias = keras.layers.LSTM(HIDDEN)
    keras_bias.build((None, 3, 5))
    np.testing.assert_array_equal(keras_bias.get_weights()[2], expected)


@pytest.mark.parametrize("cls", [GRU, LSTM, MinGRU])
def test_torch_init_is_uniform_within_one_over_sqrt_hidden(cls):
    torch.manual_seed(0)
    model = cls(5, HIDDEN, num_layers=2)
    bound = 1 / math.sqrt(HIDDEN)
    for name, param in model.named_parameters():
        assert param.abs().max() <= bound, name
        assert param.abs().max() > 0.5 * bound, name
    assert model.init == "torch"


def test_reset_parameters_draws_new_weights_with_the_chosen_init():
    torch.manual_seed(0)
    model = GRU(5, HIDDEN, init="keras")
    before = model.weight_hh_l0.detach().clone()
    model.reset_parameters()
    assert not torch.equal(before, model.weight_hh_l0)
    kernel = keras_view_recurrent_kernels(model)[0]
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(HIDDEN), atol=1e-5)


@pytest.mark.parametrize("cls, torch_cls", [(GRU, torch.nn.GRU), (LSTM, torch.nn.LSTM)])
def test_from_torch_to_torch_round_trip_keeps_config_weights_and_dtype(cls, torch_cls):
    torch.manual_seed(0)
    theirs = torch_cls(3, 5, num_layers=2, bias=False, dropout=0.25, bidirectional=True).double()
    ours = cls.from_torch(theirs)
    for attribute in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.batch_first is False  # torch's default travels with the module
    back = ours.to_torch()
    assert isinstance(back, torch_cls) and back.dropout == 0.25 and back.bidirectional
    for name, param in theirs.state_dict().items():
        assert ours.state_dict()[name].dtype == torch.float64
        assert torch.equal(ours.state_dict()[name], param), name
        assert torch.equal(back.state_dict()[name], param), name
    with torch.no_grad():  # from_torch copies: the two modules do not share storage
        ours.weight_ih_l0.add_(1.0)
    assert not torch.equal(ours.weight_ih_l0, theirs.weight_ih_l0)


@pytest.mark.parametrize("cls, torch_cls", [(GRU, torch.nn.GRU), (LSTM, torch.nn.LSTM)])
def test_state_dicts_load_directly_both_ways(cls, torch_cls):
    torch.manual_seed(0)
    theirs = torch_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    ours = cls(3, 5, num_layers=2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())  # strict: same names, same shapes
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    fresh = torch_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    fresh.load_state_dict(cls(3, 5, num_layers=2, bidirectional=True).state_dict())


def test_cells_load_torch_cell_state_dicts():
    GRUCell(3, 5).load_state_dict(torch.nn.GRUCell(3, 5).state_dict())
    LSTMCell(3, 5).load_state_dict(torch.nn.LSTMCell(3, 5).state_dict())
    torch.nn.GRUCell(3, 5, bias=False).load_state_dict(GRUCell(3, 5, bias=False).state_dict())


def test_keras_gate_layout_written_out():
    """torch's (3H, I) blocks r, z, n become Keras' (I, 3H) columns z, r, h; the biases follow."""
    hidden = 2
    model = GRU(1, hidden)
    with torch.no_grad():
        for gate, value in enumerate((1.0, 2.0, 3.0)):  # r, z, n
            block = slice(gate * hidden, (gate + 1) * hidden)
            model.weight_ih_l0[block] = value
            model.weight_hh_l0[block] = 10 * value
            model.bias_ih_l0[block] = 100 * value
            model.bias_hh_l0[block] = 1000 * value
    kernel, recurrent, bias = model.to_keras_weights()
    np.testing.assert_array_equal(kernel, [[2, 2, 1, 1, 3, 3]])  # (I, 3H): z, r, h
    np.testing.assert_array_equal(recurrent, np.tile([20, 20, 10, 10, 30, 30], (hidden, 1)))
    np.testing.assert_array_equal(bias, [[200, 200, 100, 100, 300, 300], [2000, 2000, 1000, 1000, 3000, 3000]])
    model.reset_after = False  # reset-before has one Keras bias: b_ih + b_hh, exact because b_hn sits outside r
    np.testing.assert_array_equal(model.to_keras_weights()[2], [2200, 2200, 1100, 1100, 3300, 3300])


def test_keras_lstm_layout_keeps_gate_order():
    hidden = 1
    model = LSTM(1, hidden)
    with torch.no_grad():
        model.weight_ih_l0.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))  # i, f, g, o
        model.bias_ih_l0.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        model.bias_hh_l0.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    kernel, _, bias = model.to_keras_weights()
    np.testing.assert_array_equal(kernel, [[1, 2, 3, 4]])  # Keras i, f, c, o
    np.testing.assert_array_equal(bias, [11, 22, 33, 44])
