"""Streaming: ``state = model.initial_state(B)``, ``out, state = model.step(x_t, state)`` equals the full forward
(float64, tight), per-stream resets, and states that round-trip through safetensors."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from grukit import layers
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.models.sequential import Sequential
from grukit.nn import GRU, LSTM, MinGRU

TIGHT = 1e-12
MODULES = {
    "gru_reset_after": lambda: GRU(3, 5, num_layers=2),
    "gru_reset_before": lambda: GRU(3, 5, num_layers=2, reset_after=False),
    "gru_time_major": lambda: GRU(3, 4, batch_first=False),
    "lstm": lambda: LSTM(3, 4, num_layers=3),
    "mingru": lambda: MinGRU(3, 6, num_layers=2),
}


def stepped(model, steps: list, state):
    outputs = []
    for x_t in steps:
        output, state = model.step(x_t, state)
        outputs.append(output)
    return outputs, state


def flat(state) -> list[torch.Tensor]:
    if isinstance(state, dict):
        return [state[key] for key in sorted(state)]
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_stepping_equals_the_full_forward(name):
    torch.manual_seed(0)
    module = MODULES[name]().double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    if not module.batch_first:
        x = x.transpose(0, 1)
    with torch.no_grad():
        expected, final = module(x)
        time_axis = 1 if module.batch_first else 0
        outputs, state = stepped(module, list(x.unbind(time_axis)), module.initial_state(4))
    assert (torch.stack(outputs, time_axis) - expected).abs().max() <= TIGHT
    assert all((a - b).abs().max() <= TIGHT for a, b in zip(flat(state), flat(final)))


def test_reset_restarts_only_the_chosen_streams():
    torch.manual_seed(1)
    module = LSTM(3, 4, num_layers=2).double()
    first, second = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        _, state = stepped(module, list(first.unbind(1)), None)
        reset = torch.tensor([True, False])
        output, state = module.step(second[:, 0], state, reset=reset)
        more, _ = stepped(module, list(second[:, 1:].unbind(1)), state)
        fresh, _ = module(second[:1])  # stream 0 starts over on `second`
        continued, _ = module(torch.cat([first[1:], second[1:]], 1))  # stream 1 carries on
    outputs = torch.stack([output, *more], 1)
    assert (outputs[0] - fresh[0]).abs().max() <= TIGHT
    assert (outputs[1] - continued[0, 5:]).abs().max() <= TIGHT
    kept = module.reset_state(state, torch.tensor([False, True]))  # state: after the first step of `second`
    assert torch.equal(kept[0][:, 0], state[0][:, 0]) and not kept[0][:, 1].any() and not kept[1][:, 1].any()


def test_states_save_with_safetensors(tmp_path):
    torch.manual_seed(2)
    module = GRU(3, 4, num_layers=2)
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        _, state = stepped(module, list(x[:, :3].unbind(1)), None)
        save_file({"h": state}, tmp_path / "state.safetensors")
        resumed, _ = stepped(module, list(x[:, 3:].unbind(1)), load_file(tmp_path / "state.safetensors")["h"])
        expected, _ = module(x)
    assert torch.allclose(torch.stack(resumed, 1), expected[:, 3:], atol=1e-6)


def test_bad_streaming_calls_say_what_is_expected():
    with pytest.raises(ValueError, match="bidirectional GRU needs the whole sequence"):
        GRU(3, 4, bidirectional=True).step(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"one step of shape \(batch, 3\), got \(2, 5, 3\)"):
        GRU(3, 4).step(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"bool mask of shape \(2,\), one per stream, got torch.int64"):
        GRU(3, 4).reset_state(torch.zeros(1, 2, 4), torch.tensor([1, 0]))


def test_language_model_steps_equal_forward_and_reset():
    torch.manual_seed(3)
    model = GRULanguageModel(LMConfig(vocab_size=30, embedding_size=6, hidden_size=8, num_layers=2,
                                      tie_weights=True)).double().eval()
    ids = torch.randint(0, 30, (3, 7))
    with torch.no_grad():
        expected, final = model(ids)
        outputs, state = stepped(model, list(ids.unbind(1)), model.initial_state(3))
        assert (torch.stack(outputs, 1) - expected).abs().max() <= TIGHT
        assert all((a - b).abs().max() <= TIGHT for a, b in zip(state, final))
        restarted, _ = model.step(ids[:, 0], state, reset=torch.tensor([True, True, False]))
        assert (restarted[:2] - expected[:2, 0]).abs().max() <= TIGHT
        assert (restarted[2] - expected[2, 0]).abs().max() > 1e-6
    with pytest.raises(ValueError, match=r"ids of shape \(batch,\), got \(3, 7\)"):
        model.step(ids)


def test_sequential_tagger_and_classifier_stream():
    torch.manual_seed(4)
    tagger = Sequential([layers.Embedding(20, 5), layers.GRU(6, return_sequences=True),
                         layers.LSTM(4, return_sequences=True), layers.MinGRU(3, return_sequences=True),
                         layers.TimeDistributed(layers.Dense(2, activation="softmax"))])
    classifier = Sequential([layers.Embedding(20, 5), layers.GRU(6, return_sequences=True, reset_after=False),
                             layers.LSTM(4), layers.Dense(3)])
    ids = torch.randint(1, 20, (3, 6))
    for model in (tagger, classifier):
        model.build((None, None))
        model.double().eval()
        with torch.no_grad():
            expected = model(ids)
            outputs, state = stepped(model, list(ids.unbind(1)), model.initial_state(3))
        got = torch.stack(outputs, 1) if model is tagger else outputs[-1]
        assert (got - expected).abs().max() <= TIGHT
    assert sorted(state) == ["layers.1.h", "layers.2.c", "layers.2.h"]
    assert state["layers.2.c"].shape == (3, 4)
    cleared = classifier.reset_state(state, torch.tensor([True, False, False]))
    assert not cleared["layers.1.h"][0].any() and torch.equal(cleared["layers.1.h"][1:], state["layers.1.h"][1:])


def test_sequential_refuses_layers_that_need_the_whole_sequence():
    model = Sequential([layers.Embedding(20, 5), layers.Bidirectional(layers.GRU(3)), layers.Dense(2)])
    model.build((None, None))
    with pytest.raises(ValueError, match="cannot stream layer .*Bidirectional.*needs the whole sequence"):
        model.step(torch.tensor([1, 2]))
