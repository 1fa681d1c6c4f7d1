"""How fast are grukit's GRU engines against torch.nn.GRU, torch.nn.LSTM and Keras 3's GRU (torch backend), in
float32, bfloat16 and int8?

Paired and interleaved: every repeat runs each contender once, in a rotating order, so a change in machine load
hits all of them alike; ratios are medians of the per-repeat ratios, with their min and max, always against
float32 ``torch.nn.GRU`` with the same weights. Reports the CPU's ISA class (AMX, AVX-512 BF16, AVX-512, AVX2)
and the float32, bfloat16 and int8 GEMM peaks measured in the same run; per contender and mode (inference:
forward without grad; training: forward + backward, gradients of the input and every weight): median time
[min-max], tokens/s, GFLOP/s (GEMM work only) and its share of the peak of its own precision; peak memory of
forward + backward (extra resident memory, each contender in a fresh process); minGRU against GRU at T = 128,
512, 2048; cuDNN against grukit when a GPU is present. Contenders that need work other parts of grukit may
lack (bf16 through oneDNN, ``grukit.nn.quantize_int8``) are detected at run time; the report says why any is
missing.

    python -m benchmarks.gru_speed               # 2 threads, the setting the speed targets are for
    python -m benchmarks.gru_speed --threads 1   # the full run on one thread
    python -m benchmarks.gru_speed --quick       # c1 and c4, 3 repeats: a few minutes

Writes ``benchmarks/speed_results/gru_speed[_quick]_<threads>threads.json`` (or ``--output``) and the generated
section of ``docs/performance.md`` (unless ``--no-doc``).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import grukit.nn  # noqa: E402
from benchmarks.machine import cpu_isa, describe, has_bf16_instructions  # noqa: E402
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
LOW_PRECISION_CASES = {"c1", "c2", "c3", "c4"}  # bf16 and int8 contenders: one layer, full-length sequences
MEMORY_CASES = ("c1", "c2")
BASELINE = "torch.nn.GRU"
MARK_START, MARK_END = "<!-- gru_speed:start -->", "<!-- gru_speed:end -->"
BF16_ENGINES = ("auto", "onednn", "native")  # each under bfloat16 autocast with float32 master weights


def autocast_name(engine: str) -> str:
    return f"grukit {engine} bf16 (autocast)"


AUTOCAST_BF16 = autocast_name("auto")  # what a user of precision="bf16" gets
MODULE_BF16 = "grukit auto bf16"  # the module and its input cast to bfloat16


# Machine ---------------------------------------------------------------------------------------------------
def machine() -> dict:
    """:func:`benchmarks.machine.describe` and :func:`benchmarks.machine.cpu_isa` (ISA class, oneDNN's ISA), plus
    the oneDNN version grukit's engine loads and the date."""
    extension = onednn.load()
    return {
        **describe(),
        **cpu_isa(),
        "onednn": extension.version() if extension else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def best_rate(run: Callable[[], object], operations: float, repeats: int) -> float:
    """Best ``operations`` per second of ``run()`` over ``repeats`` calls after one warm-up, in billions."""
    run()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, operations / (time.perf_counter() - start) / 1e9)
    return best


def gemm_peak(dtype: torch.dtype, size: int, repeats: int) -> float:
    """Best GFLOP/s of a ``size x size`` matrix product (``2 size^3`` FLOPs) in ``dtype``: MKL's sgemm for float32,
    oneDNN (AMX tiles or AVX-512 BF16 where the CPU has them) for bfloat16. The practical peak, measured now."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return best_rate(lambda: torch.mm(a, b), 2 * size**3, repeats)


def int8_peak(size: int, repeats: int) -> float:
    """Best GOP/s of torch's dynamically quantized int8 ``Linear`` (``torch.backends.quantized.engine``) on a
    ``(size, size)`` float32 input: int8 weights, the input quantized on every call, ``2 size^3`` operations."""
    with warnings.catch_warnings():  # torch deprecates its quantized tensors; the kernels are what is measured
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        layer = torch.ao.nn.quantized.dynamic.Linear(size, size)
        x = torch.randn(size, size)
        return best_rate(lambda: layer(x), 2 * size**3, repeats)


def measure_peaks(size: int, repeats: int) -> dict[str, float]:
    """``precision -> practical GEMM peak`` (GFLOP/s; int8 GOP/s) on torch's current thread count."""
    return {
        "float32": gemm_peak(torch.float32, size, repeats),
        "bfloat16": gemm_peak(torch.bfloat16, size, repeats),
        "int8": int8_peak(size, repeats),
    }


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


@dataclass
class Contender:
    """One timed contender: ``forward() -> output (B, T, H)`` reading ``x`` ``(B, T, I)`` (float32, or bfloat16
    for modules cast to bfloat16); ``precision``: the GEMM peak its GFLOP/s are compared with (``"float32"``,
    ``"bfloat16"``, ``"int8"``); ``trains``: whether it runs the training mode (int8 modules do inference only);
    ``note``: what a reader should know about it (a float32 fallback); ``engine(training)``: the engine it ran
    (for ``engine="auto"``, which may choose per shape and mode)."""

    forward: Callable[[], Tensor]
    x: Tensor
    precision: str = "float32"
    trains: bool = True
    note: str = ""
    engine: Callable[[bool], str] | None = None


def chosen_engine(module: GRU, x: Tensor, training: bool) -> str:
    """The engine ``module`` runs for ``x``: its choice for this shape and mode where ``resolved_engine`` takes
    them (``auto`` choosing per shape), else its one choice for the dtype and device."""
    if "input_shape" in inspect.signature(module.resolved_engine).parameters:
        return module.resolved_engine(input_shape=tuple(x.shape), training=training)
    return module.resolved_engine()


def low_precision_contenders(
    baseline: torch.nn.GRU, lstm: torch.nn.LSTM, x: Tensor, isa: str
) -> tuple[dict[str, Contender], dict[str, str]]:
    """The bfloat16 and int8 contenders with ``baseline``'s weights, and ``name -> why it is not measured`` for
    those this grukit or CPU cannot run.

    - ``torch.nn.GRU bf16`` / ``torch.nn.LSTM bf16``: the modules and the input cast to bfloat16;
    - ``grukit {auto,onednn,native} bf16 (autocast)``: the float32 GRU on that engine under
      ``torch.autocast("cpu", dtype=torch.bfloat16)`` with a float32 input (float32 master weights:
      mixed-precision training); measured only if its output is bfloat16, i.e. autocast reached a bfloat16
      engine;
    - ``grukit auto bf16``: the GRU and its input cast to bfloat16, measured when ``auto`` takes bfloat16 to a
      fused engine (not the reference cells);
    - ``grukit int8``: ``grukit.nn.quantize_int8(GRU)``, inference only, when grukit has it.
    """
    x16 = x.to(torch.bfloat16)  # (B, T, I), a leaf of its own
    gru16, lstm16 = copy.deepcopy(baseline).to(torch.bfloat16), copy.deepcopy(lstm).to(torch.bfloat16)
    contenders = {
        "torch.nn.GRU bf16": Contender(lambda: gru16(x16)[0], x16, "bfloat16"),
        "torch.nn.LSTM bf16": Contender(lambda: lstm16(x16)[0], x16, "bfloat16"),
    }
    missing: dict[str, str] = {}
    # oneDNN's own view where the binding reports it (an ISA capped by ONEDNN_MAX_CPU_ISA counts), else the flags
    bf16_hardware = getattr(onednn, "has_bf16_hardware", None)
    hardware = bf16_hardware() if bf16_hardware is not None else has_bf16_instructions(isa)
    fallback = "" if hardware else (
        f"no bfloat16 instructions for oneDNN here (ISA {isa}): grukit's engine computes in float32"
    )

    for engine in BF16_ENGINES:
        name = autocast_name(engine)
        mixed = GRU.from_torch(baseline)
        mixed.engine = engine

        def autocast_forward(module: GRU = mixed) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x)[0]

        with torch.no_grad():
            try:
                output_dtype = autocast_forward().dtype
            except (RuntimeError, ValueError) as error:  # a binding without bfloat16, or one being rebuilt
                output_dtype, missing[name] = None, f"failed under autocast: {error}"
        def autocast_engine(training: bool, module: GRU = mixed) -> str:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return chosen_engine(module, x, training)

        if output_dtype == torch.bfloat16:
            chosen = autocast_engine if engine == "auto" else None
            contenders[name] = Contender(autocast_forward, x, "bfloat16", note=fallback, engine=chosen)
        elif output_dtype is not None:
            missing[name] = f"under bfloat16 autocast grukit's engine ran {output_dtype} (no bfloat16 path)"

    low = GRU.from_torch(baseline).to(torch.bfloat16)
    try:
        engine = low.resolved_engine()
    except ValueError as error:
        missing[MODULE_BF16] = str(error)
    else:
        if engine == "reference":
            missing[MODULE_BF16] = "bfloat16 runs on the reference cells here (too slow to time)"
        else:
            contenders[MODULE_BF16] = Contender(
                lambda: low(x16)[0], x16, "bfloat16", note=fallback, engine=lambda t: chosen_engine(low, x16, t)
            )

    quantize_int8 = getattr(grukit.nn, "quantize_int8", None)
    if quantize_int8 is None:
        missing["grukit int8"] = "this grukit has no grukit.nn.quantize_int8"
    else:
        quantized = quantize_int8(GRU.from_torch(baseline))
        contenders["grukit int8"] = Contender(lambda: quantized(x)[0], x, "int8", trains=False)
    return contenders, missing


def case_input(case: str) -> tuple[Tensor, Tensor | None]:
    """The case's batch-first input ``x`` ``(B, T, I)`` (seed 0) and, for the lengths cases, ``lengths`` ``(B,)``
    drawn uniformly from ``[T/4, T]`` with the first sequence full-length; else ``None``."""
    config, _, _, with_lengths = CASES[case]
    batch, steps, input_size, _ = CONFIGS[config]
    torch.manual_seed(0)
    x = torch.randn(batch, steps, input_size)
    lengths = None
    if with_lengths:
        lengths = torch.randint(steps // 4, steps + 1, (batch,), generator=torch.Generator().manual_seed(1))
        lengths[0] = steps
    return x, lengths


def build_contenders(
    case: str, with_keras: bool, isa: str | None = None
) -> tuple[dict[str, Contender], dict, dict[str, str]]:
    """``name -> Contender`` over the same input (and, for every GRU, the same weights), the case's sizes and
    FLOPs (with its input ``x``), and ``name -> why it is not measured``. ``isa`` (the CPU's ISA class) adds the
    bfloat16 and int8 contenders in :data:`LOW_PRECISION_CASES`."""
    config, layers, bidirectional, with_lengths = CASES[case]
    batch, steps, input_size, hidden = CONFIGS[config]
    x, lengths = case_input(case)
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    baseline = torch.nn.GRU(input_size, hidden, **kwargs)
    lstm = torch.nn.LSTM(input_size, hidden, **kwargs)
    contenders = {
        BASELINE: Contender(lambda: packed(baseline, x, lengths), x),
        "torch.nn.LSTM": Contender(lambda: packed(lstm, x, lengths), x),
    }
    for engine in ("onednn", "native", "auto"):
        ours = GRU.from_torch(baseline)
        ours.engine = engine
        contenders[f"grukit {engine}"] = Contender(
            lambda m=ours: m(x, lengths=lengths)[0], x,
            engine=(lambda training, m=ours: chosen_engine(m, x, training)) if engine == "auto" else None,
        )
    if with_keras and not with_lengths and layers == 1 and config in KERAS_CASES:
        import keras

        layer = keras.layers.GRU(hidden, return_sequences=True, reset_after=True)
        layer.build((batch, steps, input_size))
        layer.set_weights(GRU.from_torch(baseline).to_keras_weights())
        contenders["keras.layers.GRU"] = Contender(lambda: layer(x), x)
    missing: dict[str, str] = {}
    if isa is not None and case in LOW_PRECISION_CASES:
        extra, missing = low_precision_contenders(baseline, lstm, x, isa)
        contenders.update(extra)
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
    return contenders, info, missing


def step(contender: Contender, training: bool) -> Callable[[], None]:
    """One timed call: forward without grad, or forward + backward (input and weight gradients)."""
    forward, x = contender.forward, contender.x
    if not training:
        def run() -> None:
            with torch.no_grad():
                forward()
        return run

    def run() -> None:
        x.requires_grad_(True)
        x.grad = None
        forward().float().sum().backward()
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


def summarise(times: dict[str, list[float]], flops: dict[str, float], tokens: int, peaks: dict[str, float],
              precisions: dict[str, str] | None = None) -> dict:
    """Median [min, max] per contender, tokens/s, GFLOP/s, % of the GEMM peak of its precision (``precisions``:
    name -> key of ``peaks``, default float32), and paired ratios against the baselines (``> 1``: the
    contender is faster)."""
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        precision = (precisions or {}).get(name, "float32")
        entry = {
            "median_ms": median * 1e3, "min_ms": min(values) * 1e3, "max_ms": max(values) * 1e3,
            "tokens_per_second": tokens / median, "precision": precision,
        }
        if name in flops:
            entry["gflops"] = flops[name] / median / 1e9
            if peaks.get(precision):
                entry["percent_of_peak"] = 100 * entry["gflops"] / peaks[precision]
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
    contenders, _, _ = build_contenders(case, with_keras=name == "keras.layers.GRU")
    run = step(contenders[name], True)
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
def mingru_versus_gru(steps_list: list[int], repeats: int, peaks: dict[str, float]) -> dict:
    batch, _, input_size, hidden = CONFIGS["c1"]
    results = {}
    for steps in steps_list:
        torch.manual_seed(0)
        x = torch.randn(batch, steps, input_size)
        baseline = torch.nn.GRU(input_size, hidden, batch_first=True)
        gru = GRU.from_torch(baseline)
        models = {
            BASELINE: Contender(lambda m=baseline, x=x: m(x)[0], x),
            f"grukit GRU {gru.resolved_engine()}": Contender(lambda m=gru, x=x: m(x)[0], x),
        }
        for engine in ("scan", "log_space"):
            if engine == "log_space" and steps > 512:
                continue  # torch's CPU logcumsumexp makes this a minute per repeat
            minimal = MinGRU(input_size, hidden, engine=engine)
            models[f"grukit MinGRU {engine}"] = Contender(lambda m=minimal, x=x: m(x)[0], x)
        flops = {
            name: gemm_flops("mingru" if "MinGRU" in name else "gru", batch, steps, input_size, hidden, 1, 1)
            for name in models
        }
        results[steps] = {}
        for mode in ("inference", "training"):
            training = mode == "training"
            times = interleaved({n: step(c, training) for n, c in models.items()}, repeats, warmup=1)
            scaled = {n: f * (3 if training else 1) for n, f in flops.items()}
            results[steps][mode] = summarise(times, scaled, batch * steps, peaks)
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
        models = {
            BASELINE: Contender(lambda m=baseline, x=x: m(x)[0], x),
            "grukit auto": Contender(lambda m=ours, x=x: m(x)[0], x),
        }
        results[config] = {}
        for mode in ("inference", "training"):
            runs = {n: step(c, mode == "training") for n, c in models.items()}
            times = interleaved(runs, repeats, cuda=True)
            results[config][mode] = summarise(times, {}, batch * steps, {})
    return results


# Report ----------------------------------------------------------------------------------------------------
def ratio_text(entry: dict, baseline: str) -> str:
    ratio = entry.get(f"speedup_vs_{baseline}")
    return "" if ratio is None else f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"


def peaks_text(peaks: dict[str, float | None]) -> str:
    units = {"float32": "GFLOP/s", "bfloat16": "GFLOP/s", "int8": "GOP/s (torch's dynamically quantized Linear)"}
    return ", ".join(f"{precision} **{value:.0f} {units[precision]}**" for precision, value in peaks.items() if value)


def markdown(results: dict) -> str:
    m = results["machine"]
    load = max(m["load_average_start"][0], results["load_average_end"][0])
    shared = "a shared machine: other jobs ran at the same time" if load > 0.75 * m["cores"] else "a quiet machine"
    peaks = results.get("peaks", {"float32": results.get("sgemm_peak_gflops")})
    onednn_isa = f"oneDNN's kernels: {m['onednn_isa']}" if m.get("onednn_isa") else "oneDNN's ISA not reported"
    lines = [
        f"Generated by `python -m benchmarks.gru_speed{' --quick' if results['quick'] else ''}` on {m['date']}: "
        f"**{m['cpu']}**, {m['cores']} cores, ISA **{m.get('isa', 'not recorded')}** ({onednn_isa}), "
        f"torch {m['torch']}, {m['threads']} threads, oneDNN {m['onednn']}; GEMM peaks measured in the same run: "
        f"{peaks_text(peaks)}. Load average at start {m['load_average_start'][0]:.1f}, "
        f"at end {results['load_average_end'][0]:.1f} ({shared}); "
        f"{results['repeats']} interleaved repeats, medians with (min-max).",
        "",
        "Speed-up = the other contender's time / this one's, per repeat (> 1: faster); every contender, bfloat16 and "
        f"int8 included, is compared with float32 {BASELINE} with the same weights. % peak: GFLOP/s against the "
        "GEMM peak of the contender's own precision.",
        "",
        "grukit's speed targets against this run:",
        "",
        *targets_table(results),
        "",
        "The single-step target (>= 3x faster per call than nn.GRU at T = 1) is measured by "
        "`benchmarks/single_step.py`, and `auto`'s (within 5 % of the best engine everywhere) by "
        "`benchmarks/auto_engine.py`.",
    ]
    notes = [(name, c["precision"], c["note"]) for name, c in results.get("contenders", {}).items() if c["note"]]
    missing = results.get("not_measured", {})
    if notes or missing:
        lines += ["", "| contender | precision | note |", "|---|---|---|"]
        lines += [f"| {name} | {precision} | {note} |" for name, precision, note in notes]
        lines += [f"| {name} | | not measured: {why} |" for name, why in missing.items()]
    lines += [
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
                shown = f"{name} (ran {e['engine']})" if "engine" in e else name
                lines.append(
                    f"| {case} | {mode} | {shown} | {e['median_ms']:.1f} ({e['min_ms']:.1f}-{e['max_ms']:.1f}) | "
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


# (what, case, mode, contenders (the best of those measured counts), against, at least, machines): "against" is
# a baseline name, or "c1" for "within 15 % of the same ratio at c1"; machines: None (every machine), "AMX"
# (machines whose ISA class is AMX) or "not AMX" (every other machine).
TARGETS = [
    *[("bf16 training, AMX", case, "training", (AUTOCAST_BF16,), BASELINE, goal, "AMX")
      for case, goal in [("c1", 3.0), ("c2", 2.0)]],
    *[("bf16 training, AVX-512 BF16 only", case, "training", (AUTOCAST_BF16,), BASELINE, 1.7, "not AMX")
      for case in ("c1", "c2")],
    ("bf16 inference, AMX", "c1", "inference", (MODULE_BF16, AUTOCAST_BF16), BASELINE, 4.0, "AMX"),
    ("float32 batch-1 training", "c3", "training", ("grukit auto",), BASELINE, 4.5, None),
    ("float32 inference", "c1", "inference", ("grukit auto",), BASELINE, 1.8, None),
    *[("same ratio within 15 %", case, mode, ("grukit auto",), "c1", 0.85, None)
      for case in ("c1-lengths", "c1-2layer-bidir") for mode in ("inference", "training")],
    *[("native", case, mode, ("grukit native",), BASELINE, 1.0, None) for case in ("c1", "c4")
      for mode in ("inference", "training")],
]


def paired_ratio(cases: dict, case: str, mode: str, name: str, against: str) -> float | None:
    """The median paired speed-up of ``name`` over ``against`` in this run, or None where either is missing."""
    return cases[case][mode].get(name, {}).get(f"speedup_vs_{against}", {}).get("median")


def targets_table(results: dict) -> list[str]:
    """grukit's speed targets against this run's medians (paired ratios), the rows for this machine's ISA; a
    target whose contender is missing says why."""
    lines = ["| target | case | mode | contender | measured | goal | met |", "|---|---|---|---|---|---|---|"]
    cases, missing = results["cases"], results.get("not_measured", {})
    isa = results["machine"].get("isa")  # None in reports written before the ISA was recorded
    for what, case, mode, names, against, goal, machines in TARGETS:
        if case not in cases or (against == "c1" and "c1" not in cases):
            continue
        if machines is not None and (isa is None or (machines == "AMX") != (isa == "AMX")):
            continue
        baseline = BASELINE if against == "c1" else against
        goal_text = ">= 0.85 of c1's" if against == "c1" else f">= {goal}x vs {against}"
        ratios = {name: paired_ratio(cases, case, mode, name, baseline) for name in names}
        ratios = {name: value for name, value in ratios.items() if value is not None}
        if not ratios:
            why = "; ".join(f"{name}: {missing[name]}" for name in names if name in missing) or "not in this run"
            lines.append(f"| {what} | {case} | {mode} | {' / '.join(names)} | not measured ({why}) | {goal_text} | - |")
            continue
        name = max(ratios, key=ratios.get)
        if against == "c1":
            base = paired_ratio(cases, "c1", mode, name, baseline)
            if base is None:
                continue
            measured = ratios[name] / base
            shown = f"{ratios[name]:.2f}x / {base:.2f}x at c1 = {measured:.2f}"
        else:
            measured = ratios[name]
            shown = f"{measured:.2f}x"
        lines.append(f"| {what} | {case} | {mode} | {name} | {shown} | {goal_text} | "
                     f"{'yes' if measured >= goal else 'no'} |")
    return lines


def write_doc(text: str, path: Path) -> None:
    """Replace the generated section of ``path`` (between the markers), keeping the hand-written rest."""
    body = path.read_text() if path.exists() else f"# Performance\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = body.split(MARK_START, 1)
    tail = rest.split(MARK_END, 1)[1]
    path.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def run_case(case: str, repeats: int, peaks: dict[str, float], isa: str, with_keras: bool) -> tuple[dict, dict,
                                                                                                     dict, dict]:
    """Both modes of one case: ``(mode -> summary, the case's sizes, name -> Contender, name -> why missing)``."""
    contenders, info, missing = build_contenders(case, with_keras, isa)
    info.pop("x")
    summaries = {}
    for mode in ("inference", "training"):
        training = mode == "training"
        chosen = {name: c for name, c in contenders.items() if c.trains or not training}
        times = interleaved({name: step(c, training) for name, c in chosen.items()}, repeats, warmup=1)
        flops = {
            name: info["flops_lstm" if "LSTM" in name else "flops_gru"] * (3 if training else 1) for name in chosen
        }
        precisions = {name: c.precision for name, c in chosen.items()}
        summaries[mode] = summarise(times, flops, info["tokens"], peaks, precisions)
        for name, c in chosen.items():
            if c.engine is not None:
                summaries[mode][name]["engine"] = c.engine(training)
        print(case, mode, {n: f"{e['median_ms']:.1f} ms {ratio_text(e, BASELINE)}" for n, e in summaries[mode].items()},
              flush=True)
    return summaries, info, contenders, missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="c1, c3 and c4 only, 3 repeats, minGRU at T=128")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--no-keras", action="store_true", help="leave Keras 3 out (its import takes a while)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--output", type=Path, help="results JSON (default benchmarks/speed_results/...)")
    parser.add_argument("--report", type=Path, help="only rewrite docs/performance.md from a results JSON")
    parser.add_argument("--memory-probe", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report:
        write_doc(markdown(json.loads(args.report.read_text())), ROOT / "docs" / "performance.md")
        return
    if args.memory_probe:
        print(json.dumps({"peak_mib": memory_probe(*args.memory_probe)}))
        return
    repeats = args.repeats or (3 if args.quick else 5)
    cases = args.cases or (["c1", "c3", "c4"] if args.quick else list(CASES))
    results: dict = {"machine": machine(), "quick": args.quick, "repeats": repeats, "cases": {}}
    results["peaks"] = peaks = measure_peaks(1024 if args.quick else 2048, 10)
    isa = results["machine"]["isa"]
    print(f"{results['machine']['cpu']}, ISA {isa} (oneDNN: {results['machine']['onednn_isa']}), "
          f"{args.threads} threads; GEMM peaks {peaks_text(peaks).replace('**', '')}", flush=True)
    results["contenders"], results["not_measured"] = {}, {}
    for case in cases:
        summaries, info, contenders, missing = run_case(case, repeats, peaks, isa, not args.no_keras)
        results["cases"][case] = summaries
        results.setdefault("case_info", {})[case] = info
        results["contenders"].update({n: {"precision": c.precision, "note": c.note} for n, c in contenders.items()})
        results["not_measured"].update(missing)
    results["memory"] = {}
    for case in [c for c in MEMORY_CASES if c in cases]:
        names = [BASELINE, "torch.nn.LSTM", "grukit onednn", "grukit native"]
        names += ["keras.layers.GRU"] if case in KERAS_CASES and not args.no_keras else []
        results["memory"][case] = peak_memory(case, names, args.threads)
        print("memory", case, results["memory"][case], flush=True)
    results["mingru"] = mingru_versus_gru([128] if args.quick else [128, 512, 2048], repeats, peaks)
    print("mingru", {s: {m: {n: round(e["median_ms"], 1) for n, e in v.items()} for m, v in r.items()}
                     for s, r in results["mingru"].items()}, flush=True)
    if torch.cuda.is_available():
        results["cuda_device"] = torch.cuda.get_device_name()
        results["cuda"] = cuda_table(repeats)
    results["load_average_end"] = os.getloadavg()
    cpu = torch.device("cpu")
    results["engines"] = {f"auto_{str(dtype).removeprefix('torch.')}_cpu": engines.resolve_gru("auto", dtype, cpu)
                          for dtype in (torch.float32, torch.bfloat16)}
    name = f"gru_speed{'_quick' if args.quick else ''}_{args.threads}threads.json"
    out = args.output or ROOT / "benchmarks" / "speed_results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    print(text)
    if not args.no_doc:
        write_doc(text, ROOT / "docs" / "performance.md")
    shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    print(f"wrote {shown}" + ("" if args.no_doc else " and docs/performance.md"))


if __name__ == "__main__":
    main()
