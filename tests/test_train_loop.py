"""grukit.train.Trainer: the shared loop (fit / evaluate / predict, clipping, NaN guard, checkpoint resume),
and the masked losses and metrics it reports."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from grukit.nn import GRU
from grukit.train import Trainer, get_loss, get_metric, seed_everything
from grukit.train.losses import sparse_categorical_crossentropy
from grukit.train.metrics import SparseCategoricalAccuracy


class Tagger(nn.Module):
    """A per-step classifier on grukit.nn.GRU, with dropout so that training consumes the RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = GRU(3, 8)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, T, 8)
        return self.head(self.dropout(out))  # (B, T, 2)


def _data(n: int = 64) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, 3, generator=generator)
    y = (x.cumsum(1)[..., 0] > 0).long()  # (n, 5): the sign of a running sum needs the recurrence
    return TensorDataset(x, y)


def _logit_loss(outputs, targets, mask):
    return sparse_categorical_crossentropy(outputs, targets, mask, from_logits=True)


def test_fit_learns_and_reports_history_per_epoch():
    seed_everything(0)
    model = Tagger()
    trainer = Trainer(model, _logit_loss, torch.optim.Adam(model.parameters(), 1e-2), [SparseCategoricalAccuracy()])
    loader = DataLoader(_data(), batch_size=16, shuffle=True)
    history = trainer.fit(loader, epochs=6, val_batches=loader, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 6 for v in history.history.values())
    assert history.epoch == list(range(6))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert trainer.evaluate(loader)["accuracy"] > 0.8
    assert trainer.step == 6 * 4


def test_masked_loss_and_accuracy_equal_a_hand_computation():
    probabilities = torch.tensor(
        [[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], [[0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]]
    )  # (B=2, T=3, C=3)
    targets = torch.tensor([[0, 2, 1], [1, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # Kept positions: p = 0.7, 0.1 | 0.5, 0.6, 0.1; argmax right at (0,0), (1,0), (1,1): 3 of 5.
    expected = -(math.log(0.7) + math.log(0.1) + math.log(0.5) + math.log(0.6) + math.log(0.1)) / 5
    assert sparse_categorical_crossentropy(probabilities, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    accuracy = SparseCategoricalAccuracy()
    accuracy.update(probabilities, targets, mask)
    assert accuracy.result() == pytest.approx(3 / 5)
    # Metrics accumulate tokens across batches: an exact token average, not a mean of batch means.
    accuracy.update(probabilities[:1, :1], targets[:1, :1], None)
    assert accuracy.result() == pytest.approx(4 / 6)


def test_losses_match_torch_and_keras_formulas():
    outputs = torch.tensor([[0.9, 0.2], [0.3, 0.6]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert get_loss("mse")(outputs, targets).item() == pytest.approx(((outputs - targets) ** 2).mean().item())
    assert get_loss("mae")(outputs, targets).item() == pytest.approx((outputs - targets).abs().mean().item())
    bce = nn.functional.binary_cross_entropy(outputs, targets).item()
    assert get_loss("binary_crossentropy")(outputs, targets).item() == pytest.approx(bce, rel=1e-5)
    probabilities = torch.softmax(outputs, -1)
    cce = nn.functional.cross_entropy(outputs, targets.argmax(-1)).item()
    assert get_loss("categorical_crossentropy")(probabilities, targets).item() == pytest.approx(cce, rel=1e-5)


def test_keras_style_two_argument_losses_are_reduced_over_the_mask():
    def squared(y_true, y_pred):  # Keras' custom-loss signature: per-element values
        return ((y_true - y_pred) ** 2).mean(-1)

    outputs = torch.tensor([[[1.0], [2.0], [9.0]]])  # (1, 3, 1)
    targets = torch.zeros(1, 3, 1)
    mask = torch.tensor([[True, True, False]])
    assert get_loss(squared)(outputs, targets, mask).item() == pytest.approx((1 + 4) / 2)
    assert get_loss(squared)(outputs, targets, None).item() == pytest.approx((1 + 4 + 81) / 3)


def test_unknown_loss_and_metric_names_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'hinge_plus'"):
        get_loss("hinge_plus")
    with pytest.raises(ValueError, match="unknown metric 'f7'"):
        get_metric("f7")


def test_clipnorm_bounds_the_update():
    model = nn.Linear(4, 1)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=1.0), clipnorm=0.01)
    trainer.fit([(torch.full((8, 4), 100.0), torch.zeros(8, 1))], epochs=1, verbose=0)
    change = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)])
    assert change.norm().item() == pytest.approx(0.01, rel=1e-4)


class SqrtModel(nn.Module):
    """Output sqrt(|w|): its gradient at w = 0 is not finite while the loss is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.abs().sqrt()


def test_non_finite_gradient_raises_naming_the_step_and_parameter():
    model = SqrtModel()
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at epoch 1, step 1: .*parameter 'w'"):
        trainer.fit([(torch.ones(2, 1), torch.ones(2, 1))], epochs=1, verbose=0)


def test_nan_policy_skip_leaves_weights_untouched_and_counts():
    model = SqrtModel()
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1), nan_policy="skip")
    with pytest.warns(RuntimeWarning, match="update skipped"):
        trainer.fit([(torch.ones(2, 1), torch.ones(2, 1))] * 3, epochs=1, verbose=0)
    assert trainer.skipped_steps == 3
    assert model.w.item() == 0.0


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path):
    seed_everything(0)
    state = Tagger().state_dict()  # the same initial weights for both runs
    seed_everything(1)
    straight = Tagger()
    straight.load_state_dict(state)
    straight_trainer = Trainer(straight, _logit_loss, torch.optim.Adam(straight.parameters(), 1e-2))
    straight_trainer.fit(DataLoader(_data(), batch_size=16, shuffle=True), epochs=3, verbose=0)

    seed_everything(1)
    first = Tagger()
    first.load_state_dict(state)
    interrupted = Trainer(first, _logit_loss, torch.optim.Adam(first.parameters(), 1e-2), checkpoint_dir=tmp_path / "c")
    interrupted.fit(DataLoader(_data(), batch_size=16, shuffle=True), epochs=1, verbose=0)
    torch.manual_seed(1234)  # whatever happens between the runs must not matter
    fresh = Tagger()
    resumed = Trainer(fresh, _logit_loss, torch.optim.Adam(fresh.parameters(), 1e-2), checkpoint_dir=tmp_path / "c")
    history = resumed.fit(DataLoader(_data(), batch_size=16, shuffle=True), epochs=3, verbose=0, resume=True)

    assert resumed.epoch == 3 and resumed.step == straight_trainer.step == 12
    assert history.history["loss"] == pytest.approx(straight_trainer.history.history["loss"], rel=1e-6)
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=1e-6, atol=1e-7)


def test_predict_pads_variable_length_batches_and_evaluate_needs_data():
    model = nn.Linear(3, 2)
    trainer = Trainer(model, get_loss("mse"), None)
    out = trainer.predict([(torch.ones(2, 4, 3),), (torch.ones(1, 6, 3),)])
    assert out.shape == (3, 6, 2)
    assert torch.equal(out[:2, 4:], torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="evaluate got no batches"):
        trainer.evaluate([])
    with pytest.raises(ValueError, match="no optimizer"):
        trainer.fit([(torch.ones(1, 3), torch.ones(1, 2))], verbose=0)


def test_fit_on_empty_data_is_an_error():
    model = nn.Linear(3, 1)
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no training batches"):
        trainer.fit([], epochs=1, verbose=0)


def test_fit_trains_even_when_grad_mode_is_off_around_it():
    """A fit inside ``torch.no_grad()`` (or after a Ctrl-C that left grad mode off) still trains."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    before = model.weight.detach().clone()
    trainer = Trainer(model, lambda out, y, mask: (out - y).square().mean(), torch.optim.SGD(model.parameters(), 0.1))
    with torch.no_grad():
        trainer.fit([(torch.randn(8, 3), torch.randn(8, 1))], epochs=2, verbose=0)
        assert not torch.is_grad_enabled()  # the caller's mode is left as it was
    assert not torch.equal(model.weight, before)
