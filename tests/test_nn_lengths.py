"""``lengths`` for variable-length batches: the same as running each sequence alone, the same as torch's
``pack_padded_sequence`` (values and gradients), and exact zeros at padded steps."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from grukit.nn import GRU, LSTM, MinGRU

LENGTHS = [5, 2, 7, 1]  # unsorted, one at full length T = 7, one of a single step
STEPS = 7
TOL = dict(atol=1e-10, rtol=1e-10)


# "reference" is the oracle written from the equations; "auto" runs the fused kernels a user gets by default.
ENGINES = ["reference", "auto"]


def model_and_torch(cls, engine: str, dtype: torch.dtype, **config):
    torch.manual_seed(0)
    theirs = {GRU: torch.nn.GRU, LSTM: torch.nn.LSTM}[cls](3, 4, batch_first=True, **config).to(dtype)
    ours = cls(3, 4, engine=engine, **config).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def call(module, x, state, lengths=None):
    """``(output, [h_n] or [h_n, c_n])`` for either family, with ``state`` a list of initial tensors."""
    extra = {} if lengths is None else dict(lengths=lengths)  # torch's modules take no lengths
    if isinstance(module, (LSTM, torch.nn.LSTM)):
        output, final = module(x, None if state is None else tuple(state), **extra)
        return output, list(final)
    output, h_n = module(x, None if state is None else state[0], **extra)
    return output, [h_n]


def initial_state(module, batch: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    count = 2 if isinstance(module, LSTM) else 1
    layers = module.num_layers * module.num_directions
    return [torch.randn(layers, batch, module.hidden_size, dtype=dtype) for _ in range(count)]


@pytest.mark.parametrize(
    "cls, extra",
    [(GRU, {}), (GRU, dict(bidirectional=True)), (GRU, dict(bidirectional=True, reset_after=False)),
     (LSTM, {}), (LSTM, dict(bidirectional=True)), (MinGRU, {})],
    ids=["gru", "gru-bidir", "gru-bidir-reset-before", "lstm", "lstm-bidir", "mingru"],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_lengths_equal_each_sequence_run_alone(cls, extra, engine):
    torch.manual_seed(0)
    model = cls(3, 4, num_layers=2, engine=engine, **extra).double()
    x = torch.randn(len(LENGTHS), STEPS, 3, dtype=torch.float64)
    state = initial_state(model, len(LENGTHS))
    output, final = call(model, x, state, lengths=torch.tensor(LENGTHS))
    for b, length in enumerate(LENGTHS):
        alone_output, alone_final = call(model, x[b : b + 1, :length], [s[:, b : b + 1] for s in state])
        torch.testing.assert_close(output[b, :length], alone_output[0], **TOL)
        for ours, alone in zip(final, alone_final):
            torch.testing.assert_close(ours[:, b], alone[:, 0], **TOL)
        assert torch.equal(output[b, length:], torch.zeros_like(output[b, length:])), "padded outputs must be 0"


@pytest.mark.parametrize("engine", ENGINES)
def test_padded_input_values_change_nothing(engine):
    torch.manual_seed(0)
    model = GRU(3, 4, num_layers=2, bidirectional=True, engine=engine).double()
    x = torch.randn(len(LENGTHS), STEPS, 3, dtype=torch.float64)
    noisy = x.clone()
    for b, length in enumerate(LENGTHS):
        noisy[b, length:] = 1e3 * torch.randn(STEPS - length, 3, dtype=torch.float64)
    output, h_n = model(x, lengths=LENGTHS)
    noisy_output, noisy_h_n = model(noisy, lengths=LENGTHS)
    assert torch.equal(output, noisy_output) and torch.equal(h_n, noisy_h_n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", [GRU, LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lengths_equal_pack_padded_sequence_with_gradients(cls, bidirectional, with_state, engine, dtype):
    ours, theirs = model_and_torch(cls, engine, dtype, num_layers=2, bidirectional=bidirectional)
    tol = TOL if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    x = torch.randn(len(LENGTHS), STEPS, 3, dtype=dtype)
    state = initial_state(ours, len(LENGTHS), dtype) if with_state else None
    lengths = torch.tensor(LENGTHS)
    output_shape = (len(LENGTHS), STEPS, 4 * ours.num_directions)
    up_output = torch.randn(output_shape, dtype=dtype)
    up_final = [torch.randn_like(s) for s in initial_state(ours, len(LENGTHS), dtype)]

    def forward_backward(module, packed: bool):
        x_ = x.clone().requires_grad_(True)
        state_ = None if state is None else [s.clone().requires_grad_(True) for s in state]
        if packed:
            sequence = pack_padded_sequence(x_, lengths, batch_first=True, enforce_sorted=False)
            output, final = call(module, sequence, state_)
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=STEPS)
        else:
            output, final = call(module, x_, state_, lengths=lengths)
        loss = (output * up_output).sum() + sum((f * u).sum() for f, u in zip(final, up_final))
        loss.backward()
        grads = [x_.grad] + ([] if state_ is None else [s.grad for s in state_])
        grads += [p.grad for _, p in sorted(module.named_parameters())]
        return [output.detach(), *[f.detach() for f in final]], grads

    ours_values, ours_grads = forward_backward(ours, packed=False)
    theirs_values, theirs_grads = forward_backward(theirs, packed=True)
    for a, b in zip(ours_values, theirs_values):
        torch.testing.assert_close(a, b, **tol)
    assert len(ours_grads) == len(theirs_grads)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, **tol)
    for b, length in enumerate(LENGTHS):
        assert torch.equal(ours_grads[0][b, length:], torch.zeros(STEPS - length, 3, dtype=dtype))
        assert torch.equal(ours_values[0][b, length:], torch.zeros_like(ours_values[0][b, length:]))


def test_lengths_accept_lists_and_any_integer_dtype():
    torch.manual_seed(0)
    model = GRU(3, 4)
    x = torch.randn(len(LENGTHS), STEPS, 3)
    reference = model(x, lengths=torch.tensor(LENGTHS))
    for lengths in (LENGTHS, tuple(LENGTHS), torch.tensor(LENGTHS, dtype=torch.int32)):
        for a, b in zip(model(x, lengths=lengths), reference):
            assert torch.equal(a, b)


def test_full_lengths_equal_no_lengths():
    torch.manual_seed(0)
    model = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=False).double()
    x = torch.randn(STEPS, 3, 3, dtype=torch.float64)
    output, (h_n, c_n) = model(x)
    output_l, (h_n_l, c_n_l) = model(x, lengths=[STEPS] * 3)
    torch.testing.assert_close(output_l, output, **TOL)
    torch.testing.assert_close(h_n_l, h_n, **TOL)
    torch.testing.assert_close(c_n_l, c_n, **TOL)
