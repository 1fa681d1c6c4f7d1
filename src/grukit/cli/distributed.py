"""Data-parallel training from the command line: ``--nproc``, ``--nnodes``, ``--rdzv-endpoint``, ``--precision``
(and ``--accumulate``) on the training commands, and the re-launch of a command under ``torch.distributed.run``.

``grukit lm train ... --nproc 4`` runs ``torch.distributed.run --nproc-per-node 4 -m grukit.cli lm train ...``
(the same arguments) and waits for it; each of the 4 processes runs the command, and the
:class:`~grukit.train.Trainer` inside it joins the process group and trains its share of every step. Rank 0
prints, logs and writes ``--out``; the other ranks print nothing and write their own files (token files, a
model they would save) into a scratch folder removed when they end, and resume from rank 0's checkpoint.
On several machines, run the same command on each with ``--nnodes N --rdzv-endpoint HOST:PORT`` (an address of
one of them that all can reach).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import socket
import sys
import tempfile

from grukit.cli.options import positive_int
from grukit.train.distributed import PRECISION_ENV, PRECISIONS


def add_scale_options(parser: argparse.ArgumentParser, accumulate: bool = False) -> None:
    """Add the scale-out flags to a training command's ``parser`` (``--accumulate`` too when it can take it)."""
    group = parser.add_argument_group("scale out")
    group.add_argument("--nproc", type=positive_int, default=1,
                       help="training processes on this machine (data parallel: one per GPU, or CPU processes)")
    group.add_argument("--nnodes", type=positive_int, default=1, help="machines in the run; start the command on each")
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                       help="where the processes meet: an address of one machine that all reach (needed with "
                            "--nnodes > 1; default: a free port on this machine)")
    group.add_argument("--precision", choices=PRECISIONS,
                       help=f"bf16: bfloat16 autocast, weights and optimizer in float32 (default: ${PRECISION_ENV}, "
                            "else 32)")
    if accumulate:
        group.add_argument("--accumulate", type=positive_int,
                           help="batches per optimizer step and process (default: the config's, else 1)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scratch_outputs(args: argparse.Namespace) -> None:
    """Point the output paths of a rank other than 0 at a scratch folder removed when the process ends."""
    scratch = tempfile.mkdtemp(prefix="grukit-rank-")
    atexit.register(shutil.rmtree, scratch, True)
    for name in ("out", "output"):
        if getattr(args, name, None):
            setattr(args, name, os.path.join(scratch, name))


def relaunch(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Run the command ``argv`` under ``torch.distributed.run`` when ``args`` asks for more than one process
    and this is not one of its workers; returns its exit status. ``None``: run the command here (one process,
    or a worker: then ``--precision`` goes to the Trainer through ``GRUKIT_PRECISION``, and a rank other than
    0 prints nothing and writes into a scratch folder)."""
    if not hasattr(args, "nproc"):
        return None
    if args.precision is not None:
        os.environ[PRECISION_ENV] = args.precision
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if os.environ["RANK"] != "0":
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - open until the process ends
            _scratch_outputs(args)
        return None
    if args.nproc == 1 and args.nnodes == 1:
        return None
    if args.nnodes > 1 and not args.rdzv_endpoint:
        raise ValueError(
            f"--nnodes {args.nnodes} needs --rdzv-endpoint HOST:PORT: an address of one of the machines that every "
            "machine can reach, the same on all of them"
        )
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    endpoint = args.rdzv_endpoint or f"127.0.0.1:{_free_port()}"
    launcher = torchrun.get_args_parser().parse_args([
        f"--nnodes={args.nnodes}", f"--nproc-per-node={args.nproc}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}", "-m", "grukit.cli",
    ])
    launcher.training_script_args = list(argv)  # passed as they are: torchrun's parser never sees them
    try:
        torchrun.run(launcher)
    except ChildFailedError as error:
        failures = "; ".join(f"rank {f.rank} exit status {f.exitcode}" for f in error.failures.values())
        print(f"grukit: a training process failed ({failures}); its error is printed above", file=sys.stderr)
        return 1
    return 0
