"""Keras-style GRU / LSTM / MinGRU / Bidirectional layers: masks as lengths, go_backwards, states,
variational dropout without a slow path, config round trips, and Keras' numbers."""

import numpy as np
import pytest
import torch

from grukit import nn as gnn
from grukit.layers import GRU, LSTM, Bidirectional, MinGRU
from grukit.layers.base import layer_from_config, layer_to_config
from grukit.train import seed_everything


def _built(layer, features=4):
    layer.build((None, None, features))
    return layer


def _masked_batch():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 4, 2])
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)  # (3, 6)
    return x.masked_fill(~mask.unsqueeze(-1), 0.0), lengths, mask


@pytest.mark.parametrize("cls", [GRU, LSTM, MinGRU])
def test_mask_gives_each_sequence_its_unpadded_result(cls):
    seed_everything(0)
    layer = _built(cls(5, return_sequences=True, return_state=True))
    x, lengths, mask = _masked_batch()
    (out, *states), out_mask = layer(x, mask)
    assert out.shape == (3, 6, 5) and all(s.shape == (3, 5) for s in states)
    assert torch.equal(out_mask, mask)
    for b, n in enumerate(lengths.tolist()):
        (alone, *alone_states), _ = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        # Keras' default: padded steps repeat the last real step's output.
        assert torch.equal(out[b, n:], out[b, n - 1].expand(6 - n, 5))
        for state, alone_state in zip(states, alone_states):
            torch.testing.assert_close(state[b], alone_state[0], rtol=1e-5, atol=1e-6)
    zeroed = _built(cls(5, return_sequences=True, zero_output_for_mask=True))
    zeroed.load_state_dict(layer.state_dict())
    zero_out, _ = zeroed(x, mask)
    assert torch.equal(zero_out, out * mask.unsqueeze(-1))  # zero_output_for_mask=True: zeros at padded steps


def test_go_backwards_reverses_the_whole_padded_axis_as_keras():
    seed_everything(0)
    layer = _built(GRU(5, return_sequences=True, go_backwards=True))
    x, lengths, mask = _masked_batch()
    out, _ = layer(x, mask)
    forward = GRU(5, return_sequences=True)
    forward.build((None, None, 4))
    forward.load_state_dict(layer.state_dict())
    for b, n in enumerate(lengths.tolist()):
        expected, _ = forward(x[b : b + 1, :n].flip(1))
        # The reversed axis starts with the padding (outputs zeros there), then the real steps from the last.
        assert torch.equal(out[b, : 6 - n], torch.zeros(6 - n, 5))
        torch.testing.assert_close(out[b, 6 - n :], expected[0], rtol=1e-5, atol=1e-6)


def test_bidirectional_concatenates_forward_and_time_aligned_backward_halves():
    seed_everything(0)
    layer = _built(Bidirectional(GRU(5, return_sequences=True)))
    x, lengths, mask = _masked_batch()
    out, out_mask = layer(x, mask)
    assert out.shape == (3, 6, 10) and torch.equal(out_mask, mask)
    reference = gnn.GRU(4, 5, bidirectional=True)
    with torch.no_grad():
        for suffix, half in (("", layer.forward_layer), ("_reverse", layer.backward_layer)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, f"{name}_l0{suffix}").copy_(getattr(half.module, f"{name}_l0"))
    expected, _ = reference(x, lengths=lengths)  # grukit.nn's packed-sequence semantics
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_bidirectional_merge_modes_and_final_states():
    seed_everything(0)
    x, _, mask = _masked_batch()
    concat = _built(Bidirectional(LSTM(5, return_state=True)))
    (merged, h_f, c_f, h_b, c_b), _ = concat(x, mask)
    torch.testing.assert_close(merged, torch.cat([h_f, h_b], -1))
    summed = Bidirectional(LSTM(5), merge_mode="sum")
    summed.build((None, None, 4))
    summed.load_state_dict(concat.state_dict())
    out, _ = summed(x, mask)
    torch.testing.assert_close(out, h_f + h_b)
    assert summed.compute_output_shape((None, None, 4)) == (None, 5)
    assert concat.compute_output_shape((None, None, 4)) == ((None, 10), (None, 5), (None, 5), (None, 5), (None, 5))


def test_stateful_layer_carries_state_across_batches():
    seed_everything(0)
    layer = _built(GRU(5, return_sequences=True, stateful=True))
    x = torch.randn(2, 8, 4)
    first, _ = layer(x[:, :5])
    second, _ = layer(x[:, 5:])
    layer.reset_states()
    whole, _ = layer(x)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="holds states for batches of 2, got a batch of 3"):
        layer(torch.randn(3, 2, 4))


def test_recurrent_dropout_is_drop_connect_in_training_and_off_in_evaluation():
    seed_everything(0)
    dropped = _built(GRU(5, return_sequences=True, recurrent_dropout=0.5))
    plain = _built(GRU(5, return_sequences=True))
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(3, 7, 4)
    dropped.eval()
    assert torch.equal(dropped(x)[0], plain(x)[0])
    dropped.train()
    torch.manual_seed(3)
    out, _ = dropped(x)
    torch.manual_seed(3)
    keep = torch.bernoulli(torch.full((1, 5), 0.5)) / 0.5  # the column mask the layer draws
    module = plain.module
    with torch.no_grad():
        module.weight_hh_l0.mul_(keep)
    expected, _ = plain(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert dropped.module.weight_hh_l0.grad is not None


def test_dropout_uses_one_input_mask_per_sequence():
    seed_everything(0)
    layer = _built(GRU(5, dropout=0.5), features=50)
    seen = []
    layer.module.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    layer.train()
    layer(torch.ones(2, 3, 50))
    zeros = seen[0] == 0  # (2, 3, 50)
    assert torch.equal(zeros, zeros[:, :1].expand_as(zeros))  # the same features dropped at every step
    assert 0 < zeros.float().mean() < 1


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="units to be a positive integer, got 0"):
        GRU(0)
    with pytest.raises(ValueError, match=r"recurrent_dropout in \[0, 1\), got 1.5"):
        GRU(4, recurrent_dropout=1.5)
    with pytest.raises(ValueError, match="MinGRU has no recurrent weights"):
        MinGRU(4, recurrent_dropout=0.1)
    with pytest.raises(TypeError, match="Bidirectional expected a GRU, LSTM, MinGRU or SimpleRNN layer"):
        Bidirectional("gru")
    layer = _built(GRU(3))
    with pytest.raises(ValueError, match=r"GRU expected input of shape \(batch, time, 4\), got \(2, 5, 7\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"GRU expected a mask of shape \(batch, time\) \(2, 3\), got \(2, 4\)"):
        layer(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected initial_state as 1 tensor\(s\) of shape \(2, 3\)"):
        layer(torch.randn(2, 3, 4), initial_state=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="activation='tanh' and recurrent_activation='sigmoid'"):
        GRU(3, activation="relu")
    with pytest.raises(ValueError, match=r"expected weights of shapes \[\(4, 9\), \(3, 9\), \(2, 9\)\]"):
        layer.set_weights([np.zeros((4, 9)), np.zeros((3, 9)), np.zeros((9,))])
    with pytest.raises(ValueError, match="read opposite ways, got go_backwards=False for both"):
        Bidirectional(GRU(3), backward_layer=GRU(3))
    with pytest.raises(ValueError, match="same return_sequences, got False and True"):
        Bidirectional(GRU(3), backward_layer=GRU(3, go_backwards=True, return_sequences=True))


@pytest.mark.parametrize(
    "layer",
    [
        GRU(3, return_sequences=True, reset_after=False, dropout=0.1),
        LSTM(2, go_backwards=True),
        Bidirectional(MinGRU(4), merge_mode="ave"),
    ],
)
def test_config_round_trip(layer):
    rebuilt = layer_from_config(layer_to_config(layer))
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_layer_computes_what_keras_computes(reset_after):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4)).astype("float32")
    theirs = keras.layers.GRU(3, return_sequences=True, reset_after=reset_after)
    expected = np.asarray(theirs(x).detach().cpu())
    ours = _built(GRU(3, return_sequences=True, reset_after=reset_after))
    converted = gnn.GRU.from_keras_weights([w for w in theirs.get_weights()], reset_after=reset_after)
    ours.module.load_state_dict({k: v for k, v in converted.state_dict().items() if k in ours.module.state_dict()})
    out, _ = ours(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_lstm_layer_computes_what_keras_computes():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 4)).astype("float32")
    theirs = keras.layers.LSTM(3, return_sequences=True)
    expected = np.asarray(theirs(x).detach().cpu())
    ours = _built(LSTM(3, return_sequences=True))
    converted = gnn.LSTM.from_keras_weights(theirs.get_weights())
    ours.module.load_state_dict({k: v for k, v in converted.state_dict().items() if k in ours.module.state_dict()})
    out, _ = ours(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
