"""Each callback does what its name says, driven through grukit.train.Trainer."""

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from grukit.layers import Dense
from grukit.models import Sequential, load_model
from grukit.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    TensorBoard,
    Trainer,
    get_loss,
)

X = torch.linspace(-1, 1, 32).unsqueeze(1)  # (32, 1)
Y = 3 * X + 1
BATCHES = [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 32, 8)]


class ScriptedLogs(Callback):
    """Replaces the epoch's val_loss with a scripted value before later callbacks see it, and records lr."""

    def __init__(self, values):
        self.values, self.lrs = list(values), []

    def on_epoch_end(self, epoch, logs):
        logs["val_loss"] = self.values[epoch]
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])


def _trainer(callbacks, lr=0.1, model=None):
    model = model or nn.Linear(1, 1)
    return Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=lr), callbacks=callbacks)


def test_early_stopping_stops_after_patience_and_restores_best_weights():
    class Snapshot(Callback):
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, epoch, logs):
            self.weights.append(self.trainer.model.weight.detach().clone())

    snapshot = Snapshot()
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    trainer = _trainer([ScriptedLogs([1.0, 0.5, 0.6, 0.7, 0.4, 0.3]), snapshot, stopper])
    history = trainer.fit(BATCHES, epochs=6, verbose=0)
    assert len(history.history["loss"]) == 4  # best at epoch 1, two epochs without improvement, then a stop
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    assert torch.equal(trainer.model.weight, snapshot.weights[1])
    assert not torch.equal(snapshot.weights[1], snapshot.weights[3])


def test_early_stopping_names_a_missing_quantity():
    trainer = _trainer([EarlyStopping(monitor="val_loss")])
    with pytest.raises(ValueError, match="monitors 'val_loss', but the logs hold \\['loss'\\]: pass validation data"):
        trainer.fit(BATCHES, epochs=1, verbose=0)


def test_reduce_lr_on_plateau_multiplies_the_learning_rate():
    scripted = ScriptedLogs([1.0, 1.0, 1.0, 1.0, 1.0])
    reducer = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.03)
    history = _trainer([scripted, reducer], lr=0.1).fit(BATCHES, epochs=5, verbose=0)
    # epoch 0 sets the best; epochs 1, 2 do not improve -> halve after epoch 2; epochs 3, 4 -> halve (floor 0.03)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.03])


def test_learning_rate_scheduler_sets_each_epochs_rate():
    seen = []

    class Record(Callback):
        def on_epoch_begin(self, epoch, logs):
            seen.append(self.trainer.optimizer.param_groups[0]["lr"])

    _trainer([LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)), Record()]).fit(BATCHES, epochs=3, verbose=0)
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    history = _trainer([CSVLogger(path)]).fit(BATCHES, epochs=3, val_batches=BATCHES, verbose=0)
    rows = list(csv.DictReader(path.open()))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert [float(row["val_loss"]) for row in rows] == pytest.approx(history.history["val_loss"])


def test_model_checkpoint_saves_only_improving_epochs_as_loadable_models(tmp_path):
    model = Sequential([Dense(1)])
    model.compile("sgd", "mse")
    checkpoint = ModelCheckpoint(tmp_path / "epoch{epoch}", monitor="val_loss", save_best_only=True)
    model.build((None, 1))
    model._ensure_trainer()
    trainer = model.trainer
    trainer.callbacks = [ScriptedLogs([0.9, 0.5, 0.7, 0.4]), checkpoint]
    trainer.fit(BATCHES, epochs=4, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch1", "epoch2", "epoch4"]
    restored = load_model(tmp_path / "epoch4")
    assert torch.equal(restored.layers[0].kernel, model.layers[0].kernel)


def test_model_checkpoint_of_a_plain_module_is_a_resumable_trainer_checkpoint(tmp_path):
    trainer = _trainer([ModelCheckpoint(tmp_path / "last")])
    trainer.fit(BATCHES, epochs=2, verbose=0)
    resumed = _trainer([])
    resumed.resume(tmp_path / "last")
    assert resumed.epoch == 2
    assert torch.equal(resumed.model.weight, trainer.model.weight)


def test_tensorboard_writes_event_files(tmp_path):
    _trainer([TensorBoard(tmp_path / "tb")]).fit(BATCHES, epochs=2, verbose=0)
    events = list(Path(tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_tensorboard_per_step_writes_each_steps_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _trainer([TensorBoard(tmp_path / "tb", update_freq="batch")]).fit(BATCHES, epochs=2, verbose=0)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("batch/batch_loss")] == list(range(1, 9))
    assert [e.value for e in events.Scalars("batch/learning_rate")] == pytest.approx([0.1] * 8)
    assert [e.step for e in events.Scalars("epoch_loss")] == [0, 1]


def test_csv_logger_per_step_with_named_columns(tmp_path):
    path = tmp_path / "steps.csv"
    _trainer([CSVLogger(path, update_freq="batch", columns={"batch_loss": "loss", "learning_rate": "lr"})]).fit(
        BATCHES, epochs=2, verbose=0
    )
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["step", "epoch", "loss", "lr"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [(str(s), str((s - 1) // 4), "0.1") for s in range(1, 9)]


def test_progress_bar_counts_every_step_of_the_run(capsys):
    _trainer([ProgressBar("fitting")]).fit(BATCHES, epochs=2, verbose=0)
    printed = capsys.readouterr()
    assert "fitting" in printed.err and "8/8" in printed.err
    assert "epoch 2 (step 8): loss" in printed.out


def test_history_plot_writes_a_png(tmp_path):
    history = _trainer([]).fit(BATCHES, epochs=2, val_batches=BATCHES, verbose=0)
    history.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
