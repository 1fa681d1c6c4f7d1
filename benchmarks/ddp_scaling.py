"""Data-parallel scaling of GRU language-model training on this machine, and the large-LM recipe's numbers.

    python benchmarks/ddp_scaling.py                       # 1 and 2 processes, one thread each
    python benchmarks/ddp_scaling.py --recipe benchmarks/configs/gru_lm_4x2048.json --steps 3

Scaling: the same global batch (``B`` streams × ``T`` tokens) trained by 1 and by 2 processes (torchrun, gloo
on 127.0.0.1, ``OMP_NUM_THREADS=1``), each process taking ``B / W`` streams; the table gives the median
optimizer-step time, tokens per second and the speed-up, and the median time of a gloo all-reduce of the
model's gradients (one float32 tensor of all parameters, what DDP reduces per step, in buckets). Writes
``speed_results/ddp_scaling.json``.

Recipe: a few optimizer steps of the large model in one process: the trainer's memory estimate, the peak
resident memory, tokens per second, and a projection of the step time on ``N`` nodes::

    t_step(N) = t_compute(B / N) + t_allreduce,   t_allreduce = 2 (N − 1) / N · P · 4 bytes / bandwidth

(ring all-reduce of ``P`` float32 gradients; no overlap of communication with the backward pass, so an upper
bound; ``t_compute`` scaled linearly from the measured step, i.e. each node as fast as this one). Writes
``speed_results/large_lm_recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.machine import describe, machine_line  # noqa: E402
from grukit.lm.model import GRULanguageModel, LMConfig  # noqa: E402
from grukit.lm.training import language_model_loss  # noqa: E402
from grukit.text.batching import TBPTTBatches  # noqa: E402
from grukit.train import Callback, Trainer  # noqa: E402
from grukit.train.distributed import world_from_env  # noqa: E402
from grukit.train.memory import estimate_memory  # noqa: E402

RESULTS = HERE / "speed_results"
SCALING_MODEL = {"vocab_size": 4000, "embedding_size": 128, "hidden_size": 512, "num_layers": 2}
BANDWIDTHS_GBIT = (10, 100, 400)  # Ethernet, InfiniBand HDR-class, NDR-class: assumed, not measured
NODES = (1, 2, 4, 8, 16)


class StepTimer(Callback):
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_batch_begin(self, step, logs):
        self._started = time.perf_counter()

    def on_batch_end(self, step, logs):
        self.seconds.append(time.perf_counter() - self._started)


def train_steps(config: dict, batch: int, seq_len: int, steps: int, precision: str) -> tuple[Trainer, StepTimer]:
    """``steps`` optimizer steps of a GRU LM on random tokens, ``batch`` streams in all (split among the
    processes when launched by torchrun)."""
    torch.manual_seed(0)
    model = GRULanguageModel(LMConfig.from_dict(config))
    tokens = np.random.default_rng(0).integers(0, config["vocab_size"], batch * seq_len * (steps + 1) + 1)
    timer = StepTimer()
    trainer = Trainer(
        model, language_model_loss, torch.optim.AdamW(model.parameters(), lr=1e-3), stateful=True,
        callbacks=[timer], precision=precision,
    )
    trainer.fit(TBPTTBatches(tokens, batch, seq_len), epochs=1, verbose=0, max_steps=steps)
    return trainer, timer


def all_reduce_seconds(parameters: int, repeats: int = 10) -> list[float]:
    """Times of a gloo all-reduce of ``parameters`` float32 values (the gradients of one step)."""
    import torch.distributed as dist

    flat = torch.ones(parameters)
    dist.barrier()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - started)
    return times


def worker(args: argparse.Namespace) -> None:
    """One process of a scaling run: the steps, then (with 2+ processes) the all-reduce timing."""
    torch.set_num_threads(1)
    trainer, timer = train_steps(SCALING_MODEL, args.batch, args.seq_len, args.warmup + args.steps, "32")
    parameters = sum(p.numel() for p in trainer.model.parameters())
    reduce_times = all_reduce_seconds(parameters) if trainer.world.distributed else []
    if world_from_env().main:
        measured = timer.seconds[args.warmup :]
        step = statistics.median(measured)
        Path(args.result).write_text(json.dumps({
            "processes": trainer.world.size,
            "parameters": parameters,
            "global_batch": args.batch,
            "seq_len": args.seq_len,
            "step_seconds_median": step,
            "step_seconds": measured,
            "tokens_per_second": args.batch * args.seq_len / step,
            "allreduce_seconds_median": statistics.median(reduce_times) if reduce_times else 0.0,
            "allreduce_bytes": parameters * 4,
        }))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scaling(args: argparse.Namespace) -> dict:
    rows = []
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            result = Path(folder) / "result.json"
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port()), __file__, "--worker", "--result", str(result),
                "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
                "--warmup", str(args.warmup),
            ]
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            rows.append(json.loads(result.read_text()))
    base = rows[0]["tokens_per_second"]
    print(f"\nGRU LM {SCALING_MODEL}, {rows[0]['parameters']:,} parameters; global batch {args.batch} × {args.seq_len}")
    print(f"{'processes':>9} {'step s':>8} {'tokens/s':>9} {'speed-up':>8} {'all-reduce ms':>13}")
    for row in rows:
        row["speedup"] = row["tokens_per_second"] / base
        print(f"{row['processes']:>9} {row['step_seconds_median']:>8.3f} {row['tokens_per_second']:>9.0f} "
              f"{row['speedup']:>8.2f} {1000 * row['allreduce_seconds_median']:>13.1f}")
    return {"model": SCALING_MODEL, "runs": rows}


def projection(parameters: int, step_seconds: float) -> list[dict]:
    """Step time of the same global batch on ``N`` nodes: compute / N plus a ring all-reduce (no overlap)."""
    rows = []
    for bandwidth in BANDWIDTHS_GBIT:
        for nodes in NODES:
            volume = 2 * (nodes - 1) / nodes * parameters * 4  # bytes each node sends (and receives)
            communicate = volume / (bandwidth * 1e9 / 8)
            rows.append({"bandwidth_gbit": bandwidth, "nodes": nodes, "compute_s": step_seconds / nodes,
                         "allreduce_s": communicate, "step_s": step_seconds / nodes + communicate})
    return rows


def recipe(args: argparse.Namespace) -> dict:
    """The recipe's memory estimate at its own batch, a few timed steps at ``--batch`` × ``--seq-len`` (a CPU
    cannot run the recipe's batch in reasonable time), and the projection for the recipe's global batch."""
    spec = json.loads(Path(args.recipe).read_text())
    config = {**spec["model"], "vocab_size": spec["tokenizer"]["vocab_size"]}
    training = spec["training"]
    batch, seq_len = training["batch_size"], training["seq_len"]
    timed_batch, timed_len = args.batch or 4, args.seq_len or 32
    precision = args.precision or training.get("precision") or "32"
    torch.set_num_threads(args.threads)
    model = GRULanguageModel(LMConfig.from_dict(config))
    parameters = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, config["vocab_size"], (batch, seq_len))
    estimate = estimate_memory(model, torch.optim.AdamW(model.parameters()), (ids,), ids, None,
                               language_model_loss, True, precision)
    del model
    print(estimate.line())
    trainer, timer = train_steps(config, timed_batch, timed_len, args.warmup + args.steps, precision)
    step = statistics.median(timer.seconds[args.warmup :])
    per_token = step / (timed_batch * timed_len)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    rows = projection(parameters, per_token * batch * seq_len)
    print(f"\n{Path(args.recipe).name}: {parameters:,} parameters; timed at batch {timed_batch} × {timed_len}, "
          f"precision {precision}, {args.threads} thread(s)")
    print(f"step {step:.2f} s, {timed_batch * timed_len / step:.1f} tokens/s, peak resident memory "
          f"{peak / 1e9:.2f} GB (timed batch)")
    print(f"\nprojected step time of the recipe's batch {batch} × {seq_len} on N nodes like this one (compute / N + "
          f"ring all-reduce of {parameters * 4 / 1e9:.2f} GB gradients, 2 (N-1)/N of it sent per node)")
    print(f"{'Gbit/s':>6} " + " ".join(f"{f'N={n}':>9}" for n in NODES))
    for bandwidth in BANDWIDTHS_GBIT:
        cells = [row for row in rows if row["bandwidth_gbit"] == bandwidth]
        print(f"{bandwidth:>6} " + " ".join(f"{row['step_s']:>8.1f}s" for row in cells))
    return {
        "recipe": spec, "parameters": parameters, "batch": batch, "seq_len": seq_len, "precision": precision,
        "threads": args.threads, "memory_estimate": estimate.__dict__ | {"total_bytes": estimate.total_bytes},
        "timed_batch": timed_batch, "timed_seq_len": timed_len, "peak_resident_bytes": peak,
        "step_seconds": timer.seconds[args.warmup :], "step_seconds_median": step,
        "tokens_per_second": timed_batch * timed_len / step, "compute_seconds_per_token": per_token,
        "projection": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, help="global batch (streams); default 16 (recipe: 4, timed steps)")
    parser.add_argument("--seq-len", type=int, help="TBPTT window; default 64 (recipe: 32, timed steps)")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--recipe", help="a 'grukit lm train' config: measure it instead of the scaling")
    parser.add_argument("--precision", choices=("32", "bf16"), help="recipe precision (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the recipe")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    info = describe()
    print(machine_line(info))
    RESULTS.mkdir(exist_ok=True)
    if args.recipe:
        report = {"machine": info, **recipe(args)}
        path = RESULTS / "large_lm_recipe.json"
    else:
        args.batch, args.seq_len = args.batch or 16, args.seq_len or 64
        report = {"machine": info, **scaling(args)}
        path = RESULTS / "ddp_scaling.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
