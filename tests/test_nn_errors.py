"""Mistakes a user makes get an error of the right type whose message names the bad value and what was
expected."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from grukit.nn import GRU, LSTM, GRUCell, LSTMCell, MinGRU


def raises(error: type[Exception], message: str):
    """``pytest.raises`` matching ``message`` literally."""
    return pytest.raises(error, match=re.escape(message))


X = torch.randn(2, 5, 3)  # (B, T, I) for a GRU(3, 4)


@pytest.mark.parametrize(
    "shape", [(2, 5, 7), (2, 2, 5, 3), (3,)], ids=["feature size", "rank 4", "rank 1"]
)
def test_wrong_input_shape_names_the_expected_shape(shape):
    with raises(ValueError, f"GRU expected input of shape (batch, time, 3) or unbatched (time, 3), got {shape}"):
        GRU(3, 4)(torch.randn(shape))


def test_time_major_model_says_time_major_shape():
    with raises(ValueError, "MinGRU expected input of shape (time, batch, 3) or unbatched (time, 3), got (5, 2, 4)"):
        MinGRU(3, 4, batch_first=False)(torch.randn(5, 2, 4))


def test_integer_input_is_a_type_error_pointing_to_embeddings():
    with raises(TypeError, "GRU expected a floating-point input, got dtype torch.int64 (token ids go through an"):
        GRU(3, 4)(torch.ones(2, 5, 3, dtype=torch.long))
    with raises(TypeError, "LSTM expected a torch.Tensor input, got list"):
        LSTM(3, 4)([[0.0, 1.0, 2.0]])


def test_empty_sequence_is_rejected():
    with raises(ValueError, "GRU expected at least one time step, got input of shape (2, 0, 3)"):
        GRU(3, 4)(torch.randn(2, 0, 3))


def test_wrong_h0_shape_and_dtype():
    with raises(ValueError, "GRU expected h0 of shape (2, 2, 4) (num_layers * num_directions, batch, hidden_size), "
                            "got (1, 2, 4)"):
        GRU(3, 4, bidirectional=True)(X, torch.zeros(1, 2, 4))
    unbatched = "GRU expected h0 of shape (1, 4) (num_layers * num_directions, hidden_size), got (1, 1, 4)"
    with raises(ValueError, unbatched):
        GRU(3, 4)(X[0], torch.zeros(1, 1, 4))
    with raises(TypeError, "GRU expected h0 of dtype torch.float32 (the input's), got torch.float64"):
        GRU(3, 4)(X, torch.zeros(1, 2, 4, dtype=torch.float64))


def test_wrong_lstm_state():
    with raises(ValueError, "LSTM expected state as a pair (h0, c0), got Tensor"):
        LSTM(3, 4)(X, torch.zeros(1, 2, 4))
    with raises(ValueError, "LSTM expected c0 of shape (1, 2, 4) (num_layers * num_directions, batch, hidden_size), "
                            "got (1, 3, 4)"):
        LSTM(3, 4)(X, (torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)))


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([0, 5], "GRU expected every length in [1, 5] (the time dimension), got min 0 and max 5"),
        ([6, 5], "GRU expected every length in [1, 5] (the time dimension), got min 5 and max 6"),
        ([2, 5, 1], "GRU expected lengths of shape (2,), one per sequence, got (3,)"),
    ],
    ids=["zero", "longer than T", "one too many"],
)
def test_bad_lengths_values(lengths, message):
    with raises(ValueError, message):
        GRU(3, 4)(X, lengths=lengths)


def test_float_lengths_are_a_type_error():
    with raises(TypeError, "GRU expected integer lengths, got dtype torch.float32"):
        GRU(3, 4)(X, lengths=torch.tensor([2.0, 5.0]))


def test_lengths_with_unbatched_input():
    with raises(ValueError, "GRU takes lengths only with batched input"):
        GRU(3, 4)(X[0], lengths=[5])


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_outside_zero_one(dropout):
    with raises(ValueError, f"GRU expected dropout in [0, 1), got {dropout!r}"):
        GRU(3, 4, dropout=dropout)


@pytest.mark.parametrize(
    "cls, args, kwargs, message",
    [
        (GRU, (0, 4), {}, "GRU expected input_size to be a positive integer, got 0"),
        (GRU, (3, -1), {}, "GRU expected hidden_size to be a positive integer, got -1"),
        (LSTM, (3, 4), dict(num_layers=1.5), "LSTM expected num_layers to be a positive integer, got 1.5"),
        (MinGRU, (True, 4), {}, "MinGRU expected input_size to be a positive integer, got True"),
        (GRU, (3, 4), dict(init="xavier"), "GRU expected init in ('torch', 'keras'), got 'xavier'"),
        (GRUCell, (3, 0), {}, "GRUCell expected hidden_size to be a positive integer, got 0"),
        (LSTMCell, ("3", 4), {}, "LSTMCell expected input_size to be a positive integer, got '3'"),
    ],
)
def test_bad_constructor_arguments(cls, args, kwargs, message):
    with raises(ValueError, message):
        cls(*args, **kwargs)


def test_cell_errors():
    with raises(ValueError, "GRUCell expected input of shape (batch, 3) or (3,), got (2, 5)"):
        GRUCell(3, 4)(torch.randn(2, 5))
    with raises(ValueError, "GRUCell expected h of shape (2, 4), got (3, 4)"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4))
    with raises(TypeError, "GRUCell expected h as a tensor of dtype torch.float32 (the input's), got torch.float64"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4, dtype=torch.float64))
    with raises(TypeError, "GRUCell expected a floating-point tensor input, got torch.int64"):
        GRUCell(3, 4)(torch.ones(2, 3, dtype=torch.long))
    with raises(ValueError, "LSTMCell expected state as a pair (h, c), got Tensor"):
        LSTMCell(3, 4)(torch.randn(5, 3), torch.randn(5, 4))
    with raises(ValueError, "LSTMCell expected c of shape (2, 4), got (2, 5)"):
        LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5)))


def test_torch_interop_errors():
    with raises(ValueError, "torch.nn.GRU implements only reset_after=True; this GRU has reset_after=False"):
        GRU(3, 4, reset_after=False).to_torch()
    with raises(TypeError, "GRU.from_torch expected a torch.nn.modules.rnn.GRU, got LSTM"):
        GRU.from_torch(torch.nn.LSTM(3, 4))
    with raises(ValueError, "LSTM.from_torch does not support proj_size, got 2"):
        LSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2))


KERAS_GRU = GRU(3, 4).to_keras_weights()  # kernel (3, 12), recurrent_kernel (4, 12), bias (2, 12)


@pytest.mark.parametrize(
    "weights, kwargs, message",
    [
        (KERAS_GRU[:2], {}, "GRU.from_keras_weights expected a list of [kernel, recurrent_kernel, bias] per layer "
                            "and direction (a multiple of 3 arrays), got 2"),
        (KERAS_GRU, dict(bidirectional=True), "(a multiple of 6 arrays), got 3"),
        (np.zeros(3), {}, "(a multiple of 3 arrays), got ndarray"),
        (KERAS_GRU, dict(reset_after=False),
         "GRU.from_keras_weights: layer 0 direction 0 expected bias of shape (12,) (reset_after=False), got (2, 12)"),
        ([KERAS_GRU[0][:, :11], *KERAS_GRU[1:]], {},
         "GRU.from_keras_weights: layer 0 direction 0 expected kernel of shape (3, 12), got (3, 11)"),
        ([KERAS_GRU[0], KERAS_GRU[1][:3], KERAS_GRU[2]], {},
         "GRU.from_keras_weights expected kernel (I, 3H) and recurrent_kernel (H, 3H), got (3, 12) and (3, 12)"),
        (KERAS_GRU + [np.zeros((5, 12)), *KERAS_GRU[1:]], {},
         "GRU.from_keras_weights: layer 1 direction 0 expected kernel of shape (4, 12), got (5, 12)"),
    ],
    ids=["too few", "bidirectional needs 6", "not a list", "reset_after mismatch", "kernel", "recurrent",
         "second layer"],
)
def test_bad_keras_weights(weights, kwargs, message):
    with raises(ValueError, message):
        GRU.from_keras_weights(weights, **kwargs)


def test_gru_weights_are_not_lstm_weights():
    with raises(ValueError, "LSTM.from_keras_weights expected kernel (I, 4H) and recurrent_kernel (H, 4H), "
                            "got (3, 12) and (4, 12)"):
        LSTM.from_keras_weights(KERAS_GRU)


@pytest.mark.parametrize(
    "module, x, message",
    [
        (GRU(3, 4), torch.randn(2, 5, 3, dtype=torch.float64),
         "GRU got float64 input but its weights are float32; call .double() on the module or .float() on the input"),
        (GRU(3, 4).double(), torch.randn(2, 5, 3),
         "GRU got float32 input but its weights are float64; call .float() on the module or .double() on the input"),
        (MinGRU(3, 4), torch.randn(5, 3, dtype=torch.float16),
         "MinGRU got float16 input but its weights are float32; call .half() on the module or .float() on the input"),
        (LSTM(3, 4), torch.randn(2, 5, 3, dtype=torch.bfloat16),
         "LSTM got bfloat16 input but its weights are float32; call .bfloat16() on the module or .float() on the "
         "input"),
        (GRUCell(3, 4), torch.randn(2, 3, dtype=torch.float64),
         "GRUCell got float64 input but its weights are float32; call .double() on the module or .float() on the "
         "input"),
        (LSTMCell(3, 4).double(), torch.randn(3),
         "LSTMCell got float32 input but its weights are float64; call .float() on the module or .double() on the "
         "input"),
    ],
    ids=["GRU f64 input", "GRU f64 weights", "MinGRU f16", "LSTM bf16", "GRUCell", "LSTMCell"],
)
def test_input_dtype_other_than_the_weights_names_both(module, x, message):
    # Before, the fast engines failed deep inside a kernel ("mat1 and mat2 must have the same dtype",
    # "onednn_gru: w_layer must be a contiguous float32 CPU tensor").
    with raises(TypeError, message):
        module(x)


def test_input_device_other_than_the_weights_names_both():
    x = torch.empty(2, 5, 3, device="meta")  # a second device that every build has
    with raises(ValueError, "GRU got input on meta but its weights are on cpu; call .to('meta') on the module or "
                            ".to('cpu') on the input"):
        GRU(3, 4)(x)
    with raises(ValueError, "GRUCell got input on meta but its weights are on cpu"):
        GRUCell(3, 4)(x[:, 0])
    with raises(ValueError, "GRU expected h0 on cpu (the input's), got meta"):
        GRU(3, 4)(X, torch.empty(1, 2, 4, device="meta"))
    with raises(ValueError, "GRUCell expected h on cpu (the input's), got meta"):
        GRUCell(3, 4)(X[:, 0], torch.empty(2, 4, device="meta"))


@pytest.mark.parametrize(
    "module, x, message",
    [
        (GRU(3, 4), torch.randn(0, 5, 3), "GRU expected at least one sequence in the batch, got input of shape "
                                          "(0, 5, 3)"),
        (GRU(3, 4, batch_first=False), torch.randn(5, 0, 3),
         "GRU expected at least one sequence in the batch, got input of shape (5, 0, 3)"),
        (MinGRU(3, 4), torch.randn(0, 3), "MinGRU expected at least one time step, got input of shape (0, 3)"),
        (GRUCell(3, 4), torch.randn(0, 3), "GRUCell expected at least one row in the batch, got input of shape (0, 3)"),
        (LSTMCell(3, 4), torch.randn(0, 3),
         "LSTMCell expected at least one row in the batch, got input of shape (0, 3)"),
    ],
    ids=["GRU batch 0", "time-major batch 0", "unbatched no steps", "GRUCell batch 0", "LSTMCell batch 0"],
)
def test_empty_batches_are_rejected(module, x, message):
    with raises(ValueError, message):
        module(x)


@pytest.mark.parametrize("lengths", [[-1, 5], [5, -3]], ids=["first", "second"])
def test_negative_lengths_are_rejected(lengths):
    with raises(ValueError, "GRU expected every length in [1, 5] (the time dimension), got min "):
        GRU(3, 4)(X, lengths=lengths)
