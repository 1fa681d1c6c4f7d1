"""Parity with Keras 3 (``KERAS_BACKEND=torch``, set in conftest.py) through the weight converters:
``keras.layers.GRU`` (reset_after True and False, go_backwards, return_state, stacked, Bidirectional) and
``keras.layers.LSTM``, both ways (Keras weights -> grukit, grukit weights -> Keras)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from grukit.nn import GRU, LSTM

BATCH, STEPS, INPUT, HIDDEN = 3, 6, 5, 4
# "reference" is the oracle written from the equations; "auto" runs the fused kernels a user gets by default.
ENGINES = ["reference", "auto"]


def tolerance(dtype: str, reset_after: bool = True) -> dict:
    if dtype == "float32":
        return dict(atol=1e-5, rtol=1e-5)
    # Keras' reset_after=False GRU runs its generic cell loop, whose keras.ops.matmul returns float32 for
    # float64 operands on the torch backend (measured: ~4e-8 from a float64 NumPy evaluation, where grukit
    # is at 1e-16); every other Keras path here stays in float64.
    return dict(atol=1e-6, rtol=1e-6) if not reset_after else dict(atol=1e-10, rtol=1e-10)


def numpy(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def randomise(layer: keras.layers.Layer, seed: int = 0) -> None:
    """Keras initialises biases to zero; give every weight random values so the bias conversion is tested."""
    rng = np.random.default_rng(seed)
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in layer.get_weights()])


def inputs(dtype: str, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, STEPS, INPUT)).astype(dtype)


def assert_close(ours: torch.Tensor, theirs, tol: dict, what: str) -> None:
    np.testing.assert_allclose(ours.detach().numpy(), numpy(theirs), err_msg=what, **tol)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_from_keras_weights_matches_keras_gru(dtype, reset_after, go_backwards, engine):
    layer = keras.layers.GRU(HIDDEN, reset_after=reset_after, go_backwards=go_backwards, return_sequences=True,
                             return_state=True, dtype=dtype)
    layer.build((None, STEPS, INPUT))
    randomise(layer)
    x = inputs(dtype)
    h0 = np.random.default_rng(2).standard_normal((BATCH, HIDDEN)).astype(dtype)
    keras_output, keras_state = layer(x, initial_state=[torch.as_tensor(h0)])

    ours = GRU.from_keras_weights(layer.get_weights(), reset_after=reset_after, engine=engine)
    assert ours.reset_after is reset_after and ours.weight_ih_l0.dtype == getattr(torch, dtype)
    # go_backwards reads the sequence from its end and returns the outputs in that (reversed) order.
    x_ours = torch.as_tensor(x).flip(1) if go_backwards else torch.as_tensor(x)
    output, h_n = ours(x_ours, torch.as_tensor(h0).unsqueeze(0))
    tol = tolerance(dtype, reset_after)
    assert_close(output, keras_output, tol, "output")
    assert_close(h_n[0], keras_state, tol, "final state")


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_to_keras_weights_round_trip_gives_keras_the_same_outputs(reset_after):
    torch.manual_seed(0)
    ours = GRU(INPUT, HIDDEN, reset_after=reset_after, engine="reference").double()
    weights = ours.to_keras_weights()
    bias_shape = (2, 3 * HIDDEN) if reset_after else (3 * HIDDEN,)
    assert [w.shape for w in weights] == [(INPUT, 3 * HIDDEN), (HIDDEN, 3 * HIDDEN), bias_shape]
    layer = keras.layers.GRU(HIDDEN, reset_after=reset_after, return_sequences=True, dtype="float64")
    layer.build((None, STEPS, INPUT))
    layer.set_weights(weights)
    x = inputs("float64")
    assert_close(ours(torch.as_tensor(x))[0], layer(x), tolerance("float64", reset_after), "output")
    back = GRU.from_keras_weights(layer.get_weights(), reset_after=reset_after)
    x_t = torch.as_tensor(x)
    torch.testing.assert_close(back(x_t)[0], ours(x_t)[0], atol=1e-12, rtol=1e-12)
    if reset_after:  # two biases survive the trip exactly
        for name, param in ours.state_dict().items():
            assert torch.equal(back.state_dict()[name], param), name


def test_stacked_keras_grus_load_as_one_multi_layer_gru():
    model = keras.Sequential([
        keras.Input((STEPS, INPUT), dtype="float64"),
        keras.layers.GRU(HIDDEN, return_sequences=True, dtype="float64"),
        keras.layers.GRU(HIDDEN, return_sequences=True, dtype="float64"),
    ])
    randomise(model)
    ours = GRU.from_keras_weights(model.get_weights())
    assert ours.num_layers == 2
    x = inputs("float64")
    assert_close(ours(torch.as_tensor(x))[0], model(x), tolerance("float64"), "output")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bidirectional_keras_gru_matches_bidirectional_gru(dtype, engine):
    layer = keras.layers.Bidirectional(
        keras.layers.GRU(HIDDEN, return_sequences=True, return_state=True, dtype=dtype), dtype=dtype
    )
    layer.build((None, STEPS, INPUT))
    randomise(layer)
    x = inputs(dtype)
    keras_output, forward_state, backward_state = layer(x)
    ours = GRU.from_keras_weights(layer.get_weights(), bidirectional=True, engine=engine)
    output, h_n = ours(torch.as_tensor(x))
    tol = tolerance(dtype)
    assert_close(output, keras_output, tol, "output (forward and backward concatenated)")
    assert_close(h_n[0], forward_state, tol, "forward state")
    assert_close(h_n[1], backward_state, tol, "backward state")
    reloaded = keras.layers.Bidirectional(keras.layers.GRU(HIDDEN, return_sequences=True, dtype=dtype), dtype=dtype)
    reloaded.build((None, STEPS, INPUT))
    reloaded.set_weights(ours.to_keras_weights())
    assert_close(output, reloaded(x), tol, "grukit -> Keras Bidirectional")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_lstm_from_keras_weights_matches_keras_lstm(dtype, go_backwards, engine):
    layer = keras.layers.LSTM(HIDDEN, go_backwards=go_backwards, return_sequences=True, return_state=True,
                              dtype=dtype)
    layer.build((None, STEPS, INPUT))
    randomise(layer)
    x = inputs(dtype)
    keras_output, keras_h, keras_c = layer(x)
    ours = LSTM.from_keras_weights(layer.get_weights(), engine=engine)
    x_ours = torch.as_tensor(x).flip(1) if go_backwards else torch.as_tensor(x)
    output, (h_n, c_n) = ours(x_ours)
    tol = tolerance(dtype)
    assert_close(output, keras_output, tol, "output")
    assert_close(h_n[0], keras_h, tol, "h")
    assert_close(c_n[0], keras_c, tol, "c")


def test_lstm_to_keras_weights_round_trip_gives_keras_the_same_outputs():
    torch.manual_seed(0)
    ours = LSTM(INPUT, HIDDEN, engine="reference").double()
    layer = keras.layers.LSTM(HIDDEN, return_sequences=True, dtype="float64")
    layer.build((None, STEPS, INPUT))
    layer.set_weights(ours.to_keras_weights())
    x = inputs("float64")
    assert_close(ours(torch.as_tensor(x))[0], layer(x), tolerance("float64"), "output")
    back = LSTM.from_keras_weights(layer.get_weights())
    x_t = torch.as_tensor(x)
    torch.testing.assert_close(back(x_t)[0], ours(x_t)[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_keras_layers_without_bias_convert_both_ways(cls):
    keras_cls = keras.layers.GRU if cls is GRU else keras.layers.LSTM
    layer = keras_cls(HIDDEN, use_bias=False, return_sequences=True, dtype="float64")
    layer.build((None, STEPS, INPUT))
    randomise(layer)
    assert len(layer.get_weights()) == 2
    ours = cls.from_keras_weights(layer.get_weights(), bias=False)
    assert ours.bias is False and len(list(ours.parameters())) == 2
    x = inputs("float64")
    assert_close(ours(torch.as_tensor(x))[0], layer(x), tolerance("float64"), "output")
    for mine, keras_weight in zip(ours.to_keras_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, keras_weight)
