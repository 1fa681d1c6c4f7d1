"""``grukit.seed_everything(seed)``: the same seed gives bit-identical training on the CPU, a different seed a
different run (so the equality is not that of two runs that ignore the seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grukit
from grukit import layers
from grukit import nn as gnn
from grukit.models import Sequential
from grukit.tasks import SequenceClassifier
from grukit.train import Trainer


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)  # fixed data: only the seed under test varies between runs
    x = rng.normal(size=(48, 7, 3)).astype(np.float32)
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64) + (x[:, :, 1].sum(1) > 1)


def _fit_sequential(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Weights drawn at random, shuffled batches, input and recurrent dropout: every source of randomness."""
    grukit.seed_everything(seed)
    model = Sequential(
        [
            layers.GRU(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.2),
            layers.Bidirectional(layers.GRU(4)),
            layers.Dropout(0.3),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    x, y = _data()
    history = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0)
    return {k: v.clone() for k, v in model.state_dict().items()}, history.history


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_same_seed_gives_identical_keras_style_training():
    weights, history = _fit_sequential(3)
    again_weights, again_history = _fit_sequential(3)
    _assert_same_weights(weights, again_weights)
    assert history == again_history
    other_weights, _ = _fit_sequential(4)
    assert not all(torch.equal(weights[k], other_weights[k]) for k in weights)


@pytest.mark.parametrize(
    "make_module",
    [
        pytest.param(lambda: gnn.GRU(3, 6, num_layers=2, dropout=0.3, engine="onednn"), id="GRU-onednn"),
        pytest.param(lambda: gnn.GRU(3, 6, bidirectional=True, engine="native"), id="GRU-native"),
        pytest.param(lambda: gnn.GRU(3, 6, reset_after=False, engine="reference"), id="GRU-reference"),
        pytest.param(lambda: gnn.LSTM(3, 6, num_layers=2, dropout=0.3), id="LSTM"),
        pytest.param(lambda: gnn.MinGRU(3, 6, num_layers=2), id="MinGRU"),
    ],
)
def test_same_seed_gives_identical_trainer_runs_on_every_module(make_module):
    def run(seed: int) -> list[torch.Tensor]:
        grukit.seed_everything(seed)
        module = make_module()
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
        trainer = Trainer(module, lambda out, target, mask: (out[0] - target).square().mean(), optimizer)
        x = torch.randn(4, 5, 3)  # drawn after seeding, as a data pipeline would
        target = torch.randn(4, 5, module.hidden_size * (2 if module.bidirectional else 1))
        trainer.fit([(x[:2], target[:2]), (x[2:], target[2:])], epochs=3, verbose=0)
        return [p.detach().clone() for p in module.parameters()]

    first, second, other = run(11), run(11), run(12)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, c) for a, c in zip(first, other))


def test_same_random_state_gives_identical_estimators():
    x, y = _data()

    def fit(random_state: int) -> np.ndarray:
        model = SequenceClassifier(hidden_size=8, filters=(4, 4, 4), epochs=2, batch_size=16, random_state=random_state)
        return model.fit(x.transpose(0, 2, 1), y).predict_proba(x.transpose(0, 2, 1))

    first = fit(0)
    np.testing.assert_array_equal(first, fit(0))
    assert not np.array_equal(first, fit(1))


def test_seed_everything_rejects_what_is_not_a_seed():
    with pytest.raises(ValueError, match=r"seed_everything expected a non-negative integer seed, got '7'"):
        grukit.seed_everything("7")
