"""Embedding, Dense, Dropout, TimeDistributed and the global poolings: shapes, masks, errors, configs."""

import pytest
import torch

from grukit.layers import (
    Dense,
    Dropout,
    Embedding,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    TimeDistributed,
)
from grukit.layers.base import layer_from_config, layer_to_config


def test_embedding_with_mask_zero_marks_padding_and_checks_ids():
    layer = Embedding(10, 4, mask_zero=True)
    out, mask = layer(torch.tensor([[3, 1, 0], [2, 0, 0]]))
    assert out.shape == (2, 3, 4)
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert torch.equal(out[0, 0], layer.embeddings[3])
    assert layer.embeddings.abs().max() <= 0.05  # Keras' uniform(-0.05, 0.05)
    with pytest.raises(ValueError, match=r"Embedding\(input_dim=10\) got token ids in \[0, 12\]"):
        layer(torch.tensor([[12, 0]]))
    plain_out, plain_mask = Embedding(10, 4)(torch.tensor([[3, 0]]))
    assert plain_mask is None


def test_dense_applies_the_activation_on_the_last_axis_and_passes_the_mask():
    layer = Dense(3, activation="softmax")
    mask = torch.tensor([[True, False]])
    out, out_mask = layer(torch.randn(1, 2, 5), mask)
    assert out.shape == (1, 2, 3) and out_mask is mask
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 2))
    assert layer.count_params() == 5 * 3 + 3
    with pytest.raises(ValueError, match="Dense expected input with last dimension 5, got"):
        layer(torch.randn(1, 2, 6))
    with pytest.raises(ValueError, match="unknown activation 'sigmoidal'"):
        Dense(2, activation="sigmoidal")


def test_dropout_is_identity_in_evaluation():
    layer = Dropout(0.5)
    x = torch.ones(4, 100)
    layer.eval()
    assert torch.equal(layer(x)[0], x)
    layer.train()
    dropped = layer(x)[0]
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    with pytest.raises(ValueError, match=r"rate in \[0, 1\), got 1"):
        Dropout(1)


def test_time_distributed_applies_the_layer_at_every_step():
    layer = TimeDistributed(Dense(2))
    x = torch.randn(3, 4, 5)
    out, _ = layer(x)
    assert out.shape == (3, 4, 2)
    torch.testing.assert_close(out[:, 1], layer.layer(x[:, 1])[0])
    assert layer.compute_output_shape((None, None, 5)) == (None, None, 2)


def test_global_poolings_use_only_real_steps():
    x = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [100.0, 100.0]]])  # (1, 3, 2), last step padding
    mask = torch.tensor([[True, True, False]])
    average, out_mask = GlobalAveragePooling1D()(x, mask)
    assert average.tolist() == [[2.0, 2.0]] and out_mask is None
    maximum, _ = GlobalMaxPooling1D()(x, mask)
    assert maximum.tolist() == [[3.0, 5.0]]
    assert GlobalMaxPooling1D()(x)[0].tolist() == [[100.0, 100.0]]


@pytest.mark.parametrize(
    "layer",
    [
        Embedding(7, 3, mask_zero=True),
        Dense(4, activation="relu", use_bias=False),
        Dropout(0.25),
        TimeDistributed(Dense(2)),
        GlobalAveragePooling1D(),
        GlobalMaxPooling1D(),
    ],
)
def test_config_round_trip(layer):
    rebuilt = layer_from_config(layer_to_config(layer))
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()


def test_unknown_layer_class_in_a_config_is_refused():
    with pytest.raises(ValueError, match="unknown layer class 'Conv9D'"):
        layer_from_config({"class_name": "Conv9D", "config": {}})
