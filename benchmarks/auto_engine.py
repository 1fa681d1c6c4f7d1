"""Does ``engine="auto"`` pick the fastest engine? grukit's GRU on ``onednn``, ``native`` and ``auto`` at every
case of :mod:`benchmarks.gru_speed` (c1 .. c4 by default), inference and training.

Paired and interleaved as in ``gru_speed``: each repeat runs the three once, in a rotating order. The first
call of ``auto`` (in the warm-up) calibrates unless this machine's cache (``$GRUKIT_CACHE/engines``) already
holds the choice; the report says which engine ``auto`` runs, what calibration measured, and ``auto``'s time
over the best engine's (the engine with the lower median), the median of the per-repeat ratios. Goal: <= 1.05.

    python -m benchmarks.auto_engine --threads 1
    python -m benchmarks.auto_engine --cases c1 c4 --repeats 9

Writes ``benchmarks/speed_results/auto_engine_<threads>threads.json``.
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

from benchmarks.gru_speed import CASES, CONFIGS, case_input
from benchmarks.machine import describe, machine_line
from grukit.nn import GRU
from grukit.ops import autotune

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("onednn", "native")
GOAL = 1.05


def step(model: GRU, x: torch.Tensor, lengths: torch.Tensor | None, training: bool) -> Callable[[], None]:
    """One call as a user makes it: a forward without grad, or forward + backward (input and weight grads)."""
    def run() -> None:
        with torch.set_grad_enabled(training):
            x.requires_grad_(training)
            x.grad = None
            output, _ = model(x, lengths=lengths)
            if training:
                output.sum().backward()
    return run


def interleaved(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each run per repeat, after one warm-up call each; the order rotates by one per repeat."""
    names = list(runs)
    for name in names:
        runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def measure_case(case: str, training: bool, repeats: int) -> dict:
    """Times of the engines and ``auto`` at ``case``, the choice ``auto`` made and its ratio to the best."""
    config, layers, bidirectional, _ = CASES[case]
    batch, steps, input_size, hidden = CONFIGS[config]
    x, lengths = case_input(case)
    models = {}
    for engine in (*ENGINES, "auto"):
        models[engine] = GRU(input_size, hidden, num_layers=layers, bidirectional=bidirectional, engine=engine)
        models[engine].load_state_dict(models[ENGINES[0]].state_dict())
    runs = {name: step(model, x, lengths, training) for name, model in models.items()}
    times = interleaved(runs, repeats)  # auto's warm-up call calibrates (or reads the cache)
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = min(ENGINES, key=medians.__getitem__)
    ratios = [a / b for a, b in zip(times["auto"], times[best])]
    chosen = [models["auto"].resolved_engine(input_shape=x.shape, training=training, layer=layer)
              for layer in range(layers)]
    cache = json.loads(autotune.cache_file().read_text()) if autotune.cache_file().is_file() else {"choices": {}}
    keys = [autotune.Key.of((batch, steps, input_size if layer == 0 else hidden * (1 + bidirectional), hidden),
                            torch.float32, training, True, ("onednn", "native")).name for layer in range(layers)]
    return {
        "median_ms": {name: value * 1e3 for name, value in medians.items()},
        "min_ms": {name: min(values) * 1e3 for name, values in times.items()},
        "best_engine": best,
        "auto_uses": chosen,
        "calibration": {key: cache["choices"].get(key) for key in keys},
        "auto_over_best": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", nargs="+", default=["c1", "c2", "c3", "c4"], choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "machine": describe(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "autotune": "on" if autotune.enabled() else f"off ({autotune.ENV_SWITCH}=0: cost model)",
        "goal": f"auto's time <= {GOAL} x the best engine's",
        "cases": {},
    }
    print(machine_line(results["machine"]))
    print("| case | mode | onednn ms | native ms | auto ms | best | auto uses | auto / best | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        results["cases"][case] = {}
        for mode in ("inference", "training"):
            entry = measure_case(case, mode == "training", args.repeats)
            results["cases"][case][mode] = entry
            ms, ratio = entry["median_ms"], entry["auto_over_best"]
            print(f"| {case} | {mode} | {ms['onednn']:.1f} | {ms['native']:.1f} | {ms['auto']:.1f} | "
                  f"{entry['best_engine']} | "
                  f"{', '.join(sorted(set(entry['auto_uses'])))} | {ratio['median']:.3f} "
                  f"({ratio['min']:.2f}-{ratio['max']:.2f}) | {'yes' if ratio['median'] <= GOAL else 'no'} |",
                  flush=True)
    results["load_average_end"] = list(os.getloadavg())
    load = max(results["machine"]["load_average_start"][0], results["load_average_end"][0])
    results["shared_machine"] = load > 0.75 * results["machine"]["cores"]
    out = ROOT / "benchmarks" / "speed_results" / f"auto_engine_{args.threads}threads.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average {load:.1f} ({'shared' if results['shared_machine'] else 'quiet'} machine); "
          f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
