r"""The training loop shared by everything in grukit: plain code, one class.

Contract::

    trainer = Trainer(model, loss_fn, optimizer, metrics=None, clipnorm=1.0, callbacks=(), nan_policy="raise",
                      checkpoint_dir=None, config=None)
    history = trainer.fit(train_batches, epochs=10, val_batches=None, verbose=1)  # History, Keras-like
    trainer.evaluate(batches) -> dict[str, float]   # {"loss": ..., "accuracy": ...}
    trainer.predict(batches) -> Tensor              # outputs of every batch, concatenated on dim 0

Batches:
    ``train_batches`` is any iterable that can be iterated once per epoch (a list, a ``DataLoader``, an
    object whose ``__iter__`` reshuffles). A batch is ``(inputs, targets)`` or ``(inputs, targets, mask)``:
    ``inputs`` is a tensor or a tuple of tensors, called as ``model(*inputs)``; ``targets`` is whatever
    ``loss_fn`` takes; ``mask`` (bool) marks the positions that count (``None`` or absent: all).
    ``predict`` also takes batches that are ``(inputs,)``.

One step::

    outputs = model(*inputs)
    loss = loss_fn(outputs, targets, mask)          # a scalar
    loss.backward()
    clip_grad_norm_(model.parameters(), clipnorm)  # on by default: recurrent nets have exploding gradients
    guard: loss and gradient norm finite? else raise (naming epoch, step and the parameter), or skip the step
    optimizer.step()

Metrics are :class:`grukit.train.metrics.Metric` objects updated with ``(outputs, targets, mask)``; the
reported loss is the batch-size-weighted mean of batch losses. Callbacks (:mod:`grukit.train.callbacks`)
see ``on_train_begin / on_epoch_begin / on_batch_end / on_epoch_end / on_train_end`` and may set
``trainer.stop_training``.

Checkpointing: with ``checkpoint_dir``, the end of every epoch writes a checkpoint folder there through
:func:`grukit.train.save_checkpoint` (``config``, the model's ``state_dict``, the optimizer, and
``training_state`` = epoch, global step, history and RNG states). ``fit(..., resume=True)`` reloads it and
continues at the next epoch with the same RNG state, so an interrupted run ends where an uninterrupted
one would.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from grukit.train.callbacks import Callback, History
from grukit.train.checkpoint import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from grukit.train.losses import LossFn
from grukit.train.metrics import Metric

NAN_POLICIES = ("raise", "skip")


def nonfinite_report(model: nn.Module, loss: Tensor, grad_norm: Tensor, when: str) -> str | None:
    """``None`` when ``loss`` and the global gradient norm are finite; otherwise a message naming ``when`` and
    the first parameter whose gradient holds NaN or inf, for the guard of every training loop."""
    if torch.isfinite(loss) and torch.isfinite(grad_norm):
        return None
    bad = next(
        (name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()),
        "<none: the loss itself>",
    )
    what = "loss" if not torch.isfinite(loss) else "gradient"
    return f"non-finite {what} at {when}: first bad gradient in parameter {bad!r}"


def split_batch(batch: object) -> tuple[tuple, object, Tensor | None]:
    """``(inputs, targets[, mask])`` → ``(inputs as a tuple, targets, mask or None)``."""
    if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
        raise ValueError(
            f"a batch must be (inputs, targets) or (inputs, targets, mask), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    inputs = batch[0] if isinstance(batch[0], (tuple, list)) else (batch[0],)
    targets = batch[1] if len(batch) > 1 else None
    mask = batch[2] if len(batch) > 2 else None
    return tuple(inputs), targets, mask


def _batch_size(inputs: tuple) -> int:
    first = inputs[0]
    return int(first.shape[0]) if isinstance(first, Tensor) else len(first)


def _to_device(value, device: torch.device):
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _pad_cat(tensors: list[Tensor]) -> Tensor:
    """Concatenate on dim 0, zero-padding the other dims to the largest (variable-length batches)."""
    if all(t.shape[1:] == tensors[0].shape[1:] for t in tensors):
        return torch.cat(tensors, 0)
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pad: list[int] = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d - 1] - t.shape[d]]
        padded.append(nn.functional.pad(t, pad))
    return torch.cat(padded, 0)


class Trainer:
    """Fit, evaluate and predict for any ``nn.Module`` (see the module docstring for the contract).

    Args:
        model: called as ``model(*inputs)``.
        loss_fn: ``loss_fn(outputs, targets, mask) -> scalar tensor`` (see :mod:`grukit.train.losses`).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters; ``None`` for a trainer that only
            evaluates and predicts.
        metrics: :class:`~grukit.train.metrics.Metric` objects, reported under their ``name``.
        clipnorm: clip the global gradient norm to this value; ``None`` turns clipping off.
        callbacks: :class:`~grukit.train.callbacks.Callback` objects.
        nan_policy: on a non-finite loss or gradient, ``"raise"`` a ``FloatingPointError`` naming the epoch,
            step and first bad parameter, or ``"skip"`` the update with a warning.
        checkpoint_dir: write a resumable checkpoint folder here at the end of every epoch.
        config: the checkpoint's ``config.json`` (must name ``"architecture"``); defaults to the model's
            ``get_config()`` if it has one, else ``{"architecture": <class name>}``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer | None,
        metrics: Sequence[Metric] | None = None,
        clipnorm: float | None = 1.0,
        callbacks: Iterable[Callback] = (),
        nan_policy: str = "raise",
        checkpoint_dir: str | os.PathLike | None = None,
        config: dict | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer expected a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Trainer expected a callable loss_fn(outputs, targets, mask), got {loss_fn!r}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Trainer expected a torch.optim.Optimizer (or None), got {type(optimizer).__name__}")
        if clipnorm is not None and not (isinstance(clipnorm, (int, float)) and clipnorm > 0):
            raise ValueError(f"Trainer expected clipnorm to be a positive number or None, got {clipnorm!r}")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"Trainer expected nan_policy in {NAN_POLICIES}, got {nan_policy!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.metrics = list(metrics or [])
        self.clipnorm = clipnorm
        self.callbacks = list(callbacks)
        self.nan_policy = nan_policy
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.config = config
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (skipped steps included)
        self.skipped_steps = 0
        self.stop_training = False
        self.history = History()

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    # One step ----------------------------------------------------------------------------------------------

    def train_step(self, batch: object) -> tuple[float, int]:
        """One optimizer step on ``batch``; returns ``(loss, batch size)``. Updates the metrics."""
        inputs, targets, mask = split_batch(_to_device(batch, self.device))
        outputs = self.model(*inputs)
        loss = self.loss_fn(outputs, targets, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if self.clipnorm is not None:
            norm = nn.utils.clip_grad_norm_(parameters, self.clipnorm)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in parameters])
        self.step += 1
        where = nonfinite_report(self.model, loss, norm, f"epoch {self.epoch + 1}, step {self.step}")
        if where is not None:
            if self.nan_policy == "raise":
                raise FloatingPointError(where + " (lower the learning rate, or pass nan_policy='skip')")
            warnings.warn(where + "; update skipped", RuntimeWarning, stacklevel=2)
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            return float("nan"), _batch_size(inputs)
        self.optimizer.step()
        for metric in self.metrics:
            metric.update(outputs, targets, mask)
        return float(loss.detach()), _batch_size(inputs)

    # Epochs ------------------------------------------------------------------------------------------------
    def _logs(self, loss_total: float, samples: int, prefix: str = "") -> dict[str, float]:
        logs = {f"{prefix}loss": loss_total / samples if samples else float("nan")}
        for metric in self.metrics:
            logs[f"{prefix}{metric.name}"] = metric.result()
        return logs

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def fit(
        self,
        train_batches: Iterable,
        epochs: int = 1,
        val_batches: Iterable | None = None,
        verbose: int = 1,
        resume: bool = False,
    ) -> History:
        """Train for ``epochs`` epochs in total (a resumed run counts the epochs already done).

        ``verbose``: 0 silent, 1 a tqdm bar per epoch with loss and metrics, 2 one line per epoch.
        Returns the :class:`History`; ``history.history`` maps ``loss``, each metric, and ``val_*`` to
        one value per epoch.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"fit expected epochs to be a positive integer, got {epochs!r}")
        if self.optimizer is None:
            raise ValueError("this Trainer has no optimizer, so it can evaluate and predict but not fit")
        if resume:
            self.resume()
        self.stop_training = False
        for callback in self.callbacks:
            callback.set_trainer(self)
        self._call("on_train_begin", {})
        while self.epoch < epochs and not self.stop_training:
            self.model.train()
            for metric in self.metrics:
                metric.reset()
            self._call("on_epoch_begin", self.epoch, {})
            loss_total, samples, batches = 0.0, 0, 0
            bar = tqdm(
                train_batches,
                desc=f"Epoch {self.epoch + 1}/{epochs}",
                disable=verbose != 1,
                leave=True,
                dynamic_ncols=True,
            )
            for batch in bar:
                loss, size = self.train_step(batch)
                if not math.isnan(loss):
                    loss_total += loss * size
                    samples += size
                batches += 1
                logs = self._logs(loss_total, samples)
                self._call("on_batch_end", self.step, logs)
                if verbose == 1:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            if batches == 0:
                raise ValueError("fit got no training batches: the training data is empty")
            logs = self._logs(loss_total, samples)
            if val_batches is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(val_batches).items()})
            self.epoch += 1
            self._call("on_epoch_end", self.epoch - 1, logs)  # may add to logs (learning_rate), as in Keras
            self.history.append(self.epoch, logs)
            if verbose:
                line = " - ".join(f"{k}: {v:.4f}" if abs(v) > 1e-3 else f"{k}: {v:.4e}" for k, v in logs.items())
                (bar.write if verbose == 1 else print)(f"Epoch {self.epoch}/{epochs} - {line}")
            if self.checkpoint_dir is not None:
                self.save_checkpoint(self.checkpoint_dir)
        self._call("on_train_end", {})
        return self.history

    @torch.no_grad()
    def evaluate(self, batches: Iterable) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode: ``{"loss": ..., <metric name>: ...}``."""
        was_training = self.model.training
        self.model.eval()
        for metric in self.metrics:
            metric.reset()
        loss_total, samples = 0.0, 0
        try:
            for batch in batches:
                inputs, targets, mask = split_batch(_to_device(batch, self.device))
                outputs = self.model(*inputs)
                size = _batch_size(inputs)
                loss_total += float(self.loss_fn(outputs, targets, mask)) * size
                samples += size
                for metric in self.metrics:
                    metric.update(outputs, targets, mask)
        finally:
            self.model.train(was_training)
        if samples == 0:
            raise ValueError("evaluate got no batches: the data is empty")
        return self._logs(loss_total, samples)

    @torch.no_grad()
    def predict(self, batches: Iterable) -> Tensor | tuple[Tensor, ...]:
        """The model's outputs over ``batches`` in eval mode, concatenated on dim 0 (other dims zero-padded
        to the largest when batches differ in length); a tuple when the model returns one."""
        was_training = self.model.training
        self.model.eval()
        collected: list = []
        try:
            for batch in batches:
                inputs, _, _ = split_batch(_to_device(batch, self.device))
                collected.append(self.model(*inputs))
        finally:
            self.model.train(was_training)
        if not collected:
            raise ValueError("predict got no batches: the data is empty")
        if isinstance(collected[0], tuple):
            return tuple(_pad_cat([out[i] for out in collected]) for i in range(len(collected[0])))
        return _pad_cat(collected)

    # Checkpoints -------------------------------------------------------------------------------------------
    def _config(self) -> dict:
        if self.config is not None:
            return self.config
        if hasattr(self.model, "get_config"):
            return self.model.get_config()
        return {"architecture": type(self.model).__name__}

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a resumable checkpoint folder (weights, optimizer, epoch, step, history, RNG states)."""
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "history": self.history.history,
            "history_epochs": self.history.epoch,
        }
        return save_checkpoint(path, self._config(), self.model.state_dict(), self.optimizer, state)

    def resume(self, path: str | os.PathLike | None = None) -> None:
        """Load the checkpoint at ``path`` (default ``checkpoint_dir``) into the model, optimizer, counters
        and RNGs. Nothing to resume from (no folder yet) starts from scratch."""
        path = Path(path) if path is not None else self.checkpoint_dir
        if path is None:
            raise ValueError("resume needs a path, or a Trainer built with checkpoint_dir")
        if not checkpoint_exists(path):
            return
        checkpoint = load_checkpoint(path, architecture=self._config()["architecture"])
        state = checkpoint.training_state
        if "epoch" not in state or "step" not in state:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds no training state (epoch, step) to resume from: it was saved as "
                "a model, not by a Trainer"
            )
        try:
            self.model.load_state_dict(checkpoint.weights)
        except RuntimeError as error:  # torch lists every missing, unexpected or mis-shaped weight
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this {type(self.model).__name__}: {error}"
            ) from error
        if checkpoint.optimizer_state is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.history = History(state.get("history", {}), state.get("history_epochs", []))
        if "rng" in state:
            set_rng_state(state["rng"])
