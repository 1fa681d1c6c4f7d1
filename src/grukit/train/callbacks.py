"""Callbacks with Keras' names and behaviour, and the :class:`History` that ``fit`` returns.

A callback sees the :class:`~grukit.train.Trainer` as ``self.trainer`` (``trainer.model``,
``trainer.optimizer``, ``trainer.stop_training``) and ``logs`` such as ``{"loss": 0.41, "accuracy": 0.88,
"val_loss": 0.45, "val_accuracy": 0.86}``. Epochs passed to hooks count from 0, as in Keras; file names
and logs written for people count from 1.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from collections.abc import Callable
from pathlib import Path


class History:
    """What ``fit`` returns: ``history.history`` maps each log name to one value per epoch, and
    ``history.epoch`` lists the epochs (from 0), as in Keras."""

    def __init__(self, history: dict[str, list[float]] | None = None, epoch: list[int] | None = None) -> None:
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(epoch or [])

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the logs of ``epoch`` (counted from 1)."""
        self.epoch.append(epoch - 1)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))

    def plot(self, path: str | os.PathLike) -> Path:
        """Write the training curves as a PNG: one panel per quantity, training and ``val_`` together."""
        from matplotlib.figure import Figure  # no pyplot: leaves the user's matplotlib backend alone

        if not self.history:
            raise ValueError("History.plot has nothing to plot: no epoch has finished")
        names = [name for name in self.history if not name.startswith("val_")]
        figure = Figure(figsize=(4.5 * len(names), 3.5))
        axes = figure.subplots(1, len(names), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for axis, name in zip(axes[0], names):
            axis.plot(epochs, self.history[name], marker="o", label=f"training {name}")
            if f"val_{name}" in self.history:
                axis.plot(epochs, self.history[f"val_{name}"], marker="o", label=f"validation {name}")
            axis.set_xlabel("epoch")
            axis.set_title(name)
            axis.legend()
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        return path


class Callback:
    """Base class: override the hooks you need. ``epoch`` counts from 0; ``step`` is the global step."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...

    def on_batch_end(self, step: int, logs: dict) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict) -> None: ...


class _Monitor:
    """``monitor`` / ``mode`` / ``min_delta`` bookkeeping shared by the callbacks that watch a quantity."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner} expected mode in ('auto', 'min', 'max'), got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise KeyError(
                f"{self.owner} monitors {self.monitor!r}, which the logs lack (they have {sorted(logs)}); "
                "pass validation data for val_* quantities"
            )
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs; with
    ``restore_best_weights``, put back the weights of the best epoch when stopping (or at the end)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        self.tracker = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None

    def on_train_begin(self, logs: dict) -> None:
        self.wait = 0
        self.tracker.best = math.inf if self.tracker.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = self.tracker.value(logs)
        if self.tracker.improved(value):
            self.tracker.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = copy.deepcopy(self.trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model at the end of each epoch to ``filepath``, which may hold ``{epoch}`` (from 1) and log
    names, e.g. ``"ckpt/epoch{epoch:02d}-{val_loss:.3f}"``. With ``save_best_only``, save only when
    ``monitor`` improves. The model is saved with its own ``save(path)`` when it has one (a grukit
    ``Sequential``), else as the trainer's resumable checkpoint folder."""

    def __init__(
        self, filepath: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto"
    ) -> None:
        self.filepath = str(filepath)
        self.tracker = _Monitor("ModelCheckpoint", monitor, mode, 0.0)
        self.save_best_only = save_best_only
        self.saved: list[Path] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.save_best_only:
            value = self.tracker.value(logs)
            if not self.tracker.improved(value):
                return
            self.tracker.best = value
        path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        model = self.trainer.model
        if hasattr(model, "save"):
            model.save(path)
        else:
            self.trainer.save_checkpoint(path)
        self.saved.append(path)


class ReduceLROnPlateau(Callback):
    """Multiply every learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs,
    then wait ``cooldown`` epochs; never below ``min_lr``. Adds ``learning_rate`` to the epoch logs."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau expected factor in (0, 1), got {factor!r}")
        self.tracker = _Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.wait = 0
        self.cooldown_left = 0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = self.tracker.value(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.tracker.improved(value):
            self.tracker.best = value
            self.wait = 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience:
                for group in self.trainer.optimizer.param_groups:
                    group["lr"] = max(group["lr"] * self.factor, self.min_lr)
                self.cooldown_left = self.cooldown
                self.wait = 0
        logs["learning_rate"] = self.trainer.optimizer.param_groups[0]["lr"]


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, lr)`` (epoch from 0)."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler expected a callable schedule(epoch, lr), got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        current = self.trainer.optimizer.param_groups[0]["lr"]
        new = float(self.schedule(epoch, current))
        if not math.isfinite(new) or new < 0:
            raise ValueError(f"LearningRateScheduler's schedule returned {new!r} at epoch {epoch}; expected lr >= 0")
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = new


class CSVLogger(Callback):
    """Write one CSV row per epoch (``epoch`` from 0, then every log) to ``filename``; ``append`` keeps an
    existing file's rows."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None

    def on_train_begin(self, logs: dict) -> None:
        self.keys = None
        if not self.append or not self.filename.exists():
            self.filename.parent.mkdir(parents=True, exist_ok=True)
            self.filename.write_text("")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        write_header = self.filename.stat().st_size == 0
        if self.keys is None:
            self.keys = sorted(logs)
        with open(self.filename, "a", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.separator)
            if write_header:
                writer.writerow(["epoch", *self.keys])
            writer.writerow([epoch, *(logs.get(k, "") for k in self.keys)])


class TensorBoard(Callback):
    """Write every epoch log as a TensorBoard scalar (``epoch_loss``, ``epoch_val_loss``, …) under
    ``log_dir``. Needs the ``tensorboard`` package (``pip install 'grukit[logging]'``)."""

    def __init__(self, log_dir: str | os.PathLike = "logs") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "the TensorBoard callback needs the tensorboard package: pip install tensorboard "
                "(or pip install 'grukit[logging]')"
            ) from error
        self.log_dir = Path(log_dir)
        self.writer_class = SummaryWriter
        self.writer = None

    def on_train_begin(self, logs: dict) -> None:
        self.writer = self.writer_class(log_dir=str(self.log_dir))

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for name, value in logs.items():
            self.writer.add_scalar(f"epoch_{name}", value, epoch)
        self.writer.flush()

    def on_train_end(self, logs: dict) -> None:
        self.writer.close()
