"""The whole-sequence forms of minGRU (the log-space parallel scan and the fused per-step scan) equal the
sequential cell to 1e-5 in float32, with gradients, lengths and long sequences; generation one step at a time
continues a whole-sequence run exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grukit.nn import MinGRU
from grukit.ops import mingru_scan, reference


def sequential(x, h0, w, b, lengths):
    return reference.scan(lambda x_t, h: reference.mingru_cell(x_t, h, w, b), x, h0, lengths)


def assert_within_1e_5(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Max difference <= 1e-5 x max(1, largest magnitude): float32 sums of many terms (a weight gradient over
    every step) carry rounding in proportion to their size, in the reference as much as in the scan."""
    error = (actual - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert error <= 1e-5 * scale, f"{name}: max difference {error:.2e} > 1e-5 x {scale:.2f}"


def assert_whole_sequence_equals_cell(steps: int, batch: int, input_size: int, hidden_size: int, seed: int,
                                      with_lengths: bool, log_space: bool, scale: float = 1.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    leaves = [
        torch.randn(steps, batch, input_size, generator=generator),  # x (T, B, I)
        torch.randn(batch, hidden_size, generator=generator),  # h0 (B, H)
        scale * torch.randn(2 * hidden_size, input_size, generator=generator) / input_size**0.5,  # w (2H, I)
        scale * torch.randn(2 * hidden_size, generator=generator),  # b (2H,)
    ]
    leaves = [t.requires_grad_() for t in leaves]
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator) if with_lengths else None
    upstream = torch.randn(steps, batch, hidden_size, generator=generator)
    upstream_h = torch.randn(batch, hidden_size, generator=generator)
    results = []
    for run in (lambda *a: mingru_scan.mingru_sequence(*a, log_space=log_space), sequential):
        output, h_n = run(*leaves, lengths)
        grads = torch.autograd.grad((output * upstream).sum() + (h_n * upstream_h).sum(), leaves)
        results.append((output, h_n, *grads))
    for name, actual, expected in zip(["output", "h_n", "dx", "dh0", "dw", "db"], *results):
        assert_within_1e_5(actual, expected, name)


@settings(max_examples=40, deadline=None, database=None)
@given(
    steps=st.integers(1, 70),
    batch=st.integers(1, 4),
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    with_lengths=st.booleans(),
    log_space=st.booleans(),
)
def test_whole_sequence_forms_equal_the_sequential_cell(steps, batch, input_size, hidden_size, seed, with_lengths,
                                                         log_space):
    assert_whole_sequence_equals_cell(steps, batch, input_size, hidden_size, seed, with_lengths, log_space)


@pytest.mark.parametrize("log_space", [True, False])
def test_long_sequences_with_saturated_gates(log_space):
    """Large weights drive the gates to 0 and 1, where a log-space scan loses float32 precision unless it is
    cut into chunks."""
    assert_whole_sequence_equals_cell(1000, 3, 8, 16, seed=1, with_lengths=True, log_space=log_space, scale=3.0)


def test_log_space_scan_solves_the_linear_recurrence():
    """``h_t = a_t h_{t-1} + z_t v_t`` against a float64 loop, on values of both signs and h0 != 0."""
    generator = torch.Generator().manual_seed(0)
    log_a = -torch.rand(50, 2, 3, generator=generator, dtype=torch.float64) * 3
    log_z = -torch.rand(50, 2, 3, generator=generator, dtype=torch.float64)
    values = torch.randn(50, 2, 3, generator=generator, dtype=torch.float64)
    h = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    states = mingru_scan.scan_log_space(log_a, log_z, values, h, chunk=8)
    for t in range(50):
        h = log_a[t].exp() * h + log_z[t].exp() * values[t]
        torch.testing.assert_close(states[t], h, atol=1e-12, rtol=1e-12)


def test_module_engines_agree_and_generation_continues_a_sequence():
    torch.manual_seed(0)
    model = MinGRU(5, 8, num_layers=2)
    assert "engine='auto' (using 'scan')" in repr(model)
    others = {engine: MinGRU(5, 8, num_layers=2, engine=engine) for engine in ("log_space", "reference")}
    for other in others.values():
        other.load_state_dict(model.state_dict())
    x = torch.randn(3, 40, 5)
    out_s, h_s = others["reference"](x)
    for out, h in (model(x), others["log_space"](x)):
        torch.testing.assert_close(out, out_s, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h, h_s, atol=1e-5, rtol=1e-5)
    # Generation: the prompt as a whole sequence, then one step at a time from its final state.
    prompt_out, h = model(x[:, :30])
    steps = []
    for t in range(30, 40):
        assert model.resolved_engine(1) == "reference"
        step_out, h = model(x[:, t : t + 1], h)
        steps.append(step_out)
    torch.testing.assert_close(torch.cat([prompt_out, *steps], 1), out_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("engine", ["scan", "log_space"])
def test_batched_gradients_of_the_scans_go_through_the_reference(engine):
    """``gradcheck(check_batched_grad=True)`` vmaps the backward: a fused scan cannot read a batched gradient."""
    torch.manual_seed(0)
    module = MinGRU(3, 4, engine=engine).double()
    x = torch.randn(2, 5, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: module(x)[0], (x,), check_batched_grad=True)
