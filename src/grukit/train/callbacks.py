r"""Callbacks with Keras' names and behaviour, and the :class:`History` that ``fit`` returns.

A callback sees the :class:`~grukit.train.Trainer` as ``self.trainer`` (``trainer.model``,
``trainer.optimizer``, ``trainer.step``, ``trainer.total_steps``, ``trainer.stop_training``) and ``logs``
such as ``{"loss": 0.41, "accuracy": 0.88, "val_loss": 0.45, "val_accuracy": 0.86}``. Epochs passed to hooks
count from 0, as in Keras; file names and logs written for people count from 1.

Learning-rate schedules act per optimizer step: before step ``s`` (from 0) each parameter group's rate is
set to its own base rate times a multiplier ``m(s)``, so discriminative rates (one base rate per group) keep
their ratios. The base rate is the group's ``lr`` when training first began, kept in the group as
``initial_lr`` (as torch's schedulers do), so it travels with the optimizer in a checkpoint.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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

    def plot(self, path: str | os.PathLike | None = None) -> Figure:
        """The training curves as a matplotlib ``Figure``: one panel per quantity, training and ``val_``
        together. With ``path``, also write them there as a PNG (100 dpi)."""
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
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=100)
        return figure


class Callback:
    """Base class: override the hooks you need. ``epoch`` counts from 0.

    ``on_batch_begin(step, logs)`` runs before each optimizer step with the steps taken so far (from 0);
    ``on_batch_end(step, logs)`` after it with the count including it (from 1). With gradient accumulation a
    "batch" here is the ``accumulate`` batches of one step. Batch logs hold the running epoch means
    (``loss``, metrics), the step's own ``batch_loss`` and the ``learning_rate`` of the first group.
    """

    trainer = None
    rank_zero_only = False  # under several processes, run this callback on rank 0 only (loggers, savers)

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...

    def on_batch_begin(self, step: int, logs: dict) -> None: ...

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
            raise ValueError(
                f"{self.owner} monitors {self.monitor!r}, but the logs hold {list(logs)}: {self._remedy(logs)}"
            )
        return float(logs[self.monitor])

    def _remedy(self, logs: dict) -> str:
        """What would put the monitored quantity in the logs: validation data, a compiled metric, or another name."""
        quantity = self.monitor.removeprefix("val_")
        if self.monitor.startswith("val_") and quantity in logs:
            return f"pass validation data to fit (validation_data or validation_split) or monitor {quantity!r}"
        if quantity != "loss" and quantity not in logs:
            return f"compile with metrics=[{quantity!r}] or monitor one of those"
        return "monitor one of those"

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

    rank_zero_only = True

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
    """Write one CSV row per epoch (``update_freq="epoch"``: columns ``epoch, step, …``) or per optimizer step
    (``"batch"``: ``step, epoch, …``) to ``filename``; ``epoch`` counts from 0, ``step`` is the global step.

    Args:
        columns: the log names to write, in order, or a mapping ``log name → column name``; ``None`` writes
            every log of the first row, sorted.
        append: keep an existing file's rows and columns; a run that continues from step ``s > 0`` (a
            resumed checkpoint) drops the rows of later steps, which its interrupted predecessor wrote after
            that checkpoint and which it writes again.
    """

    rank_zero_only = True

    def __init__(
        self,
        filename: str | os.PathLike,
        separator: str = ",",
        append: bool = False,
        update_freq: str = "epoch",
        columns: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        if update_freq not in ("epoch", "batch"):
            raise ValueError(f"CSVLogger expected update_freq 'epoch' or 'batch', got {update_freq!r}")
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self.update_freq = update_freq
        self.columns = dict(columns) if isinstance(columns, Mapping) else None if columns is None else {
            name: name for name in columns
        }
        self.keys: list[str] | None = None

    def _lead(self) -> list[str]:
        return ["epoch", "step"] if self.update_freq == "epoch" else ["step", "epoch"]

    def on_train_begin(self, logs: dict) -> None:
        self.keys = None if self.columns is None else list(self.columns)
        if not self.append or not self.filename.exists():
            self.filename.parent.mkdir(parents=True, exist_ok=True)
            self.filename.write_text("")
            return
        with open(self.filename, newline="") as handle:
            rows = list(csv.reader(handle, delimiter=self.separator))
        if not rows or rows[0][:2] != self._lead():
            return  # not a file this logger wrote: left as it is
        if self.columns is None:
            self.keys = rows[0][2:]
        if self.trainer.step > 0:  # continuing: what was written after the checkpoint is written again
            rows = rows[:1] + [row for row in rows[1:] if int(row[rows[0].index("step")]) <= self.trainer.step]
            with open(self.filename, "w", newline="") as handle:
                csv.writer(handle, delimiter=self.separator).writerows(rows)

    def _write(self, lead: list, logs: dict) -> None:
        write_header = self.filename.stat().st_size == 0
        if self.keys is None:
            self.keys = sorted(logs)
        with open(self.filename, "a", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.separator)
            if write_header:
                names = self.keys if self.columns is None else [self.columns[k] for k in self.keys]
                writer.writerow([*self._lead(), *names])
            writer.writerow([*lead, *(logs.get(k, "") for k in self.keys)])

    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.update_freq == "batch":
            self._write([step, self.trainer.epoch], logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.update_freq == "epoch":
            self._write([epoch, self.trainer.step], logs)


class TensorBoard(Callback):
    """Write every epoch log as a TensorBoard scalar (``epoch_loss``, ``epoch_val_loss``, …) under
    ``log_dir``, and with ``update_freq="batch"`` every step's logs too (``batch/batch_loss``,
    ``batch/learning_rate``, ``batch/loss`` the running epoch mean, … at the global step). Needs the
    ``tensorboard`` package (``pip install 'grukit[logging]'``)."""

    rank_zero_only = True

    def __init__(self, log_dir: str | os.PathLike = "logs", update_freq: str = "epoch") -> None:
        if update_freq not in ("epoch", "batch"):
            raise ValueError(f"TensorBoard expected update_freq 'epoch' or 'batch', got {update_freq!r}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "the TensorBoard callback needs the tensorboard package: pip install tensorboard "
                "(or pip install 'grukit[logging]')"
            ) from error
        self.log_dir = Path(log_dir)
        self.update_freq = update_freq
        self.writer_class = SummaryWriter
        self.writer = None

    def on_train_begin(self, logs: dict) -> None:
        self.writer = self.writer_class(log_dir=str(self.log_dir))

    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.update_freq == "batch":
            for name, value in logs.items():
                self.writer.add_scalar(f"batch/{name}", value, step)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for name, value in logs.items():
            self.writer.add_scalar(f"epoch_{name}", value, epoch)
        self.writer.flush()

    def on_train_end(self, logs: dict) -> None:
        self.writer.close()


class ProgressBar(Callback):
    """One tqdm bar over all optimizer steps of ``fit`` (``trainer.total_steps``, starting at a resumed run's
    step), showing the step's loss; each epoch's logs are written under it as a line."""

    rank_zero_only = True

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self.bar = None

    def on_train_begin(self, logs: dict) -> None:
        self.bar = tqdm(total=self.trainer.total_steps, initial=self.trainer.step, desc=self.desc, unit="step")

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['batch_loss']:.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        line = ", ".join(f"{name} {value:.4g}" for name, value in logs.items())
        self.bar.write(f"epoch {epoch + 1} (step {self.trainer.step}): {line}")

    def on_train_end(self, logs: dict) -> None:
        self.bar.close()


# Learning-rate schedules, per optimizer step -----------------------------------------------------------------
def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    r"""The multiplier of linear warm-up then cosine decay at ``step`` (from 0) of ``total``::

        m(s) = (s + 1) / W                                              s < W
        m(s) = r + (1 − r) · ½ (1 + cos(π · min(1, (s − W) / max(1, S − W))))   otherwise

    with ``W = warmup``, ``S = total`` and ``r = min_ratio`` (the floor the rate decays to, as a fraction).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def slanted_triangular(step: int, total: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    r"""ULMFiT's slanted triangular multiplier at ``step`` (from 0) of ``total`` (Howard & Ruder 2018, eq. 3)::

        cut = max(1, ⌊S · cut_frac⌋)
        p   = s / cut                                    s < cut
              1 − (s − cut) / (cut · (1 / cut_frac − 1))   otherwise
        m   = (1 + max(0, p) · (ratio − 1)) / ratio

    a linear rise from ``1 / ratio`` to ``1`` over the first ``cut_frac`` of the steps, then a linear fall back.
    """
    cut = max(1, math.floor(total * cut_frac))
    p = step / cut if step < cut else 1 - (step - cut) / (cut * (1 / cut_frac - 1))
    return (1 + max(0.0, p) * (ratio - 1)) / ratio


class StepSchedule(Callback):
    """Base of the per-step schedules: before step ``s`` every group's ``lr = initial_lr · multiplier(s, S)``,
    ``S`` being ``total_steps`` or, by default, the trainer's (epochs × steps per epoch, or ``max_steps``)."""

    needs_total = True

    def __init__(self, total_steps: int | None = None) -> None:
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise ValueError(
                f"{type(self).__name__} expected total_steps to be a positive integer or None, got {total_steps!r}"
            )
        self.total_steps = total_steps

    def multiplier(self, step: int, total: int) -> float:
        raise NotImplementedError

    def on_train_begin(self, logs: dict) -> None:
        self.total = self.total_steps or self.trainer.total_steps
        if self.total is None and self.needs_total:
            raise ValueError(
                f"{type(self).__name__} needs total_steps: the training batches have no len(), so the trainer "
                "cannot count the steps; pass total_steps"
            )
        for group in self.trainer.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def on_batch_begin(self, step: int, logs: dict) -> None:
        factor = self.multiplier(step, self.total)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


class LinearWarmup(StepSchedule):
    r"""Linear warm-up, then the base rate: ``m(s) = min(1, (s + 1) / W)`` with ``W = warmup_steps``."""

    needs_total = False

    def __init__(self, warmup_steps: int) -> None:
        super().__init__()
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"LinearWarmup expected warmup_steps to be a positive integer, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    def multiplier(self, step: int, total: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps)


class CosineSchedule(StepSchedule):
    r"""Linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` of the base rate at the last
    step: :func:`warmup_cosine`, ``m(s) = r + (1 − r) · ½ (1 + cos(π (s − W) / (S − W)))`` after warm-up."""

    def __init__(self, warmup_steps: int = 0, min_ratio: float = 0.0, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"CosineSchedule expected warmup_steps to be an integer >= 0, got {warmup_steps!r}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"CosineSchedule expected min_ratio in [0, 1], got {min_ratio!r}")
        self.warmup_steps, self.min_ratio = warmup_steps, min_ratio

    def multiplier(self, step: int, total: int) -> float:
        return warmup_cosine(step, total, self.warmup_steps, self.min_ratio)


class SlantedTriangular(StepSchedule):
    r"""ULMFiT's slanted triangular rate (:func:`slanted_triangular`): from ``lr / ratio`` up to ``lr`` over the
    first ``cut_frac`` of the steps, then linearly back down to ``lr / ratio``."""

    def __init__(self, cut_frac: float = 0.1, ratio: float = 32.0, total_steps: int | None = None) -> None:
        super().__init__(total_steps)
        if not 0.0 < cut_frac < 1.0 or ratio < 1.0:
            raise ValueError(f"SlantedTriangular expected 0 < cut_frac < 1 and ratio >= 1, got {cut_frac}, {ratio}")
        self.cut_frac, self.ratio = cut_frac, ratio

    def multiplier(self, step: int, total: int) -> float:
        return slanted_triangular(step, total, self.cut_frac, self.ratio)


class GradualUnfreezing(Callback):
    """ULMFiT's gradual unfreezing: at epoch ``e`` (from 0) only the top ``e // every + 1`` of ``layer_groups``
    (ordered bottom-up: embedding, …, head) train; the others get ``requires_grad=False``. Adds
    ``trainable_groups`` to the epoch logs."""

    def __init__(self, layer_groups: Sequence[Sequence[nn.Parameter]], every: int = 1) -> None:
        if not layer_groups:
            raise ValueError("GradualUnfreezing expected at least one layer group, got none")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradualUnfreezing expected every to be a positive integer, got {every!r}")
        self.layer_groups = [list(group) for group in layer_groups]
        self.every = every
        self.trainable = 0

    def apply(self, epoch: int) -> int:
        """Freeze and unfreeze for ``epoch``; returns how many groups (from the top) train."""
        self.trainable = min(len(self.layer_groups), epoch // self.every + 1)
        first = len(self.layer_groups) - self.trainable
        for k, group in enumerate(self.layer_groups):
            for parameter in group:
                parameter.requires_grad_(k >= first)
        return self.trainable

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.apply(epoch)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        logs["trainable_groups"] = self.trainable
