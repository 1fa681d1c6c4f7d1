r"""Data-parallel training across processes, as the :class:`~grukit.train.Trainer` runs it under ``torchrun``.

Launch ``W`` processes with ``torchrun`` (``python -m torch.distributed.run``); each finds its place in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and the Trainer
joins the process group (gloo on the CPU, nccl on CUDA), wraps the model in ``DistributedDataParallel`` and
gives each rank its share of the data:

- re-iterable batches: every rank iterates the same seeded order; the ``k · W`` batches of one optimizer step
  (``k = accumulate``) go to rank ``r`` at positions ``r, r + W, …``, as ``DistributedSampler`` does. A step
  short of batches (the epoch's tail) gives a rank that has none a zero-weight pass over the step's first
  batch, so every rank takes part in the gradient all-reduce;
- a TBPTT token stream (:class:`~grukit.text.batching.TBPTTBatches` with ``B`` streams): rank ``r`` takes the
  contiguous streams ``r·B/W … (r+1)·B/W − 1`` (``W`` must divide ``B``).

With batch sizes ``n_i`` over all ranks and ``N = Σ n_i`` (all-reduced before the backward pass), each rank
back-propagates ``W · n_i / N · L_i`` and DDP averages the gradients over the ``W`` ranks, so

    ∇ = Σ_i n_i / N · ∇L_i

the gradient a single process would take over the same global batch (``accumulate = k · W``): the weights
agree with that run up to the order of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from grukit.text.batching import TBPTTBatches

PRECISIONS = ("32", "bf16")
PRECISION_ENV = "GRUKIT_PRECISION"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The :class:`World` that ``torchrun``'s environment variables describe (one process without them)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = os.environ.get(name, "0" if name != "WORLD_SIZE" else "1")
        try:
            values[name] = int(text)
        except ValueError:
            message = f"environment variable {name} must be an integer (torchrun sets it), got {text!r}"
            raise ValueError(message) from None
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ValueError(f"RANK {values['RANK']} is outside WORLD_SIZE {values['WORLD_SIZE']}: launch with torchrun")
    return World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def init_distributed(device: torch.device) -> World:
    """Join the process group when ``torchrun`` launched several processes and nobody joined it yet: nccl for
    a model on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on the CPU. Returns the :class:`World`."""
    world = world_from_env()
    if world.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        # The store of torchrun's agent outlives a restart of its workers: namespace this round's keys, or the
        # processes of a restart can read the addresses of the dead round's processes and fail to connect.
        store, rank, size = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"grukit/round_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=size)
    return world


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def _reduction_device() -> torch.device:
    """Where collectives run: the current CUDA device under nccl, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor, world: World) -> Tensor:
    """``Σ_ranks values`` (a float64 copy on every rank); ``values`` itself when there is one process."""
    if not world.distributed:
        return values
    total = values.detach().to(_reduction_device(), torch.float64).clone()
    dist.all_reduce(total)
    return total.to(values.device)


def broadcast_object(value: object, world: World) -> object:
    """Rank 0's ``value`` on every rank (pickled in memory by torch, never written to a file)."""
    if not world.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=_reduction_device())
    return holder[0]


def gather_state(state, world: World):
    """The carried recurrent state of all ranks joined on the batch dimension (dim 1: ``(layers, B, H)``), for
    a checkpoint that any number of processes can resume; a tensor or a tuple / list of them."""
    if state is None or not world.distributed:
        return state
    if isinstance(state, Tensor):
        pieces = [torch.empty_like(state, device=_reduction_device()) for _ in range(world.size)]
        dist.all_gather(pieces, state.contiguous().to(_reduction_device()))
        return torch.cat(pieces, 1).to(state.device)
    return type(state)(gather_state(item, world) for item in state)


def scatter_state(state, world: World):
    """This rank's slice (dim 1) of a carried state that :func:`gather_state` joined."""
    if state is None or not world.distributed:
        return state
    if isinstance(state, Tensor):
        if state.shape[1] % world.size:
            raise ValueError(
                f"the checkpoint's carried state holds {state.shape[1]} streams, which {world.size} processes "
                "cannot share equally: resume with a number of processes that divides it"
            )
        return state.chunk(world.size, 1)[world.rank].clone()
    return type(state)(scatter_state(item, world) for item in state)


def shard_token_stream(batches: TBPTTBatches, world: World) -> TBPTTBatches:
    """Rank ``r``'s contiguous streams ``r·B/W … (r+1)·B/W − 1`` of a TBPTT layout of ``B`` streams: the same
    rows, windows and targets as those streams in the single-process layout."""
    if batches.batch_size % world.size:
        raise ValueError(
            f"TBPTT batches of {batches.batch_size} streams cannot be shared by {world.size} processes: use a "
            f"batch size that {world.size} divides"
        )
    per_rank = batches.batch_size // world.size
    start = world.rank * per_rank * batches.stride
    tokens = batches.tokens[start : start + per_rank * batches.stride + 1]
    return TBPTTBatches(tokens, per_rank, batches.seq_len)


def rank_share(window: list, world: World) -> tuple[list, bool]:
    """Rank ``r``'s batches ``window[r::W]`` of one optimizer step, and whether they are a zero-weight stand-in
    (the step's first batch) because the window holds fewer than ``W`` batches."""
    share = window[world.rank :: world.size]
    return (share, False) if share else (window[:1], True)


def resolve_precision(precision: str | None) -> str:
    """``precision``, or the ``GRUKIT_PRECISION`` environment variable when ``None`` (default ``"32"``)."""
    if precision is None:
        precision = os.environ.get(PRECISION_ENV, "32")
        if precision not in PRECISIONS:
            raise ValueError(f"environment variable {PRECISION_ENV} must be one of {PRECISIONS}, got {precision!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bfloat16 autocast on ``device`` for ``precision="bf16"`` (weights stay float32), off for ``"32"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
