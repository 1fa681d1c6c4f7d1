r"""The training loop shared by everything in grukit: plain code, one class.

Contract::

    trainer = Trainer(model, loss_fn, optimizer, metrics=None, clipnorm=1.0, callbacks=(), nan_policy="raise",
                      checkpoint_dir=None, config=None, checkpoint_every=None, accumulate=1, stateful=False,
                      extra_files=None, precision=None)
    history = trainer.fit(train_batches, epochs=10, val_batches=None, verbose=1, resume=False, max_steps=None)
    trainer.evaluate(batches) -> dict[str, float]   # {"loss": ..., "accuracy": ...}
    trainer.predict(batches) -> Tensor              # outputs of every batch, concatenated on dim 0

Batches:
    ``train_batches`` is any iterable that can be iterated once per epoch (a list, a ``DataLoader``, an
    object whose ``__iter__`` reshuffles). A batch is ``(inputs, targets)`` or ``(inputs, targets, mask)``:
    ``inputs`` is a tensor or a tuple of tensors, called as ``model(*inputs)``; ``targets`` is whatever
    ``loss_fn`` takes; ``mask`` (bool) marks the positions that count (``None`` or absent: all).
    ``predict`` also takes batches that are ``(inputs,)``. An iterable that draws its order from its own
    generator rather than the global ones offers ``state_dict()`` / ``load_state_dict(state)`` (JSON), which
    the trainer records at every epoch's start for an exact resume.

One optimizer step over the ``k = accumulate`` batches ``b_1 … b_k`` of sizes ``n_i`` (``N = Σ n_i``)::

    for each b_i:  outputs = model(*inputs)            stateful: outputs, state = model(*inputs, state)
                   L_i = loss_fn(outputs, targets, mask)
                   ∇ += ∇(n_i / N · L_i)               so a mean loss gives the gradient of one N-sized batch
    clip_grad_norm_(∇, clipnorm)                       on by default: recurrent nets have exploding gradients
    guard: Σ n_i / N · L_i and ‖∇‖ finite? else raise (naming epoch, step and the parameter), or skip the step
    optimizer.step()

Truncated BPTT (``stateful=True``): the model is called with the state its previous call returned, detached
from the graph, and returns ``(outputs, state)``; ``loss_fn`` sees ``outputs`` only. The state starts as
``None`` at every epoch and is carried across the batches of the epoch (and in ``evaluate`` / ``predict``
across their batches).

Metrics are :class:`grukit.train.metrics.Metric` objects updated with ``(outputs, targets, mask)``; the
reported loss is the batch-size-weighted mean of batch losses. Callbacks (:mod:`grukit.train.callbacks`)
see ``on_train_begin / on_epoch_begin / on_batch_begin / on_batch_end / on_epoch_end / on_train_end`` (the
batch hooks once per optimizer step, so learning-rate schedules act per step) and may set
``trainer.stop_training``.

Mixed precision: ``precision="bf16"`` runs the forward pass and the loss under bfloat16 autocast (CPU and
CUDA); the weights, their gradients, the optimizer state and the carried recurrent state stay float32.
``precision=None`` takes the ``GRUKIT_PRECISION`` environment variable (``"32"`` when unset).

Data parallel: launched by ``torchrun``, the trainer joins the process group, wraps the model in
``DistributedDataParallel`` and gives each rank its share of every optimizer step (see
:mod:`grukit.train.distributed`): ``accumulate`` batches per rank, so a step's global batch is
``accumulate · world_size`` batches, and the weights equal a single process's with ``accumulate · world_size``.
Losses and metrics are reduced over the ranks, so every rank logs the same numbers; callbacks marked
``rank_zero_only`` (the loggers, progress bars, model savers) and checkpoints run on rank 0 only, with a
barrier around each save. Every rank resumes from the same checkpoint, which holds the global state (the
carried state of all streams), so a run can resume with another number of processes.

Checkpointing: with ``checkpoint_dir``, the end of every epoch, every ``checkpoint_every`` optimizer steps
and the step that reaches ``max_steps`` write a checkpoint folder there through
:func:`grukit.train.save_checkpoint` (``config``, the weights, the optimizer, ``extra_files``, and
``training_state`` = epoch, global step, history and RNG states; inside an epoch also the position: how many
batches are done, the RNG states and batch-iterable state at the epoch's start, the running loss and metric
sums and the carried state). ``fit(..., resume=True)`` reloads it: it replays the epoch's start (same RNG,
same batch order), skips the batches already done, restores the RNG states of the moment of the checkpoint
and goes on, so an interrupted run ends bit for bit where an uninterrupted one would. Resuming refuses a
checkpoint whose ``config.json`` differs from this model's, naming the keys that differ.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn
from tqdm.auto import tqdm

from grukit.text.batching import TBPTTBatches
from grukit.train import distributed
from grukit.train.callbacks import Callback, History
from grukit.train.checkpoint import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from grukit.train.losses import LossFn
from grukit.train.memory import estimate_memory
from grukit.train.metrics import Metric

NAN_POLICIES = ("raise", "skip")
CARRIED_STATE = "carried_state.safetensors"


def nonfinite_report(model: nn.Module, loss: Tensor, grad_norm: Tensor, when: str) -> str | None:
    """``None`` when ``loss`` and the global gradient norm are finite; otherwise a message naming ``when`` and
    the first parameter whose gradient holds NaN or inf, for the training guard."""
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


def _detach(state):
    """Cut the graph behind a carried state (a tensor, or a tuple / list of them); the values carry over, in
    float32 when autocast computed them in lower precision."""
    if isinstance(state, Tensor):
        state = state.detach()
        return state.float() if state.dtype in (torch.bfloat16, torch.float16) else state
    return type(state)(_detach(item) for item in state)


def _state_files(state) -> tuple[str, bytes]:
    """A carried state as ``(structure, safetensors bytes)``: ``"none"``, ``"tensor"`` or ``"tuple"``."""
    if state is None:
        return "none", save_safetensors_bytes({})
    if isinstance(state, Tensor):
        return "tensor", save_safetensors_bytes({"0": state.detach().contiguous().cpu()})
    return "tuple", save_safetensors_bytes({str(i): s.detach().contiguous().cpu() for i, s in enumerate(state)})


def _state_from_files(structure: str, data: bytes | None):
    tensors = load_safetensors_bytes(data) if data is not None else {}
    if structure == "none":
        return None
    if structure == "tensor":
        return tensors["0"]
    return tuple(tensors[str(i)] for i in range(len(tensors)))


def _windows(batches: Iterable, size: int) -> Iterator[list]:
    """The batches in lists of ``size`` (the last one may be shorter): the batches of one optimizer step."""
    window: list = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _aliases(state: dict[str, Tensor]) -> dict[str, str]:
    """``name → earlier name`` for entries of a state dict that are the same tensor (tied weights)."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def _config_differences(saved: dict, current: dict) -> list[str]:
    """The keys whose values differ between two configs, compared as JSON (tuples and lists alike)."""
    current = json.loads(json.dumps(current))
    missing = object()
    return sorted(k for k in set(saved) | set(current) if saved.get(k, missing) != current.get(k, missing))


def _float32(value):
    """Outputs computed under autocast, back in float32 (tensors, or tuples of them)."""
    if isinstance(value, Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float32(item) for item in value)
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


def _positive_int_or_none(owner: str, name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{owner} expected {name} to be a positive integer or None, got {value!r}")


class Trainer:
    """Fit, evaluate and predict for any ``nn.Module`` (see the module docstring for the contract).

    Args:
        model: called as ``model(*inputs)`` (``model(*inputs, state)`` when ``stateful``).
        loss_fn: ``loss_fn(outputs, targets, mask) -> scalar tensor`` (see :mod:`grukit.train.losses`).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters, with one or more parameter groups
            (each its own learning rate); ``None`` for a trainer that only evaluates and predicts.
        metrics: :class:`~grukit.train.metrics.Metric` objects, reported under their ``name``.
        clipnorm: clip the global gradient norm to this value; ``None`` turns clipping off.
        callbacks: :class:`~grukit.train.callbacks.Callback` objects.
        nan_policy: on a non-finite loss or gradient, ``"raise"`` a ``FloatingPointError`` naming the epoch,
            step and first bad parameter, or ``"skip"`` the update with a warning.
        checkpoint_dir: write a resumable checkpoint folder here at the end of every epoch (and see
            ``checkpoint_every``).
        config: the checkpoint's ``config.json`` (must name ``"architecture"``); defaults to the model's
            ``get_config()`` if it has one, else ``{"architecture": <class name>}``.
        checkpoint_every: also write the checkpoint every this many optimizer steps, mid-epoch included.
        accumulate: batches per optimizer step (gradient accumulation), weighted by their sizes.
        stateful: truncated BPTT: carry the model's returned state from one batch to the next.
        extra_files: more files for every checkpoint folder (name → bytes), e.g. a tokenizer's.
        precision: ``"32"`` or ``"bf16"`` (autocast); ``None`` reads ``GRUKIT_PRECISION``, default ``"32"``.
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
        checkpoint_every: int | None = None,
        accumulate: int = 1,
        stateful: bool = False,
        extra_files: dict[str, bytes] | None = None,
        precision: str | None = None,
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
        _positive_int_or_none("Trainer", "checkpoint_every", checkpoint_every)
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"Trainer expected accumulate to be a positive integer, got {accumulate!r}")
        if extra_files and CARRIED_STATE in extra_files:
            raise ValueError(f"Trainer's extra_files may not use the name {CARRIED_STATE!r}: the trainer writes it")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.metrics = list(metrics or [])
        self.clipnorm = clipnorm
        self.callbacks = list(callbacks)
        self.nan_policy = nan_policy
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.config = config
        self.checkpoint_every = checkpoint_every
        self.accumulate = accumulate
        self.stateful = bool(stateful)
        self.extra_files = dict(extra_files or {})
        self.precision = distributed.resolve_precision(precision)
        self.world = distributed.World()  # set from torchrun's environment by fit and resume
        self._parallel: nn.Module | None = None  # the DistributedDataParallel wrapper of the model, when distributed
        self._trainable: tuple[bool, ...] = ()  # which parameters required gradients when the wrapper was built
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken (skipped steps included)
        self.skipped_steps = 0
        self.batch_index = 0  # batches of the current epoch done
        self.total_steps: int | None = None  # the optimizer steps this fit() will have taken in all, when known
        self.stop_training = False
        self.history = History()
        self._carried = None  # the detached state of a stateful model
        self._epoch_start: dict = {}
        self._epoch_sums: dict = {}
        self._resume_position: dict | None = None

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    # One step ----------------------------------------------------------------------------------------------
    def _forward(self, inputs: tuple, state=None, model: nn.Module | None = None) -> tuple[object, object]:
        """``(outputs, new state)`` of ``model`` (default: the trainer's); the state is ``None`` for a model that
        is not stateful."""
        model = model or self.model
        if self.stateful:
            outputs, new_state = model(*inputs, state)
            return outputs, _detach(new_state)
        return model(*inputs), None

    def _join(self) -> None:
        """Join the torchrun process group when launched under it (a no-op for one process)."""
        self.world = distributed.init_distributed(self.device)

    def _wrap(self) -> nn.Module:
        """The module the training steps call: the model, or its ``DistributedDataParallel`` wrapper."""
        if not self.world.distributed:
            return self.model
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if self._parallel is None or trainable != self._trainable:
            from torch.nn.parallel import DistributedDataParallel

            # DDP reduces the parameters that train when it is built: built again when unfreezing changes them
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._parallel = DistributedDataParallel(self.model, device_ids=device_ids)
            self._trainable = trainable
        return self._parallel

    def train_step(self, batches: Sequence, stand_in: bool = False) -> tuple[float, int]:
        """One optimizer step on ``batches`` (one batch, or the batches accumulated into the step); returns
        ``(loss, samples)``, the loss as the size-weighted mean over the batches (over every rank's batches
        when distributed, ``samples`` counting them all). ``stand_in``: this rank has no batch in the step and
        passes ``batches`` with zero weight, only to take part in the gradient all-reduce. Updates the metrics."""
        moved = [split_batch(_to_device(batch, self.device)) for batch in batches]
        sizes = [0 if stand_in else _batch_size(inputs) for inputs, _, _ in moved]
        world = self.world
        samples = int(distributed.all_reduce_sum(torch.tensor([float(sum(sizes))]), world)[0])
        model = self._wrap()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=self.device)
        seen = []
        for index, ((inputs, targets, mask), size) in enumerate(zip(moved, sizes)):
            last = index == len(moved) - 1  # DDP all-reduces the gradients in the last backward pass only
            sync = contextlib.nullcontext() if last or not world.distributed else model.no_sync()
            # grad mode on whatever the caller's is: a fit inside torch.no_grad(), or after an interrupt that left
            # grad mode off (it can land inside torch's own no_grad blocks before they restore it), still trains
            with sync, torch.enable_grad():
                with distributed.autocast(self.precision, self.device):
                    outputs, carried = self._forward(inputs, self._carried, model)
                    loss = self.loss_fn(outputs, targets, mask) * (size / samples)
                (loss * world.size).backward()  # DDP divides by the world size
            if not stand_in:
                self._carried = carried
                total_loss = total_loss + loss.detach()
                seen.append((outputs, targets, mask))
        total_loss = distributed.all_reduce_sum(total_loss, world)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if self.clipnorm is not None:
            norm = nn.utils.clip_grad_norm_(parameters, self.clipnorm)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in parameters])
        self.step += 1
        where = nonfinite_report(self.model, total_loss, norm, f"epoch {self.epoch + 1}, step {self.step}")
        if where is not None:
            if self.nan_policy == "raise":
                raise FloatingPointError(where + " (lower the learning rate, or pass nan_policy='skip')")
            warnings.warn(where + "; update skipped", RuntimeWarning, stacklevel=2)
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            return float("nan"), samples
        self.optimizer.step()
        for outputs, targets, mask in seen:
            for metric in self.metrics:
                metric.update(outputs, targets, mask)
        return float(total_loss), samples

    # Epochs ------------------------------------------------------------------------------------------------
    def _metric_sums(self) -> list[list[float]]:
        """``[total, count]`` of each metric, summed over the ranks when distributed (a collective)."""
        local = torch.tensor([[metric.total, float(metric.count)] for metric in self.metrics], dtype=torch.float64)
        if not self.metrics or not self.world.distributed:
            return local.tolist()
        return distributed.all_reduce_sum(local, self.world).tolist()

    def _logs(self, loss_total: float, samples: int, prefix: str = "", reduce: bool = False) -> dict[str, float]:
        """The loss and the metrics; ``reduce``: the metrics over every rank's batches (all ranks must call)."""
        logs = {f"{prefix}loss": loss_total / samples if samples else float("nan")}
        if reduce and self.world.distributed:
            for metric, (total, count) in zip(self.metrics, self._metric_sums()):
                logs[f"{prefix}{metric.name}"] = total / count if count else float("nan")
            return logs
        for metric in self.metrics:
            logs[f"{prefix}{metric.name}"] = metric.result()
        return logs

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            if self.world.main or not getattr(callback, "rank_zero_only", False):
                getattr(callback, hook)(*args)

    def _shard(self, train_batches: Iterable) -> tuple[Iterable, int, bool]:
        """``(the batches this process iterates, batches per optimizer step, interleaved)``: under DDP a TBPTT
        stream becomes this rank's contiguous streams; other batches are iterated whole and dealt out per step
        (``interleaved``). One process: the batches as they are."""
        if not self.world.distributed:
            return train_batches, self.accumulate, False
        if isinstance(train_batches, TBPTTBatches):
            return distributed.shard_token_stream(train_batches, self.world), self.accumulate, False
        if self.stateful:
            raise ValueError(
                "stateful training under several processes needs TBPTTBatches (contiguous token streams, split by "
                f"stream), got {type(train_batches).__name__}"
            )
        return train_batches, self.accumulate * self.world.size, True

    def _print_memory(self, train_batches: Iterable) -> None:
        """Print :func:`grukit.train.memory.estimate_memory` for the first batch (rank 0). Peeking at the batch
        leaves the RNGs and the batches' own state as they were, so the run is the same with or without it."""
        if not self.world.main:
            return
        before = rng_state()
        own_state = getattr(train_batches, "state_dict", None)
        own = own_state() if callable(own_state) else None
        first = next(iter(train_batches), None)
        set_rng_state(before)
        if own is not None:
            train_batches.load_state_dict(own)
        if first is None:
            return
        inputs, targets, mask = split_batch(_to_device(first, self.device))
        if not isinstance(inputs[0], Tensor):
            return
        estimate = estimate_memory(
            self.model, self.optimizer, inputs, targets, mask, self.loss_fn, self.stateful, self.precision
        )
        print(estimate.line())

    def fit(
        self,
        train_batches: Iterable,
        epochs: int = 1,
        val_batches: Iterable | None = None,
        verbose: int = 1,
        resume: bool = False,
        max_steps: int | None = None,
    ) -> History:
        """Train for ``epochs`` epochs in total (a resumed run counts the epochs already done), or until the
        ``max_steps``-th optimizer step in all, whichever comes first.

        ``verbose``: 0 silent, 1 a tqdm bar per epoch with loss and metrics, 2 one line per epoch.
        Returns the :class:`History`; ``history.history`` maps ``loss``, each metric, and ``val_*`` to
        one value per epoch (an epoch cut short by ``max_steps`` included).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"fit expected epochs to be a positive integer, got {epochs!r}")
        _positive_int_or_none("fit", "max_steps", max_steps)
        if self.optimizer is None:
            raise ValueError("this Trainer has no optimizer, so it can evaluate and predict but not fit")
        self._join()
        if resume:
            self.resume()
        data, per_step, interleaved = self._shard(train_batches)
        if verbose and self.step == 0:
            self._print_memory(data)
        self.stop_training = False
        per_epoch = -(-len(data) // per_step) if hasattr(data, "__len__") else None
        self.total_steps = per_epoch * epochs if per_epoch is not None else None
        if max_steps is not None:
            self.total_steps = max_steps if self.total_steps is None else min(max_steps, self.total_steps)
        for callback in self.callbacks:
            callback.set_trainer(self)
        self._call("on_train_begin", {})
        while self.epoch < epochs and not self.stop_training and (max_steps is None or self.step < max_steps):
            self._fit_epoch(data, per_step, interleaved, epochs, val_batches, verbose, max_steps)
        self._call("on_train_end", {})
        return self.history

    def _start_epoch(self, train_batches: Iterable) -> Iterator:
        """Reset (or, resuming mid-epoch, restore) the epoch's sums, RNG, batch order and carried state, and
        return the iterator over the batches still to do."""
        position, self._resume_position = self._resume_position, None
        for metric in self.metrics:
            metric.reset()
        self._epoch_sums = {"loss_total": 0.0, "samples": 0}
        self._call("on_epoch_begin", self.epoch, {})
        if position is None:
            own_state = getattr(train_batches, "state_dict", None)
            self._epoch_start = {"rng": rng_state(), "batches": own_state() if callable(own_state) else None}
            if self.world.distributed:  # every rank draws the same batch order: rank 0's
                self._epoch_start = distributed.broadcast_object(self._epoch_start, self.world)
                set_rng_state(self._epoch_start["rng"])
                if self._epoch_start["batches"] is not None:
                    train_batches.load_state_dict(self._epoch_start["batches"])
        else:
            self._epoch_start = position["epoch_start"]
            set_rng_state(self._epoch_start["rng"])
            if self._epoch_start["batches"] is not None:
                train_batches.load_state_dict(self._epoch_start["batches"])
        iterator = iter(train_batches)
        self.batch_index = 0
        self._carried = None
        if position is not None:
            for done in range(position["batch_index"]):
                if next(iterator, None) is None:
                    raise CheckpointError(
                        f"the checkpoint was written after batch {position['batch_index']} of epoch "
                        f"{self.epoch + 1}, but the training data now gives only {done} batches per epoch: resume "
                        "with the data the run started with"
                    )
            self.batch_index = position["batch_index"]
            self._epoch_sums = {"loss_total": position["loss_total"], "samples": position["samples"]}
            for metric, (total, count) in zip(self.metrics, position["metrics"]):  # global sums: counted once
                metric.total, metric.count = (total, count) if self.world.main else (0.0, 0)
            self._carried = _to_device(distributed.scatter_state(position["carried_state"], self.world), self.device)
            set_rng_state(position["rng"])
        return iterator

    def _fit_epoch(
        self,
        train_batches: Iterable,
        per_step: int,
        interleaved: bool,
        epochs: int,
        val_batches: Iterable | None,
        verbose: int,
        max_steps: int | None,
    ) -> None:
        self.model.train()
        iterator = self._start_epoch(train_batches)
        length = len(train_batches) if hasattr(train_batches, "__len__") else None
        bar = tqdm(
            iterator,
            desc=f"Epoch {self.epoch + 1}/{epochs}",
            total=length,
            initial=self.batch_index,
            disable=verbose != 1 or not self.world.main,
            leave=True,
            dynamic_ncols=True,
        )
        sums = self._epoch_sums
        stopped = False
        for window in _windows(bar, per_step):
            self._call("on_batch_begin", self.step, {})
            share, stand_in = distributed.rank_share(window, self.world) if interleaved else (window, False)
            loss, size = self.train_step(share, stand_in)
            self.batch_index += len(window)
            if not math.isnan(loss):
                sums["loss_total"] += loss * size
                sums["samples"] += size
            logs = self._logs(sums["loss_total"], sums["samples"], reduce=True)
            logs["batch_loss"] = loss
            logs["learning_rate"] = self.optimizer.param_groups[0]["lr"]
            self._call("on_batch_end", self.step, logs)
            if verbose == 1:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            stopped = max_steps is not None and self.step >= max_steps
            epoch_done = length is not None and self.batch_index >= length
            due = stopped or (self.checkpoint_every is not None and self.step % self.checkpoint_every == 0)
            if self.checkpoint_dir is not None and due and not epoch_done:
                self._checkpoint(mid_epoch=True)
            if stopped:
                break
        if self.batch_index == 0:
            raise ValueError("fit got no training batches: the training data is empty")
        logs = self._logs(sums["loss_total"], sums["samples"], reduce=True)
        if val_batches is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(val_batches).items()})
        complete = not stopped or (length is not None and self.batch_index >= length)
        epoch = self.epoch
        self.epoch += int(complete)
        self._call("on_epoch_end", epoch, logs)  # may add to logs (learning_rate), as in Keras
        self.history.append(epoch + 1, logs)
        if verbose and self.world.main:
            line = " - ".join(f"{k}: {v:.4f}" if abs(v) > 1e-3 else f"{k}: {v:.4e}" for k, v in logs.items())
            (bar.write if verbose == 1 else print)(f"Epoch {epoch + 1}/{epochs} - {line}")
        bar.close()
        if self.checkpoint_dir is not None and complete:
            self._checkpoint(mid_epoch=False)

    @torch.no_grad()
    def evaluate(self, batches: Iterable) -> dict[str, float]:
        """Loss and metrics over ``batches`` in eval mode: ``{"loss": ..., <metric name>: ...}``."""
        was_training = self.model.training
        self.model.eval()
        for metric in self.metrics:
            metric.reset()
        loss_total, samples, state = 0.0, 0, None
        try:
            for batch in batches:
                inputs, targets, mask = split_batch(_to_device(batch, self.device))
                with distributed.autocast(self.precision, self.device):
                    outputs, state = self._forward(inputs, state)
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
        state = None
        try:
            for batch in batches:
                inputs, _, _ = split_batch(_to_device(batch, self.device))
                with distributed.autocast(self.precision, self.device):
                    outputs, state = self._forward(inputs, state)
                collected.append(_float32(outputs))
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

    def _checkpoint(self, mid_epoch: bool) -> None:
        """The trainer's own checkpoint in ``checkpoint_dir``: the metric sums and carried state of every rank
        gathered, written by rank 0 between two barriers (a no-op barrier for one process)."""
        metric_sums = self._metric_sums()
        carried = distributed.gather_state(self._carried, self.world)
        distributed.barrier(self.world)
        if self.world.main:
            self._save(self.checkpoint_dir, mid_epoch, metric_sums, carried)
        distributed.barrier(self.world)

    def save_checkpoint(self, path: str | os.PathLike, mid_epoch: bool = False) -> Path:
        """Write a resumable checkpoint folder (weights, optimizer, epoch, step, history, RNG states; with
        ``mid_epoch`` the position inside the current epoch too). Tied weights are written once. Under DDP
        this process's own metric sums and carried state are written: the trainer's own checkpoints gather
        every rank's."""
        return self._save(path, mid_epoch, [[m.total, m.count] for m in self.metrics], self._carried)

    def _save(self, path: str | os.PathLike, mid_epoch: bool, metric_sums: list, carried) -> Path:
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "history": self.history.history,
            "history_epochs": self.history.epoch,
        }
        extra = dict(self.extra_files)
        if mid_epoch:
            structure, extra[CARRIED_STATE] = _state_files(carried)
            state["position"] = {
                "batch_index": self.batch_index,
                "epoch_start": self._epoch_start,
                "loss_total": self._epoch_sums["loss_total"],
                "samples": self._epoch_sums["samples"],
                "metrics": [[total, int(count)] for total, count in metric_sums],
                "carried": structure,
            }
        weights = self.model.state_dict()
        for name in _aliases(weights):
            del weights[name]
        return save_checkpoint(path, self._config(), weights, self.optimizer, state, extra)

    def resume(self, path: str | os.PathLike | None = None) -> None:
        """Load the checkpoint at ``path`` (default ``checkpoint_dir``) into the model, optimizer, counters
        and RNGs; one written mid-epoch makes the next ``fit`` continue from its batch. Nothing to resume
        from (no folder yet) starts from scratch. Under DDP every rank loads rank 0's ``path``."""
        path = Path(path) if path is not None else self.checkpoint_dir
        if path is None:
            raise ValueError("resume needs a path, or a Trainer built with checkpoint_dir")
        self._join()
        path = Path(distributed.broadcast_object(str(path), self.world))  # every rank resumes from rank 0's
        if not checkpoint_exists(path):
            return
        config = self._config()
        checkpoint = load_checkpoint(path, architecture=config["architecture"])
        state = checkpoint.training_state
        if "epoch" not in state or "step" not in state:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds no training state (epoch, step) to resume from: it was saved as "
                "a model, not by a Trainer"
            )
        differing = _config_differences(checkpoint.config, config)
        if differing:
            current = json.loads(json.dumps(config))
            details = "; ".join(
                f"{k}: checkpoint {checkpoint.config.get(k, '<absent>')!r}, this model {current.get(k, '<absent>')!r}"
                for k in differing
            )
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written for another configuration ({details}); build the model "
                "from the checkpoint's config.json, or start a new run in another folder"
            )
        weights = dict(checkpoint.weights)
        for name, original in _aliases(self.model.state_dict()).items():
            if name not in weights and original in weights:
                weights[name] = weights[original]
        try:
            self.model.load_state_dict(weights)
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
        self._resume_position = None
        if "position" in state:
            position = state["position"]
            carried = _state_from_files(position["carried"], checkpoint.extra_files.get(CARRIED_STATE))
            self._resume_position = {**position, "rng": state["rng"], "carried_state": carried}
