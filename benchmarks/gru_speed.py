"""How fast are grukit's GRU engines against torch.nn.GRU, torch.nn.LSTM and Keras 3's GRU (torch backend)?

Paired and interleaved: every repeat runs each contender once, in a rotating order, so a change in machine load
hits all of them alike; ratios are medians of the per-repeat ratios, with their min and max. Reports per
contender and mode (inference: forward without grad; training: forward + backward, gradients of the input and
every weight): median time [min-max], tokens/s, GFLOP/s (GEMM work only) and its share of an sgemm peak
measured in the same run; peak memory of forward + backward (extra resident memory, each contender in a fresh
process); minGRU against GRU at T = 128, 512, 2048; cuDNN against grukit when a GPU is present.

    python -m benchmarks.gru_speed --threads 1   # the full run on one thread (~6 minutes on a 2-core machine)
    python -m benchmarks.gru_speed               # 2 threads, the setting the speed targets are for
    python -m benchmarks.gru_speed --quick       # c1 and c4, 3 repeats: a few minutes

Writes ``benchmarks/speed_results/gru_speed[_quick]_<threads>threads.json`` and the generated section of
``docs/performance.md`` (unless ``--no-doc``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from grukit.nn import GRU, MinGRU  # noqa: E402
from grukit.ops import engines, onednn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# (batch, time, input, hidden) of the four benchmark shapes.
CONFIGS = {"c1": (32, 128, 128, 256), "c2": (64, 256, 256, 512), "c3": (1, 512, 64, 256), "c4": (256, 64, 32, 128)}
# case -> (config, num_layers, bidirectional, with lengths)
CASES = {
    "c1": ("c1", 1, False, False),
    "c2": ("c2", 1, False, False),
    "c3": ("c3", 1, False, False),
    "c4": ("c4", 1, False, False),
    "c1-2layer-bidir": ("c1", 2, True, False),
    "c1-lengths": ("c1", 1, False, True),
}
KERAS_CASES = {"c1", "c3", "c4"}  # Keras at c2 takes ~10x nn.GRU: minutes per repeat
MEMORY_CASES = ("c1", "c2")
BASELINE = "torch.nn.GRU"
MARK_START, MARK_END = "<!-- gru_speed:start -->", "<!-- gru_speed:end -->"


# Machine ---------------------------------------------------------------------------------------------------
def machine() -> dict:
    """:func:`benchmarks.machine.describe` plus the oneDNN version grukit's engine loads and the date."""
    extension = onednn.load()
    return {
        **describe(),
        "onednn": extension.version() if extension else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def sgemm_peak(size: int, repeats: int) -> float:
    """Best GFLOP/s of a float32 ``size x size`` matrix product: the machine's practical peak, measured now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


# Contenders ------------------------------------------------------------------------------------------------
def gemm_flops(kind: str, batch: int, steps: int, input_size: int, hidden: int, layers: int, directions: int,
               tokens: int | None = None) -> float:
    """Forward GEMM FLOPs: per token, layer and direction ``2 G H (I_l + H)`` (GRU G=3, LSTM G=4), minGRU
    ``2 (2H) I_l``. Elementwise work is left out."""
    total = 0.0
    for layer in range(layers):
        layer_input = input_size if layer == 0 else hidden * directions
        if kind == "mingru":
            total += 2 * 2 * hidden * layer_input
        else:
            total += 2 * (3 if kind == "gru" else 4) * hidden * (layer_input + hidden) * directions
    return total * (tokens if tokens is not None else batch * steps)


def packed(module: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Run a torch recurrent module, through a packed sequence when there are lengths (as a user would)."""
    if lengths is None:
        return module(x)[0]
    sequence = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return torch.nn.utils.rnn.pad_packed_sequence(module(sequence)[0], batch_first=True, total_length=x.shape[1])[0]


def build_contenders(case: str, with_keras: bool) -> tuple[dict[str, Callable], dict]:
    """``name -> forward()`` over the same input (and, for every GRU, the same weights)."""
    config, layers, bidirectional, with_lengths = CASES[case]
    batch, steps, input_size, hidden = CONFIGS[config]
    torch.manual_seed(0)
    x = torch.randn(batch, steps, input_size)
    lengths = None
    if with_lengths:
        lengths = torch.randint(steps // 4, steps + 1, (batch,), generator=torch.Generator().manual_seed(1))
        lengths[0] = steps
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    baseline = torch.nn.GRU(input_size, hidden, **kwargs)
    lstm = torch.nn.LSTM(input_size, hidden, **kwargs)
    contenders: dict[str, Callable] = {
        BASELINE: lambda: packed(baseline, x, lengths),
        "torch.nn.LSTM": lambda: packed(lstm, x, lengths),
    }
    for engine in ("onednn", "native"):
        ours = GRU.from_torch(baseline)
        ours.engine = engine
        contenders[f"grukit {engine}"] = lambda m=ours: m(x, lengths=lengths)[0]
    if with_keras and not with_lengths and layers == 1 and config in KERAS_CASES:
        import keras

        layer = keras.layers.GRU(hidden, return_sequences=True, reset_after=True)
        layer.build((batch, steps, input_size))
        layer.set_weights(GRU.from_torch(baseline).to_keras_weights())
        contenders["keras.layers.GRU"] = lambda: layer(x)
    tokens = int(lengths.sum()) if lengths is not None else batch * steps
    directions = 2 if bidirectional else 1
    info = {
        "batch": batch, "time": steps, "input": input_size, "hidden": hidden, "num_layers": layers,
        "bidirectional": bidirectional, "lengths": lengths.tolist() if lengths is not None else None,
        "tokens": tokens,
        "flops_gru": gemm_flops("gru", batch, steps, input_size, hidden, layers, directions, tokens),
        "flops_lstm": gemm_flops("lstm", batch, steps, input_size, hidden, layers, directions, tokens),
        "x": x,
    }
    return contenders, info


def step(forward: Callable, training: bool, x: torch.Tensor) -> Callable[[], None]:
    """One timed call: forward without grad, or forward + backward (input and weight gradients)."""
    if not training:
        def run() -> None:
            with torch.no_grad():
                forward()
        return run

    def run() -> None:
        x.requires_grad_(True)
        x.grad = None
        forward().sum().backward()
    return run


def timed(run: Callable[[], None], cuda: bool = False) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(runs: dict[str, Callable[[], None]], repeats: int, warmup: int = 2, cuda: bool = False) -> dict:
    """Times of each run: ``warmup`` calls, then ``repeats`` rounds, each calling every run once, the order
    rotating by one per round."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            times[name].append(timed(runs[name], cuda))
    return times


def summarise(times: dict[str, list[float]], flops: dict[str, float], tokens: int, peak: float) -> dict:
    """Median [min, max] per contender, tokens/s, GFLOP/s, % of peak, and paired ratios against the baselines
    (``> 1``: the contender is faster)."""
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        entry = {
            "median_ms": median * 1e3, "min_ms": min(values) * 1e3, "max_ms": max(values) * 1e3,
            "tokens_per_second": tokens / median,
        }
        if name in flops:
            entry["gflops"] = flops[name] / median / 1e9
            entry["percent_of_peak"] = 100 * entry["gflops"] / peak
        for baseline in (BASELINE, "torch.nn.LSTM", "keras.layers.GRU"):
            if baseline in times and baseline != name:
                ratios = [b / v for b, v in zip(times[baseline], values)]
                entry[f"speedup_vs_{baseline}"] = {
                    "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)
                }
        out[name] = entry
    return out


# Peak memory -----------------------------------------------------------------------------------------------
def _proc_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(case: str, name: str) -> float:
    """Extra peak resident memory (MiB) of one forward + backward, measured in this (fresh) process: run once
    to warm up, return freed memory to the system (``malloc_trim``), reset the high-water mark
    (``/proc/self/clear_refs``), run again, and read ``VmHWM - VmRSS`` before the run."""
    contenders, info = build_contenders(case, with_keras=name == "keras.layers.GRU")
    run = step(contenders[name], True, info["x"])
    run()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_kb("VmRSS")
    run()
    return (_proc_kb("VmHWM") - before) / 1024


def peak_memory(case: str, names: list[str], threads: int) -> dict[str, float]:
    results = {}
    for name in names:
        command = [sys.executable, "-m", "benchmarks.gru_speed", "--memory-probe", case, name]
        command += ["--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    return results


# minGRU and CUDA -------------------------------------------------------------------------------------------
def mingru_versus_gru(steps_list: list[int], repeats: int, peak: float) -> dict:
    batch, _, input_size, hidden = CONFIGS["c1"]
    results = {}
    for steps in steps_list:
        torch.manual_seed(0)
        x = torch.randn(batch, steps, input_size)
        baseline = torch.nn.GRU(input_size, hidden, batch_first=True)
        gru = GRU.from_torch(baseline)
        models: dict[str, Callable] = {
            BASELINE: lambda m=baseline, x=x: m(x)[0],
            f"grukit GRU {gru.resolved_engine()}": lambda m=gru, x=x: m(x)[0],
        }
        for engine in ("scan", "log_space"):
            if engine == "log_space" and steps > 512:
                continue  # torch's CPU logcumsumexp makes this a minute per repeat
            minimal = MinGRU(input_size, hidden, engine=engine)
            models[f"grukit MinGRU {engine}"] = lambda m=minimal, x=x: m(x)[0]
        flops = {
            name: gemm_flops("mingru" if "MinGRU" in name else "gru", batch, steps, input_size, hidden, 1, 1)
            for name in models
        }
        results[steps] = {}
        for mode in ("inference", "training"):
            training = mode == "training"
            times = interleaved({n: step(f, training, x) for n, f in models.items()}, repeats, warmup=1)
            scaled = {n: f * (3 if training else 1) for n, f in flops.items()}
            results[steps][mode] = summarise(times, scaled, batch * steps, peak)
    return results


def cuda_table(repeats: int) -> dict:
    """cuDNN (torch.nn.GRU on the GPU) against grukit's GRU on the GPU (``auto``: torch's fused GRU)."""
    results = {}
    for config in ("c1", "c2"):
        batch, steps, input_size, hidden = CONFIGS[config]
        torch.manual_seed(0)
        x = torch.randn(batch, steps, input_size, device="cuda")
        baseline = torch.nn.GRU(input_size, hidden, batch_first=True).cuda()
        ours = GRU.from_torch(baseline)
        models = {BASELINE: lambda m=baseline, x=x: m(x)[0], "grukit auto": lambda m=ours, x=x: m(x)[0]}
        results[config] = {}
        for mode in ("inference", "training"):
            runs = {n: step(f, mode == "training", x) for n, f in models.items()}
            times = interleaved(runs, repeats, cuda=True)
            results[config][mode] = summarise(times, {}, batch * steps, 1.0)
    return results


# Report ----------------------------------------------------------------------------------------------------
def ratio_text(entry: dict, baseline: str) -> str:
    ratio = entry.get(f"speedup_vs_{baseline}")
    return "" if ratio is None else f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"


def markdown(results: dict) -> str:
    m = results["machine"]
    load = max(m["load_average_start"][0], results["load_average_end"][0])
    shared = "a shared machine: other jobs ran at the same time" if load > 0.75 * m["cores"] else "a quiet machine"
    lines = [
        f"Generated by `python -m benchmarks.gru_speed{' --quick' if results['quick'] else ''}` on {m['date']}: "
        f"**{m['cpu']}**, {m['cores']} cores{' (AVX-512)' if m['avx512'] else ''}, torch {m['torch']}, "
        f"{m['threads']} threads, oneDNN {m['onednn']}; sgemm peak measured in the same run "
        f"**{results['sgemm_peak_gflops']:.0f} GFLOP/s**. Load average at start {m['load_average_start'][0]:.1f}, "
        f"at end {results['load_average_end'][0]:.1f} "
        f"({shared}); "
        f"{results['repeats']} interleaved repeats, medians with (min-max).",
        "",
        "Speed-up = the other contender's time / this one's, per repeat (> 1: faster).",
        "",
        "grukit's speed targets against this run:",
        "",
        *targets_table(results),
        "",
        "| case | mode | contender | median ms (min-max) | tokens/s | GFLOP/s | % peak | vs nn.GRU | vs nn.LSTM "
        "| vs Keras GRU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, modes in results["cases"].items():
        for mode, entries in modes.items():
            for name, e in entries.items():
                gflops = f"{e['gflops']:.1f}" if "gflops" in e else ""
                peak = f"{e['percent_of_peak']:.0f}" if "percent_of_peak" in e else ""
                lines.append(
                    f"| {case} | {mode} | {name} | {e['median_ms']:.1f} ({e['min_ms']:.1f}-{e['max_ms']:.1f}) | "
                    f"{e['tokens_per_second']:,.0f} | {gflops} | {peak} | {ratio_text(e, BASELINE)} | "
                    f"{ratio_text(e, 'torch.nn.LSTM')} | {ratio_text(e, 'keras.layers.GRU')} |"
                )
    if results.get("memory"):
        lines += ["", "Peak extra resident memory of one forward + backward (MiB, fresh process each):", "",
                  "| case | contender | MiB | vs nn.GRU |", "|---|---|---|---|"]
        for case, entries in results["memory"].items():
            for name, mib in entries.items():
                lines.append(f"| {case} | {name} | {mib:.0f} | {mib / entries[BASELINE]:.2f}x |")
    if results.get("mingru"):
        lines += ["", f"minGRU against GRU at batch 32, input 128, hidden 256 (speed-up vs {BASELINE}):", "",
                  "| T | mode | contender | median ms (min-max) | tokens/s | vs nn.GRU |", "|---|---|---|---|---|---|"]
        for steps, modes in results["mingru"].items():
            for mode, entries in modes.items():
                for name, e in entries.items():
                    lines.append(f"| {steps} | {mode} | {name} | {e['median_ms']:.1f} ({e['min_ms']:.1f}-"
                                 f"{e['max_ms']:.1f}) | {e['tokens_per_second']:,.0f} | {ratio_text(e, BASELINE)} |")
    if results.get("cuda"):
        lines += ["", f"CUDA ({results['cuda_device']}):", "", "| config | mode | contender | median ms | vs nn.GRU |",
                  "|---|---|---|---|---|"]
        for config, modes in results["cuda"].items():
            for mode, entries in modes.items():
                for name, e in entries.items():
                    lines.append(f"| {config} | {mode} | {name} | {e['median_ms']:.2f} | {ratio_text(e, BASELINE)} |")
    else:
        lines += ["", "No GPU on this machine: no CUDA table."]
    return "\n".join(lines)


# (what, case, mode, contender, against, at least); "against" is a baseline name or "c1" for "within 15 % of
# the same ratio at c1".
TARGETS = [
    *[("inference", case, "inference", "grukit onednn", BASELINE, goal)
      for case, goal in [("c1", 1.8), ("c4", 1.8), ("c2", 1.6), ("c3", 4.0)]],
    *[("training", case, "training", "grukit onednn", BASELINE, goal)
      for case, goal in [("c1", 2.0), ("c4", 1.75), ("c2", 1.6), ("c3", 7.0)]],
    *[("same ratio within 15 %", case, mode, "grukit onednn", "c1", 0.85)
      for case in ("c1-lengths", "c1-2layer-bidir") for mode in ("inference", "training")],
    *[("native", case, mode, "grukit native", BASELINE, 1.0) for case in ("c1", "c4")
      for mode in ("inference", "training")],
    ("vs Keras 3", "c1", "training", "grukit onednn", "keras.layers.GRU", 4.0),
]


def targets_table(results: dict) -> list[str]:
    """grukit's speed targets against this run's medians (paired ratios; memory: ratio of peaks)."""
    lines = ["| target | case | mode | contender | measured | goal | met |", "|---|---|---|---|---|---|---|"]
    cases = results["cases"]
    for what, case, mode, name, against, goal in TARGETS:
        if case not in cases or (against == "c1" and "c1" not in cases):
            continue
        entry = cases[case][mode].get(name, {})
        if against == "c1":
            ratio = entry.get(f"speedup_vs_{BASELINE}", {}).get("median")
            base = cases["c1"][mode].get(name, {}).get(f"speedup_vs_{BASELINE}", {}).get("median")
            measured = None if ratio is None or base is None else ratio / base
            shown = "" if measured is None else f"{ratio:.2f}x / {base:.2f}x at c1 = {measured:.2f}"
            goal_text = ">= 0.85 of c1's"
        else:
            measured = entry.get(f"speedup_vs_{against}", {}).get("median")
            shown = "" if measured is None else f"{measured:.2f}x"
            goal_text = f">= {goal}x vs {against}"
        if measured is not None:
            lines.append(f"| {what} | {case} | {mode} | {name} | {shown} | {goal_text} | "
                         f"{'yes' if measured >= goal else 'no'} |")
    for case, entries in results.get("memory", {}).items():
        ratio = entries["grukit onednn"] / entries[BASELINE]
        lines.append(f"| peak memory | {case} | training | grukit onednn | {ratio:.2f}x | <= 0.7x nn.GRU's | "
                     f"{'yes' if ratio <= 0.7 else 'no'} |")
    mingru = results.get("mingru", {}).get("512", results.get("mingru", {}).get(512))
    if mingru:
        ratio = mingru["training"]["grukit MinGRU scan"][f"speedup_vs_{BASELINE}"]["median"]
        lines.append(f"| minGRU | T=512 | training | grukit MinGRU scan | {ratio:.2f}x | >= 10x vs {BASELINE} | "
                     f"{'yes' if ratio >= 10 else 'no'} |")
    return lines


def write_doc(text: str, path: Path) -> None:
    """Replace the generated section of ``path`` (between the markers), keeping the hand-written rest."""
    body = path.read_text() if path.exists() else f"# Performance\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = body.split(MARK_START, 1)
    tail = rest.split(MARK_END, 1)[1]
    path.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="c1 and c4 only, 3 repeats, minGRU at T=128")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--report", type=Path, help="only rewrite docs/performance.md from a results JSON")
    parser.add_argument("--memory-probe", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:
        write_doc(markdown(json.loads(args.report.read_text())), ROOT / "docs" / "performance.md")
        return
    if args.memory_probe:
        print(json.dumps({"peak_mib": memory_probe(*args.memory_probe)}))
        return
    repeats = args.repeats or (3 if args.quick else 5)
    cases = args.cases or (["c1", "c4"] if args.quick else list(CASES))
    results: dict = {"machine": machine(), "quick": args.quick, "repeats": repeats, "cases": {}}
    results["sgemm_peak_gflops"] = peak = sgemm_peak(1024 if args.quick else 2048, 10)
    print(f"sgemm peak {peak:.0f} GFLOP/s on {results['machine']['cpu']}, {args.threads} threads", flush=True)
    for case in cases:
        contenders, info = build_contenders(case, with_keras=True)
        x = info.pop("x")
        results.setdefault("case_info", {})[case] = info
        results["cases"][case] = {}
        for mode in ("inference", "training"):
            training = mode == "training"
            runs = {name: step(forward, training, x) for name, forward in contenders.items()}
            times = interleaved(runs, repeats, warmup=1)
            flops = {
                name: info["flops_lstm" if "LSTM" in name else "flops_gru"] * (3 if training else 1)
                for name in contenders
            }
            results["cases"][case][mode] = summary = summarise(times, flops, info["tokens"], peak)
            print(case, mode, {n: f"{e['median_ms']:.1f} ms {ratio_text(e, BASELINE)}" for n, e in summary.items()},
                  flush=True)
    results["memory"] = {}
    for case in [c for c in MEMORY_CASES if c in cases]:
        names = [BASELINE, "torch.nn.LSTM", "grukit onednn", "grukit native"]
        names += ["keras.layers.GRU"] if case in KERAS_CASES else []
        results["memory"][case] = peak_memory(case, names, args.threads)
        print("memory", case, results["memory"][case], flush=True)
    results["mingru"] = mingru_versus_gru([128] if args.quick else [128, 512, 2048], repeats, peak)
    print("mingru", {s: {m: {n: round(e["median_ms"], 1) for n, e in v.items()} for m, v in r.items()}
                     for s, r in results["mingru"].items()}, flush=True)
    if torch.cuda.is_available():
        results["cuda_device"] = torch.cuda.get_device_name()
        results["cuda"] = cuda_table(repeats)
    results["load_average_end"] = os.getloadavg()
    results["engines"] = {"auto_float32_cpu": engines.resolve_gru("auto", torch.float32, torch.device("cpu"))}
    name = f"gru_speed{'_quick' if args.quick else ''}_{args.threads}threads.json"
    out = ROOT / "benchmarks" / "speed_results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    print(text)
    if not args.no_doc:
        write_doc(text, ROOT / "docs" / "performance.md")
    print(f"wrote {out.relative_to(ROOT)}" + ("" if args.no_doc else " and docs/performance.md"))


if __name__ == "__main__":
    main()
