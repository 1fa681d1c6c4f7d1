"""int8 inference: QuantizedGRU (both candidate forms) against the float64 reference cells, lengths, packed
sequences, stacks and directions; quantize_int8 on module trees and a trained tagger; inference-only and
not-saved errors."""

import numpy as np
import pytest
import torch
from torch import nn

import grukit
from grukit.layers import GRU as KerasGRU
from grukit.layers import Dense, Embedding
from grukit.models import Sequential
from grukit.nn import GRU, DTypeError, QuantizedGRU, QuantizedLinear, quantize_int8
from grukit.ops import int8, onednn
from grukit.train import seed_everything

# A GRU with torch's uniform ±1/√H weights on N(0, 1) inputs: float32 engines agree with float64 to ~1e-6,
# int8 weights and activations move the outputs by ~1e-2 (measured: 0.006 reset-after, 0.02 reset-before).
INT8_BOUND = 0.06


def _float64_twin(gru: GRU) -> GRU:
    twin = GRU(gru.input_size, gru.hidden_size, gru.num_layers, bias=gru.bias, bidirectional=gru.bidirectional,
               reset_after=gru.reset_after, engine="reference", dtype=torch.float64)
    twin.load_state_dict({name: value.double() for name, value in gru.state_dict().items()})
    return twin


def _errors(gru: GRU, quantized: nn.Module, x: torch.Tensor, **kwargs) -> tuple[float, float, float]:
    """(int8 error, float32 error) of the outputs against float64, and the int8 error of h_n."""
    with torch.no_grad():
        y_ref, h_ref = _float64_twin(gru)(x.double(), **kwargs)
        y_int8, h_int8 = quantized(x, **kwargs)
        y_f32, _ = gru(x, **kwargs)
    return (float((y_int8.double() - y_ref).abs().max()), float((y_f32.double() - y_ref).abs().max()),
            float((h_int8.double() - h_ref).abs().max()))


needs_onednn = pytest.mark.skipif(not onednn.available(), reason="the reset-before int8 GRU runs on oneDNN")


@pytest.mark.parametrize("reset_after", [True, pytest.param(False, marks=needs_onednn)])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_gru_is_close_to_the_float64_reference_with_an_int8_sized_error(reset_after, per_channel):
    torch.manual_seed(0)
    gru = GRU(24, 48, reset_after=reset_after)
    quantized = quantize_int8(gru, per_channel=per_channel)
    int8_error, float_error, state_error = _errors(gru, quantized, torch.randn(5, 17, 24))
    assert int8_error < INT8_BOUND and state_error < INT8_BOUND
    assert float_error < 1e-5
    assert int8_error > 100 * float_error  # really int8, not the float32 engine
    assert quantized.kernel == ("torch.quantized_gru (onednn)" if reset_after else "onednn int8 gru")


@needs_onednn
def test_reset_before_runs_on_onednn_int8_primitive():
    gru = GRU(8, 16, reset_after=False)
    quantized = quantize_int8(gru)
    before, _ = onednn.load().runs()
    with torch.no_grad():
        quantized(torch.randn(2, 5, 8))
    assert onednn.load().runs()[0] == before + 1


@pytest.mark.parametrize("reset_after", [True, pytest.param(False, marks=needs_onednn)])
def test_lengths_stacks_and_directions_keep_the_float_gru_semantics(reset_after):
    torch.manual_seed(1)
    gru = GRU(12, 20, num_layers=2, bidirectional=True, reset_after=reset_after)
    quantized = quantize_int8(gru)
    x, lengths = torch.randn(6, 11, 12), torch.tensor([11, 3, 7, 1, 11, 5])
    int8_error, _, state_error = _errors(gru, quantized, x, lengths=lengths)
    assert int8_error < INT8_BOUND and state_error < INT8_BOUND
    with torch.no_grad():
        y, h_n = quantized(x, lengths=lengths)
    assert y.shape == (6, 11, 40) and h_n.shape == (4, 6, 20)
    assert bool((y[1, 3:] == 0).all()) and bool((y[3, 1:] == 0).all())  # zero past each sequence's end
    # Each sequence alone gives its rows of the batch (up to the per-call activation quantisation).
    with torch.no_grad():
        alone, alone_h = quantized(x[2:3, :7])
    assert float((alone[0] - y[2, :7]).abs().max()) < INT8_BOUND
    assert float((alone_h[:, 0] - h_n[:, 2]).abs().max()) < INT8_BOUND


def test_packed_sequences_time_major_and_initial_state():
    torch.manual_seed(2)
    gru = GRU(10, 14, batch_first=False)
    quantized = quantize_int8(gru)
    x, h0, lengths = torch.randn(9, 4, 10), 0.5 * torch.rand(1, 4, 14), torch.tensor([9, 2, 6, 4])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        out_packed, h_packed = quantized(packed, h0)
        out, h_n = quantized(x, h0, lengths=lengths)
        out_float, _ = gru(packed, h0)
    assert isinstance(out_packed, nn.utils.rnn.PackedSequence)
    assert torch.equal(out_packed.batch_sizes, out_float.batch_sizes)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out_packed)
    assert torch.allclose(padded, out, atol=1e-6) and torch.allclose(h_packed, h_n, atol=1e-6)
    assert float((out_packed.data - out_float.data).abs().max()) < INT8_BOUND


def test_quantize_int8_leaves_the_float_model_unchanged_and_converts_linear_layers():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
    model.append(nn.Identity())
    tree = nn.ModuleDict({"encoder": GRU(8, 16), "head": nn.Linear(16, 5), "pre": model})
    before = {name: value.clone() for name, value in tree.state_dict().items()}
    quantized = quantize_int8(tree)
    assert isinstance(quantized["encoder"], QuantizedGRU) and isinstance(quantized["head"], QuantizedLinear)
    assert isinstance(quantized["pre"][0], QuantizedLinear)
    assert isinstance(tree["encoder"], GRU) and isinstance(tree["head"], nn.Linear)
    assert all(torch.equal(before[name], value) for name, value in tree.state_dict().items())
    assert tree.training and not quantized.training
    x = torch.randn(7, 16)
    with torch.no_grad():
        error = float((quantized["head"](x) - tree["head"](x)).abs().max())
    assert 0 < error < 0.05


def test_inference_only_training_mode_and_gradients_raise_clear_errors():
    quantized = quantize_int8(GRU(4, 8))
    x = torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="inference-only.*requires grad"):
        quantized(x.requires_grad_())
    quantized.train()
    with pytest.raises(RuntimeError, match="inference-only.*training mode.*eval"):
        quantized(torch.randn(2, 3, 4))
    head = quantize_int8(nn.Linear(4, 2)).train()
    with pytest.raises(RuntimeError, match="training mode"):
        head(torch.randn(3, 4))
    with pytest.raises(DTypeError, match="float32 inputs on the CPU, got float64"):
        quantize_int8(GRU(4, 8))(torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="found no grukit.nn.GRU or torch.nn.Linear in Tanh"):
        quantize_int8(nn.Tanh())
    with pytest.raises(ValueError, match="backend in"):
        quantize_int8(GRU(4, 8), backend="cuda")


@pytest.mark.parametrize("reset_after", [True, False])
def test_empty_batches_run_and_non_finite_inputs_raise_instead_of_giving_numbers(reset_after):
    quantized = quantize_int8(GRU(4, 8, num_layers=2, bidirectional=True, reset_after=reset_after))
    output, h_n = quantized(torch.randn(0, 3, 4))
    assert output.shape == (0, 3, 16) and h_n.shape == (4, 0, 8)
    x = torch.randn(2, 3, 4)
    x[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in its input"):
        quantized(x)
    h0 = torch.zeros(4, 2, 8)
    h0[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite values in its h0"):
        quantized(torch.randn(2, 3, 4), h0)


def test_int8_copies_are_not_saved_and_are_rebuilt_from_the_float_checkpoint(tmp_path):
    seed_everything(0)
    model = Sequential([Embedding(20, 8, mask_zero=True), KerasGRU(12, return_sequences=True), Dense(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.predict([[1, 2, 3]])
    quantized = quantize_int8(model)
    with pytest.raises(TypeError, match=r"does not save.*quantize_int8\(grukit.load\(folder\)\)"):
        quantized.save(tmp_path / "int8")
    model.save(tmp_path / "float")
    rebuilt = quantize_int8(grukit.load(tmp_path / "float"))
    x = [[1, 5, 7, 2], [3, 4]]
    np.testing.assert_allclose(rebuilt.predict(x), quantized.predict(x), atol=1e-6)


def test_a_trained_tagger_keeps_its_accuracy_after_quantisation():
    seed_everything(0)
    rng = np.random.default_rng(0)
    # Tag = the token's class, except after token 1 (a "determiner") where it is class 3: needs the recurrence.
    x = [rng.integers(1, 30, size=rng.integers(3, 15)).tolist() for _ in range(600)]
    y = [[3 if i and seq[i - 1] == 1 else token % 3 for i, token in enumerate(seq)] for seq in x]
    model = Sequential([Embedding(30, 16, mask_zero=True), KerasGRU(32, return_sequences=True),
                        Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x[:500], y[:500], epochs=8, batch_size=32, verbose=0)
    _, float_accuracy = model.evaluate(x[500:], y[500:], verbose=0)
    quantized = quantize_int8(model)
    assert isinstance(quantized.layers[1].module, QuantizedGRU)
    _, int8_accuracy = quantized.evaluate(x[500:], y[500:], verbose=0)
    assert float_accuracy > 0.9
    assert abs(int8_accuracy - float_accuracy) < 0.01
    with pytest.raises(RuntimeError, match="inference-only"):
        quantized.fit(x[:32], y[:32], epochs=1, verbose=0)


def test_auto_backend_is_supported_here():
    assert int8.resolve_backend("auto") in torch.backends.quantized.supported_engines
