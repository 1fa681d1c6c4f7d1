r"""How ``engine="auto"`` chooses among the installed GRU engines that run a dtype on the CPU.

The choice depends on the shape and on the machine (a kernel that wins at batch 1 on one CPU loses there on
another), so it is measured once per machine and shape and remembered:

- The key: ``(batch, time, input, hidden)``, each rounded up to a power of two (so the last, smaller batch
  of an epoch or a batch of shorter sequences reuses its bucket's choice), the dtype, training (a gradient
  is needed) or inference, the candidate form (reset-after or not), torch's intra-op thread count and the
  candidate engines.
- Calibration: the first call with a new key times every candidate on random data of the bucket's shape
  (forward, plus backward when training) in a few interleaved repeats and keeps the fastest. Cost is a
  fixed part per call plus a part linear in ``time``, so long sequences are timed at two shorter lengths
  (the longer one keeps the calibration near :data:`CALIBRATION_SECONDS`) and the time at the bucket's
  length predicted from them (:func:`calibrate`). Near-ties (within :data:`MARGIN`) keep the cost model's
  choice (:func:`pick`).
- The cache: ``$GRUKIT_CACHE/engines/<cpu model>-<isa>.json`` (default ``~/.cache/grukit``), readable JSON
  with the measured seconds per step of every candidate and the choice. A choice once written for a key is
  never changed (the first writer wins, and a process re-reads the file under an ``fcntl`` lock before it
  calibrates), so a run and its resume use the same engine. A corrupt file, or one written for another
  machine, is ignored and rewritten.
- ``GRUKIT_AUTOTUNE=0`` switches calibration and the cache off: :func:`cost_model` decides from the shape
  alone. Calibration is also skipped (the cached choice, else the cost model, without writing) inside
  ``torch.func`` transforms, ``torch.jit`` tracing and ``torch.compile``.

Calibration draws its data from a private generator and restores grad mode, so it changes neither torch's
random state nor the caller's autograd state; it holds a process-wide lock, so threads are safe.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from grukit.ops import extensions, native, onednn, reference

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; os.replace still keeps the file whole
    fcntl = None

ENV_SWITCH = "GRUKIT_AUTOTUNE"
CALIBRATION_SECONDS = 4.0  # what the timed repeats of one calibration aim to cost, all candidates together
# (long enough to time most shapes at their full length: a per-step cost measured on short sequences
# underestimates an engine whose saved tensors outgrow the caches at the full length)
REPEATS = 3
PROBE_STEPS = 8  # the shorter of the two sequence lengths timed, and that of the warm-up
MARGIN = 0.03  # how much faster than the cost model's choice another engine must measure to replace it
FORMAT = "grukit engine choices"
VERSION = 1

_lock = threading.Lock()
_choices: dict[tuple[str, str], str] = {}  # (cache file, key) -> engine, this process's memory of the file
_warned_unwritable: set[str] = set()


def bucket(size: int) -> int:
    """``size`` rounded up to a power of two: ``1, 2, 4, 4, 8, ...`` for ``1, 2, 3, 4, 5, ...``."""
    return 1 << (size - 1).bit_length()


@dataclass(frozen=True)
class Key:
    """What a choice depends on. ``batch``, ``steps``, ``input_size``, ``hidden_size`` are bucketed."""

    batch: int
    steps: int
    input_size: int
    hidden_size: int
    dtype: str
    training: bool
    reset_after: bool
    threads: int
    candidates: tuple[str, ...]

    @classmethod
    def of(
        cls,
        shape: Sequence[int],
        dtype: torch.dtype,
        training: bool,
        reset_after: bool,
        candidates: Sequence[str],
    ) -> Key:
        """The key of a call with ``shape`` ``(batch, time, input, hidden)`` at torch's current thread count."""
        if len(shape) != 4 or any(int(size) < 1 for size in shape):
            raise ValueError(f"expected a shape (batch, time, input, hidden) of positive sizes, got {tuple(shape)}")
        batch, steps, input_size, hidden = (bucket(int(size)) for size in shape)
        return cls(batch, steps, input_size, hidden, str(dtype).removeprefix("torch."), bool(training),
                   bool(reset_after), torch.get_num_threads(), tuple(candidates))

    @property
    def name(self) -> str:
        """The key as the cache file spells it, e.g.
        ``b32-t128-i128-h256-float32-training-reset_after-threads2-onednn+native``."""
        mode = "training" if self.training else "inference"
        form = "reset_after" if self.reset_after else "reset_before"
        return (f"b{self.batch}-t{self.steps}-i{self.input_size}-h{self.hidden_size}-{self.dtype}-{mode}-{form}"
                f"-threads{self.threads}-{'+'.join(self.candidates)}")


# Switches and machine --------------------------------------------------------------------------------------
def enabled() -> bool:
    """Whether calibration and its cache are on: ``GRUKIT_AUTOTUNE`` unset, ``1`` or empty (``0``: off)."""
    value = os.environ.get(ENV_SWITCH, "1").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENV_SWITCH} expected 0 (cost model only) or 1 (calibrate per shape), got {value!r}")
    return value != "0"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


@functools.cache
def machine() -> dict[str, str]:
    """The CPU model and instruction set the choices are measured on: ``{"cpu": ..., "isa": ...}``, the ISA as
    torch's kernels see it (``AVX512``, ``AVX2``, ...) plus ``+AMX`` where the CPU has AMX tiles."""
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or platform.machine() or "unknown-cpu"
    isa = torch.backends.cpu.get_cpu_capability()
    if "amx_tile" in info.get("flags", "").split():
        isa += "+AMX"
    return {"cpu": cpu, "isa": isa}


def cache_file() -> Path:
    """``$GRUKIT_CACHE/engines/<cpu model>-<isa>.json`` (default cache ``~/.cache/grukit``)."""
    described = machine()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{described['cpu']}-{described['isa']}".lower()).strip("-")
    return extensions.cache_root().parent / "engines" / f"{slug}.json"


def can_calibrate() -> bool:
    """False inside ``torch.func`` transforms, ``torch.jit`` tracing and ``torch.compile``, where running
    engines on made-up data would be traced or transformed with the caller's program."""
    return (
        torch._C._functorch.peek_interpreter_stack() is None
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


# The cost model --------------------------------------------------------------------------------------------
def cost_model(candidates: Sequence[str], key: Key) -> str:
    """The choice without measuring, where ``native`` is installed: float32 batch-1 training, and bfloat16
    training at batch > 1; else the first fast candidate (``onednn``).

    Measured against torch.nn.GRU on a Xeon with AMX: float32 batch-1 training ran 4.6x on ``native``, 2.5x on
    ``onednn`` (oneDNN's backward has a large cost per step), while ``onednn`` is the faster float32 engine at
    batch-1 inference and, on most CPUs measured, at batch 32-256. In bfloat16 (one thread, CPU time)
    ``native`` (bf16 GEMMs through ATen's AMX matmul) ran c1 (batch 32, hidden 256) 2.4x inference and 2.7x
    training, ``onednn`` 1.6x and 1.3x (its bf16 backward is no faster than its float32 one); ``onednn`` won at
    batch 1 (c3: 2.3x / 3.4x against 0.6x / 2.8x: each of ``native``'s per-step GEMM calls costs ~40 us) and at
    batch-256 inference (c4: 3.0x against 1.9x), ``native`` at batch-256 training (c4: 1.4x against 0.85x).
    bf16 inference at batch > 1 runs ``onednn``'s per-step AMX matmul loop (c1 4.4x, c2 6.2x on two threads),
    about twice ``native``'s speed there."""
    fast = [engine for engine in candidates if engine != "reference"]
    if not fast:
        return candidates[0]
    if "native" in fast:
        if key.dtype == "bfloat16" and key.batch > 1 and key.training:
            return "native"
        if key.dtype != "bfloat16" and key.batch == 1 and key.training:
            return "native"
    return fast[0]


# Calibration -----------------------------------------------------------------------------------------------
def measure(engine: str, run: Callable[[], object]) -> float:
    """Seconds one call of ``run`` (a forward, or forward + backward, on ``engine``) takes: the calling
    thread's CPU time on one intra-op thread (all the work runs there, and time spent waiting for a core of a
    busy machine does not count), wall time with more threads."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    start = clock()
    run()
    return clock() - start


def _runner(engine: str, key: Key, steps: int, generator: torch.Generator) -> Callable[[], object]:
    """One forward (+ backward when training) of ``engine`` on random data of ``key``'s shape over ``steps``."""
    dtype = getattr(torch, key.dtype)
    batch, hidden = key.batch, key.hidden_size
    scale = hidden**-0.5

    def uniform(*shape: int) -> Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1).mul_(scale).to(dtype)

    weights = [uniform(3 * hidden, key.input_size), uniform(3 * hidden, hidden), uniform(3 * hidden),
               uniform(3 * hidden)]  # w_ih (3H, I), w_hh (3H, H), b_ih (3H,), b_hh (3H,)
    x = torch.randn(steps, batch, key.input_size, generator=generator).to(dtype)  # (T, B, I)
    h0 = torch.zeros(batch, hidden, dtype=dtype)  # (B, H)
    grad_output = torch.randn(steps, batch, hidden, generator=generator).to(dtype)  # (T, B, H)
    for tensor in (x, *weights):
        tensor.requires_grad_(key.training)

    def forward() -> Tensor:
        if engine == "reference":
            def cell(x_t: Tensor, h: Tensor) -> Tensor:
                return reference.gru_cell(x_t, h, *weights, key.reset_after)

            return reference.scan(cell, x, h0, None)[0]
        sequence = onednn.gru_sequence if engine == "onednn" else native.gru_sequence
        return sequence(x, h0, *weights, key.reset_after)  # (T, B, H)

    def run() -> None:
        with torch.set_grad_enabled(key.training):
            output = forward()
            if key.training:
                output.backward(grad_output)

    return run


@contextmanager
def _isolated() -> Iterator[None]:
    """No autocast, grad mode restored afterwards, and no inference-mode tensors."""
    with torch.inference_mode(False), torch.autocast("cpu", enabled=False), torch.set_grad_enabled(False):
        yield


def calibrate(candidates: Sequence[str], key: Key) -> dict:
    """Predict each candidate's time for one call at ``key``'s shape (the bucket's).

    A call costs ``t(T) = a + b T``: a fixed part (oneDNN converts and reorders the weights on every call) and
    a part linear in the steps. After a warm-up, each candidate runs :data:`REPEATS` interleaved rounds at
    two lengths, :data:`PROBE_STEPS` and the longest (at most the bucket's) that keeps the rounds near
    :data:`CALIBRATION_SECONDS`; the best time at each length gives ``a`` and ``b``, hence ``t`` at the
    bucket's length (where the longer length is under 4x the shorter, its time per step alone).
    Returns ``{"seconds": {engine: predicted seconds}, "timed_steps": [lengths timed]}``."""
    generator = torch.Generator().manual_seed(0)
    short = min(key.steps, PROBE_STEPS)
    with _isolated():
        runs = {(engine, short): _runner(engine, key, short, generator) for engine in candidates}
        probe = 0.0
        for engine in candidates:
            measure(engine, runs[engine, short])  # a warm-up: builds oneDNN's primitives, touches the memory
            probe += measure(engine, runs[engine, short])
        budget_steps = int(CALIBRATION_SECONDS / REPEATS / max(probe / short, 1e-12)) - short
        long = min(key.steps, max(short, budget_steps))
        lengths = sorted({short, long})
        if long > short:
            runs.update({(engine, long): _runner(engine, key, long, generator) for engine in candidates})
        best = {run: float("inf") for run in runs}
        for repeat in range(REPEATS):
            shift = repeat % len(candidates)
            for engine in [*candidates[shift:], *candidates[:shift]]:
                for steps in lengths:
                    best[engine, steps] = min(best[engine, steps], measure(engine, runs[engine, steps]))
    seconds = {}
    for engine in candidates:
        slope = (best[engine, long] - best[engine, short]) / (long - short) if long >= 4 * short else 0.0
        if slope > 0:
            seconds[engine] = best[engine, long] + slope * (key.steps - long)
        else:  # lengths too close for a slope, or noise hid it: the cost per step alone
            seconds[engine] = best[engine, long] * key.steps / long
    return {"seconds": seconds, "timed_steps": lengths}


def pick(candidates: Sequence[str], key: Key, seconds: dict[str, float]) -> str:
    """The fastest candidate by ``seconds``, except that the cost model's choice stays unless another one is
    more than :data:`MARGIN` faster: near-ties go the same way on every machine instead of by noise."""
    fastest = min(candidates, key=seconds.__getitem__)
    prior = cost_model(candidates, key)
    return prior if seconds[prior] <= (1 + MARGIN) * seconds[fastest] else fastest


# The cache file --------------------------------------------------------------------------------------------
def _read(path: Path, described: dict[str, str]) -> dict[str, dict]:
    """The choices in ``path``; empty when the file is missing, corrupt or written for another machine."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nesting too deep for the parser
        return {}
    if not (isinstance(content, dict) and content.get("format") == FORMAT and content.get("version") == VERSION
            and content.get("machine") == described and isinstance(content.get("choices"), dict)):
        return {}
    return {name: entry for name, entry in content["choices"].items()
            if isinstance(entry, dict) and isinstance(entry.get("engine"), str)}


def _write(path: Path, described: dict[str, str], choices: dict[str, dict]) -> None:
    """Replace ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    content = {"format": FORMAT, "version": VERSION, "machine": described, "torch": torch.__version__,
               "choices": dict(sorted(choices.items()))}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(content, file, indent=1)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``<path>.lock``, held by one process (and one thread) at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _calibrated_choice(candidates: Sequence[str], key: Key, path: Path) -> str:
    """The choice for ``key`` from the cache file, else calibrated now and written there (the lock is held
    from the re-read to the write, so concurrent processes agree)."""
    described = machine()
    try:
        with _file_lock(path):
            choices = _read(path, described)
            if choices.get(key.name, {}).get("engine") not in candidates:  # new, or a hand-edited entry
                timing = calibrate(candidates, key)
                choices[key.name] = {
                    "engine": pick(candidates, key, timing["seconds"]),
                    "seconds_per_step": {engine: t / key.steps for engine, t in timing["seconds"].items()},
                    "cost_model": cost_model(candidates, key),
                    "timed_steps": timing["timed_steps"],
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                _write(path, described, choices)
            return choices[key.name]["engine"]
    except OSError as error:  # a read-only or full cache folder: choose for this process only
        if str(path) not in _warned_unwritable:
            _warned_unwritable.add(str(path))
            warnings.warn(f"grukit cannot keep its engine choices in {path.parent.name}/{path.name} ({error}); "
                          "calibrating per process", RuntimeWarning, stacklevel=2)
        return pick(candidates, key, calibrate(candidates, key)["seconds"])


def choose(
    candidates: Sequence[str], shape: Sequence[int], dtype: torch.dtype, training: bool, reset_after: bool
) -> str:
    """The engine among ``candidates`` (installed engines that run ``dtype``, default first) for a GRU layer
    of ``shape`` ``(batch, time, input, hidden)``: the cached or newly calibrated choice, or the cost model's
    when calibration is off (``GRUKIT_AUTOTUNE=0``)."""
    candidates = tuple(candidates)
    if len(candidates) == 1:
        return candidates[0]
    key = Key.of(shape, dtype, training, reset_after, candidates)
    if not enabled():
        return cost_model(candidates, key)
    path = cache_file()
    memory = (str(path), key.name)
    chosen = _choices.get(memory)
    if chosen is not None:
        return chosen
    if not can_calibrate():
        cached = _read(path, machine()).get(key.name, {}).get("engine")
        if cached not in candidates:
            return cost_model(candidates, key)  # not remembered: the next call outside may calibrate
        _choices[memory] = cached
        return cached
    with _lock:
        if memory not in _choices:
            _choices[memory] = _calibrated_choice(candidates, key, path)
        return _choices[memory]
