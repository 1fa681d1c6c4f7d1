"""int8 inference on the CPU: accuracy and speed of an exported sentiment model, float32 against int8.

Trains :class:`grukit.tasks.TextClassifier` (BPE tokens, BiGRU and BiLSTM, mean + max pooling, no naive-Bayes
evidence) briefly on the Rotten Tomatoes snippets, exports its network with :func:`grukit.export.to_onnx`,
quantises it with :func:`grukit.export.quantize_int8`, and reports on the held-out snippets:

- accuracy of grukit (float32), onnxruntime float32 and onnxruntime int8, and the int8 change in points;
- time per batch of 64 snippets (median over interleaved repeats, each repeat runs every contender once in a
  rotating order) for grukit float32, the same network on ``torch.nn.GRU`` / ``torch.nn.LSTM`` (packed
  sequences), onnxruntime float32 and onnxruntime int8, all on the same number of threads.

    python -m benchmarks.int8_speed              # 1 thread, ~3 minutes on a 2-core machine
    python -m benchmarks.int8_speed --quick      # fewer training texts and repeats

Writes ``benchmarks/speed_results/int8_speed[_quick]_<threads>threads.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from benchmarks.machine import _cpuinfo_field, describe, machine_line
from grukit.datasets import load_rotten_tomatoes
from grukit.export import quantize_int8, to_onnx
from grukit.tasks import TextClassifier
from grukit.tasks._base import masked_mean_max
from grukit.tasks.text import encode_texts
from grukit.text import pad_sequences

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
INT8_ISA = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")  # what int8 kernels can use


def int8_isa() -> list[str]:
    """The CPU's instruction-set extensions that onnxruntime's int8 GEMMs pick from."""
    flags = (_cpuinfo_field("flags") or "").split()
    return [name for name in INT8_ISA if name in flags]


class TorchBiRNNPool(nn.Module):
    """The TextClassifier network with its recurrent layer as ``torch.nn.GRU`` / ``torch.nn.LSTM`` (same weights),
    variable lengths through ``pack_padded_sequence``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.embedding, self.head = network.embedding, network.head
        self.rnn = network.rnn.to_torch()

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        outputs, _ = self.rnn(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=ids.shape[1])
        return self.head(masked_mean_max(outputs, lengths))  # (B, classes)


def train(cell: str, texts: list[str], labels: np.ndarray) -> TextClassifier:
    return TextClassifier(tokens="bpe", vocab_size=4000, max_length=64, embedding_size=64, hidden_size=64,
                          cell=cell, nb_order=0, epochs=3, random_state=0).fit(texts, labels)


def batches(estimator: TextClassifier, texts: list[str]) -> list[tuple[Tensor, Tensor]]:
    rows = encode_texts(estimator.encoder_, texts, estimator.max_length)
    return [pad_sequences(rows[start : start + BATCH], torch.int64) for start in range(0, len(rows), BATCH)]


def measure(cell: str, data: tuple, repeats: int, threads: int) -> dict:
    train_texts, train_labels, test_texts, test_labels = data
    started = time.perf_counter()
    estimator = train(cell, train_texts, train_labels)
    trained_s = time.perf_counter() - started
    network = estimator.module_.eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    with tempfile.TemporaryDirectory() as folder:
        float_path = to_onnx(estimator, Path(folder) / "model.onnx")
        int8_path = quantize_int8(float_path, Path(folder) / "model_int8.onnx")
        sizes = {"float32": float_path.stat().st_size, "int8": int8_path.stat().st_size}
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("onnxruntime float32", float_path), ("onnxruntime int8", int8_path))}
    torch_network = TorchBiRNNPool(network).eval()

    def run_session(session: ort.InferenceSession) -> callable:
        return lambda ids, lengths: session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]

    contenders = {
        "grukit float32": lambda ids, lengths: network(ids, lengths).numpy(),
        f"torch.nn.{cell.upper()} float32": lambda ids, lengths: torch_network(ids, lengths).numpy(),
        **{name: run_session(session) for name, session in sessions.items()},
    }
    test = batches(estimator, test_texts)
    accuracy = {}
    with torch.no_grad():
        for name, run in contenders.items():
            predicted = np.concatenate([run(ids, lengths).argmax(1) for ids, lengths in test])
            accuracy[name] = float((estimator.classes_[predicted] == test_labels).mean())
        timed = test[: max(1, len(test) // 2)]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for repeat in range(repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                started = time.perf_counter()
                for ids, lengths in timed:
                    contenders[name](ids, lengths)
                times[name].append((time.perf_counter() - started) / len(timed))
    reference = statistics.median(times["grukit float32"])
    return {
        "cell": cell,
        "train_texts": len(train_texts),
        "test_texts": len(test_texts),
        "train_seconds": round(trained_s, 1),
        "file_bytes": sizes,
        "accuracy": accuracy,
        "int8_change_points": round(100 * (accuracy["onnxruntime int8"] - accuracy["onnxruntime float32"]), 2),
        "ms_per_batch": {name: round(1000 * statistics.median(t), 3) for name, t in times.items()},
        "speedup_vs_grukit": {name: round(reference / statistics.median(t), 2) for name, t in times.items()},
        "texts_per_second": {name: round(BATCH / statistics.median(t)) for name, t in times.items()},
    }


def table(result: dict) -> str:
    lines = [f"{result['cell'].upper()} sentiment model: {result['train_texts']} training texts, "
             f"{result['test_texts']} test texts, batches of {BATCH}; int8 file {result['file_bytes']['int8']:,} "
             f"bytes vs {result['file_bytes']['float32']:,}",
             f"{'contender':<26} {'accuracy':>9} {'ms/batch':>9} {'texts/s':>8} {'vs grukit':>9}"]
    for name in result["accuracy"]:
        lines.append(f"{name:<26} {100 * result['accuracy'][name]:>8.2f}% {result['ms_per_batch'][name]:>9.2f} "
                     f"{result['texts_per_second'][name]:>8} {result['speedup_vs_grukit'][name]:>8.2f}x")
    lines.append(f"int8 accuracy change: {result['int8_change_points']:+.2f} points")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--quick", action="store_true", help="3000 training texts, 5 repeats")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = describe()
    machine["int8_isa"] = int8_isa()
    print(f"{machine_line(machine)}; int8 ISA: {', '.join(machine['int8_isa']) or 'none found'}")
    texts, labels = load_rotten_tomatoes()
    order = np.random.default_rng(0).permutation(len(texts))
    cut = 3000 if args.quick else 8000
    test = order[-2000:]
    data = ([texts[i] for i in order[:cut]], labels[order[:cut]], [texts[i] for i in test], labels[test])
    results = []
    for cell in ("gru", "lstm"):
        result = measure(cell, data, repeats=5 if args.quick else 15, threads=args.threads)
        print(table(result))
        results.append(result)
    name = f"int8_speed{'_quick' if args.quick else ''}_{args.threads}threads.json"
    out = ROOT / "benchmarks" / "speed_results" / name
    report = {"date": datetime.date.today().isoformat(), "machine": machine, "threads": args.threads,
              "results": results}
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
