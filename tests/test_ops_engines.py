"""Every fast GRU engine equals the reference cells (outputs, final states and every gradient) across shapes,
lengths, both directions, both reset forms and stacks; ``auto`` picks an installed engine (and really runs it) and
falls back cleanly when oneDNN or a compiler is missing; the kernels follow ``torch.set_num_threads``; second
derivatives equal torch's."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grukit.nn import GRU, LSTM
from grukit.ops import engines, extensions, native, onednn

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
FAST = ["onednn", "native"]


def run(model: torch.nn.Module, x: torch.Tensor, h0: torch.Tensor, lengths, upstream):
    """Forward and backward of ``sum(upstream_output * output) + sum(upstream_h * h_n)``; returns the results and
    the gradients of the input, the initial state and every parameter, by name."""
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    output, h_n = model(x, h0, lengths=lengths)
    ((output * upstream[0]).sum() + (h_n * upstream[1]).sum()).backward()
    grads = {"input": x.grad, "h0": h0.grad} | {name: p.grad for name, p in model.named_parameters()}
    return output.detach(), h_n.detach(), grads


def assert_engine_matches_reference(engine: str, dtype: torch.dtype, seed: int, batch: int, steps: int, **config):
    generator = torch.Generator().manual_seed(seed)
    with_lengths = config.pop("with_lengths", True)
    reference = GRU(**config, engine="reference").to(dtype)
    fast = GRU(**config, engine=engine).to(dtype)
    fast.load_state_dict(reference.state_dict())
    directions = 2 if config.get("bidirectional") else 1
    x = torch.randn(batch, steps, config["input_size"], generator=generator, dtype=dtype)
    h0 = torch.randn(directions * config.get("num_layers", 1), batch, config["hidden_size"], generator=generator,
                     dtype=dtype)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator) if with_lengths else None
    upstream = [torch.randn(batch, steps, directions * config["hidden_size"], generator=generator, dtype=dtype),
                torch.randn(h0.shape, generator=generator, dtype=dtype)]
    expected = run(reference, x, h0, lengths, upstream)
    actual = run(fast, x, h0, lengths, upstream)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(actual[0], expected[0], atol=tol, rtol=tol, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(actual[1], expected[1], atol=tol, rtol=tol, msg=lambda m: f"h_n: {m}")
    assert actual[2].keys() == expected[2].keys()
    for name, grad in expected[2].items():
        torch.testing.assert_close(actual[2][name], grad, atol=tol, rtol=tol, msg=lambda m, n=name: f"d{n}: {m}")


swept: list[tuple] = []


@settings(max_examples=40, deadline=None, database=None)
@given(
    engine=st.sampled_from(FAST),
    reset_after=st.booleans(),
    bidirectional=st.booleans(),
    num_layers=st.integers(1, 2),
    bias=st.booleans(),
    with_lengths=st.booleans(),
    batch=st.integers(1, 5),
    steps=st.integers(1, 7),
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def sweep(engine, reset_after, bidirectional, num_layers, bias, with_lengths, batch, steps, input_size, hidden_size,
          seed):
    assert_engine_matches_reference(
        engine, torch.float32, seed, batch, steps, input_size=input_size, hidden_size=hidden_size,
        num_layers=num_layers, bias=bias, bidirectional=bidirectional, reset_after=reset_after,
        with_lengths=with_lengths,
    )
    swept.append((engine, reset_after, bidirectional, num_layers, with_lengths))


def test_fast_engines_equal_the_reference_over_a_property_sweep():
    swept.clear()
    sweep()
    assert len(swept) == 40
    for field in range(5):  # both engines, reset forms, directions, depths, with and without lengths
        assert len({case[field] for case in swept}) == 2


@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("reset_after", [True, False])
def test_long_variable_length_batch_equals_the_reference(engine, reset_after):
    """Many distinct lengths: the segmented run (shrinking active batch) on a bidirectional stack."""
    assert_engine_matches_reference(engine, torch.float32, 3, batch=11, steps=40, input_size=7, hidden_size=9,
                                     num_layers=2, bidirectional=True, reset_after=reset_after)


@pytest.mark.parametrize("reset_after", [True, False])
def test_native_float64_equals_the_reference_to_1e_10(reset_after):
    assert_engine_matches_reference("native", torch.float64, 5, batch=3, steps=6, input_size=4, hidden_size=5,
                                    num_layers=2, bidirectional=True, reset_after=reset_after)


def test_auto_picks_the_fastest_installed_engine_per_dtype_and_says_so_in_repr():
    model = GRU(3, 4)
    assert model.resolved_engine(torch.float32) == "onednn"
    assert model.resolved_engine(torch.float64) == "native"
    assert model.resolved_engine(torch.float16) == "reference"
    assert "engine='auto' (using 'onednn')" in repr(model)
    assert "engine='native'" in repr(GRU(3, 4, engine="native"))


@pytest.mark.parametrize("update", ["sgd", "fused_adam", "data_assignment", "load_state_dict"])
def test_onednn_sees_every_kind_of_weight_update(update):
    # Fused Adam updates parameters in place without bumping their _version: a cache keyed on _version
    # once served stale weights after training (a 7.7e-4 error in predictions).
    torch.manual_seed(0)
    model, reference = GRU(3, 4, engine="onednn"), GRU(3, 4, engine="reference")
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        model(x)  # a first call that a stale cache would keep serving
    if update in ("sgd", "fused_adam"):
        optimizer = (
            torch.optim.SGD(model.parameters(), lr=0.5)
            if update == "sgd"
            else torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
        )
        model(x)[0].sum().backward()
        optimizer.step()
    elif update == "data_assignment":
        model.weight_hh_l0.data = torch.randn(12, 4)  # new storage, same _version
    else:
        model.load_state_dict({k: torch.randn_like(v) for k, v in model.state_dict().items()})
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], reference(x)[0], atol=1e-6, rtol=1e-6)


def test_auto_really_runs_the_onednn_kernel_forward_and_backward():
    model = GRU(3, 4, bidirectional=True)
    assert model.resolved_engine() == "onednn"
    before = onednn.load().runs()
    output, _ = model(torch.randn(2, 5, 3))
    after_forward = onednn.load().runs()
    output.sum().backward()
    after_backward = onednn.load().runs()
    assert after_forward == (before[0] + 1, before[1])  # both directions in one bidirectional primitive
    assert after_backward == (before[0] + 1, before[1] + 1)
    with torch.no_grad():
        GRU(3, 4, engine="native")(torch.randn(2, 5, 3))
    assert onednn.load().runs() == after_backward  # the native engine does not touch oneDNN


def test_auto_falls_back_with_one_warning_when_onednn_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(extensions, "_loaded", {"native_gru": native.load()})
    monkeypatch.setattr(extensions, "venv_prefix", lambda: tmp_path)  # no oneDNN headers or library here
    with pytest.warns(RuntimeWarning, match="oneDNN"):
        assert not onednn.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second look must stay quiet
        model = GRU(3, 4)
        assert model.resolved_engine() == "native"
        assert GRU(3, 4, engine="onednn").resolved_engine() == "native"
        assert "(using 'native')" in repr(model)
        output, h_n = model(torch.randn(2, 5, 3))
    assert output.shape == (2, 5, 4) and h_n.shape == (1, 2, 4)


def test_auto_falls_back_to_the_reference_when_no_compiler_works(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def failing_build(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(extensions, "_loaded", {})
    monkeypatch.setenv("GRUKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", failing_build)
    with pytest.warns(RuntimeWarning) as caught:
        model = GRU(3, 4)
        assert model.resolved_engine(torch.float32) == "reference"
        assert model.resolved_engine(torch.float64) == "reference"
    assert [str(w.message).split("(")[0] for w in caught] == [
        "grukit could not build its 'onednn_gru' kernel ", "grukit could not build its 'native_gru' kernel "
    ]
    assert "command not found" in str(caught[0].message)
    reference = GRU(3, 4, engine="reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(model(x)[0], reference(x)[0], atol=0, rtol=0)


def test_extension_builds_into_the_fixed_cache_folder():
    assert native.load() is not None
    assert onednn.load() is not None
    built = {path.name.rsplit("-", 1)[0] for path in extensions.cache_root().iterdir()}
    assert {"native_gru", "onednn_gru"} <= built
    assert onednn.load().version().startswith("3.")


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_follow_torch_set_num_threads(threads):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        model = GRU(8, 16, engine="onednn")
        model(torch.randn(4, 6, 8))
        assert onednn.load().openmp_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_engine_errors_name_the_choice_and_the_input():
    with pytest.raises(ValueError, match=r"GRU expected engine in \('auto', 'onednn', 'native', 'reference'\), "
                                         r"got 'fast'"):
        GRU(3, 4, engine="fast")
    with pytest.raises(ValueError, match="engine='onednn' runs float32 and bfloat16, got torch.float64"):
        GRU(3, 4, engine="onednn").double()(torch.randn(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="LSTM expected engine in"):
        LSTM(3, 4, engine="onednn")


def test_lstm_delegates_to_torch_fused_kernel_with_lengths():
    torch.manual_seed(0)
    ours, reference = LSTM(3, 4, num_layers=2, bidirectional=True), LSTM(3, 4, num_layers=2, bidirectional=True,
                                                                          engine="reference")
    reference.load_state_dict(ours.state_dict())
    assert ours.resolved_engine() == "torch"
    x, lengths = torch.randn(3, 6, 3), torch.tensor([6, 2, 4])
    for model in (ours, reference):
        model.zero_grad()
    out_a, (h_a, c_a) = ours(x, lengths=lengths)
    out_b, (h_b, c_b) = reference(x, lengths=lengths)
    (out_a.sum() + h_a.sum() + c_a.sum()).backward()
    (out_b.sum() + h_b.sum() + c_b.sum()).backward()
    for a, b in [(out_a, out_b), (h_a, h_b), (c_a, c_b)]:
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"d{n}: {m}")


def test_segment_bounds_cover_every_length_with_few_segments():
    lengths = torch.tensor([50, 49, 40, 33, 20, 20, 7, 3, 1])
    bounds = engines.segment_bounds(lengths)
    assert bounds[0] == 0 and bounds[-1] == 50 and bounds == sorted(set(bounds))
    assert len(bounds) - 1 <= engines.MAX_SEGMENTS


def second_derivatives(model: torch.nn.Module, x: torch.Tensor, lengths) -> list[torch.Tensor]:
    """Gradients of ``sum(v * d(sum(w * output))/dx)`` (a Hessian-vector product) by the input and every
    parameter."""
    generator = torch.Generator().manual_seed(1)
    x = x.detach().clone().requires_grad_(True)
    output = model(x, lengths=lengths)[0] if lengths is not None else model(x)[0]
    w = torch.randn(output.shape, generator=generator, dtype=x.dtype)
    (grad_x,) = torch.autograd.grad((output * w).sum(), x, create_graph=True)
    v = torch.randn(grad_x.shape, generator=generator, dtype=x.dtype)
    inputs = [x, *model.parameters()]
    return [grad_x.detach(), *torch.autograd.grad((grad_x * v).sum(), inputs, allow_unused=True)]


@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("lengths", [None, [5, 2]], ids=["full", "lengths"])
def test_second_derivatives_equal_torch_gru(engine, lengths):
    torch.manual_seed(0)
    ours = GRU(3, 4, num_layers=2, bidirectional=True, engine=engine)
    theirs = ours.to_torch()
    x = torch.randn(2, 5, 3)
    if lengths is None:
        expected = second_derivatives(theirs, x, None)
    else:  # torch's packed sequences are the reference for lengths; the grukit reference engine stands in
        reference = GRU(3, 4, num_layers=2, bidirectional=True, engine="reference")
        reference.load_state_dict(ours.state_dict())
        expected = second_derivatives(reference, x, torch.tensor(lengths))
    actual = second_derivatives(ours, x, None if lengths is None else torch.tensor(lengths))
    assert actual[1].abs().sum() > 0  # the second derivative is not silently zero
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("engine", FAST)
def test_second_derivatives_of_reset_before_equal_the_reference(engine):
    torch.manual_seed(0)
    ours, reference = GRU(3, 4, reset_after=False, engine=engine), GRU(3, 4, reset_after=False, engine="reference")
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 3)
    for a, b in zip(second_derivatives(ours, x, None), second_derivatives(reference, x, None)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("engine", ["scan", "log_space"])
def test_mingru_second_derivatives_equal_the_reference_cell(engine):
    from grukit.nn import MinGRU

    torch.manual_seed(0)
    ours, reference = MinGRU(3, 4, num_layers=2, engine=engine), MinGRU(3, 4, num_layers=2, engine="reference")
    reference.load_state_dict(ours.state_dict())
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    actual, expected = second_derivatives(ours, x, lengths), second_derivatives(reference, x, lengths)
    assert actual[1].abs().sum() > 0
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_first_order_training_keeps_the_fused_backward():
    model = GRU(3, 4, engine="onednn")
    before = onednn.load().runs()
    model(torch.randn(2, 5, 3))[0].sum().backward()
    assert onednn.load().runs()[1] == before[1] + 1


@pytest.mark.parametrize("reverse", [False, True])
def test_torch_fused_gru_path_used_on_cuda_keeps_lengths_semantics(reverse):
    """The path ``auto`` takes on CUDA (torch's fused GRU, cuDNN there), run on the CPU against the cells."""
    from grukit.ops import reference

    torch.manual_seed(0)
    weights = tuple(torch.randn(shape, requires_grad=True) for shape in [(12, 3), (12, 4), (12,), (12,)])
    x, h0, lengths = torch.randn(6, 3, 3), torch.randn(3, 4), torch.tensor([6, 2, 5])
    out, h_n = engines.gru_direction("torch", x, h0, weights, True, lengths, reverse)
    cell = lambda x_t, h: reference.gru_cell(x_t, h, *weights)  # noqa: E731
    expected_out, expected_h = reference.scan(cell, x, h0, lengths, reverse=reverse)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_n, expected_h, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(out.sum() + h_n.sum(), weights)
    expected = torch.autograd.grad(expected_out.sum() + expected_h.sum(), weights)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
