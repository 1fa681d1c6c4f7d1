"""One training run that the data-parallel tests start under ``torchrun`` (and call in-process for the
single-process reference): ``python tests/distributed_worker.py '<spec as JSON>'``. Holds no tests.

Spec keys: ``kind`` ("batches": a GRU tagger on shuffled batches with a short last one; "tbptt": a stateful GRU
language model on a token stream), ``dtype``, ``accumulate``, ``epochs``, ``out`` (folder for
``weights.safetensors`` and ``history.json``, written by rank 0), optional ``checkpoint_every``, ``max_steps``,
``resume``, ``precision`` and ``kill_at`` (rank 1 SIGKILLs itself after that step, once: a marker file in
``out`` remembers it did).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from grukit.models.data import Batches, Samples
from grukit.nn import GRU
from grukit.text.batching import TBPTTBatches
from grukit.train import Callback, Trainer, seed_everything
from grukit.train.losses import sparse_categorical_crossentropy
from grukit.train.metrics import SparseCategoricalAccuracy

VOCAB = 11


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.gru = GRU(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.gru(self.embed(x))  # (B, T, 8)
        return self.head(out)  # (B, T, 3)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.gru = GRU(8, 8)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, ids, state=None):
        out, h_n = self.gru(self.embed(ids), state)  # (B, T, 8), (1, B, 8)
        return self.head(out), h_n  # (B, T, V)


def _loss(outputs, targets, mask):
    return sparse_categorical_crossentropy(outputs, targets, mask, from_logits=True)


class KillOnce(Callback):
    """Rank 1 kills itself with SIGKILL after ``step``, the first time only."""

    def __init__(self, step: int, marker: Path) -> None:
        self.step, self.marker = step, marker

    def on_batch_end(self, step, logs):
        if step == self.step and self.trainer.world.rank == 1 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def run(spec: dict) -> Trainer:
    out = Path(spec["out"])
    dtype = getattr(torch, spec["dtype"])
    seed_everything(0)
    generator = torch.Generator().manual_seed(1)
    if spec["kind"] == "batches":
        model = Tagger().to(dtype)
        x = torch.randn(34, 5, 3, generator=generator, dtype=dtype)
        y = (x.cumsum(1)[..., 0] > 0).long()  # (34, 5)
        data, stateful = Batches(Samples(x, y), 4, shuffle=True), False  # 9 batches, the last of 2
    else:
        model = TinyLM().to(dtype)
        tokens = np.asarray(torch.randint(0, VOCAB, (803,), generator=generator))
        data, stateful = TBPTTBatches(tokens, 4, 7), True  # 4 streams of 201 tokens: 29 windows
    callbacks = [KillOnce(spec["kill_at"], out / "killed")] if "kill_at" in spec else []
    trainer = Trainer(
        model,
        _loss,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        metrics=[SparseCategoricalAccuracy()],
        callbacks=callbacks,
        checkpoint_dir=out / "checkpoint" if spec.get("checkpoint_every") else None,
        checkpoint_every=spec.get("checkpoint_every"),
        accumulate=spec["accumulate"],
        stateful=stateful,
        precision=spec.get("precision", "32"),
    )
    resume, max_steps = spec.get("resume", False), spec.get("max_steps")
    trainer.fit(data, epochs=spec["epochs"], verbose=0, resume=resume, max_steps=max_steps)
    if trainer.world.main:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "weights.safetensors")
        record = {"step": trainer.step, "world_size": trainer.world.size, "history": trainer.history.history}
        (out / "history.json").write_text(json.dumps(record))
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(json.loads(sys.argv[1]))
