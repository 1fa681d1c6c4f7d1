"""Fewer oneDNN calls for stacks: both directions of a bidirectional layer run in one ``bidirectional_concat``
primitive, and unidirectional layers whose input size equals the hidden size in one multi-layer primitive.
Outputs, final states and every gradient equal the reference engine (float64 oracle; float32 to ~1e-5; bf16 to
bf16 precision), the run counters show the number of primitives, and whatever cannot be fused (lengths,
inter-layer dropout in training) keeps the per-direction path."""

from __future__ import annotations

import pytest
import torch

from grukit.nn import GRU
from grukit.ops import onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="needs the oneDNN binding")


def forward_backward(model, x, h0, upstream, lengths=None):
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    output, h_n = model(x, h0, lengths=lengths)
    ((output.double() * upstream[0]).sum() + (h_n.double() * upstream[1]).sum()).backward()
    return output, h_n, {"input": x.grad, "h0": h0.grad} | {name: p.grad for name, p in model.named_parameters()}


def compare(dtype, reset_after, num_layers, bidirectional, input_size=5, hidden_size=6, bias=True, lengths=None):
    """The onednn GRU in ``dtype`` against the float64 reference on the same values; returns the relative errors
    (max |a - b| / max |b|) by result name and the (forward, backward) primitive runs."""
    torch.manual_seed(0)
    config = dict(num_layers=num_layers, bidirectional=bidirectional, reset_after=reset_after, bias=bias)
    model = GRU(input_size, hidden_size, engine="onednn", **config).to(dtype)
    reference = GRU(input_size, hidden_size, engine="reference", **config).double()
    reference.load_state_dict(model.state_dict())
    directions = 2 if bidirectional else 1
    batch, steps = 4, 7
    x = torch.randn(batch, steps, input_size).to(dtype)
    h0 = torch.randn(directions * num_layers, batch, hidden_size).to(dtype)
    upstream = (torch.randn(batch, steps, directions * hidden_size, dtype=torch.float64),
                torch.randn(h0.shape, dtype=torch.float64))
    before = onednn.load().runs()
    actual = forward_backward(model, x, h0, upstream, lengths)
    runs = tuple(b - a for a, b in zip(before, onednn.load().runs()))
    expected = forward_backward(reference, x.double(), h0.double(), upstream, lengths)
    assert actual[2].keys() == expected[2].keys()

    def error(a, b):
        assert a.dtype == dtype
        return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max())

    errors = {"output": error(actual[0], expected[0]), "h_n": error(actual[1], expected[1])}
    return errors | {f"d{name}": error(actual[2][name], g) for name, g in expected[2].items()}, runs


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_bidirectional_layers_run_one_primitive_each_and_equal_the_reference(num_layers, reset_after):
    errors, runs = compare(torch.float32, reset_after, num_layers, bidirectional=True)
    assert runs == (num_layers, num_layers)  # not 2 per layer
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_stacked_layers_of_hidden_size_input_run_in_one_primitive(reset_after):
    # input 5 != hidden 6: layer 0 alone, layers 1-2 in one primitive
    errors, runs = compare(torch.float32, reset_after, 3, bidirectional=False)
    assert runs == (2, 2)
    assert max(errors.values()) < 1e-5, errors
    errors, runs = compare(torch.float32, reset_after, 3, bidirectional=False, input_size=6, bias=False)
    assert runs == (1, 1)  # input == hidden: the whole stack in one
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.skipif(not onednn.has_bf16_hardware(), reason="needs a CPU with AMX or AVX-512 BF16")
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_fused_bf16_equals_the_reference_to_bf16_precision(num_layers, reset_after):
    errors, runs = compare(torch.bfloat16, reset_after, num_layers, bidirectional=True)
    assert runs == (num_layers, num_layers)
    assert errors["output"] < 2e-2 and errors["h_n"] < 2e-2, errors
    assert max(errors.values()) < 4e-2, errors
    assert errors["output"] > 2e-4, errors  # bf16-sized, not float32's ~1e-7


def test_fused_inference_and_the_reference_agree_on_outputs_and_final_states():
    torch.manual_seed(1)
    model = GRU(6, 6, num_layers=3, bidirectional=True, engine="onednn")
    reference = GRU(6, 6, num_layers=3, bidirectional=True, engine="reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, 9, 6)
    before = onednn.load().runs()
    with torch.no_grad():
        output, h_n = model(x)
        expected_output, expected_h_n = reference(x)
    assert onednn.load().runs() == (before[0] + 3, before[1])
    torch.testing.assert_close(output, expected_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_n, expected_h_n, atol=1e-5, rtol=1e-5)


def test_lengths_and_inter_layer_dropout_keep_one_primitive_per_direction():
    errors, runs = compare(torch.float32, True, 2, bidirectional=True, lengths=torch.tensor([7, 3, 5, 1]))
    assert max(errors.values()) < 1e-5, errors
    assert runs[0] > 4  # per direction and time segment
    model = GRU(5, 6, num_layers=2, bidirectional=True, dropout=0.5, engine="onednn")
    before = onednn.load().runs()
    model(torch.randn(2, 4, 5))[0].sum().backward()
    assert onednn.load().runs() == (before[0] + 4, before[1] + 4)
    model.eval()  # no dropout in evaluation: fused again
    before = onednn.load().runs()
    with torch.no_grad():
        model(torch.randn(2, 4, 5))
    assert onednn.load().runs() == (before[0] + 2, before[1])


def test_fused_second_derivatives_equal_the_reference():
    torch.manual_seed(0)
    model = GRU(3, 4, num_layers=2, bidirectional=True, engine="onednn")
    reference = GRU(3, 4, num_layers=2, bidirectional=True, engine="reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 3)

    def second(module):
        inputs = x.clone().requires_grad_(True)
        output, h_n = module(inputs)
        (grad_x,) = torch.autograd.grad(output.pow(2).sum() + h_n.sum(), inputs, create_graph=True)
        return [grad_x, *torch.autograd.grad(grad_x.pow(2).sum(), [inputs, *module.parameters()])]

    actual, expected = second(model), second(reference)
    assert actual[1].abs().sum() > 0
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
