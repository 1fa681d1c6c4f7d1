r"""Text classification on a pretrained GRU language model, the ULMFiT recipe (Howard & Ruder 2018).

The encoder is the language model without its output head. For a right-padded batch ``(B, T)`` with
``lengths`` and last-layer outputs ``h_t`` ``(B, T, H)``::

    pooled = [h_T, max_t h_t, mean_t h_t]      (B, 3H)  over each text's own steps (concat pooling)
    logits = W₂ · dropout(ReLU(W₁ · dropout(pooled)))   (B, C)

Fine-tuning (``method="full"``):
    - discriminative learning rates: the head gets ``lr``, each group below it ``lr / 2.6`` of the one above
      (groups: embedding, GRU layer 1, …, GRU layer L, head);
    - slanted triangular schedule: a linear rise over the first ``cut_frac`` of the steps, then a linear
      fall, from ``lr / ratio`` to ``lr`` and back (cut_frac 0.1, ratio 32);
    - gradual unfreezing: epoch ``e`` trains the top ``e + 1`` groups, the others stay frozen.

``method="lora"`` freezes the encoder, attaches LoRA adapters to its GRU matrices and trains those and the
head; ``method="scratch"`` trains everything from a random initialisation at one learning rate.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn
from tqdm.auto import tqdm

from grukit.lm import lora
from grukit.lm.model import GRULanguageModel, LMConfig, config_from_dict
from grukit.text.tokenizer import tokenizer_from_files
from grukit.train.checkpoint import read_folder, seed_everything, write_folder

ARCHITECTURE = "grukit-gru-classifier"
METHODS = ("full", "lora", "scratch")


class GRUClassifier(nn.Module):
    """A pretrained (or fresh) :class:`GRULanguageModel` as encoder, concat pooling and a two-layer head.

    Args:
        encoder: the language model; its output head is not used.
        num_classes: ``C``.
        head_hidden: width of the head's hidden layer.
        head_dropout: dropout before each head layer.

    Shapes: ``ids`` ``(B, T)``, ``lengths`` ``(B,)`` → logits ``(B, C)``.
    """

    def __init__(self, encoder: GRULanguageModel, num_classes: int, head_hidden: int = 50, head_dropout: float = 0.2):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"GRUClassifier expected num_classes >= 2, got {num_classes!r}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout
        encoder.decoder.bias.requires_grad_(False)  # the LM head takes no part in classification
        if not encoder.config.tie_weights:
            encoder.decoder.weight.requires_grad_(False)
        hidden = encoder.config.layer_sizes()[-1][1]
        self.head = nn.Sequential(
            nn.Dropout(head_dropout),
            nn.Linear(3 * hidden, head_hidden),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_classes),
        )

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.shape != (ids.shape[0],):
            raise ValueError(f"GRUClassifier expected lengths of shape ({ids.shape[0]},), got {tuple(lengths.shape)}")
        outputs, state = self.encoder.encode(ids, lengths=lengths)  # (B, T, H)
        last = state[-1][0]  # (B, H) at each text's last token
        valid = (torch.arange(ids.shape[1]) < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        max_pool = outputs.masked_fill(~valid, float("-inf")).amax(1)  # (B, H)
        mean_pool = outputs.sum(1) / lengths.unsqueeze(1).to(outputs.dtype)  # (B, H) padded steps are zeros
        return self.head(torch.cat([last, max_pool, mean_pool], dim=-1))  # (B, C)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the bottom up: embedding, each GRU layer, head."""
        groups = [[self.encoder.embedding.weight]]
        groups += [list(layer.parameters()) for layer in self.encoder.layers]
        groups.append(list(self.head.parameters()))
        return groups

    # Saving -------------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """A folder with ``config.json``, ``model.safetensors`` (base weights and head), the tokenizer and,
        with LoRA, ``adapter_config.json`` + ``adapter_model.safetensors`` apart."""
        base, _ = lora.split_state_dict(self)
        if self.encoder.config.tie_weights:
            base.pop("encoder.decoder.weight")
        config = {
            "architecture": ARCHITECTURE,
            "encoder": self.encoder.config.to_dict(),
            "num_classes": self.num_classes,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            **(extra or {}),
        }
        files = {
            "config.json": (json.dumps(config, indent=2) + "\n").encode("utf-8"),
            "model.safetensors": save_safetensors_bytes({k: v.detach().contiguous() for k, v in base.items()}),
            **lora.adapter_files(self),
        }
        if self.encoder.tokenizer is not None:
            files.update(self.encoder.tokenizer.files())
        return write_folder(path, files)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GRUClassifier:
        files = read_folder(path)
        config = json.loads(files["config.json"].decode("utf-8"))
        if config.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{str(path)!r} holds a {config.get('architecture')!r} model, expected {ARCHITECTURE!r}")
        encoder = GRULanguageModel(LMConfig.from_dict(config["encoder"]), tokenizer_from_files(files))
        model = cls(encoder, config["num_classes"], config["head_hidden"], config["head_dropout"])
        missing = lora.load_base_state_dict(model, load_safetensors_bytes(files["model.safetensors"]))
        if [name for name in missing if name != "encoder.decoder.weight"]:
            raise ValueError(f"{str(path)!r} lacks weights {missing[:5]}")
        lora.load_adapter_files(model, files)
        return model


@dataclass
class ClassifierTraining:
    """How :func:`finetune_classifier` trains (defaults follow ULMFiT where it gives one).

    Args:
        method: ``"full"`` (ULMFiT), ``"lora"`` or ``"scratch"``.
        epochs, batch_size, lr: the usual; ``lr`` is the head's (the peak of the schedule).
        lr_decay: discriminative factor between groups (``full``).
        gradual_unfreezing: unfreeze one more group per epoch from the top (``full``).
        cut_frac, ratio: slanted triangular schedule.
        weight_decay: AdamW's.
        max_len: texts are cut to their first ``max_len`` tokens.
        lora_rank, lora_alpha, lora_targets: adapters (``lora``).
        seed: shuffling, dropout and the head's initialisation.
    """

    method: str = "full"
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"ClassifierTraining expected method in {METHODS}, got {self.method!r}")
        for name in ("epochs", "batch_size", "max_len"):
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


def slanted_triangular(step: int, total: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT's multiplier of the peak learning rate at ``step`` of ``total`` (eq. 3 of the paper)::

    cut = ⌊total · cut_frac⌋
    p   = step / cut                                  if step < cut
          1 − (step − cut) / (cut · (1 / cut_frac − 1))  otherwise
    lr  = lr_max · (1 + p · (ratio − 1)) / ratio
    """
    cut = max(1, math.floor(total * cut_frac))
    p = step / cut if step < cut else 1 - (step - cut) / (cut * (1 / cut_frac - 1))
    return (1 + max(0.0, p) * (ratio - 1)) / ratio


def discriminative_groups(model: GRUClassifier, lr: float, decay: float) -> list[dict]:
    """Optimizer groups bottom-up with ``lr / decay**k`` for the group ``k`` places below the head."""
    groups = model.layer_groups()
    top = len(groups) - 1
    return [{"params": params, "lr": lr / decay ** (top - k), "group": k} for k, params in enumerate(groups)]


def apply_unfreezing(model: GRUClassifier, epoch: int) -> int:
    """Gradual unfreezing: at ``epoch`` (from 0) the top ``epoch + 1`` groups train. Returns how many."""
    groups = model.layer_groups()
    trainable = min(len(groups), epoch + 1)
    for k, params in enumerate(groups):
        for parameter in params:
            parameter.requires_grad_(k >= len(groups) - trainable)
    return trainable


def pad_batch(rows: list[list[int]], max_len: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists (cut to ``max_len``) into ``(B, T)`` ids and ``(B,)`` lengths; empty texts get one
    token 0 so that every sequence has a step."""
    rows = [row[:max_len] or [0] for row in rows]
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.as_tensor(row)
    return ids, lengths


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (sorted within chunks of 50 batches), so padding stays small."""
    order = rng.permutation(len(lengths))
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


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
) -> dict:
    """Train ``model`` on token-id lists and labels with ``config.method`` (see the module docstring).

    Returns:
        ``{"trainable_parameters", "total_parameters", "seconds", "history": [{"epoch", "loss",
        "trainable_groups", "valid_accuracy"}, ...]}``.
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    if len(train_rows) != len(train_labels) or not len(train_rows):
        raise ValueError(
            f"finetune_classifier expected as many labels as texts (> 0), got {len(train_rows)} texts "
            f"and {len(train_labels)} labels"
        )
    if train_labels.min() < 0 or train_labels.max() >= model.num_classes:
        raise ValueError(
            f"labels must lie in [0, {model.num_classes}), got [{train_labels.min()}, {train_labels.max()}]"
        )
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.method == "lora":
        lora.add_lora(model.encoder, config.lora_rank, config.lora_alpha, config.lora_targets, freeze_base=True)
        for parameter in model.head.parameters():
            parameter.requires_grad_(True)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    elif config.method == "full":
        groups = discriminative_groups(model, config.lr, config.lr_decay)
    else:
        groups = [{"params": [p for group in model.layer_groups() for p in group], "lr": config.lr}]
    for group in groups:
        group["peak_lr"] = group["lr"]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    lengths = [min(len(row), config.max_len) for row in train_rows]
    per_epoch = -(-len(train_rows) // config.batch_size)
    total = per_epoch * config.epochs
    trainable_count = 0
    history = []
    step = 0
    started = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, desc=f"finetune {config.method}", unit="step")
    for epoch in range(config.epochs):
        trainable_groups = len(model.layer_groups())
        if config.method == "full" and config.gradual_unfreezing:
            trainable_groups = apply_unfreezing(model, epoch)
        trainable_count = max(trainable_count, lora.count_parameters(model)[0])
        model.train()
        losses = []
        for index in length_bucketed_batches(lengths, config.batch_size, rng):
            ids, batch_lengths = pad_batch([train_rows[i] for i in index], config.max_len)
            factor = slanted_triangular(step, total, config.cut_frac, config.ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * factor
            loss = nn.functional.cross_entropy(model(ids, batch_lengths), torch.as_tensor(train_labels[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "trainable_groups": trainable_groups}
        if valid_rows is not None and valid_labels is not None:
            record["valid_accuracy"] = float(
                (predict(model, valid_rows, max_len=config.max_len) == valid_labels).mean()
            )
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
        history.append(record)
    bar.close()
    total_parameters = lora.count_parameters(model)[1]
    return {
        "trainable_parameters": trainable_count,
        "total_parameters": total_parameters,
        "seconds": time.perf_counter() - started,
        "history": history,
        "config": asdict(config),
    }
