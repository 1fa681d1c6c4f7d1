"""grukit.nn as a drop-in for torch.nn.GRU / GRUCell / LSTM: the parts of torch's API a torch user relies on
(factory arguments, PackedSequence, proj_size, flatten_parameters, empty batches, the error classes torch code
catches) and batched gradients (vmap, jacobian, torch.func)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import rnn as rnn_utils

from grukit.nn import GRU, LSTM, DTypeError, GRUCell, LSTMCell, MinGRU, ShapeError

F64 = torch.float64


def _pair(ours_cls, torch_cls, *args, **kwargs):
    """A torch module and the grukit module with its weights (float64)."""
    torch.manual_seed(0)
    theirs = torch_cls(*args, **kwargs).double()
    return theirs, ours_cls.from_torch(theirs)


# Factory arguments, flatten_parameters ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GRU, LSTM, MinGRU, GRUCell, LSTMCell])
def test_device_and_dtype_factory_arguments(cls):
    module = cls(3, 4, device="cpu", dtype=F64)
    assert {p.dtype for p in module.parameters()} == {F64}
    assert {p.device.type for p in module.parameters()} == {"cpu"}
    meta = cls(3, 4, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}


def test_flatten_parameters_is_a_no_op():
    module = GRU(3, 4)
    before = {name: p.clone() for name, p in module.named_parameters()}
    assert module.flatten_parameters() is None
    assert all(torch.equal(before[name], p) for name, p in module.named_parameters())


# PackedSequence -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cls, torch_cls", [(GRU, torch.nn.GRU), (LSTM, torch.nn.LSTM)])
def test_packed_sequence_in_gives_torchs_packed_sequence_out(cls, torch_cls, bidirectional, enforce_sorted):
    theirs, ours = _pair(cls, torch_cls, 3, 4, 2, bidirectional=bidirectional)
    lengths = [6, 5, 3, 1] if enforce_sorted else [3, 6, 1, 5]
    x = torch.randn(6, 4, 3, dtype=F64)  # (T, B, I)
    packed = rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    expected, expected_state = theirs(packed)
    output, state = ours(packed)
    assert isinstance(output, rnn_utils.PackedSequence)
    torch.testing.assert_close(output.data, expected.data)
    assert torch.equal(output.batch_sizes, expected.batch_sizes)
    for mine, torchs in ((output.sorted_indices, expected.sorted_indices),
                         (output.unsorted_indices, expected.unsorted_indices)):
        assert (mine is None and torchs is None) or torch.equal(mine, torchs)
    torch.testing.assert_close(state, expected_state)


def test_packed_sequence_and_lengths_together_are_refused():
    packed = rnn_utils.pack_sequence([torch.randn(3, 2), torch.randn(2, 2)])
    with pytest.raises(ValueError, match="GRU takes lengths or a PackedSequence input, not both"):
        GRU(2, 3)(packed, lengths=[3, 2])


def test_packed_sequence_equals_lengths():
    module = GRU(3, 4, batch_first=True)
    x = torch.randn(3, 5, 3)
    packed = rnn_utils.pack_padded_sequence(x, [5, 2, 4], batch_first=True, enforce_sorted=False)
    padded, h_n = module(x, lengths=[5, 2, 4])
    output, h_packed = module(packed)
    unpacked, _ = rnn_utils.pad_packed_sequence(output, batch_first=True)
    torch.testing.assert_close(unpacked, padded)
    torch.testing.assert_close(h_packed, h_n)


# proj_size ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["auto", "reference"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_proj_size_equals_torch(engine, bidirectional):
    theirs, ours = _pair(LSTM, torch.nn.LSTM, 3, 5, 2, proj_size=2, bidirectional=bidirectional, batch_first=True)
    ours.engine = engine
    assert ours.proj_size == 2 and ours.weight_hr_l0.shape == (2, 5) and ours.weight_hh_l1.shape == (20, 2)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x = torch.randn(4, 6, 3, dtype=F64, requires_grad=True)
    d = 2 if bidirectional else 1
    state = (torch.randn(2 * d, 4, 2, dtype=F64), torch.randn(2 * d, 4, 5, dtype=F64))
    expected, (h_expected, c_expected) = theirs(x, state)
    output, (h_n, c_n) = ours(x, state)
    assert output.shape == (4, 6, 2 * d) and h_n.shape == (2 * d, 4, 2) and c_n.shape == (2 * d, 4, 5)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, h_expected)
    torch.testing.assert_close(c_n, c_expected)
    grad_ours = torch.autograd.grad(output.sum(), (x, ours.weight_hr_l0))
    grad_theirs = torch.autograd.grad(expected.sum(), (x, theirs.weight_hr_l0))
    torch.testing.assert_close(grad_ours, grad_theirs)
    assert ours.to_torch().proj_size == 2


def test_lstm_proj_size_state_shapes_are_checked():
    with pytest.raises(ShapeError, match=r"LSTM expected h0 of shape \(1, 2, 2\) \(num_layers \* num_directions, "
                                         r"batch, proj_size\), got \(1, 2, 4\)"):
        LSTM(3, 4, proj_size=2)(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    h, c = LSTM(3, 4, proj_size=2).initial_state(2)
    assert h.shape == (1, 2, 2) and c.shape == (1, 2, 4)


# Empty batches, zero sizes (as torch 2.13) --------------------------------------------------------------
@pytest.mark.parametrize("cls, torch_cls", [(GRU, torch.nn.GRU), (LSTM, torch.nn.LSTM), (MinGRU, None)])
def test_empty_batch_gives_empty_outputs(cls, torch_cls):
    x = torch.zeros(5, 0, 3, requires_grad=True)  # (T, B=0, I)
    output, state = cls(3, 4, batch_first=False)(x)
    assert output.shape == (5, 0, 4)
    h_n = state[0] if isinstance(state, tuple) else state
    assert h_n.shape == (1, 0, 4)
    output.sum().backward()
    assert x.grad.shape == x.shape
    if torch_cls is not None:
        assert torch_cls(3, 4)(x)[0].shape == output.shape


def test_cells_take_empty_batches_and_zero_sizes_as_torch():
    assert GRUCell(3, 4)(torch.zeros(0, 3)).shape == torch.nn.GRUCell(3, 4)(torch.zeros(0, 3)).shape == (0, 4)
    assert GRUCell(3, 0)(torch.zeros(2, 3)).shape == (2, 0)
    torch.manual_seed(0)
    theirs = torch.nn.GRUCell(0, 4)
    ours = GRUCell(0, 4)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(torch.zeros(2, 0)), theirs(torch.zeros(2, 0)))
    h, c = LSTMCell(3, 0)(torch.zeros(2, 3))
    assert h.shape == c.shape == (2, 0)


def test_recurrent_modules_refuse_hidden_size_zero_as_torch():
    with pytest.raises(ValueError):
        torch.nn.GRU(3, 0)
    with pytest.raises(ValueError, match="GRU expected hidden_size to be a positive integer, got 0"):
        GRU(3, 0)


# Error classes torch code catches -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda: GRU(3, 4)(torch.randn(2, 5, 7)),
        lambda: GRU(3, 4)(torch.randn(2, 5, 3), torch.zeros(1, 3, 4)),
        lambda: GRU(3, 4)(torch.randn(2, 0, 3)),
        lambda: LSTM(3, 4)(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))),
        lambda: GRUCell(3, 4)(torch.randn(3, 3), torch.randn(1, 4)),
        lambda: GRUCell(3, 4)(torch.randn(3, 5)),
        lambda: GRU(3, 4)(torch.randn(2, 5, 3), torch.zeros(1, 2, 4, dtype=F64)),
    ],
    ids=["input width", "h0 batch", "no steps", "c0 width", "cell h batch", "cell input width", "h0 dtype"],
)
def test_torch_runtime_errors_are_runtime_errors_and_value_or_type_errors(call):
    with pytest.raises(RuntimeError) as caught:
        call()
    assert isinstance(caught.value, (ValueError, TypeError))


def test_dtype_mismatch_is_the_value_error_torch_raises_and_a_type_error():
    with pytest.raises(ValueError):
        torch.nn.GRU(3, 4)(torch.randn(5, 2, 3, dtype=F64))
    with pytest.raises(ValueError) as caught:
        GRU(3, 4)(torch.randn(2, 5, 3, dtype=F64))
    assert isinstance(caught.value, (TypeError, DTypeError))


# Batched gradients: vmap over the fast kernels' backward falls back to the reference ----------------------
ENGINES = ["auto", "native", "onednn", "reference"]


def _gru(engine: str, dtype: torch.dtype = F64) -> GRU:
    torch.manual_seed(0)
    return GRU(2, 3, bidirectional=True, engine=engine).to(dtype)


@pytest.mark.parametrize("engine", ["auto", "native", "reference"])
def test_gradcheck_with_batched_grad(engine):
    module = _gru(engine)
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, h0: module(x, h0, lengths=[4, 2])[0], (x, h0), check_batched_grad=True
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_vectorized_jacobian_equals_the_reference(engine):
    dtype = torch.float32 if engine == "onednn" else F64
    module, oracle = _gru(engine, dtype), _gru("reference", dtype)
    x = torch.randn(2, 4, 2, dtype=dtype)
    jacobian = torch.autograd.functional.jacobian(lambda x: module(x)[0], x, vectorize=True)
    expected = torch.autograd.functional.jacobian(lambda x: oracle(x)[0], x)
    assert jacobian.shape == (2, 4, 6, 2, 4, 2)
    torch.testing.assert_close(jacobian, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("engine", ["auto", "native", "reference"])
def test_torch_func_vmap_grad_jacrev(engine):
    module, oracle = _gru(engine), _gru("reference")
    x = torch.randn(2, 4, 2, dtype=F64)
    grad = torch.func.grad(lambda x: module(x)[0].square().sum())(x)
    expected = torch.autograd.grad(oracle(x.requires_grad_())[0].square().sum(), x)[0]
    torch.testing.assert_close(grad, expected)
    jacobian = torch.func.jacrev(lambda x: module(x)[1])(x.detach())
    assert jacobian.shape == (2, 2, 3, 2, 4, 2)
    many = torch.randn(5, 2, 4, 2, dtype=F64)
    batched = torch.func.vmap(lambda one: module(one)[0])(many)
    torch.testing.assert_close(batched, torch.stack([module(one)[0] for one in many]))


@pytest.mark.parametrize("cls", [LSTM, GRUCell, LSTMCell])
def test_batched_gradcheck_other_modules(cls):
    torch.manual_seed(0)
    module = cls(2, 3).double()
    shape = (3, 2) if cls in (GRUCell, LSTMCell) else (2, 4, 2)
    x = torch.randn(*shape, dtype=F64, requires_grad=True)

    def first(x):
        out = module(x)
        return out[0] if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(first, (x,), check_batched_grad=True)


def test_mingru_under_torch_func_runs_the_reference():
    torch.manual_seed(0)
    module = MinGRU(2, 3).double()  # engine "auto": the scan kernel on plain tensors
    x = torch.randn(2, 4, 2, dtype=F64)
    grad = torch.func.grad(lambda x: module(x)[0].sum())(x)
    expected = torch.autograd.grad(module(x.requires_grad_())[0].sum(), x)[0]
    torch.testing.assert_close(grad, expected)
