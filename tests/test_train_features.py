"""The Trainer's step-level features: per-step learning-rate schedules over parameter groups, gradient
accumulation, truncated BPTT with a carried state, a step budget, checkpoints every N steps with a mid-epoch
resume that is bit-identical to an uninterrupted run, and the refusal of a checkpoint of another config."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from grukit.models.data import Batches, Samples
from grukit.nn import GRU
from grukit.train import (
    Callback,
    CheckpointError,
    CosineSchedule,
    CSVLogger,
    GradualUnfreezing,
    LinearWarmup,
    SlantedTriangular,
    Trainer,
    get_loss,
    seed_everything,
)
from grukit.train.losses import sparse_categorical_crossentropy
from grukit.train.metrics import SparseCategoricalAccuracy


class RecordLR(Callback):
    """Every group's learning rate at each optimizer step."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_batch_end(self, step, logs):
        self.rates.append([group["lr"] for group in self.trainer.optimizer.param_groups])
        assert logs["learning_rate"] == self.rates[-1][0]


def _two_group_trainer(schedule: Callback, steps: int) -> tuple[Trainer, RecordLR, list]:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.01}, {"params": model[1].parameters(), "lr": 0.1}], lr=0.1
    )
    record = RecordLR()
    trainer = Trainer(model, get_loss("mse"), optimizer, callbacks=[schedule, record])
    batches = [(torch.ones(3, 2), torch.zeros(3, 1))] * steps
    return trainer, record, batches


def test_cosine_schedule_with_warmup_scales_each_groups_own_rate_per_step():
    trainer, record, batches = _two_group_trainer(CosineSchedule(warmup_steps=2, min_ratio=0.1), steps=3)
    trainer.fit(batches, epochs=2, verbose=0)  # 6 steps in all
    # W = 2, S = 6: m = 1/2, 2/2, then 0.1 + 0.9 · ½(1 + cos(π (s − 2) / 4)) for s = 2 … 5
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 6)]
    assert [r[0] for r in record.rates] == pytest.approx([0.01 * m for m in expected])
    assert [r[1] for r in record.rates] == pytest.approx([0.1 * m for m in expected])


def test_linear_warmup_then_constant_and_slanted_triangular():
    trainer, record, batches = _two_group_trainer(LinearWarmup(4), steps=6)
    trainer.fit(batches, epochs=1, verbose=0)
    assert [r[1] for r in record.rates] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])

    trainer, record, batches = _two_group_trainer(SlantedTriangular(cut_frac=0.25, ratio=10), steps=8)
    trainer.fit(batches, epochs=1, verbose=0)
    # cut = 2: p = 0, 1/2, then 1 − (s − 2) / 6; m = (1 + 9 p) / 10
    p = [0, 0.5] + [1 - (s - 2) / 6 for s in range(2, 8)]
    assert [r[1] for r in record.rates] == pytest.approx([0.1 * (1 + 9 * q) / 10 for q in p])
    assert [r[0] / r[1] for r in record.rates] == pytest.approx([0.1] * 8)  # discriminative ratio kept


def test_gradient_accumulation_equals_one_larger_batch_for_a_mean_loss():
    torch.manual_seed(0)
    x, y = torch.randn(10, 4), torch.randn(10, 1)
    reference = nn.Linear(4, 1)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    one = Trainer(reference, get_loss("mse"), torch.optim.SGD(reference.parameters(), lr=0.1), clipnorm=None)
    one.fit([(x, y)], epochs=1, verbose=0)

    accumulated = nn.Linear(4, 1)
    accumulated.load_state_dict(state)
    optimizer = torch.optim.SGD(accumulated.parameters(), lr=0.1)
    trainer = Trainer(accumulated, get_loss("mse"), optimizer, clipnorm=None, accumulate=3)
    # sizes 4, 4, 2: weighted 4/10, 4/10, 2/10, so the short batch counts as the two samples it holds
    history = trainer.fit([(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])], epochs=1, verbose=0)
    assert trainer.step == 1
    torch.testing.assert_close(accumulated.weight, reference.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(accumulated.bias, reference.bias, rtol=1e-6, atol=1e-7)
    assert history.history["loss"][0] == pytest.approx(one.history.history["loss"][0], rel=1e-6)
    assert not torch.equal(accumulated.weight, state["weight"])


class StatefulCounter(nn.Module):
    """Returns (outputs, state): the state counts the calls since it was last None, and scales the output."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.seen: list[int] = []

    def forward(self, x, state):
        count = torch.zeros(1) if state is None else state
        self.seen.append(int(count.item()))
        assert not count.requires_grad  # carried detached
        return x * self.w * (count + 1), count + self.w  # the new state depends on w: it must be detached


def test_stateful_mode_carries_the_detached_state_within_an_epoch_and_resets_it_at_each_epoch():
    model = StatefulCounter()
    seen_by_loss = []

    def loss_fn(outputs, targets, mask):
        seen_by_loss.append(type(outputs))
        return (outputs - targets).square().mean()

    trainer = Trainer(model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.0), stateful=True)
    trainer.fit([(torch.ones(2, 1), torch.ones(2, 1))] * 3, epochs=2, verbose=0)
    assert model.seen == [0, 1, 2, 0, 1, 2]
    assert seen_by_loss == [torch.Tensor] * 6  # the loss sees the outputs only
    model.seen.clear()
    trainer.evaluate([(torch.ones(2, 1), torch.ones(2, 1))] * 2)
    assert model.seen == [0, 1]


def test_max_steps_stops_mid_epoch_and_reports_the_partial_epoch():
    model = nn.Linear(1, 1)
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit([(torch.ones(2, 1), torch.zeros(2, 1))] * 4, epochs=3, verbose=0, max_steps=6)
    assert trainer.step == 6 and trainer.total_steps == 6
    assert trainer.epoch == 1 and trainer.batch_index == 2  # one whole epoch, then two batches
    assert history.epoch == [0, 1]


class Tagger(nn.Module):
    """A per-step classifier with dropout (training consumes the RNG) and a tied input/output matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6, bias=False)
        self.gru = GRU(6, 6)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(6, 3)
        self.unembed = nn.Linear(6, 3, bias=False)
        self.unembed.weight = self.head.weight  # tied: one tensor under two names

    def forward(self, x, state=None):
        out, h_n = self.gru(self.embed(x), state)  # (B, T, 6), (1, B, 6)
        return self.head(self.dropout(out)) + self.unembed(out), h_n  # (B, T, 3)


def _data() -> Batches:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, 3, generator=generator)
    y = (x.cumsum(1)[..., 0] > 0).long()  # (40, 5)
    return Batches(Samples(x, y), 4, shuffle=True)  # 10 batches, reshuffled from the global RNG each epoch


def _loss(outputs, targets, mask):
    return sparse_categorical_crossentropy(outputs, targets, mask, from_logits=True)


class Interrupt(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_batch_end(self, step, logs):
        if step == self.at_step:
            raise KeyboardInterrupt


def _run(folder, callbacks=(), resume=False, seed=7):
    seed_everything(seed)  # a resumed run's weights and RNG come from the checkpoint, whatever the seed
    model = Tagger()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    trainer = Trainer(
        model,
        _loss,
        optimizer,
        metrics=[SparseCategoricalAccuracy()],
        callbacks=[CosineSchedule(warmup_steps=2), CSVLogger(folder / "steps.csv", append=resume, update_freq="batch"),
                   *callbacks],
        checkpoint_dir=folder / "checkpoint",
        checkpoint_every=3,
        accumulate=2,
        stateful=True,
    )
    trainer.fit(_data(), epochs=3, verbose=0, resume=resume)
    return trainer


def _rows(path):
    with open(path, newline="") as handle:
        return [(row["step"], row["batch_loss"], row["accuracy"]) for row in csv.DictReader(handle)]


def test_a_run_interrupted_mid_epoch_resumes_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight = _run(tmp_path / "straight")
    assert straight.step == 15  # 3 epochs of 5 steps (10 batches, 2 per step)

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", [Interrupt(at_step=8)])  # epoch 2, after the step-6 checkpoint
    resumed = _run(tmp_path / "resumed", resume=True, seed=99)

    assert resumed.step == 15 and resumed.epoch == 3
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert resumed.model.unembed.weight is resumed.model.head.weight  # the tie survives the checkpoint
    for key, value in straight.optimizer.state_dict()["state"].items():
        for slot, tensor in value.items():
            assert torch.equal(torch.as_tensor(resumed.optimizer.state_dict()["state"][key][slot]),
                               torch.as_tensor(tensor))
    assert resumed.history.history == straight.history.history  # running loss and accuracy restored too
    assert _rows(tmp_path / "resumed" / "steps.csv") == _rows(tmp_path / "straight" / "steps.csv")
    assert not torch.equal(straight.model.gru.weight_hh_l0, Tagger().gru.weight_hh_l0)  # it did train


class Configured(nn.Module):
    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.linear = nn.Linear(2, 2)

    def get_config(self) -> dict:
        return {"architecture": "test.Configured", "features": 2, "activation": self.activation}

    def forward(self, x):
        return torch.tanh(self.linear(x)) if self.activation == "tanh" else torch.relu(self.linear(x))


def test_resume_refuses_a_checkpoint_of_another_config_naming_the_keys(tmp_path):
    def trainer(activation):
        model = Configured(activation)
        return Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=tmp_path)

    trainer("tanh").fit([(torch.ones(1, 2), torch.zeros(1, 2))], verbose=0)
    expected = r"another configuration \(activation: checkpoint 'tanh', this model 'relu'"
    with pytest.raises(CheckpointError, match=expected):
        trainer("relu").resume()
    trainer("tanh").resume()  # the same config resumes


def test_gradual_unfreezing_trains_one_more_group_per_epoch():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1))
    groups = [list(layer.parameters()) for layer in model]
    snapshots = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append([[p.detach().clone() for p in group] for group in groups])

    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1),
                      callbacks=[GradualUnfreezing(groups), Snapshot()])
    before = [[p.detach().clone() for p in group] for group in groups]
    history = trainer.fit([(torch.randn(4, 2), torch.randn(4, 1))], epochs=3, verbose=0)
    assert history.history["trainable_groups"] == [1, 2, 3]
    for epoch, snapshot in enumerate(snapshots):
        previous = before if epoch == 0 else snapshots[epoch - 1]
        moved = [any(not torch.equal(a, b) for a, b in zip(now, old)) for now, old in zip(snapshot, previous)]
        assert moved == [k >= 2 - epoch for k in range(3)], epoch
