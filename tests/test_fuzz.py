"""Property-based fuzzing (hypothesis) of ``grukit.nn`` GRU / LSTM / MinGRU on every engine and of the
Keras-style recurrent layers, over random shapes and configurations, degenerate sizes of 1 included.

Every drawn case ends one of two ways: the result equals the oracle — the readable cells of
:mod:`grukit.ops.reference` (``engine="reference"``), and ``torch.nn.GRU`` / ``LSTM`` where torch has the
same computation — or grukit refuses the input with an error that names it.

``GRUKIT_FUZZ_EXAMPLES`` (default 25) sets the examples per property; raise it for a longer hunt.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grukit import layers
from grukit import nn as gnn
from grukit.ops import engines

EXAMPLES = int(os.environ.get("GRUKIT_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the suite runs the same cases every time; raise GRUKIT_FUZZ_EXAMPLES to explore more
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {"rtol": 1e-9, "atol": 1e-10}}
MODULES = {
    "GRU": (gnn.GRU, engines.GRU_ENGINES),
    "LSTM": (gnn.LSTM, engines.LSTM_ENGINES),
    "MinGRU": (gnn.MinGRU, engines.MINGRU_ENGINES),
}


@st.composite
def module_cases(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(sorted(MODULES)))
    config = {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": draw(st.integers(1, 4)),
        "num_layers": draw(st.integers(1, 2)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "engine": draw(st.sampled_from(MODULES[kind][1])),
    }
    if kind != "MinGRU":
        config["bidirectional"] = draw(st.booleans())
    if kind == "GRU":
        config["reset_after"] = draw(st.booleans())
    batched = draw(st.booleans())
    batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    lengths = None
    if batched and draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return {
        "kind": kind,
        "config": config,
        "batch": batch if batched else None,
        "steps": steps,
        "lengths": lengths,
        "with_state": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _inputs(case: dict, module: torch.nn.Module) -> tuple[torch.Tensor, tuple]:
    generator = torch.Generator().manual_seed(case["seed"])
    config, batch, steps, dtype = case["config"], case["batch"], case["steps"], case["dtype"]
    if batch is None:
        shape = (steps, config["input_size"])
    else:
        shape = (batch, steps, config["input_size"]) if config["batch_first"] else (steps, batch, config["input_size"])
    x = torch.randn(shape, generator=generator, dtype=dtype, requires_grad=True)
    state = None
    if case["with_state"]:
        layers_count = config["num_layers"] * (2 if config.get("bidirectional") else 1)
        state_shape = (
            (layers_count, config["hidden_size"]) if batch is None else (layers_count, batch, config["hidden_size"])
        )
        states = [torch.randn(state_shape, generator=generator, dtype=dtype) for _ in range(module.state_count)]
        state = tuple(states) if case["kind"] == "LSTM" else states[0]
    lengths = None if case["lengths"] is None else torch.tensor(case["lengths"])
    return x, (state, lengths)


def _flatten(result) -> list[torch.Tensor]:
    output, state = result
    return [output, *(state if isinstance(state, tuple) else (state,))]


def _run_with_gradients(module: torch.nn.Module, x: torch.Tensor, state, lengths) -> tuple[list, list]:
    x = x.detach().requires_grad_(True)
    results = _flatten(module(x, state, lengths))
    sum(r.sin().sum() for r in results).backward()  # sin: every output element gets its own weight
    grads = [x.grad, *(p.grad for p in module.parameters())]
    return [r.detach() for r in results], grads


@FUZZ
@given(case=module_cases())
def test_recurrent_modules_equal_the_reference_on_every_engine_or_refuse_clearly(case):
    module_cls = MODULES[case["kind"]][0]
    torch.manual_seed(case["seed"])
    module = module_cls(**case["config"]).to(case["dtype"])
    x, (state, lengths) = _inputs(case, module)
    engine, dtype = case["config"]["engine"], case["dtype"]
    if case["kind"] == "GRU" and engine == "onednn" and dtype == torch.float64:
        with pytest.raises(ValueError, match=r"engine='onednn' runs float32, got torch.float64"):
            module(x, state, lengths)
        return
    oracle = copy.deepcopy(module)
    oracle.engine = "reference"
    results, grads = _run_with_gradients(module, x, state, lengths)
    expected, expected_grads = _run_with_gradients(oracle, x, state, lengths)
    for got, want in zip(results + grads, expected + expected_grads):
        torch.testing.assert_close(got, want, **TOLERANCE[dtype])
    if lengths is not None:  # padded steps are zeros, as a packed sequence gives
        output = results[0] if case["config"]["batch_first"] else results[0].transpose(0, 1)  # (B, T, D*H)
        for b, n in enumerate(case["lengths"]):
            assert not output[b, n:].any()
    elif case["kind"] != "MinGRU" and (case["kind"] == "LSTM" or case["config"]["reset_after"]):
        theirs = module.to_torch()  # torch's own implementation, an oracle grukit did not write
        torch.testing.assert_close(results, _flatten(theirs(x.detach(), state)), **TOLERANCE[dtype])


@FUZZ
@given(
    kind=st.sampled_from(sorted(MODULES)),
    name=st.sampled_from(["input_size", "hidden_size", "num_layers"]),
    value=st.one_of(st.integers(-3, 3), st.sampled_from([1.5, "4", None, True])),
)
def test_module_sizes_are_positive_integers_or_refused_by_name(kind, name, value):
    sizes = {"input_size": 2, "hidden_size": 3, "num_layers": 1, name: value}
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        module = MODULES[kind][0](**sizes)
        assert getattr(module, name) == value
    else:
        with pytest.raises(ValueError, match=rf"{kind} expected {name} to be a positive integer, got {value!r}"):
            MODULES[kind][0](**sizes)


@FUZZ
@given(
    kind=st.sampled_from(sorted(MODULES)),
    input_size=st.integers(1, 4),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
)
def test_any_input_shape_runs_or_is_refused_with_the_shape_named(kind, input_size, shape):
    module = MODULES[kind][0](input_size, 2)
    x = torch.zeros(shape)
    valid = len(shape) in (2, 3) and shape[-1] == input_size and shape[-2] > 0  # time steps; batch may be empty
    if valid:
        output, _ = module(x)
        assert output.shape == (*shape[:-1], 2)
    else:
        with pytest.raises(ValueError, match=rf"{kind} expected .*got .*\({shape[0]},"):
            module(x)


# Keras-style layers -------------------------------------------------------------------------------------------
LAYERS = {"GRU": layers.GRU, "LSTM": layers.LSTM, "MinGRU": layers.MinGRU}


@st.composite
def layer_cases(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(sorted(LAYERS)))
    bidirectional = draw(st.sampled_from([None, "concat", "sum", "mul", "ave"]))
    options = {
        "return_sequences": draw(st.booleans()),
        "return_state": draw(st.booleans()),
        "go_backwards": bidirectional is None and draw(st.booleans()),
    }
    if kind == "GRU":
        options["reset_after"] = draw(st.booleans())
    batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    return {
        "kind": kind,
        "units": draw(st.integers(1, 4)),
        "features": draw(st.integers(1, 4)),
        "options": options,
        "bidirectional": bidirectional,
        "batch": batch,
        "steps": steps,
        "lengths": draw(st.none() | st.lists(st.integers(1, steps), min_size=batch, max_size=batch)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _sequence_alone(layer: layers.GRU, x_alone: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One unpadded sequence ``(n, F)`` through the layer's module on the reference engine, read backwards when
    the layer goes backwards: outputs ``(n, units)`` in processing order and the final states ``(units,)``."""
    oracle = copy.deepcopy(layer.module)
    oracle.engine = "reference"
    if layer.go_backwards:
        x_alone = x_alone.flip(0)
    output, state = oracle(x_alone.unsqueeze(0))  # (1, n, units)
    states = list(state) if isinstance(state, tuple) else [state]
    return output[0], [s[0, 0] for s in states]


def _merge(mode: str, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    return {
        "concat": lambda: torch.cat([forward, backward], -1),
        "sum": lambda: forward + backward,
        "mul": lambda: forward * backward,
        "ave": lambda: (forward + backward) / 2,
    }[mode]()


@FUZZ
@given(case=layer_cases())
def test_keras_style_layers_equal_the_reference_per_unpadded_sequence(case):
    torch.manual_seed(case["seed"])
    base = LAYERS[case["kind"]](case["units"], **case["options"])
    layer = base if case["bidirectional"] is None else layers.Bidirectional(base, merge_mode=case["bidirectional"])
    batch, steps = case["batch"], case["steps"]
    lengths = case["lengths"] or [steps] * batch
    mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    x = torch.randn(batch, steps, case["features"]) * mask.unsqueeze(-1)  # (B, T, F), zero-padded
    result, out_mask = layer.eval()(x, mask if case["lengths"] else None)
    with_state = case["options"]["return_state"]
    output, states = (result[0], list(result[1:])) if with_state else (result, [])
    sequences = case["options"]["return_sequences"]
    halves = [layer] if case["bidirectional"] is None else [layer.forward_layer, layer.backward_layer]
    for b, n in enumerate(lengths):
        per_half = [_sequence_alone(half, x[b, :n]) for half in halves]
        expected_states = [s for _, half_states in per_half for s in half_states] if with_state else []
        if sequences:
            outputs = [out for out, _ in per_half]
            if len(outputs) == 2:  # the backward half is put back in time order before merging
                outputs[1] = outputs[1].flip(0)
            expected = outputs[0] if len(outputs) == 1 else _merge(case["bidirectional"], *outputs)
            if len(outputs) == 1 and layer.go_backwards:  # Keras reverses the whole padded axis: padding first
                torch.testing.assert_close(output[b, steps - n :], expected, rtol=1e-4, atol=1e-5)
                assert not output[b, : steps - n].any()
            elif len(outputs) == 1:  # Keras: padded steps repeat the last real output
                torch.testing.assert_close(output[b, :n], expected, rtol=1e-4, atol=1e-5)
                assert torch.equal(output[b, n:], output[b, n - 1].expand_as(output[b, n:]))
            else:  # Bidirectional sets zero_output_for_mask on both halves, as Keras
                torch.testing.assert_close(output[b, :n], expected, rtol=1e-4, atol=1e-5)
                assert not output[b, n:].any()
        else:
            finals = [half_states[0] for _, half_states in per_half]
            expected = finals[0] if len(finals) == 1 else _merge(case["bidirectional"], *finals)
            torch.testing.assert_close(output[b], expected, rtol=1e-4, atol=1e-5)
        for got, want in zip(states, expected_states, strict=True):
            torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-5)
    assert (out_mask is not None) == (sequences and case["lengths"] is not None)


@FUZZ
@given(
    kind=st.sampled_from(sorted(LAYERS)),
    features=st.integers(1, 4),
    other=st.integers(1, 4),
)
def test_layers_refuse_input_of_another_feature_size_by_shape(kind, features, other):
    layer = LAYERS[kind](2)
    layer(torch.zeros(1, 3, features))
    if other == features:
        assert layer(torch.zeros(2, 4, other))[0].shape == (2, 2)
    else:
        with pytest.raises(
            ValueError,
            match=rf"{kind} expected input of shape \(batch, time, {features}\), "
            rf"got \(2, 4, {other}\)",
        ):
            layer(torch.zeros(2, 4, other))
