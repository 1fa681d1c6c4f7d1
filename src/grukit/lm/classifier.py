r"""Text classification on a pretrained GRU language model, the ULMFiT recipe (Howard & Ruder 2018).

The encoder is the language model without its output head. For a right-padded batch ``(B, T)`` with
``lengths`` and last-layer outputs ``h_t`` ``(B, T, H)``::

    pooled = [h_T, max_t h_t, mean_t h_t]      (B, 3H)  over each text's own steps (concat pooling)
    z      = ReLU(W₁ · dropout(BN₁(pooled)))            (B, 50)
    logits = W₂ · dropout(BN₂(z))                       (B, C)

The batch norms ``BN`` (ULMFiT's head has them too) standardise each feature over the texts. They are what lets
the head learn from a pretrained encoder at all: a language model's GRU states sit near saturation, so its pooled
features share one large offset (|mean| about 0.8) and differ between texts by a few hundredths. A plain linear
head on them gives every text nearly the same logits and stays at the majority class. Once training ends, the
norms' running statistics are computed again over the training texts with the final weights
(:func:`refresh_norm_statistics`), since the running averages trail an encoder that moved while they were taken.

Fine-tuning (``method="full"``), on the shared :class:`grukit.train.Trainer` with its callbacks:
    - discriminative learning rates: the head gets ``lr``, each group below it ``lr / 2.6`` of the one above
      (groups: embedding, GRU layer 1, …, GRU layer L, head), one optimizer parameter group each;
    - slanted triangular schedule (:class:`~grukit.train.callbacks.SlantedTriangular`): a linear rise over
      the first ``cut_frac`` of the steps, then a linear fall, from ``lr / ratio`` to ``lr`` and back
      (cut_frac 0.1, ratio 32), every group scaled from its own rate;
    - gradual unfreezing (:class:`~grukit.train.callbacks.GradualUnfreezing`): epoch ``e`` trains the top
      ``e + 1`` groups, the others stay frozen.

``method="lora"`` freezes the encoder, attaches LoRA adapters to its GRU matrices and trains those and the
head; ``method="scratch"`` trains everything from a random initialisation at one learning rate. All three
use the slanted triangular schedule and can checkpoint and resume exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from grukit.lm import lora
from grukit.lm.model import GRULanguageModel, LMConfig, config_from_dict
from grukit.text.sequences import pad_sequences
from grukit.text.tokenizer import tokenizer_from_files
from grukit.train.callbacks import Callback, GradualUnfreezing, ProgressBar, SlantedTriangular
from grukit.train.checkpoint import (
    CheckpointError,
    check_weights_fit,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from grukit.train.distributed import PRECISIONS
from grukit.train.loop import Trainer
from grukit.train.metrics import SparseCategoricalAccuracy

ARCHITECTURE = "grukit.GRUClassifier"
OLD_ARCHITECTURES = ("grukit-gru-classifier",)  # still read
METHODS = ("full", "lora", "scratch")


class GRUClassifier(nn.Module):
    """A pretrained (or fresh) :class:`GRULanguageModel` as encoder, concat pooling and a two-layer head.

    Args:
        encoder: the language model; its output head is not used.
        num_classes: ``C``.
        head_hidden: width of the head's hidden layer.
        head_dropout: dropout before each head layer.
        labels: the ``C`` class names, saved with the model (``None``: unnamed).
        head_norm: batch norm before each head layer (``False``: the head of models saved before it existed).

    Shapes: ``ids`` ``(B, T)``, ``lengths`` ``(B,)`` → logits ``(B, C)``.
    """

    def __init__(
        self,
        encoder: GRULanguageModel,
        num_classes: int,
        head_hidden: int = 50,
        head_dropout: float = 0.2,
        labels: Sequence[str] | None = None,
        head_norm: bool = True,
    ):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"GRUClassifier expected num_classes >= 2, got {num_classes!r}")
        if labels is not None and len(labels) != num_classes:
            raise ValueError(f"GRUClassifier expected {num_classes} label names, got {len(labels)}: {list(labels)}")
        self.labels = list(labels) if labels is not None else None
        self.encoder = encoder
        self.num_classes = num_classes
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout
        encoder.decoder.bias.requires_grad_(False)  # the LM head takes no part in classification
        if not encoder.config.tie_weights:
            encoder.decoder.weight.requires_grad_(False)
        self.head_norm = bool(head_norm)
        hidden = encoder.config.layer_sizes()[-1][1]

        def norm(width: int) -> list[nn.Module]:
            return [nn.BatchNorm1d(width)] if head_norm else []

        self.head = nn.Sequential(
            *norm(3 * hidden),
            nn.Dropout(head_dropout),
            nn.Linear(3 * hidden, head_hidden),
            nn.ReLU(),
            *norm(head_hidden),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_classes),
        )

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.pool(ids, lengths))  # (B, C)

    def pool(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Concat pooling of the encoder's last layer, ``(B, 3H)``: the head's input."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.shape != (ids.shape[0],):
            raise ValueError(f"GRUClassifier expected lengths of shape ({ids.shape[0]},), got {tuple(lengths.shape)}")
        outputs, state = self.encoder.encode(ids, lengths=lengths)  # (B, T, H)
        last = state[-1][0]  # (B, H) at each text's last token
        valid = (torch.arange(ids.shape[1]) < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        max_pool = outputs.masked_fill(~valid, float("-inf")).amax(1)  # (B, H)
        mean_pool = outputs.sum(1) / lengths.unsqueeze(1).to(outputs.dtype)  # (B, H) padded steps are zeros
        return torch.cat([last, max_pool, mean_pool], dim=-1)  # (B, 3H)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the bottom up: embedding, each GRU layer, head."""
        groups = [[self.encoder.embedding.weight]]
        groups += [list(layer.parameters()) for layer in self.encoder.layers]
        groups.append(list(self.head.parameters()))
        return groups

    # Saving -------------------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        """``config.json``: the architecture id, the encoder's config, the head and the label names."""
        return {
            "architecture": ARCHITECTURE,
            "encoder": self.encoder.config.to_dict(),
            "num_classes": self.num_classes,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            "labels": self.labels,
            "head_norm": self.head_norm,
        }

    def base_state_dict(self) -> dict[str, Tensor]:
        """Weights without adapters and without a tied output matrix (it is the embedding)."""
        base, _ = lora.split_state_dict(self)
        if self.encoder.config.tie_weights:
            base.pop("encoder.decoder.weight")
        return base

    def save_pretrained(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """A checkpoint folder (:func:`grukit.train.save_checkpoint`) with ``config.json`` (with ``labels``),
        ``model.safetensors`` (base weights and head), the tokenizer and, with LoRA, ``adapter_config.json`` +
        ``adapter_model.safetensors`` apart. ``extra`` adds keys to the config (it cannot replace the model's
        own); its ``labels`` names the classes."""
        extra = dict(extra or {})
        if "labels" in extra:
            labels = list(extra.pop("labels"))
            if len(labels) != self.num_classes:
                raise ValueError(f"GRUClassifier has {self.num_classes} classes, got {len(labels)} labels: {labels}")
            self.labels = labels
        files = lora.adapter_files(self)
        if self.encoder.tokenizer is not None:
            files.update(self.encoder.tokenizer.files())
        return save_checkpoint(path, {**extra, **self.get_config()}, self.base_state_dict(), extra_files=files)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GRUClassifier:
        """Load a folder written by :meth:`save_pretrained` (checksums verified), tokenizer, adapters and label
        names too. The weights' names and shapes are checked against ``config.json`` before the model is built."""
        where = os.fspath(path)
        checkpoint = load_checkpoint(path, architecture=(ARCHITECTURE, *OLD_ARCHITECTURES))
        config = checkpoint.config
        try:
            encoder_config = LMConfig.from_dict(config["encoder"])
            head = (
                config["num_classes"],
                config["head_hidden"],
                config["head_dropout"],
                config.get("labels"),
                config.get("head_norm", False),  # folders written before the head had norms
            )
            with torch.device("meta"):
                skeleton = cls(GRULanguageModel(encoder_config), *head)
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{where!r}: config.json does not describe a GRUClassifier: {error!r}") from error
        expected = {name: tuple(tensor.shape) for name, tensor in skeleton.base_state_dict().items()}
        check_weights_fit(where, expected, checkpoint.weights)
        try:
            tokenizer = tokenizer_from_files(checkpoint.extra_files)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{where!r}: the tokenizer files cannot be read: {error}") from error
        model = cls(GRULanguageModel(encoder_config, tokenizer), *head)
        lora.load_base_state_dict(model, checkpoint.weights)
        lora.load_adapter_files(model, checkpoint.extra_files, where)
        return model


@dataclass
class ClassifierTraining:
    """How :func:`finetune_classifier` trains (defaults follow ULMFiT where it gives one).

    Args:
        method: ``"full"`` (ULMFiT), ``"lora"`` or ``"scratch"``.
        epochs, batch_size, lr: the usual; ``lr`` is the head's (the peak of the schedule). 1e-2 is the order of
            ULMFiT's head rates (2e-2 down to 1e-3 by stage); 2e-3 left a keyword task half learned in 6 epochs.
        lr_decay: discriminative factor between groups (``full``).
        gradual_unfreezing: unfreeze one more group per epoch from the top (``full``).
        cut_frac, ratio: slanted triangular schedule.
        weight_decay: AdamW's.
        max_len: texts are cut to their first ``max_len`` tokens.
        lora_rank, lora_alpha, lora_targets: adapters (``lora``).
        seed: shuffling, dropout and the head's initialisation.
        accumulate: batches per optimizer step (gradient accumulation); under ``torchrun`` per process.
        precision: ``"32"``, or ``"bf16"`` for bfloat16 autocast; ``None`` reads ``GRUKIT_PRECISION``.
    """

    method: str = "full"
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-2
    lr_decay: float = 2.6
    gradual_unfreezing: bool = True
    cut_frac: float = 0.1
    ratio: float = 32.0
    weight_decay: float = 0.01
    max_len: int = 256
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("weight_ih", "weight_hh")
    seed: int = 0
    accumulate: int = 1
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"ClassifierTraining expected method in {METHODS}, got {self.method!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"ClassifierTraining expected precision in {PRECISIONS}, got {self.precision!r}")
        for name in ("epochs", "batch_size", "max_len", "accumulate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassifierTraining expected {name} to be a positive integer, got {value!r}")
        if not 0 < self.cut_frac < 1 or self.ratio < 1 or self.lr <= 0 or self.lr_decay < 1:
            raise ValueError(
                f"ClassifierTraining expected 0 < cut_frac < 1, ratio >= 1, lr > 0, lr_decay >= 1, got cut_frac="
                f"{self.cut_frac}, ratio={self.ratio}, lr={self.lr}, lr_decay={self.lr_decay}"
            )
        self.lora_targets = tuple(self.lora_targets)

    @classmethod
    def from_dict(cls, values: dict) -> ClassifierTraining:
        return config_from_dict(cls, values)


def discriminative_groups(model: GRUClassifier, lr: float, decay: float) -> list[dict]:
    """Optimizer groups bottom-up with ``lr / decay**k`` for the group ``k`` places below the head."""
    groups = model.layer_groups()
    top = len(groups) - 1
    return [{"params": params, "lr": lr / decay ** (top - k), "group": k} for k, params in enumerate(groups)]


def pad_batch(rows: list[list[int]], max_len: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists (cut to ``max_len``) into ``(B, T)`` ids and ``(B,)`` lengths; empty texts get one
    token 0 so that every sequence has a step."""
    return pad_sequences([row[:max_len] or [0] for row in rows], torch.long)


def batch_starts(count: int, batch_size: int) -> list[slice]:
    """Slices cutting ``count`` items into batches of ``batch_size``, the last one taking a lone leftover item."""
    starts = list(range(0, count, batch_size))
    if len(starts) > 1 and count - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, [*starts[1:], count])]


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (sorted within chunks of 50 batches), so padding stays small. A text
    left alone at a chunk's end joins the batch before it: batch norm cannot standardise a batch of one."""
    order = rng.permutation(len(lengths))
    chunk = 50 * batch_size
    batches = []
    for piece in batch_starts(len(order), chunk):
        part = order[piece]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches += [part[cut] for cut in batch_starts(len(part), batch_size)]
    rng.shuffle(batches)
    return batches


class LengthBucketedBatches:
    """``((ids (B, T), lengths (B,)), labels (B,))`` batches for the Trainer, of similar lengths and in a new
    random order each epoch (:func:`length_bucketed_batches`), drawn from this object's own generator, whose
    state the Trainer records at each epoch's start (``state_dict`` / ``load_state_dict``) for exact resume."""

    def __init__(self, rows: list[list[int]], labels: np.ndarray, batch_size: int, max_len: int, seed: int) -> None:
        self.rows, self.labels, self.batch_size, self.max_len = rows, labels, batch_size, max_len
        self.lengths = [min(len(row), max_len) for row in rows]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        chunks = batch_starts(len(self.rows), 50 * self.batch_size)
        return sum(len(batch_starts(piece.stop - piece.start, self.batch_size)) for piece in chunks)

    def __iter__(self) -> Iterator[tuple]:
        for index in length_bucketed_batches(self.lengths, self.batch_size, self.rng):
            yield pad_batch([self.rows[i] for i in index], self.max_len), torch.as_tensor(self.labels[index])

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


def _sorted_batches(rows: list[list[int]], labels: np.ndarray, batch_size: int, max_len: int) -> list[tuple]:
    """Validation batches in length order (least padding), ``((ids, lengths), labels)``."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return [
        (pad_batch([rows[i] for i in index], max_len), torch.as_tensor(labels[index]))
        for index in (order[start : start + batch_size] for start in range(0, len(rows), batch_size))
    ]


def classification_loss(logits: Tensor, targets: Tensor, mask: None = None) -> Tensor:
    """Mean cross-entropy of ``logits`` ``(B, C)`` against class ids ``targets`` ``(B,)``."""
    return nn.functional.cross_entropy(logits, targets)


@torch.no_grad()
def refresh_norm_statistics(
    model: GRUClassifier, rows: list[list[int]], batch_size: int = 128, max_len: int = 256
) -> None:
    """Set each head batch norm's running mean and (unbiased) variance to those of its input over ``rows``, the
    model in evaluation mode (no dropout). Training leaves averages taken while the encoder was still moving;
    these are the statistics of the model as it now is. One pass of the encoder; the pooled features of all
    ``rows`` ``(N, 3H)`` are held in memory. A no-op for a head without norms."""
    if not model.head_norm or len(rows) < 2:
        return
    was_training = model.training
    model.eval()
    x = torch.cat(
        [model.pool(*pad_batch(rows[start : start + batch_size], max_len)) for start in range(0, len(rows), batch_size)]
    )  # (N, 3H)
    for layer in model.head:
        if isinstance(layer, nn.BatchNorm1d):
            layer.running_mean.copy_(x.mean(0))
            layer.running_var.copy_(x.var(0))
        x = layer(x)
    model.train(was_training)


@torch.no_grad()
def predict(model: GRUClassifier, rows: list[list[int]], batch_size: int = 128, max_len: int = 256) -> np.ndarray:
    """Predicted class of every id list."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    predictions = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        index = order[start : start + batch_size]
        ids, lengths = pad_batch([rows[i] for i in index], max_len)
        predictions[index] = model(ids, lengths).argmax(-1).numpy()
    model.train(was_training)
    return predictions


def finetune_classifier(
    model: GRUClassifier,
    train_rows: list[list[int]],
    train_labels: np.ndarray,
    config: ClassifierTraining,
    valid_rows: list[list[int]] | None = None,
    valid_labels: np.ndarray | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train ``model`` on token-id lists and labels with ``config.method`` (see the module docstring).

    With ``checkpoint_dir``, a resumable checkpoint is written there at every epoch's end (and every
    ``checkpoint_every`` steps); ``resume=True`` continues from it bit for bit. ``callbacks`` are added to the
    Trainer's.

    Returns:
        ``{"trainable_parameters", "total_parameters", "seconds", "history": [{"epoch", "loss",
        "trainable_groups", "valid_accuracy"}, ...], "config"}``.
    """
    started = time.perf_counter()
    train_labels = np.asarray(train_labels, dtype=np.int64)
    if len(train_rows) != len(train_labels) or not len(train_rows):
        raise ValueError(
            f"finetune_classifier expected as many labels as texts (> 0), got {len(train_rows)} texts "
            f"and {len(train_labels)} labels"
        )
    if model.head_norm and len(train_rows) < 2:
        raise ValueError(
            f"finetune_classifier expected at least 2 texts for a head with batch norm, got {len(train_rows)}"
        )
    if train_labels.min() < 0 or train_labels.max() >= model.num_classes:
        raise ValueError(
            f"labels must lie in [0, {model.num_classes}), got [{train_labels.min()}, {train_labels.max()}]"
        )
    seed_everything(config.seed)
    if config.method == "lora":
        lora.add_lora(model.encoder, config.lora_rank, config.lora_alpha, config.lora_targets, freeze_base=True)
        for parameter in model.head.parameters():
            parameter.requires_grad_(True)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    elif config.method == "full":
        groups = discriminative_groups(model, config.lr, config.lr_decay)
    else:
        groups = [{"params": [p for group in model.layer_groups() for p in group], "lr": config.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    schedule: list[Callback] = [SlantedTriangular(config.cut_frac, config.ratio)]
    if config.method == "full" and config.gradual_unfreezing:
        schedule.append(GradualUnfreezing(model.layer_groups()))
    if progress:
        schedule.append(ProgressBar(f"finetune {config.method}"))
    validate = valid_rows is not None and valid_labels is not None
    trainer = Trainer(
        model,
        classification_loss,
        optimizer,
        metrics=[SparseCategoricalAccuracy()],
        clipnorm=1.0,
        callbacks=[*schedule, *callbacks],
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        extra_files=model.encoder.tokenizer.files() if model.encoder.tokenizer is not None else None,
        accumulate=config.accumulate,
        precision=config.precision,
    )
    history = trainer.fit(
        LengthBucketedBatches(train_rows, train_labels, config.batch_size, config.max_len, config.seed),
        epochs=config.epochs,
        val_batches=_sorted_batches(valid_rows, np.asarray(valid_labels), 128, config.max_len) if validate else None,
        verbose=0,
        resume=resume,
    ).history
    refresh_norm_statistics(model, train_rows, max_len=config.max_len)
    records = []
    for epoch, loss in enumerate(history["loss"]):
        record = {
            "epoch": epoch,
            "loss": loss,
            "trainable_groups": int(history["trainable_groups"][epoch])
            if "trainable_groups" in history
            else len(model.layer_groups()),
        }
        if validate:
            record["valid_accuracy"] = history["val_accuracy"][epoch]
        records.append(record)
    trainable, total = lora.count_parameters(model)  # unfreezing only adds: the last epoch trains the most
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "seconds": time.perf_counter() - started,
        "history": records,
        "config": asdict(config),
    }
