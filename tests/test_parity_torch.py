"""grukit's GRU, LSTM and cells equal torch's: outputs, final states and the gradients w.r.t. the input, the
initial state and every weight (float32 to 1e-5, float64 to 1e-10), plus minGRU against its equations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grukit.nn import GRU, LSTM, GRUCell, LSTMCell, MinGRU

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
TORCH_CLASS = {GRU: torch.nn.GRU, LSTM: torch.nn.LSTM}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")


def run_and_backward(module: torch.nn.Module, x: torch.Tensor, state, upstream: list[torch.Tensor]):
    """Forward, then backward of ``sum(upstream_i * result_i)`` over the output and every final state tensor.

    Returns the detached results and the gradients of the input and the initial state(s)."""
    x = x.detach().clone().requires_grad_(True)
    if state is not None:
        state = tuple(s.detach().clone().requires_grad_(True) for s in state)
    if isinstance(module, (torch.nn.LSTM, LSTM)):
        output, (h_n, c_n) = module(x, state)
        results = [output, h_n, c_n]
    else:
        output, h_n = module(x, None if state is None else state[0])
        results = [output, h_n]
    sum((r * u).sum() for r, u in zip(results, upstream)).backward()
    state_grads = [] if state is None else [s.grad for s in state]
    return [r.detach() for r in results], x.grad, state_grads


def assert_same_as_torch(ours, theirs, x: torch.Tensor, with_state: bool, seed: int = 0) -> None:
    """Compare results and every gradient of ``ours`` (a grukit module) and ``theirs`` (torch's)."""
    dtype = x.dtype
    generator = torch.Generator().manual_seed(seed)
    batch = () if x.dim() == 2 else (x.shape[0 if theirs.batch_first else 1],)
    state_shape = (theirs.num_layers * (2 if theirs.bidirectional else 1), *batch, theirs.hidden_size)
    count = 2 if isinstance(theirs, torch.nn.LSTM) else 1
    directions = 2 if theirs.bidirectional else 1
    state = tuple(torch.randn(state_shape, generator=generator, dtype=dtype) for _ in range(count))
    state = state if with_state else None
    output_shape = (*x.shape[:-1], directions * theirs.hidden_size)
    upstream = [torch.randn(output_shape, generator=generator, dtype=dtype)]
    upstream += [torch.randn(state_shape, generator=generator, dtype=dtype) for _ in range(count)]

    ours_results, ours_dx, ours_dstate = run_and_backward(ours, x, state, upstream)
    theirs_results, theirs_dx, theirs_dstate = run_and_backward(theirs, x, state, upstream)
    for name, a, b in zip(["output", "h_n", "c_n"], ours_results, theirs_results):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != torch's {tuple(b.shape)}"
        assert_close(a, b, dtype, name)
    assert_close(ours_dx, theirs_dx, dtype, "grad of input")
    for name, a, b in zip(["h0", "c0"], ours_dstate, theirs_dstate):
        assert_close(a, b, dtype, f"grad of {name}")
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert ours_params.keys() == theirs_params.keys()
    for name, param in theirs_params.items():
        assert_close(ours_params[name].grad, param.grad, dtype, f"grad of {name}")


def make_pair(cls, dtype: torch.dtype, seed: int = 0, engine: str = "reference", **config):
    """A torch module and a grukit module with the same configuration and weights, run by ``engine``."""
    torch.manual_seed(seed)
    theirs = TORCH_CLASS[cls](**config).to(dtype)
    ours = cls(**{**config, "batch_first": theirs.batch_first}, engine=engine).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


# "reference" is the GRU written from its equations, the oracle; "auto" is what a user gets by default
# (a fused kernel where one is installed). Both must equal torch.
ENGINES = ["reference", "auto"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [GRU, LSTM])
@pytest.mark.parametrize(
    "config",
    [
        dict(num_layers=1, bidirectional=False, bias=True, batch_first=True),
        dict(num_layers=2, bidirectional=True, bias=True, batch_first=False),
        dict(num_layers=3, bidirectional=False, bias=False, batch_first=True),
    ],
    ids=["1layer", "2layer-bidir-timemajor", "3layer-nobias"],
)
def test_matches_torch_with_every_gradient(cls, dtype, config, engine):
    ours, theirs = make_pair(cls, dtype, engine=engine, input_size=5, hidden_size=7, **config)
    x = torch.randn((3, 6, 5) if config["batch_first"] else (6, 3, 5), dtype=dtype)
    assert_same_as_torch(ours, theirs, x, with_state=True)
    assert_same_as_torch(ours, theirs, x, with_state=False)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", [GRU, LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_input_matches_torch(cls, bidirectional, engine):
    ours, theirs = make_pair(cls, torch.float64, engine=engine, input_size=3, hidden_size=4, num_layers=2,
                             bidirectional=bidirectional, batch_first=True)
    x = torch.randn(5, 3, dtype=torch.float64)  # (T, I)
    assert_same_as_torch(ours, theirs, x, with_state=True)
    output, _ = ours(x)
    assert output.shape == (5, 4 * (2 if bidirectional else 1))


def test_output_and_state_shapes_follow_torch():
    gru = GRU(4, 6, num_layers=3, bidirectional=True)
    output, h_n = gru(torch.randn(2, 9, 4))
    assert output.shape == (2, 9, 12)  # (B, T, D*H)
    assert h_n.shape == (6, 2, 6)  # (D*L, B, H)
    lstm = LSTM(4, 6, num_layers=2, batch_first=False)
    output, (h_n, c_n) = lstm(torch.randn(9, 2, 4))
    assert output.shape == (9, 2, 6) and h_n.shape == c_n.shape == (2, 2, 6)


def make_sweep(engine: str, examples: int, cases_run: list[tuple]):
    """A hypothesis sweep of ``examples`` random configurations, each compared with torch (values and every
    gradient); each passing case is appended to ``cases_run`` so the caller can check what was covered."""

    @settings(max_examples=examples, deadline=None, database=None)
    @given(
        kind=st.sampled_from([GRU, LSTM]),
        dtype=st.sampled_from([torch.float32, torch.float64]),
        batch=st.integers(1, 4),
        steps=st.integers(1, 6),
        input_size=st.integers(1, 5),
        hidden_size=st.integers(1, 6),
        num_layers=st.integers(1, 3),
        bidirectional=st.booleans(),
        bias=st.booleans(),
        batch_first=st.booleans(),
        with_state=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def sweep(kind, dtype, batch, steps, input_size, hidden_size, num_layers, bidirectional, bias, batch_first,
              with_state, seed):
        ours, theirs = make_pair(kind, dtype, seed, engine, input_size=input_size, hidden_size=hidden_size,
                                 num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first)
        shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
        assert_same_as_torch(ours, theirs, x, with_state, seed)
        cases_run.append((kind, dtype, batch, steps, input_size, hidden_size, num_layers, bidirectional, bias,
                          batch_first, with_state))

    return sweep


@pytest.mark.parametrize("engine, examples", [("reference", 200), ("auto", 100)])
def test_hypothesis_sweep_matches_torch(engine, examples):
    cases_run: list[tuple] = []
    make_sweep(engine, examples, cases_run)()
    assert len(cases_run) >= examples
    # The sweep reached both models, both dtypes, stacks, both directions, both layouts, with and without h0.
    for field in (0, 1, 7, 8, 9, 10):
        assert len({case[field] for case in cases_run}) == 2
    assert {case[6] for case in cases_run} == {1, 2, 3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_matches_torch_cell(dtype, bias):
    torch.manual_seed(0)
    theirs = torch.nn.GRUCell(5, 4, bias=bias).to(dtype)
    ours = GRUCell(5, 4, bias=bias).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    h = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    upstream = torch.randn(3, 4, dtype=dtype)
    grads = []
    for cell in (ours, theirs):
        out = cell(x, h)
        grads.append((out, *torch.autograd.grad((out * upstream).sum(), [x, h, *cell.parameters()])))
    for what, a, b in zip(["h'", "dx", "dh", *dict(theirs.named_parameters())], *grads):
        assert_close(a, b, dtype, what)
    assert_close(ours(x[0], h[0]), theirs(x[0], h[0]), dtype, "unbatched")
    assert_close(ours(x), theirs(x), dtype, "zero state")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lstm_cell_matches_torch_cell(dtype):
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(5, 4).to(dtype)
    ours = LSTMCell(5, 4).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    h = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    c = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    up_h, up_c = torch.randn(2, 3, 4, dtype=dtype)
    grads = []
    for cell in (ours, theirs):
        h_new, c_new = cell(x, (h, c))
        loss = (h_new * up_h).sum() + (c_new * up_c).sum()
        grads.append((h_new, c_new, *torch.autograd.grad(loss, [x, h, c, *cell.parameters()])))
    for what, a, b in zip(["h'", "c'", "dx", "dh", "dc", *dict(theirs.named_parameters())], *grads):
        assert_close(a, b, dtype, what)
    for a, b in zip(ours(x[1], (h[1], c[1])), theirs(x[1], (h[1], c[1]))):
        assert_close(a, b, dtype, "unbatched")
    for a, b in zip(ours(x), theirs(x)):
        assert_close(a, b, dtype, "zero state")


def mingru_by_hand(model: MinGRU, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """minGRU's equations written out, batch-first ``x`` ``(B, T, I)``, ``h0`` ``(L, B, H)``."""
    hidden = model.hidden_size
    finals = []
    for layer in range(model.num_layers):
        w = getattr(model, f"weight_ih_l{layer}")
        b = getattr(model, f"bias_ih_l{layer}")
        w_z, w_h, b_z, b_h = w[:hidden], w[hidden:], b[:hidden], b[hidden:]
        h = h0[layer]
        outputs = []
        for t in range(x.shape[1]):
            z = torch.sigmoid(x[:, t] @ w_z.T + b_z)
            h_tilde = x[:, t] @ w_h.T + b_h
            h = (1 - z) * h + z * h_tilde
            outputs.append(h)
        x = torch.stack(outputs, 1)
        finals.append(h)
    return x, torch.stack(finals)


@pytest.mark.parametrize("engine", ENGINES)
def test_mingru_matches_its_equations_by_hand(engine):
    torch.manual_seed(0)
    model = MinGRU(3, 5, num_layers=2, engine=engine).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, 5, dtype=torch.float64)
    output, h_n = model(x, h0)
    expected_output, expected_h_n = mingru_by_hand(model, x, h0)
    assert_close(output, expected_output, torch.float64, "output")
    assert_close(h_n, expected_h_n, torch.float64, "h_n")
    output, h_n = model(x)
    expected_output, expected_h_n = mingru_by_hand(model, x, torch.zeros_like(h0))
    assert_close(output, expected_output, torch.float64, "output, zero h0")
    assert_close(output[:, -1], h_n[-1], torch.float64, "h_n is the last output")


def test_mingru_time_major_and_unbatched_agree_with_batch_first():
    torch.manual_seed(0)
    model = MinGRU(3, 5, engine="reference").double()
    time_major = MinGRU(3, 5, batch_first=False, engine="reference").double()
    time_major.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    output, h_n = model(x)
    output_tm, h_n_tm = time_major(x.transpose(0, 1))
    assert_close(output_tm.transpose(0, 1), output, torch.float64, "time-major output")
    assert_close(h_n_tm, h_n, torch.float64, "time-major h_n")
    output_1, h_n_1 = model(x[1])
    assert output_1.shape == (6, 5) and h_n_1.shape == (1, 5)
    assert_close(output_1, output[1], torch.float64, "unbatched output")


def test_gru_without_bias_has_no_bias_parameters_like_torch():
    names = {name for name, _ in GRU(3, 4, num_layers=2, bias=False, bidirectional=True).named_parameters()}
    expected = {name for name, _ in torch.nn.GRU(3, 4, num_layers=2, bias=False, bidirectional=True).named_parameters()}
    assert names == expected


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_from_torch_gives_a_default_module_equal_to_torch(cls):
    torch.manual_seed(0)
    theirs = TORCH_CLASS[cls](4, 5, num_layers=2, bidirectional=True)
    ours = cls.from_torch(theirs)
    assert ours.engine == "auto"
    assert_same_as_torch(ours, theirs, torch.randn(6, 3, 4), with_state=True)


def test_seed_documents_recurrence_is_a_gru_with_its_reset_gate_held_open():
    """docs/gru.md's claim: the seed's h_t = f_t·h_{t-1} + (1 − f_t)·h̃_t with h̃_t = tanh(W_it x + W_ht h + b_h)
    is a GRU whose reset gate is pinned to 1 (σ(40) rounds to 1.0 in float64) and whose update gate is f_t."""
    inputs, hidden, steps = 3, 4, 6
    generator = torch.Generator().manual_seed(0)
    w_if, w_it = torch.randn(2, hidden, inputs, dtype=torch.float64, generator=generator)
    w_hf, w_ht = torch.randn(2, hidden, hidden, dtype=torch.float64, generator=generator)
    b_f, b_h = torch.randn(2, hidden, dtype=torch.float64, generator=generator)
    x = torch.randn(2, steps, inputs, dtype=torch.float64, generator=generator)
    h = torch.zeros(2, hidden, dtype=torch.float64)
    seed_outputs = []
    for t in range(steps):
        f = torch.sigmoid(x[:, t] @ w_if.T + h @ w_hf.T + b_f)
        h_tilde = torch.tanh(x[:, t] @ w_it.T + h @ w_ht.T + b_h)
        h = f * h + (1 - f) * h_tilde
        seed_outputs.append(h)

    gru = GRU(inputs, hidden, engine="reference").double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.cat([torch.zeros(hidden, inputs, dtype=torch.float64), w_if, w_it]))
        gru.weight_hh_l0.copy_(torch.cat([torch.zeros(hidden, hidden, dtype=torch.float64), w_hf, w_ht]))
        gru.bias_ih_l0.copy_(torch.cat([torch.full((hidden,), 40.0, dtype=torch.float64), b_f, b_h]))
        gru.bias_hh_l0.zero_()
    output, _ = gru(x)
    assert_close(output, torch.stack(seed_outputs, 1), torch.float64, "seed recurrence")


def test_gru_cell_reset_before_is_one_step_of_the_reset_before_gru():
    torch.manual_seed(0)
    gru = GRU(3, 4, reset_after=False, engine="reference").double()  # its form is checked against Keras
    cell = GRUCell(3, 4, reset_after=False).double()
    cell.load_state_dict({name[: -len("_l0")]: value for name, value in gru.state_dict().items()})
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64)
    assert_close(cell(x[:, 0], h0[0]), gru(x, h0)[1][0], torch.float64, "one step")
    reset_after = GRUCell(3, 4).double()
    reset_after.load_state_dict(cell.state_dict())
    assert not torch.allclose(reset_after(x[:, 0], h0[0]), cell(x[:, 0], h0[0]))  # the two forms differ


@pytest.mark.parametrize("engine", ENGINES)
def test_dropout_acts_between_layers_in_training_only(engine):
    torch.manual_seed(0)
    theirs = torch.nn.GRU(3, 4, num_layers=2, dropout=0.5, batch_first=True).eval()
    ours = GRU(3, 4, num_layers=2, dropout=0.5, engine=engine).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    ours.train()
    assert not torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-3)
