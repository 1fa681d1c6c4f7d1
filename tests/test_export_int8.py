"""int8 copies of exported graphs run in onnxruntime, keep the float32 graph's interface and agree with it within
the error of 8-bit weights."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from grukit import layers
from grukit.export import quantize_int8, to_onnx
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.models.sequential import Sequential
from grukit.nn import LSTM


def run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_int8_language_model_agrees_with_float32(tmp_path):
    torch.manual_seed(0)
    model = GRULanguageModel(LMConfig(vocab_size=200, embedding_size=32, hidden_size=48, num_layers=2)).eval()
    float_path = to_onnx(model, tmp_path / "lm.onnx")
    int8_path = quantize_int8(float_path, tmp_path / "lm8.onnx")
    quantised = onnx.load(str(int8_path))
    assert [i.name for i in quantised.graph.input] == [i.name for i in onnx.load(str(float_path)).graph.input]
    assert {"MatMulInteger", "DequantizeLinear"} <= {node.op_type for node in quantised.graph.node}
    assert int8_path.stat().st_size < 0.8 * float_path.stat().st_size
    ids = torch.randint(0, 200, (4, 12), generator=torch.Generator().manual_seed(1))
    feeds = {"ids": ids.numpy(), "lengths": np.array([12, 5, 1, 9])}
    feeds.update({f"state_{k}": s.numpy() for k, s in enumerate(model.initial_state(4))})
    (expected, *_), (got, *_) = run(float_path, feeds), run(int8_path, feeds)
    assert got.shape == expected.shape and np.isfinite(got).all()
    scale = np.abs(expected).max()
    assert 0 < np.abs(got - expected).max() <= 0.05 * scale  # quantised, yet close


def test_int8_lstm_uses_the_quantised_lstm_kernel(tmp_path):
    torch.manual_seed(2)
    module = LSTM(16, 24, num_layers=2, bidirectional=True).eval()
    int8_path = quantize_int8(to_onnx(module, tmp_path / "lstm.onnx"), tmp_path / "lstm8.onnx")
    assert "DynamicQuantizeLSTM" in {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    x, lengths = torch.randn(3, 7, 16), torch.tensor([7, 2, 5])
    zeros = np.zeros((4, 3, 24), np.float32)
    got = run(int8_path, {"x": x.numpy(), "h0": zeros, "c0": zeros, "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        expected = module(x, None, lengths)[0].numpy()
    assert np.abs(got - expected).max() <= 0.02


def test_int8_tagger_keeps_nearly_every_tag(tmp_path):
    torch.manual_seed(3)
    model = Sequential([layers.Embedding(500, 32, mask_zero=True),
                        layers.Bidirectional(layers.GRU(32, return_sequences=True)), layers.Dense(12)])
    model.build((None, None))
    model.eval()
    int8_path = quantize_int8(to_onnx(model, tmp_path / "tagger.onnx"), tmp_path / "tagger8.onnx")
    ids = torch.randint(1, 500, (16, 20), generator=torch.Generator().manual_seed(4))
    got = run(int8_path, {"x": ids.numpy(), "lengths": np.full(16, 20)})[0]
    with torch.no_grad():
        expected = model(ids).numpy()
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


def test_quantize_refuses_to_overwrite_or_read_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected an ONNX file written by to_onnx"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    path = to_onnx(LSTM(2, 3), tmp_path / "lstm.onnx")
    with pytest.raises(ValueError, match="would overwrite its input"):
        quantize_int8(path, path)
