r"""Language-model training with truncated BPTT: the hidden state is carried from one batch to the next
(detached), so the model learns dependencies longer than one window at the cost of one window's graph.

This loop lives here rather than in :class:`grukit.train.Trainer` because a batch depends on the previous
one (the carried state, which the checkpoint must also hold for an exact resume) and because positions
inside an epoch, not whole epochs, are the unit of resumption for a corpus that takes hours per epoch.
Checkpoint I/O, RNG state and seeding are :mod:`grukit.train.checkpoint`'s.

Per step ``s`` with batch ``(x, y)`` ``(B, T)``::

    logits, state = model(x, state)               (B, T, V)
    loss = mean CE(logits, y)                      nats per token
    clip ‖∇‖ to ``clip``; AdamW step at lr(s)      lr: linear warm-up, then cosine down to lr / 10
    state = detach(state)

Validation reports the mean loss per token, as bits per character (``loss / ln 2``, char tokenizer) or
perplexity (``exp(loss)``, BPE).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from tqdm.auto import tqdm

from grukit.lm.model import GRULanguageModel, State, config_from_dict, detach_state
from grukit.text.batching import TBPTTBatches
from grukit.train.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from grukit.train.loop import nonfinite_report

CHECKPOINT = "checkpoint"
MODEL = "model"
TRAIN_LOG = "train_log.csv"
VALID_LOG = "valid_log.csv"


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

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "epochs", "checkpoint_every", "valid_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LMTrainingConfig expected {name} to be a positive integer, got {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"LMTrainingConfig expected steps to be a positive integer or None, got {self.steps!r}")
        if not self.lr > 0 or self.clip <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"LMTrainingConfig expected lr > 0, clip > 0, weight_decay >= 0, warmup_steps >= 0, got lr={self.lr}, "
                f"clip={self.clip}, weight_decay={self.weight_decay}, warmup_steps={self.warmup_steps}"
            )

    @classmethod
    def from_dict(cls, values: dict) -> LMTrainingConfig:
        return config_from_dict(cls, values)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak / 10`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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


def _state_bytes(state: State | None) -> bytes:
    return save_safetensors_bytes({} if state is None else {f"layer{i}": s.contiguous() for i, s in enumerate(state)})


def _state_from_bytes(data: bytes) -> State | None:
    tensors = load_safetensors_bytes(data)
    return tuple(tensors[f"layer{i}"] for i in range(len(tensors))) if tensors else None


def _open_tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install 'grukit[logging]'): writing CSV logs only")
        return None
    return SummaryWriter(str(folder))


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

    ``out`` receives ``train_log.csv`` (step, epoch, loss, lr), ``valid_log.csv`` (per epoch), ``tensorboard/``,
    ``checkpoint/`` (weights, optimizer, carried state, RNG, position: what ``resume=True`` continues from,
    with the same losses as a run never stopped) and the model itself (``config.json``, ``model.safetensors``,
    tokenizer) in ``model/`` at every epoch's end and at the last step.

    Args:
        on_step: called as ``on_step(step, loss)`` after every optimizer step (progress hooks, tests).

    Returns:
        ``{"steps", "train_loss", "valid_loss", "valid_bits_per_char" | "valid_perplexity",
        "tokens_per_second"`` (optimizer steps only), ``"seconds"`` (all of this call)}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batches = TBPTTBatches(train_tokens, config.batch_size, config.seq_len)
    per_epoch = len(batches)
    total = per_epoch * config.epochs if config.steps is None else min(config.steps, per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    step = 0
    state: State | None = None
    if resume and checkpoint_exists(out / CHECKPOINT):  # also puts back a checkpoint a crashed save left aside
        checkpoint = load_checkpoint(out / CHECKPOINT, architecture=model.config.to_dict()["architecture"])
        model.load_base_state_dict(checkpoint.weights)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        step = checkpoint.training_state["step"]
        state = _state_from_bytes(checkpoint.extra_files["carried_state.safetensors"])
        set_rng_state(checkpoint.training_state["rng"])
        _truncate_log(out / TRAIN_LOG, step)
        _truncate_log(out / VALID_LOG, step)
    else:
        seed_everything(config.seed)
        for log in (TRAIN_LOG, VALID_LOG):
            (out / log).unlink(missing_ok=True)
    writer = _open_tensorboard(out / "tensorboard") if tensorboard else None
    kind = model.tokenizer.kind if model.tokenizer is not None else "char"
    result: dict = {"steps": 0, "train_loss": float("nan")}
    started = time.perf_counter()
    tokens_seen, train_seconds = 0, 0.0
    model.train()
    bar = tqdm(total=total, initial=step, disable=not progress, desc="lm train", unit="step")
    try:
        while step < total:
            epoch, index = divmod(step, per_epoch)
            if index == 0:
                state = None
            step_started = time.perf_counter()
            x, y = batches[index]  # (B, T) each
            lr = learning_rate(step, total, config.lr, config.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, state = model(x, state)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            problem = nonfinite_report(model, loss, grad_norm, f"epoch {epoch + 1}, step {step + 1}")
            if problem is not None:
                raise FloatingPointError(f"{problem} (lower the learning rate; the last checkpoint, if any, is intact)")
            optimizer.step()
            state = detach_state(state)
            step += 1
            tokens_seen += y.numel()
            train_seconds += time.perf_counter() - step_started
            value = loss.item()
            result["train_loss"] = value
            _append_row(out / TRAIN_LOG, ["step", "epoch", "loss", "lr"], [step, epoch, f"{value:.6f}", f"{lr:.6g}"])
            if writer is not None:
                writer.add_scalar("train/loss", value, step)
                writer.add_scalar("train/lr", lr, step)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_step is not None:
                on_step(step, value)
            epoch_end = index == per_epoch - 1
            if (epoch_end or step == total) and valid_tokens is not None:
                valid = evaluate_language_model(model, valid_tokens, config.valid_batch_size, config.seq_len)
                metric, score = _valid_metric(valid, kind)
                result.update({"valid_loss": valid, f"valid_{metric}": score})
                _append_row(
                    out / VALID_LOG, ["epoch", "step", "loss", metric], [epoch, step, f"{valid:.6f}", f"{score:.6f}"]
                )
                if writer is not None:
                    writer.add_scalar(f"valid/{metric}", score, step)
                bar.write(f"epoch {epoch} step {step}: valid loss {valid:.4f}, {metric} {score:.4f}")
            if epoch_end or step == total:
                model.save_pretrained(out / MODEL)
            if epoch_end or step == total or step % config.checkpoint_every == 0:
                _save_training_checkpoint(out / CHECKPOINT, model, optimizer, step, state, config)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    result.update(steps=step, seconds=seconds, tokens_per_second=tokens_seen / train_seconds if train_seconds else 0.0)
    return result


def _valid_metric(loss: float, kind: str) -> tuple[str, float]:
    """Bits per character for a char model, perplexity per token otherwise."""
    return ("bits_per_char", loss / math.log(2)) if kind == "char" else ("perplexity", math.exp(loss))


def _save_training_checkpoint(
    path: Path,
    model: GRULanguageModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    state: State | None,
    config: LMTrainingConfig,
) -> None:
    extra = {"carried_state.safetensors": _state_bytes(state)}
    if model.tokenizer is not None:
        extra.update(model.tokenizer.files())
    save_checkpoint(
        path,
        model.config.to_dict(),
        model.base_state_dict(),
        optimizer,
        {"step": step, "training": asdict(config)},
        extra,
    )


def _append_row(path: Path, header: list[str], row: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(header)
        writer.writerow(row)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after ``step`` (by the run that was interrupted after its last checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    column = rows[0].index("step")
    kept = [rows[0]] + [row for row in rows[1:] if int(row[column]) <= step]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
