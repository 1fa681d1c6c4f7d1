"""The Keras API of grukit's recurrent layers, checked against Keras 3 itself: masks (padding anywhere,
go_backwards, zero_output_for_mask), weights in Keras' order both ways, use_bias, initializers, regularizers
(``layer.losses`` and the Sequential loss), constraints after optimizer steps, output shapes and input casting."""

import numpy as np
import pytest
import torch

from grukit import layers
from grukit.layers import GRU, LSTM, Bidirectional, Dense, SimpleRNN, constraints, initializers, regularizers
from grukit.models import Sequential

keras = pytest.importorskip("keras")

MASKS = {
    "right-padded": [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]],
    "left-padded": [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]],
    "gaps and an empty row": [[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]],
}
CELLS = {
    "GRU": (GRU, "GRU", {}),
    "GRU reset-before": (GRU, "GRU", {"reset_after": False}),
    "LSTM": (LSTM, "LSTM", {}),
    "SimpleRNN": (SimpleRNN, "SimpleRNN", {}),
}


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _x(batch=2, steps=6, features=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, features)).astype("float32")


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_masked_outputs_and_states_equal_keras(cell, mask_name, zero_output_for_mask, go_backwards):
    ours_cls, keras_name, extra = CELLS[cell]
    kwargs = dict(
        return_sequences=True, return_state=True, go_backwards=go_backwards,
        zero_output_for_mask=zero_output_for_mask, **extra,
    )  # fmt: skip
    x, mask = _x(), np.array(MASKS[mask_name], bool)
    theirs = getattr(keras.layers, keras_name)(5, **kwargs)
    expected = theirs(x, mask=mask)
    ours = ours_cls(5, **kwargs)
    ours.build((None, None, 3))
    ours.set_weights(theirs.get_weights())  # Keras' weights load directly
    (sequence, *states), out_mask = ours(x, mask=mask)
    assert len(states) == len(expected) - 1
    for got, want in zip((sequence, *states), expected):
        np.testing.assert_allclose(_numpy(got), _numpy(want), rtol=1e-5, atol=1e-6)
    assert out_mask.tolist() == mask.tolist()
    last_only = ours_cls(5, **{**kwargs, "return_sequences": False, "return_state": False})
    last_only.build((None, None, 3))
    last_only.load_state_dict(ours.state_dict())
    last, _ = last_only(x, mask=mask)
    np.testing.assert_allclose(_numpy(last), _numpy(expected[0])[:, -1], rtol=1e-5, atol=1e-6)  # Keras' last output


@pytest.mark.parametrize("merge_mode", ["concat", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_equals_keras_with_masks_states_and_shapes(merge_mode, return_sequences):
    x, mask = _x(), np.array(MASKS["right-padded"], bool)
    kwargs = dict(return_sequences=return_sequences, return_state=True)
    theirs = keras.layers.Bidirectional(keras.layers.GRU(4, **kwargs), merge_mode=merge_mode)
    expected = theirs(x, mask=mask)
    ours = Bidirectional(GRU(4, **kwargs), merge_mode=merge_mode)
    ours.build((None, None, 3))
    ours.set_weights(theirs.get_weights())
    got, _ = ours(x, mask=mask)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=1e-5, atol=1e-6)
    assert ours.compute_output_shape((None, 6, 3)) == theirs.compute_output_shape((None, 6, 3))
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]


def test_summary_shows_the_states_and_both_halves():
    model = Sequential([Bidirectional(GRU(4, return_sequences=True, return_state=True), merge_mode=None)])
    model.build((None, 7, 3))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 7, 4), (None, 7, 4), (None, 4), (None, 4)" in text
    assert GRU(4, return_state=True).compute_output_shape((None, 7, 3)) == ((None, 4), (None, 4))
    assert LSTM(4, return_sequences=True, return_state=True).compute_output_shape((None, 7, 3)) == (
        (None, 7, 4), (None, 4), (None, 4),
    )  # fmt: skip


@pytest.mark.parametrize("cell", ["GRU", "GRU reset-before", "LSTM", "SimpleRNN"])
def test_weights_go_back_to_keras_and_use_bias_false_matches_keras(cell):
    ours_cls, keras_name, extra = CELLS[cell]
    x = _x()
    for use_bias in (True, False):
        ours = ours_cls(5, use_bias=use_bias, bias_initializer="ones", **extra)
        expected, _ = ours(x)
        theirs = getattr(keras.layers, keras_name)(5, use_bias=use_bias, **extra)
        theirs.build((None, None, 3))
        theirs.set_weights(ours.get_weights())  # grukit's weights load into Keras
        np.testing.assert_allclose(_numpy(theirs(x)), _numpy(expected), rtol=1e-5, atol=1e-6)
        assert ours.count_params() == theirs.count_params()
        assert len(ours.get_weights()) == (3 if use_bias else 2)


def test_initializers_by_name_by_object_and_keras_objects():
    layer = GRU(2, kernel_initializer="ones", recurrent_initializer=initializers.Identity(gain=2.0))
    layer.build((None, None, 3))
    kernel, recurrent, bias = layer.get_weights()
    assert np.array_equal(kernel, np.ones((3, 6))) and np.array_equal(bias, np.zeros((2, 6)))
    np.testing.assert_array_equal(recurrent, 2.0 * np.eye(2, 6))  # Keras' layout, gates z, r, h
    from_keras = GRU(
        2,
        kernel_initializer=keras.initializers.Constant(0.25),
        recurrent_initializer=keras.initializers.Orthogonal(seed=3),
    )
    from_keras.build((None, None, 3))
    assert np.all(from_keras.get_weights()[0] == 0.25)
    recurrent = from_keras.get_weights()[1]
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(2), atol=1e-5)  # (semi-)orthogonal rows
    config = from_keras.get_config()
    assert config["kernel_initializer"] == {"class_name": "Constant", "config": {"value": 0.25}}
    assert config["recurrent_initializer"] == {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": 3}}
    assert GRU(2).get_config()["kernel_initializer"] == "glorot_uniform"
    seeded = [GRU(2, kernel_initializer=initializers.GlorotUniform(seed=7)) for _ in range(2)]
    for layer in seeded:
        layer.build((None, None, 3))
    assert np.array_equal(seeded[0].get_weights()[0], seeded[1].get_weights()[0])
    lstm = LSTM(2, bias_initializer="zeros")
    lstm.build((None, None, 3))
    assert lstm.get_weights()[2].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]  # unit forget bias, as Keras
    plain = LSTM(2, unit_forget_bias=False, bias_initializer=initializers.Constant(0.5))
    plain.build((None, None, 3))
    assert plain.get_weights()[2].tolist() == [0.5] * 8
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        GRU(2, kernel_initializer="glorot")


def test_regularizers_give_keras_losses_and_enter_the_sequential_loss():
    kwargs = dict(
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.1),  # Keras objects become grukit's equivalents
        bias_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
    )
    theirs = keras.layers.GRU(3, **kwargs)
    theirs.build((None, None, 4))
    theirs.set_weights([w + 0.5 for w in theirs.get_weights()])  # non-zero biases
    theirs(_x(features=4))
    ours = GRU(3, **kwargs)
    ours.build((None, None, 4))
    ours.set_weights(theirs.get_weights())
    assert len(ours.losses) == 3
    np.testing.assert_allclose(
        sorted(float(v.detach()) for v in ours.losses),
        sorted(float(_numpy(v.detach())) for v in theirs.losses),
        rtol=1e-5,
    )
    model = Sequential([ours, Dense(1)])
    model.compile("sgd", "mse")
    x, y = _x(batch=8, features=4), np.zeros((8, 1), np.float32)
    with torch.no_grad():
        plain = float(torch.nn.functional.mse_loss(model(torch.from_numpy(x)), torch.from_numpy(y)))
    penalty = float(sum(ours.losses).detach())
    assert model.evaluate(x, y, verbose=0) == pytest.approx(plain + penalty, rel=1e-5)
    converted = GRU(2, **kwargs).get_config()["recurrent_regularizer"]
    assert converted["class_name"] == "L1" and converted["config"]["l1"] == pytest.approx(0.1)
    assert GRU(2, recurrent_regularizer=regularizers.L2(0.5)).get_config()["recurrent_regularizer"] == {
        "class_name": "L2", "config": {"l2": 0.5},
    }  # fmt: skip
    assert Bidirectional(GRU(2, kernel_regularizer="l2")).losses == []  # not built: no weights yet


def test_constraints_project_the_weights_after_each_optimizer_step_as_keras():
    kwargs = dict(
        kernel_constraint=constraints.MaxNorm(0.3),
        recurrent_constraint="non_neg",
        bias_constraint=keras.constraints.UnitNorm(axis=1),
    )
    constrained, free = GRU(3, **kwargs), GRU(3)
    x = torch.from_numpy(_x(features=4))
    constrained(x)
    free(x)
    free.load_state_dict(constrained.state_dict())
    assert free.get_config()["kernel_constraint"] is None
    for layer in (constrained, free):
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer(x)[0].sum().backward()
        optimizer.step()
    expected = [
        keras.constraints.MaxNorm(0.3),
        keras.constraints.NonNeg(),
        keras.constraints.UnitNorm(axis=1),
    ]
    for got, weight, constraint in zip(constrained.get_weights(), free.get_weights(), expected):
        np.testing.assert_allclose(got, _numpy(constraint(weight)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(constrained.get_weights()[0], free.get_weights()[0])  # the constraint bit


def test_inputs_and_states_are_cast_as_keras_casts_them():
    layer = GRU(2, return_sequences=True, kernel_initializer="ones")
    ints = np.arange(12).reshape(1, 4, 3)
    from_ints, _ = layer(ints)
    from_floats, _ = layer(torch.arange(12.0).reshape(1, 4, 3))
    from_lists, _ = layer(ints.tolist(), initial_state=[[[0.0, 0.0]]])
    from_doubles, _ = layer(ints.astype("float64"), mask=np.ones((1, 4), bool))
    assert from_ints.dtype == torch.float32
    for other in (from_floats, from_lists, from_doubles):
        assert torch.equal(from_ints, other)


def test_stateful_bidirectional_and_reset_states():
    layer = Bidirectional(LSTM(2, stateful=True))
    x = _x(features=3)
    first, _ = layer(x)
    second, _ = layer(x)
    assert not torch.allclose(first, second)
    layer.reset_states()
    again, _ = layer(x)
    assert torch.equal(first, again)


def test_simple_rnn_and_options_round_trip_through_config():
    layer = SimpleRNN(
        3, kernel_regularizer=regularizers.L1L2(0.1, 0.2), bias_constraint="max_norm", zero_output_for_mask=True
    )
    rebuilt = layers.base.layer_from_config(layers.base.layer_to_config(layer))
    assert rebuilt.get_config() == layer.get_config()
    assert rebuilt.get_config()["bias_constraint"] == {"class_name": "MaxNorm", "config": {"max_value": 2.0, "axis": 0}}


def test_a_keras_model_weights_load_layer_by_layer():
    x = _x(features=3)
    theirs = keras.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
            keras.layers.Dense(2),
        ]
    )
    ours = Sequential([Bidirectional(GRU(4, return_sequences=True)), Dense(2)])
    ours.build((None, 6, 3))
    for layer, keras_layer in zip(ours.layers, theirs.layers):
        layer.set_weights(keras_layer.get_weights())
    with torch.no_grad():
        np.testing.assert_allclose(_numpy(ours(torch.from_numpy(x))), _numpy(theirs(x)), rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"Dense 'dense' expected weights of shapes \[\(8, 2\), \(2,\)\], got \[\(8, 3\)\]"
    ):
        ours.layers[1].set_weights([np.zeros((8, 3))])
