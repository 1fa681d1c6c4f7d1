"""int8 inference of grukit's GRU models on the CPU (:func:`grukit.nn.quantize_int8`): accuracy and speed.

1. The ``make demo`` POS tagger (examples/pos_tagging_demo.py: Embedding -> GRU(64) -> Dense, People's Daily),
   trained as the demo trains it; test token accuracy float32 against int8, and time per batch of 32 test
   lines for grukit float32 (onednn), the same network on ``torch.nn.GRU`` (packed sequences) and int8.
2. A raw GRU layer at c1 (batch 32, T 128, input 128, hidden 256), inference: ``torch.nn.GRU``, grukit float32
   (onednn) and int8 (per-channel and per-tensor scales; torch backends ``onednn`` and ``x86``), both
   candidate forms.

Times are medians over interleaved repeats (each repeat runs every contender once, in a rotating order), on 1
and 2 threads. Writes ``benchmarks/speed_results/int8_gru_<threads>threads.json``.

    python -m benchmarks.int8_gru                 # 10 epochs as the demo (~2 minutes of training on 1 thread)
    python -m benchmarks.int8_gru --epochs 3      # a shorter training run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from examples.pos_tagging_demo import Vocabulary, split_lines
from torch import Tensor, nn

from benchmarks.machine import describe, machine_line
from grukit.datasets.pos import load_people_daily
from grukit.layers import GRU as KerasGRU
from grukit.layers import Dense, Embedding
from grukit.models import Sequential
from grukit.nn import GRU, quantize_int8
from grukit.text import pad_sequences
from grukit.train import seed_everything

ROOT = Path(__file__).resolve().parent.parent
C1 = (32, 128, 128, 256)  # batch, time, input, hidden


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``repeats`` rounds in a rotating order (after one warm-up call)."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for run in contenders.values():
            run()
        for repeat in range(repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                started = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - started)
    return times


def summary(times: dict[str, list[float]], baseline: str) -> dict:
    """Median ms and the median paired speed-up against ``baseline`` per contender."""
    return {
        name: {
            "median_ms": round(1000 * statistics.median(t), 3),
            "min_ms": round(1000 * min(t), 3),
            f"speedup_vs_{baseline}": round(statistics.median(b / s for b, s in zip(times[baseline], t)), 2),
        }
        for name, t in times.items()
    }


class TorchTagger(nn.Module):
    """The tagger with its GRU as ``torch.nn.GRU`` (same weights), lengths through a packed sequence."""

    def __init__(self, model: Sequential) -> None:
        super().__init__()
        self.embedding, self.dense = model.layers[0], model.layers[2]
        self.rnn = model.layers[1].module.to_torch()

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        embedded, _ = self.embedding(ids)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=ids.shape[1])
        return self.dense(output)[0]  # (B, T, tags)


def train_tagger(epochs: int) -> tuple[Sequential, list, list, float]:
    """The demo's model and data, trained for ``epochs`` epochs on one thread; returns the model, the test
    words and labels (id lists) and the training seconds."""
    seed_everything(0)
    train, val, test = split_lines(load_people_daily())
    vocab = Vocabulary(train, min_count=2)
    tags = sorted({tag for line in train for _, tag in line})
    tag_ids = {tag: i for i, tag in enumerate(tags)}

    def encode(part: list) -> tuple[list, list]:
        return ([[vocab.encode(word) for word, _ in line] for line in part],
                [[tag_ids.get(tag, tag_ids["n"]) for _, tag in line] for line in part])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(encode, (train, val, test))
    model = Sequential([Embedding(input_dim=len(vocab), output_dim=128, mask_zero=True),
                        KerasGRU(units=64, return_sequences=True), Dense(units=len(tags), activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_data=(x_val, y_val), verbose=0)
    return model, x_test, y_test, time.perf_counter() - started


def tagger_results(model: Sequential, x_test: list, y_test: list, repeats: int) -> tuple[dict, dict]:
    quantized = quantize_int8(model)
    _, float_accuracy = model.evaluate(x_test, y_test, verbose=0)
    _, int8_accuracy = quantized.evaluate(x_test, y_test, verbose=0)
    accuracy = {"float32": round(float_accuracy, 5), "int8": round(float(int8_accuracy), 5),
                "int8_change_points": round(100 * (int8_accuracy - float_accuracy), 3),
                "test_tokens": sum(map(len, y_test))}
    torch_tagger = TorchTagger(model).eval()
    batches = [pad_sequences(x_test[start : start + 32], torch.int64) for start in range(0, 32 * 40, 32)]

    def over_batches(run: Callable[[Tensor, Tensor], object]) -> Callable[[], None]:
        return lambda: [run(ids, lengths) for ids, lengths in batches]

    model.eval()
    contenders = {
        "grukit float32": over_batches(lambda ids, lengths: model(ids)),
        "torch.nn.GRU float32": over_batches(torch_tagger),
        "grukit int8": over_batches(lambda ids, lengths: quantized(ids)),
    }
    times = interleaved(contenders, repeats)
    per_batch = {name: [t / len(batches) for t in values] for name, values in times.items()}
    return accuracy, summary(per_batch, "grukit float32")


def c1_results(repeats: int) -> dict:
    batch, steps, features, hidden = C1
    torch.manual_seed(0)
    x = torch.randn(batch, steps, features)
    results = {}
    for reset_after in (True, False):
        gru = GRU(features, hidden, reset_after=reset_after).eval()
        contenders = {"grukit float32": lambda gru=gru: gru(x)}
        if reset_after:
            torch_gru = gru.to_torch().eval()
            contenders["torch.nn.GRU float32"] = lambda torch_gru=torch_gru: torch_gru(x)
            variants = [(True, "onednn"), (False, "onednn"), (True, "x86"), (False, "x86")]
        else:
            variants = [(True, "onednn"), (False, "onednn")]
        for per_channel, backend in variants:
            quantized = quantize_int8(gru, per_channel=per_channel, backend=backend)
            scales = "per channel" if per_channel else "per tensor"
            name = f"int8 {scales}" + (f" ({backend})" if reset_after else "")
            contenders[name] = lambda quantized=quantized: quantized(x)
        times = interleaved(contenders, repeats)
        results["reset_after" if reset_after else "reset_before"] = summary(times, "grukit float32")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the tagger (the demo: 10)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x_test, y_test, train_seconds = train_tagger(args.epochs)
    print(f"{machine_line(describe())}\ntagger trained {args.epochs} epochs in {train_seconds:.0f} s")
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = [round(value, 2) for value in os.getloadavg()]
        accuracy, tagger_speed = tagger_results(model, x_test, y_test, args.repeats)
        c1 = c1_results(args.repeats)
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": describe(), "threads": threads, "load_average_at_start": load,
                  "repeats": args.repeats, "tagger_epochs": args.epochs,
                  "tagger_train_seconds": round(train_seconds, 1), "tagger_accuracy": accuracy,
                  "tagger_ms_per_batch_of_32": tagger_speed, "c1_inference": c1}
        print(f"\n{threads} thread(s): tagger accuracy float32 {accuracy['float32']:.4f}, int8 "
              f"{accuracy['int8']:.4f} ({accuracy['int8_change_points']:+.2f} points)")
        for title, table in [("tagger, ms per batch of 32", tagger_speed),
                             *[(f"c1 {form}, ms", table) for form, table in c1.items()]]:
            print(f"{title}:")
            for name, row in table.items():
                speedup = row["speedup_vs_grukit float32"]
                print(f"  {name:<30} {row['median_ms']:>9.2f}  {speedup:>5.2f}x vs grukit float32")
        out = ROOT / "benchmarks" / "speed_results" / f"int8_gru_{threads}threads.json"
        out.write_text(json.dumps(report, indent=1))
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
