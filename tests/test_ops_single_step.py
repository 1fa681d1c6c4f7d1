"""Single GRU steps (generation, serving): the native step kernel (``grukit.ops.native.gru_step``) against the
float64 reference cells, and ``GRU.step`` / ``GRU.forward`` at T = 1 taking it exactly when no autograd graph is
needed, with every other case (gradients, bad inputs, ``engine="reference"``) left on the old path."""

import pytest
import torch

from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.nn import GRU, DTypeError, ShapeError
from grukit.ops import native, reference

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture
def step_calls(monkeypatch):
    """Counts the calls of the native step kernel (a spy that still runs it)."""
    calls = []
    kernel = native.gru_step

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(native, "gru_step", spy)
    return calls


def reference_stack(x, h, weights, reset_after):
    """Every layer's new state through the float64 reference cell: ``(L, B, H)``."""
    states, layer_input = [], x.double()
    for layer in range(h.shape[0]):
        w = [None if t is None else t.double() for t in weights[4 * layer: 4 * layer + 4]]
        layer_input = reference.gru_cell(layer_input, h[layer].double(), *w, reset_after)
        states.append(layer_input)
    return torch.stack(states)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 4, 13])  # 13: larger than the weight-streaming kernel's batch limit
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_the_reference_cells(dtype, reset_after, batch, bias):
    generator = torch.Generator().manual_seed(batch)
    layers, inputs, hidden = 3, 7, 45  # 45: a block of 32 units plus a remainder, odd unit counts
    weights = []
    for layer in range(layers):
        in_size = inputs if layer == 0 else hidden
        weights += [
            torch.randn(3 * hidden, in_size, generator=generator, dtype=dtype) / in_size**0.5,
            torch.randn(3 * hidden, hidden, generator=generator, dtype=dtype) / hidden**0.5,
        ]
        weights += [torch.randn(3 * hidden, generator=generator, dtype=dtype) if bias else None for _ in range(2)]
    x = torch.randn(batch, inputs, generator=generator, dtype=dtype)
    h = torch.randn(layers, batch, hidden, generator=generator, dtype=dtype)
    output, h_n = native.gru_step(x, h, weights, reset_after)
    expected = reference_stack(x, h, weights, reset_after)
    assert output.dtype == h_n.dtype == dtype and h_n.shape == (layers, batch, hidden)
    torch.testing.assert_close(h_n.double(), expected, atol=TOLERANCE[dtype], rtol=0)
    assert torch.equal(output, h_n[-1]) and output.data_ptr() != h_n[-1].data_ptr()  # a copy, not a view


@pytest.mark.parametrize("hidden", [256, 1024])
def test_kernel_at_serving_sizes_runs_on_two_threads(hidden):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # large weights split the units over threads
    try:
        model = GRU(hidden, hidden, reset_after=hidden == 256).eval()
        x, h = torch.randn(1, hidden), torch.randn(1, 1, hidden)
        with torch.no_grad():
            output, h_n = model.step(x, h)
    finally:
        torch.set_num_threads(threads)
    expected = reference_stack(x, h, [w for w in model.layer_weights(0, 0)], model.reset_after)
    torch.testing.assert_close(h_n.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 4])
def test_stepping_equals_the_forward_over_the_whole_sequence(step_calls, batch_first, reset_after, batch):
    torch.manual_seed(0)
    model = GRU(5, 8, num_layers=2, batch_first=batch_first, reset_after=reset_after).double().eval()
    x = torch.randn(batch, 6, 5, dtype=torch.float64)  # (B, T, I)
    h0 = torch.randn(2, batch, 8, dtype=torch.float64)
    with torch.no_grad():
        full, h_full = model(x if batch_first else x.transpose(0, 1), h0)
        state, outputs = h0, []
        for t in range(6):
            output, state = model.step(x[:, t], state)
            outputs.append(output)
    assert len(step_calls) == 6
    full = full if batch_first else full.transpose(0, 1)
    torch.testing.assert_close(torch.stack(outputs, 1), full, atol=1e-12, rtol=0)
    torch.testing.assert_close(state, h_full, atol=1e-12, rtol=0)


def test_forward_of_one_step_takes_the_kernel_and_matches_the_sequence_engines(step_calls):
    torch.manual_seed(1)
    model = GRU(6, 10, num_layers=2).eval()
    x, h0 = torch.randn(3, 1, 6), torch.randn(2, 3, 10)
    with torch.no_grad():
        output, h_n = model(x, h0)
        zeros_output, _ = model(x)  # no h0: zeros
        assert len(step_calls) == 2
        both = model(torch.cat([x, x], 1), h0)  # T = 2: the sequence engines
    assert len(step_calls) == 2 and output.shape == (3, 1, 10) and h_n.shape == (2, 3, 10)
    torch.testing.assert_close(output, both[0][:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(zeros_output, model(x, torch.zeros(2, 3, 10))[0].detach(), atol=1e-6, rtol=0)
    expected = reference_stack(x[:, 0], h0, [w for layer in range(2) for w in model.layer_weights(layer, 0)], True)
    torch.testing.assert_close(h_n.double(), expected, atol=1e-5, rtol=0)


def test_reset_masks_restart_streams_on_the_fast_path(step_calls):
    torch.manual_seed(2)
    model = GRU(3, 5, num_layers=2).double().eval()
    x_t, state = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    reset = torch.tensor([True, False, True, False])
    with torch.no_grad():
        output, new_state = model.step(x_t, state, reset=reset)
        fresh, _ = model.step(x_t, None)
        kept, _ = model.step(x_t, state)
    assert len(step_calls) == 3
    torch.testing.assert_close(output[reset], fresh[reset], atol=1e-12, rtol=0)
    torch.testing.assert_close(output[~reset], kept[~reset], atol=1e-12, rtol=0)


def test_gradients_keep_the_differentiable_path(step_calls):
    torch.manual_seed(3)
    model = GRU(3, 4, num_layers=2).double()
    reference_model = GRU(3, 4, num_layers=2, engine="reference").double()
    reference_model.load_state_dict(model.state_dict())
    x_t = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    state = torch.randn(2, 2, 4, dtype=torch.float64)
    grads = []
    for module in (model, reference_model):
        output, new_state = module.step(x_t, state)
        (output.sum() + new_state.pow(2).sum()).backward()
        grads.append((x_t.grad.clone(), module.weight_hh_l1.grad.clone()))
        x_t.grad = None
    assert not step_calls  # grad mode on and parameters that need gradients: the old path
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)
    with torch.no_grad():
        model.step(x_t, state)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.step(x_t.detach(), state)  # grad mode on but nothing needs a gradient
    assert len(step_calls) == 2


def test_cases_the_kernel_does_not_take(step_calls):
    torch.manual_seed(4)
    x_t, state = torch.randn(2, 3), torch.randn(2, 2, 4)
    with torch.no_grad():
        GRU(3, 4, num_layers=2, engine="reference").step(x_t, state)
        GRU(3, 4).half().step(x_t.half(), state[:1].half())  # float16: not a kernel dtype
        GRU(3, 4, num_layers=2, dropout=0.5).train().step(x_t, state)  # dropout between layers in training
        GRU(3, 4, bidirectional=True)(x_t.unsqueeze(1))  # a reverse direction
        GRU(3, 4)(x_t.unsqueeze(1), lengths=[1, 1])
        GRU(3, 4)(torch.randn(2, 2, 3))  # two steps
        taken = len(step_calls)
        GRU(3, 4, num_layers=2, dropout=0.5).eval().step(x_t, state)  # no dropout in eval
    assert taken == 0 and len(step_calls) == 1


def test_bad_steps_still_get_the_clear_errors(step_calls):
    model = GRU(3, 4, num_layers=2)
    with torch.no_grad():
        with pytest.raises(ShapeError, match=r"expected h0 of shape \(2, 5, 4\)"):
            model.step(torch.randn(5, 3), torch.randn(2, 4, 4))
        with pytest.raises(ShapeError, match=r"expected one step of shape \(batch, 3\), got \(5, 1, 3\)"):
            model.step(torch.randn(5, 1, 3))
        with pytest.raises(ShapeError, match=r"input of shape \(batch, time, 3\)"):
            model.step(torch.randn(5, 7))
        with pytest.raises(DTypeError, match="got float64 input but its weights are float32"):
            model.step(torch.randn(5, 3, dtype=torch.float64))
        with pytest.raises(DTypeError, match="expected h0 of dtype torch.float32"):
            model.step(torch.randn(5, 3), torch.randn(2, 5, 4, dtype=torch.float64))
        with pytest.raises(ValueError, match="engine='onednn' runs float32"):
            GRU(3, 4, engine="onednn").double().step(torch.randn(5, 3, dtype=torch.float64))
        with pytest.raises(ShapeError, match=r"expected h0 of shape \(2, 1, 4\)"):
            model(torch.randn(1, 1, 3), torch.randn(2, 4))
    assert not step_calls


def test_language_model_generation_takes_the_kernel_with_unchanged_results(step_calls):
    torch.manual_seed(5)
    config = LMConfig(vocab_size=11, embedding_size=6, hidden_size=8, num_layers=2)
    model = GRULanguageModel(config).eval()
    prompt = torch.tensor([[1, 2, 3, 4]])
    tokens = model.generate(prompt, 5, temperature=0)  # (1, 5)
    assert len(step_calls) == 2 * 5  # each new token fed back one at a time, through both layers
    ids = torch.cat([prompt, tokens[:, :-1]], 1)
    with torch.no_grad():
        logits, _ = model(ids)  # the whole sequence at once, the sequence engines
    assert torch.equal(logits[0, 3:].argmax(-1), tokens[0])
