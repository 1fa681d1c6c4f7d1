"""summary() parameter counts equal Keras 3's for the same models (Keras on its torch backend)."""

import pytest

from grukit import layers as ours
from grukit.models import Sequential

keras = pytest.importorskip("keras")


def _pair(build, input_shape):
    """The same stack in grukit and in Keras; returns their per-layer and total parameter counts."""
    mine = Sequential(build(ours))
    mine.build((None, *input_shape))
    theirs = keras.Sequential([keras.Input(shape=input_shape), *build(keras.layers)])
    return (
        [layer.count_params() for layer in mine.layers],
        [layer.count_params() for layer in theirs.layers],
        mine.count_params(),
        theirs.count_params(),
    )


CASES = {
    "seed tagger": (
        lambda L: [L.Embedding(5000, 128, mask_zero=True), L.GRU(64, return_sequences=True), L.Dense(44, "softmax")],
        (None,),
    ),
    "GRU reset_after=True": (lambda L: [L.GRU(64)], (None, 128)),
    "GRU reset_after=False": (lambda L: [L.GRU(64, reset_after=False)], (None, 128)),
    "LSTM": (lambda L: [L.LSTM(32, return_sequences=True), L.LSTM(16)], (None, 10)),
    "Bidirectional GRU": (lambda L: [L.Bidirectional(L.GRU(24, return_sequences=True)), L.Dense(3)], (None, 7)),
    "Bidirectional LSTM, sum": (lambda L: [L.Bidirectional(L.LSTM(12), merge_mode="sum"), L.Dense(1)], (None, 5)),
    "Dense stack": (lambda L: [L.Dense(32, "relu"), L.Dense(8, use_bias=False)], (20,)),
    "TimeDistributed and pooling": (
        lambda L: [L.GRU(16, return_sequences=True), L.TimeDistributed(L.Dense(4)), L.GlobalMaxPooling1D()],
        (None, 6),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_counts_equal_keras(name):
    build, input_shape = CASES[name]
    mine_layers, their_layers, mine_total, their_total = _pair(build, input_shape)
    assert mine_layers == their_layers
    assert mine_total == their_total


def test_the_issues_example_gru_64_on_128_features_has_37248_parameters():
    model = Sequential([ours.GRU(64)])
    model.build((None, None, 128))
    assert model.count_params() == 37_248


def test_output_shapes_match_keras():
    build, input_shape = CASES["Bidirectional GRU"]
    mine = Sequential(build(ours))
    mine.build((None, *input_shape))
    theirs = keras.Sequential([keras.Input(shape=input_shape), *build(keras.layers)])
    assert mine.output_shapes() == [tuple(layer.output.shape) for layer in theirs.layers]
