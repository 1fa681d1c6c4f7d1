# Tests ported from PyTorch's test/test_nn.py (TestNN) and the GRU / GRUCell / LSTM entries of
# torch/testing/_internal/common_modules.py, run against grukit.nn.
#
# From PyTorch (https://github.com/pytorch/pytorch), under its BSD-style licence:
#
# Copyright (c) 2016-     Facebook, Inc            (Adam Paszke)
# Copyright (c) 2014-     Facebook, Inc            (Soumith Chintala)
# Copyright (c) 2011-2014 Idiap Research Institute (Ronan Collobert)
# Copyright (c) 2012-2014 Deepmind Technologies    (Koray Kavukcuoglu)
# Copyright (c) 2011-2012 NEC Laboratories America (Koray Kavukcuoglu)
# Copyright (c) 2011-2013 NYU                      (Clement Farabet)
# Copyright (c) 2006-2010 NEC Laboratories America (Ronan Collobert, Leon Bottou, Iain Melvin, Jason Weston)
# Copyright (c) 2006      Idiap Research Institute (Samy Bengio)
# Copyright (c) 2001-2004 Idiap Research Institute (Ronan Collobert, Samy Bengio, Johnny Mariethoz)
# All rights reserved.
#
# Redistribution and use in source and binary forms, with or without modification, are permitted provided that
# the following conditions are met:
# 1. Redistributions of source code must retain the above copyright notice, this list of conditions and the
#    following disclaimer.
# 2. Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the
#    following disclaimer in the documentation and/or other materials provided with the distribution.
# 3. Neither the names of Facebook, Deepmind Technologies, NYU, NEC Laboratories America and IDIAP Research
#    Institute nor the names of its contributors may be used to endorse or promote products derived from this
#    software without specific prior written permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED
# WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A
# PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE FOR ANY
# DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO,
# PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
# CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR
# OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""PyTorch's own GRU / GRUCell / LSTM tests, ported to grukit.nn.

Adaptations are marked ``# adapted:``. The one made everywhere: torch's modules are time-major by default and
grukit's are batch-first, so constructors taking torch's default pass ``batch_first=False`` (the ``nn`` below).
RNN / RNNCell parts of the original tests are dropped (grukit has no Elman module in ``grukit.nn``).

Not applicable (CUDA, cuDNN or multi-GPU only, or about modules grukit.nn does not have):

- test_RNN_cpu_vs_cudnn_no_dropout / _with_dropout: compare CPU against cuDNN (``TEST_CUDNN``);
- test_RNN_cudnn_weight_norm, test_cudnn_weight_format, test_cudnn_weight_tying,
  test_cudnn_rnn_dropout_states_device: cuDNN's flat weight buffer and dropout state;
- test_partial_flat_weights, test_pack_sequence_batch_sizes_throw: CUDA-only;
- test_rnn_check_device, test_projections_lstm_check_device: need two GPUs;
- test_RNN_dropout, test_RNN_dropout_state, test_RNN_change_dropout: cuDNN-only, on nn.RNN(relu) (and the
  second pickles a module, which grukit does not do);
- common_modules' RNN / RNNCell entries (``is_rnn=True``): nn.RNN.
"""

from __future__ import annotations

import re
from functools import partial
from itertools import product

import pytest
import torch
from torch.nn.utils import rnn as rnn_utils

import grukit.nn as gnn


class nn:  # noqa: N801 - adapted: torch.nn's names, time-major as torch's defaults
    GRU = partial(gnn.GRU, batch_first=False)
    LSTM = partial(gnn.LSTM, batch_first=False)
    GRUCell = gnn.GRUCell
    LSTMCell = gnn.LSTMCell


# test_nn.py :: TestNN -------------------------------------------------------------------------------------
def test_RNN_cell_no_broadcasting():  # noqa: N802
    def test(cell_module, input, hx, input_size, hidden_size):
        cell = cell_module(input_size, hidden_size)
        with pytest.raises(RuntimeError):
            cell(input, hx)

    def test_all(hidden_size, bad_hx, good_hx, input_size, input):
        # adapted: the nn.RNNCell line is dropped
        test(nn.GRUCell, input, bad_hx, input_size, hidden_size)
        test(nn.LSTMCell, input, (bad_hx, good_hx), input_size, hidden_size)
        test(nn.LSTMCell, input, (good_hx, bad_hx), input_size, hidden_size)

    hidden_size = 20
    input_size = 10
    input = torch.randn(3, input_size)
    bad_hx = torch.randn(1, hidden_size)
    good_hx = torch.randn(3, hidden_size)

    # Test hidden/input batch size broadcasting
    test_all(hidden_size, bad_hx, good_hx, input_size, input)

    # Test hx's hidden_size vs module's hidden_size broadcasting
    bad_hx = torch.randn(3, 1)
    test_all(hidden_size, bad_hx, good_hx, input_size, input)

    # Test input's input_size vs module's input_size broadcasting
    bad_input = torch.randn(3, 1)
    test_all(hidden_size, good_hx, good_hx, input_size, bad_input)


def test_LSTM_cell():  # noqa: N802
    # this is just a smoke test; these modules are implemented through
    # autograd so no Jacobian test is needed
    for bias in (True, False):
        input = torch.randn(3, 10)
        hx = torch.randn(3, 20)
        cx = torch.randn(3, 20)
        lstm = nn.LSTMCell(10, 20, bias=bias)
        for _ in range(6):
            hx, cx = lstm(input, (hx, cx))

        (hx + cx).sum().backward()


def test_LSTM_cell_forward_input_size():  # noqa: N802
    input = torch.randn(3, 11)
    hx = torch.randn(3, 20)
    cx = torch.randn(3, 20)
    lstm = nn.LSTMCell(10, 20)
    with pytest.raises(Exception):  # noqa: B017 - the original assertion, kept
        lstm(input, (hx, cx))


def test_LSTM_cell_forward_hidden_size():  # noqa: N802
    input = torch.randn(3, 10)
    hx = torch.randn(3, 21)
    cx = torch.randn(3, 20)
    lstm = nn.LSTMCell(10, 20)
    with pytest.raises(Exception):  # noqa: B017 - the original assertion, kept
        lstm(input, (hx, cx))
    with pytest.raises(Exception):  # noqa: B017 - the original assertion, kept
        lstm(input, (cx, hx))


def test_rnn_args_check():
    input_size = 3
    hidden_size = 5
    num_layers = 2
    batch_size = 4
    seq_len = 6
    num_directions = 1
    bad_size = 7  # prime number so that no size can divide it.

    def test(input_shape, hidden_shape, mode):
        for input, hidden in get_inputs(input_shape, hidden_shape, mode):
            model = getattr(nn, mode)(input_size, hidden_size, num_layers)
            with pytest.raises(RuntimeError):
                model(input, hidden)

    correct_input_shape = (seq_len, batch_size, input_size)
    correct_hidden_shape = (num_layers * num_directions, batch_size, hidden_size)

    def update_shape(shape, dim, new_dim_size):
        new_shape = list(shape)
        new_shape[dim] = new_dim_size
        return tuple(new_shape)

    def get_inputs(input_shape, hidden_shape, mode):
        """returns list( tuple(input, hidden) ) where input, hidden are inputs to a model"""
        input = torch.randn(input_shape)
        hidden = torch.randn(hidden_shape)
        if mode != "LSTM":
            return [(input, hidden)]
        if hidden_shape == correct_hidden_shape:
            return [(input, (hidden, hidden))]
        good_hidden = torch.randn(correct_hidden_shape)
        return [
            (input, (hidden, good_hidden)),
            (input, (good_hidden, hidden)),
        ]

    rnn_modes = ["GRU", "LSTM"]  # adapted: "RNN" dropped
    for mode in rnn_modes:
        # Incorrect input batch size
        test(update_shape(correct_input_shape, 1, bad_size), correct_hidden_shape, mode)
        # Incorrect hidden batch size
        test(correct_input_shape, update_shape(correct_hidden_shape, 1, bad_size), mode)
        # Incorrect input size
        test(update_shape(correct_input_shape, 2, bad_size), correct_hidden_shape, mode)
        # Incorrect hidden size
        test(correct_input_shape, update_shape(correct_hidden_shape, 2, bad_size), mode)
        # Incorrect hidden[0]
        test(correct_input_shape, update_shape(correct_hidden_shape, 0, bad_size), mode)


def test_projections_lstm_args_check():
    input_size = 3
    hidden_size = 5
    proj_size = 2
    num_layers = 2
    batch_size = 4
    seq_len = 6
    num_directions = 1
    bad_size = 7  # prime number so that no size can divide it.

    def test(input_shape, hidden_h_shape, hidden_c_shape):
        for input, hidden in get_inputs(input_shape, hidden_h_shape, hidden_c_shape):
            model = nn.LSTM(input_size, hidden_size, num_layers, proj_size=proj_size)
            with pytest.raises(RuntimeError):
                model(input, hidden)

    correct_input_shape = (seq_len, batch_size, input_size)
    correct_hidden_h_shape = (num_layers * num_directions, batch_size, proj_size)
    correct_hidden_c_shape = (num_layers * num_directions, batch_size, hidden_size)

    def update_shape(shape, dim, new_dim_size):
        new_shape = list(shape)
        new_shape[dim] = new_dim_size
        return tuple(new_shape)

    def get_inputs(input_shape, hidden_h_shape, hidden_c_shape):
        input = torch.randn(input_shape)
        hidden_h = torch.randn(hidden_h_shape)
        hidden_c = torch.randn(hidden_c_shape)
        return [(input, (hidden_h, hidden_c))]

    # Incorrect input batch size
    test(update_shape(correct_input_shape, 1, bad_size), correct_hidden_h_shape, correct_hidden_c_shape)
    # Incorrect hidden batch size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 1, bad_size),
         update_shape(correct_hidden_c_shape, 1, bad_size))
    # Incorrect input size
    test(update_shape(correct_input_shape, 2, bad_size), correct_hidden_h_shape, correct_hidden_c_shape)
    # Incorrect hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 2, bad_size),
         update_shape(correct_hidden_c_shape, 2, bad_size))
    # Incorrect hidden[0]
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, bad_size),
         update_shape(correct_hidden_c_shape, 0, bad_size))
    # Incorrect proj size = hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, hidden_size), correct_hidden_c_shape)
    # Incorrect proj size != hidden size
    test(correct_input_shape, update_shape(correct_hidden_h_shape, 0, bad_size), correct_hidden_c_shape)
    # Incorrect cell size != hidden size
    test(correct_input_shape, correct_hidden_h_shape, update_shape(correct_hidden_c_shape, 0, bad_size))


def test_rnn_initial_hidden_state():
    rnn_modes = ["GRU", "LSTM"]  # adapted: "RNN" dropped
    for mode in rnn_modes:
        rnn = getattr(nn, mode)(30, 20, 2)
        input = torch.randn(10, 32, 30)
        hidden = torch.zeros(2, 32, 20)

        if mode == "LSTM":
            hidden = (hidden, hidden)
        output1, hidden1 = rnn(input, hidden)
        output2, hidden2 = rnn(input)
        torch.testing.assert_close(output1, output2)
        torch.testing.assert_close(hidden1, hidden2)


def test_projections_lstm_initial_hidden_state():
    for bidir in [False, True]:
        rnn = nn.LSTM(30, 20, 2, bidirectional=bidir, proj_size=10)
        num_dirs = 2 if bidir else 1
        input = torch.randn(10, 32, 30)
        hidden_h = torch.zeros(2 * num_dirs, 32, 10)
        hidden_c = torch.zeros(2 * num_dirs, 32, 20)
        hidden = (hidden_h, hidden_c)
        output1, hidden1 = rnn(input, hidden)
        output2, hidden2 = rnn(input)
        torch.testing.assert_close(output1, output2)
        torch.testing.assert_close(hidden1, hidden2)


def test_projections_errors_on_gru_and_rnn():
    # adapted: grukit's GRU has no proj_size parameter at all, so Python refuses the keyword (a TypeError)
    # where torch's GRU takes it and raises ValueError("proj_size argument is only supported for LSTM ...").
    with pytest.raises(TypeError, match="proj_size"):
        nn.GRU(30, 20, 2, proj_size=10)


def test_cudnn_forward_exception():
    # adapted: the modules are grukit's (batch_first=True as in the original); torch's message regexes are
    # replaced by grukit's messages for the same mistakes. nn.RNN row dropped.
    rnns = [
        (gnn.LSTM(10, 20, batch_first=True), (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19))),
        (gnn.LSTM(10, 20, batch_first=True, proj_size=10), (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19))),
        (gnn.GRU(10, 20, batch_first=True), torch.zeros(1, 2, 19)),
    ]
    x_wrong = torch.randn(2, 3, 3)
    x_right = torch.randn(2, 3, 10)
    for rnn, hidden in rnns:
        with pytest.raises(RuntimeError, match="expected h0 of shape.*got"):
            rnn(x_right, hidden)
        with pytest.raises(RuntimeError, match=re.escape("expected input of shape (batch, time, 10)")):
            rnn(x_wrong)


def test_error_RNN_seq_len_zero():  # noqa: N802
    # checking error message when RNN has seq_len = 0
    # adapted: torch's regex "Expected sequence length to be larger than 0 in RNN" -> grukit's message;
    # CPU only (the original loops over every device type); nn.RNN dropped.
    for module in (nn.GRU, nn.LSTM):
        for bidirectional in [True, False]:
            input = torch.ones(0, 10, 5)
            rnn = module(5, 6, bidirectional=bidirectional)
            with pytest.raises(RuntimeError, match="expected at least one time step"):
                rnn(input)


def test_RNN_input_size_zero():  # noqa: N802
    for module in (nn.GRU, nn.LSTM):  # adapted: nn.RNN dropped; CPU only
        input = torch.zeros((5, 0, 3))
        rnn = module(input_size=3, hidden_size=4)
        outs = rnn(input)
        assert outs[0].shape == torch.Size([5, 0, 4])
        # Check that backward does not cause a hard error
        outs[0].sum().backward()


# common_modules.py :: ModuleInfo(GRU / GRUCell / LSTM / LSTMCell) -------------------------------------------
def _no_batch_dim_reference(module, input, hidden=None, batch_first=False):
    """common_modules' no_batch_dim_reference_rnn_gru: an unbatched call equals the batched call with a batch
    of one, squeezed."""
    batch_dim = 0 if batch_first else 1
    if hidden is None:
        output, h_n = module(input.unsqueeze(batch_dim))
    else:
        output, h_n = module(input.unsqueeze(batch_dim), hidden.unsqueeze(1))
    return output.squeeze(batch_dim), h_n.squeeze(1)


@pytest.mark.parametrize("b, b_f, bidir", list(product((False, True), repeat=3)))
def test_module_inputs_GRU_no_batch_dim(b, b_f, bidir):  # noqa: N802
    torch.manual_seed(0)
    cons_args = {"input_size": 2, "hidden_size": 2, "num_layers": 2, "batch_first": b_f, "bias": b,
                 "bidirectional": bidir}
    cons_args_hidden = {"input_size": 2, "hidden_size": 3, "num_layers": 2, "batch_first": b_f, "bias": b,
                        "bidirectional": bidir}
    module = gnn.GRU(**cons_args).double()  # adapted: grukit.nn.GRU
    input = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(module(input), _no_batch_dim_reference(module, input, batch_first=b_f))
    module = gnn.GRU(**cons_args_hidden).double()
    hidden = torch.randn(4 if bidir else 2, 3, dtype=torch.float64)
    torch.testing.assert_close(module(input, hidden), _no_batch_dim_reference(module, input, hidden, b_f))


@pytest.mark.parametrize("kwargs", [{}, {"bias": True}])
def test_module_inputs_GRUCell_LSTMCell_no_batch_dim(kwargs):  # noqa: N802
    torch.manual_seed(0)
    cell = gnn.GRUCell(5, 10, **kwargs).double()
    input, hx = torch.randn(5, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(cell(input, hx), cell(input.unsqueeze(0), hx.unsqueeze(0)).squeeze(0))
    lstm = gnn.LSTMCell(5, 10, **kwargs).double()
    cx = torch.randn(10, dtype=torch.float64)
    h, c = lstm(input, (hx, cx))
    h1, c1 = lstm(input.unsqueeze(0), (hx.unsqueeze(0), cx.unsqueeze(0)))
    torch.testing.assert_close((h, c), (h1.squeeze(0), c1.squeeze(0)))


def test_module_inputs_GRU_packed_sequence():  # noqa: N802
    # common_modules' with_packed_sequence samples: a PackedSequence input, here checked against torch.nn.GRU
    torch.manual_seed(0)
    for b, b_f, bidir in product((False, True), repeat=3):
        theirs = torch.nn.GRU(2, 2, 2, bias=b, batch_first=b_f, bidirectional=bidir).double()
        ours = gnn.GRU.from_torch(theirs)  # adapted: grukit.nn.GRU with torch's weights
        seq = rnn_utils.pack_padded_sequence(torch.randn(3, 2, 2, dtype=torch.float64), [3, 2])
        expected, expected_h = theirs(seq)
        output, h_n = ours(seq)
        torch.testing.assert_close(output.data, expected.data)
        torch.testing.assert_close(h_n, expected_h)


@pytest.mark.parametrize(
    "cell_args, error_type",
    [
        (((3, 11), (3, 20)), RuntimeError),  # "input has inconsistent input_size: got 11 expected 10"
        (((3, 10), (3, 21)), RuntimeError),  # "hidden0 has inconsistent hidden_size: got 21, expected 20"
        (((3, 10), (5, 20)), RuntimeError),  # "Input batch size 3 doesn't match hidden0 batch size 5"
        (((3, 10), (3, 1, 1, 20)), ValueError),  # "Expected hidden to be 1D or 2D, got 4D instead"
    ],
)
def test_module_error_inputs_GRUCell(cell_args, error_type):  # noqa: N802
    # adapted: error types kept, torch's message regexes (in the comments) replaced by grukit's own messages
    cell = gnn.GRUCell(10, 20)
    (input_shape, hidden_shape) = cell_args
    with pytest.raises(error_type, match=r"GRUCell expected (input|h) of shape"):
        cell(torch.randn(input_shape), torch.randn(hidden_shape))


@pytest.mark.parametrize("cls", [gnn.GRU, gnn.LSTM])
def test_module_error_inputs_GRU(cls):  # noqa: N802
    # adapted: error types kept; torch's regexes replaced by grukit's messages naming the same argument
    with pytest.raises(ValueError, match="hidden_size"):  # "hidden_size must be greater than zero"
        cls(10, 0, 1)
    with pytest.raises(ValueError, match="num_layers"):  # "num_layers must be greater than zero"
        cls(10, 10, 0)
    module = cls(3, 5, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match=r"got float64 input but its weights are float32"):
        module(torch.randn(2, 4, 3, dtype=torch.float64))  # "RNN input dtype .* does not match weight dtype"
    for flag, value in [("bias", 0), ("bias", 1), ("bias", "True"), ("batch_first", 0), ("batch_first", 1),
                        ("batch_first", "False")]:
        with pytest.raises(TypeError, match=f"{flag} to be True or False, got {value!r}"):
            cls(3, 5, **{flag: value})  # "bias should be of type bool, got: int"
