"""How fast is one GRU step (generation, serving: batch 1, one token per call) against torch's modules?

Per hidden size H (input size = H), float32, batch 1, the same weights everywhere, no grad: time per call of
``torch.nn.GRUCell``, ``torch.nn.GRU`` on a length-1 input (with ``hx``), grukit's ``GRU.step``, grukit's
``GRU.forward`` on a length-1 input and a 2-layer grukit ``GRU.step`` (a language model's stack). Paired and
interleaved: every repeat times each contender over many calls, in a rotating order, so a change in machine load
hits all of them alike; ratios are medians of the per-repeat ratios against ``torch.nn.GRU`` at T = 1. A step at
batch 1 reads every weight once for two flops per weight, so it is bound by memory traffic: GB/s counts the
weights' bytes read per second (``4 · 3H(I + H)`` per layer and call), the analogue of a share of peak.

    python -m benchmarks.single_step              # 2 threads
    python -m benchmarks.single_step --quick      # a few seconds: fewer calls and repeats

Writes ``benchmarks/speed_results/single_step[_quick]_<threads>threads.json`` (or ``--output``) and prints a
table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.machine import describe, machine_line
from grukit.nn import GRU

ROOT = Path(__file__).resolve().parent.parent
HIDDEN_SIZES = (256, 512, 1024)
BASELINE = "torch.nn.GRU T=1"


def contenders(hidden: int, batch: int = 1) -> dict[str, tuple[Callable[[], object], int]]:
    """``name -> (one call, weight bytes it reads)`` for hidden size ``hidden``, all with the same weights."""
    torch.manual_seed(0)
    reference = torch.nn.GRU(hidden, hidden, batch_first=True).eval()
    cell = torch.nn.GRUCell(hidden, hidden).eval()
    model = GRU.from_torch(reference).eval()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(reference, f"{name}_l0"))
    stack = GRU(hidden, hidden, num_layers=2).eval()
    x_t = torch.randn(batch, hidden)  # (B, I)
    x = x_t.unsqueeze(1)  # (B, 1, I)
    h = torch.randn(1, batch, hidden)  # (L, B, H)
    h2 = torch.randn(2, batch, hidden)
    layer_bytes = 4 * 3 * hidden * 2 * hidden
    return {
        "torch.nn.GRUCell": (lambda: cell(x_t, h[0]), layer_bytes),
        BASELINE: (lambda: reference(x, h), layer_bytes),
        "grukit GRU.step": (lambda: model.step(x_t, h), layer_bytes),
        "grukit GRU forward T=1": (lambda: model(x, h), layer_bytes),
        "grukit 2-layer GRU.step": (lambda: stack.step(x_t, h2), 2 * layer_bytes),
    }


def time_call(call: Callable[[], object], calls: int) -> float:
    """Seconds per call, over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def measure(hidden: int, repeats: int, calls: int) -> list[dict]:
    """One row per contender: median µs per call (min-max), GB/s of weights, ratio against nn.GRU at T = 1."""
    runs = contenders(hidden)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:  # warm up: builds, caches, first-touch of the weights
            time_call(runs[name][0], max(3, calls // 10))
        for repeat in range(repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:
                times[name].append(time_call(runs[name][0], calls))
    rows = []
    for name in names:
        ratios = [base / own for base, own in zip(times[BASELINE], times[name])]
        median = statistics.median(times[name])
        rows.append({
            "hidden": hidden,
            "contender": name,
            "median_us": median * 1e6,
            "min_us": min(times[name]) * 1e6,
            "max_us": max(times[name]) * 1e6,
            "weight_gb_per_s": runs[name][1] / median / 1e9,
            "vs_nn_gru": statistics.median(ratios),
            "vs_nn_gru_min": min(ratios),
            "vs_nn_gru_max": max(ratios),
        })
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| H | contender | µs per call (min-max) | weights GB/s | vs nn.GRU T=1 (min-max) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row["contender"] == BASELINE else (
            f"{row['vs_nn_gru']:.2f}x ({row['vs_nn_gru_min']:.2f}-{row['vs_nn_gru_max']:.2f})"
        )
        lines.append(
            f"| {row['hidden']} | {row['contender']} | {row['median_us']:.1f} ({row['min_us']:.1f}-{row['max_us']:.1f})"
            f" | {row['weight_gb_per_s']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: 3 repeats of fewer calls")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 9, quick 3)")
    parser.add_argument("--hidden", type=int, nargs="*", default=list(HIDDEN_SIZES), help="hidden sizes H")
    parser.add_argument("--output", type=Path, help="results JSON (default benchmarks/speed_results/...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = describe()
    repeats = args.repeats or (3 if args.quick else 9)
    rows = []
    for hidden in args.hidden:
        calls = max(5, (20 if args.quick else 400) * 256 // hidden)
        rows.extend(measure(hidden, repeats, calls))
    machine["load_average_end"] = describe()["load_average_start"]
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "batch": 1,
        "dtype": "float32",
        "repeats": repeats,
        "rows": rows,
    }
    name = f"single_step{'_quick' if args.quick else ''}_{args.threads}threads.json"
    out = args.output or ROOT / "benchmarks" / "speed_results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"{machine_line(machine)}; {machine['load_average_end'][0]:.1f} at the end")
    print(f"batch 1, float32, input size = hidden size, {repeats} interleaved repeats, medians\n")
    print(table(rows))
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
