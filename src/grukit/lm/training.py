r"""Language-model pretraining with truncated BPTT on the shared :class:`grukit.train.Trainer`: the hidden
state is carried from one batch to the next (detached), so the model learns dependencies longer than one
window at the cost of one window's graph. This module holds only what is the language model's: the data
(:class:`~grukit.text.batching.TBPTTBatches`), the loss, the schedule and the callbacks that validate and save.

Per step ``s`` with batch ``(x, y)`` ``(B, T)``, run by the Trainer with ``stateful=True``::

    logits, state = model(x, state)               (B, T, V)
    loss = mean CE(logits, y)                      nats per token
    clip ‖∇‖ to ``clip``; AdamW step at lr(s)      lr: linear warm-up, then cosine down to lr / 10
    state = detach(state)

``accumulate`` windows make one optimizer step; ``precision="bf16"`` runs the forward pass under bfloat16
autocast (weights, optimizer and carried state in float32). Launched by ``torchrun``, the Trainer splits the
``B`` streams among the processes (``B / W`` contiguous streams each) and the step's gradient is the
single-process one; rank 0 validates, logs and saves.

Validation reports the mean loss per token, as bits per character (``loss / ln 2``, char tokenizer) or
perplexity (``exp(loss)``, BPE).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grukit.lm.model import GRULanguageModel, State, config_from_dict
from grukit.text.batching import TBPTTBatches
from grukit.train.callbacks import Callback, CosineSchedule, CSVLogger, ProgressBar, TensorBoard
from grukit.train.checkpoint import checkpoint_exists, seed_everything
from grukit.train.distributed import PRECISIONS, resolve_precision, world_from_env
from grukit.train.loop import Trainer
from grukit.train.memory import estimate_memory

CHECKPOINT = "checkpoint"
MODEL = "model"
TRAIN_LOG = "train_log.csv"
VALID_LOG = "valid_log.csv"
MIN_LR_RATIO = 0.1  # the cosine ends at lr / 10
STEP_COLUMNS = {"batch_loss": "loss", "learning_rate": "lr"}  # train_log.csv: step, epoch, loss, lr


@dataclass
class LMTrainingConfig:
    """How :func:`train_language_model` trains.

    Args:
        batch_size: ``B`` contiguous streams.
        seq_len: ``T`` steps per truncated-BPTT window.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        clip: gradient-norm clip.
        epochs: passes over the training stream.
        steps: stop after this many optimizer steps in all (``None``: after ``epochs``).
        warmup_steps: linear warm-up length.
        seed: seeds Python, numpy and torch before the model's first step.
        checkpoint_every: write the resumable checkpoint every this many steps (and at every epoch's end).
        valid_batch_size: streams for validation.
        accumulate: windows per optimizer step (gradient accumulation): ``accumulate · batch_size · seq_len``
            tokens per step.
        precision: ``"32"``, or ``"bf16"`` for bfloat16 autocast; ``None`` reads ``GRUKIT_PRECISION``.
    """

    batch_size: int = 32
    seq_len: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip: float = 0.5
    epochs: int = 1
    steps: int | None = None
    warmup_steps: int = 100
    seed: int = 0
    checkpoint_every: int = 200
    valid_batch_size: int = 16
    accumulate: int = 1
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"LMTrainingConfig expected precision in {PRECISIONS}, got {self.precision!r}")
        for name in ("batch_size", "seq_len", "epochs", "checkpoint_every", "valid_batch_size", "accumulate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LMTrainingConfig expected {name} to be a positive integer, got {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"LMTrainingConfig expected steps to be a positive integer or None, got {self.steps!r}")
        for name in ("lr", "clip", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"LMTrainingConfig expected {name} to be a finite number, got {value!r}")
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ValueError(f"LMTrainingConfig expected {name} to be an integer >= 0, got {value!r}")
        if not self.lr > 0 or self.clip <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"LMTrainingConfig expected lr > 0, clip > 0, weight_decay >= 0, got lr={self.lr}, clip={self.clip}, "
                f"weight_decay={self.weight_decay}"
            )

    @classmethod
    def from_dict(cls, values: dict) -> LMTrainingConfig:
        return config_from_dict(cls, values)


@torch.no_grad()
def evaluate_language_model(model: GRULanguageModel, tokens: np.ndarray, batch_size: int, seq_len: int) -> float:
    """Mean cross-entropy per token (nats) over ``tokens``, state carried across windows, dropout off."""
    batches = TBPTTBatches(tokens, min(batch_size, max(1, (len(tokens) - 1) // 2)), seq_len)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    state: State | None = None
    for x, y in batches:
        logits, state = model(x, state)  # (B, T, V)
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    model.train(was_training)
    return total / count


def _valid_metric(loss: float, kind: str) -> tuple[str, float]:
    """Bits per character for a char model, perplexity per token otherwise."""
    return ("bits_per_char", loss / math.log(2)) if kind == "char" else ("perplexity", math.exp(loss))


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor, mask: None = None) -> torch.Tensor:
    """Mean cross-entropy per token of ``logits`` ``(B, T, V)`` against the next tokens ``targets`` ``(B, T)``."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


class _ValidateAndSave(Callback):
    """At every epoch's end (and at the last step): validate into the logs as ``val_loss`` and
    ``val_bits_per_char`` / ``val_perplexity``, then save the model in ``folder`` (rank 0 only)."""

    rank_zero_only = True

    def __init__(self, tokens: np.ndarray | None, config: LMTrainingConfig, kind: str, folder: Path) -> None:
        self.tokens, self.config, self.kind, self.folder = tokens, config, kind, folder
        self.saved_step: int | None = None  # the optimizer step whose weights model/ holds

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        model = self.trainer.model
        if self.tokens is not None:
            valid = evaluate_language_model(model, self.tokens, self.config.valid_batch_size, self.config.seq_len)
            metric, score = _valid_metric(valid, self.kind)
            logs.update({"val_loss": valid, f"val_{metric}": score})
        model.save_pretrained(self.folder)
        self.saved_step = self.trainer.step


class _Throughput(Callback):
    """Tokens per second inside optimizer steps, the last step's loss, and ``on_step(step, loss)``."""

    def __init__(self, batches: TBPTTBatches, on_step: Callable[[int, float], None] | None) -> None:
        self.batches, self.on_step = batches, on_step
        self.tokens, self.seconds, self.last_loss, self._started = 0, 0.0, float("nan"), 0.0
        self._first_window = 0

    def on_batch_begin(self, step: int, logs: dict) -> None:
        self._started = time.perf_counter()
        self._first_window = self.trainer.batch_index

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.seconds += time.perf_counter() - self._started
        batches = self.batches
        for index in range(self._first_window, self.trainer.batch_index):  # the step's windows, of all ranks
            self.tokens += batches.batch_size * min(batches.seq_len, batches.row_len - 1 - index * batches.seq_len)
        self.last_loss = logs["batch_loss"]
        if self.on_step is not None:
            self.on_step(step, self.last_loss)


def train_language_model(
    model: GRULanguageModel,
    train_tokens: np.ndarray,
    valid_tokens: np.ndarray | None,
    out: str | Path,
    config: LMTrainingConfig,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train ``model`` on ``train_tokens`` with truncated BPTT; write logs, checkpoints and the model to ``out``.

    ``out`` receives ``train_log.csv`` (step, epoch, loss, lr: one row per step), ``valid_log.csv`` (epoch,
    step, loss, bits_per_char | perplexity: one row per epoch and at the last step), ``tensorboard/``,
    ``checkpoint/`` (weights, optimizer, carried state, RNG, position, tokenizer: what ``resume=True``
    continues from, bit for bit as a run never stopped) and the model itself (``config.json``,
    ``model.safetensors``, tokenizer) in ``model/`` at every epoch's end and at the last step.

    Args:
        on_step: called as ``on_step(step, loss)`` after every optimizer step (progress hooks, tests).

    Returns:
        ``{"steps", "train_loss", "valid_loss", "valid_bits_per_char" | "valid_perplexity",
        "tokens_per_second"`` (optimizer steps only), ``"seconds"`` (all of this call)}``.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batches = TBPTTBatches(train_tokens, config.batch_size, config.seq_len)
    main = world_from_env().main
    seed_everything(config.seed)  # a resumed run takes its RNG states from the checkpoint instead
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    trainer_precision = resolve_precision(config.precision)
    kind = model.tokenizer.kind if model.tokenizer is not None else "char"
    metric = _valid_metric(1.0, kind)[0]
    continuing = resume and checkpoint_exists(out / CHECKPOINT)  # otherwise the logs start afresh
    throughput = _Throughput(batches, on_step)
    validate_and_save = _ValidateAndSave(valid_tokens, config, kind, out / MODEL)
    callbacks: list[Callback] = [
        CosineSchedule(config.warmup_steps, MIN_LR_RATIO),
        validate_and_save,
        CSVLogger(out / TRAIN_LOG, append=continuing, update_freq="batch", columns=STEP_COLUMNS),
    ]
    if valid_tokens is not None:
        callbacks.append(
            CSVLogger(out / VALID_LOG, append=continuing, columns={"val_loss": "loss", f"val_{metric}": metric})
        )
    if tensorboard:
        try:
            callbacks.append(TensorBoard(out / "tensorboard", update_freq="batch"))
        except ImportError:
            print("tensorboard is not installed (pip install 'grukit[logging]'): writing CSV logs only")
    if progress:
        callbacks.append(ProgressBar("lm train"))
        if main:
            x, y = batches[0]
            print(estimate_memory(model, optimizer, (x,), y, None, language_model_loss, True, trainer_precision).line())
    callbacks.append(throughput)
    trainer = Trainer(
        model,
        language_model_loss,
        optimizer,
        clipnorm=config.clip,
        callbacks=callbacks,
        checkpoint_dir=out / CHECKPOINT,
        config=model.config.to_dict(),
        checkpoint_every=config.checkpoint_every,
        stateful=True,
        extra_files=model.tokenizer.files() if model.tokenizer is not None else None,
        accumulate=config.accumulate,
        precision=trainer_precision,
    )
    history = trainer.fit(batches, epochs=config.epochs, verbose=0, resume=resume, max_steps=config.steps)
    if main and validate_and_save.saved_step != trainer.step:  # e.g. resumed where an interrupted run had ended
        model.save_pretrained(out / MODEL)
    result: dict = {"steps": trainer.step, "train_loss": throughput.last_loss}
    if valid_tokens is not None and history.history.get("val_loss"):
        result.update(
            {"valid_loss": history.history["val_loss"][-1], f"valid_{metric}": history.history[f"val_{metric}"][-1]}
        )
    result.update(
        seconds=time.perf_counter() - started,
        tokens_per_second=throughput.tokens / throughput.seconds if throughput.seconds else 0.0,
    )
    return result
