r"""Engine selection and the variable-length plumbing shared by the fast GRU engines.

Engines for the GRU (``engine=`` of :class:`grukit.nn.GRU`):

- ``"onednn"``: oneDNN's fused GRU primitives (:mod:`grukit.ops.onednn`), float32 and bfloat16 on the CPU;
- ``"native"``: grukit's own fused kernel (:mod:`grukit.ops.native`), float32, float64 and bfloat16 on the CPU;
- ``"reference"``: the readable cells of :mod:`grukit.ops.reference`, any dtype and device, the oracle;
- ``"auto"``: the fastest of these that is installed and runs the input's dtype and device. On CUDA it is
  torch's own fused GRU (cuDNN) for the reset-after form; cuDNN has no reset-before GRU, which stays on
  ``"reference"`` there.

The fast engines run one layer and one direction left to right over full-length sequences. This module adds
the rest with the foundation's semantics: the reverse direction runs each sequence reversed within its own
length (:func:`grukit.ops.reference.reverse_padded`), and ``lengths`` are handled as packed sequences are:
sort by length, then run the kernel over a few time segments with a shrinking active batch::

    segment [t0, t1): the sequences with length > t0, from their states at t0 - 1
    output[t, b] = 0 for t >= lengths[b];   h_n[b] = output[lengths[b] - 1, b]

Steps past a sequence's end inside its last segment are computed and then discarded (zero output, no
gradient), so the results equal the step-by-step masked recurrence exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from grukit.ops import autotune, native, onednn, reference

GRU_ENGINES = ("auto", "onednn", "native", "reference")
LSTM_ENGINES = ("auto", "torch", "reference")
MINGRU_ENGINES = ("auto", "scan", "log_space", "reference")
MAX_SEGMENTS = 4

Kernel = Callable[[Tensor, Tensor], Tensor]  # (x (T, B, I), h0 (B, H)) -> every step's state (T, B, H)


def check_engine(owner: str, engine: object, choices: tuple[str, ...]) -> str:
    if engine not in choices:
        raise ValueError(f"{owner} expected engine in {choices}, got {engine!r}")
    return engine


def resolve_gru(
    engine: str,
    dtype: torch.dtype,
    device: torch.device,
    reset_after: bool = True,
    shape: tuple[int, int, int, int] | None = None,
    training: bool = False,
) -> str:
    """The engine that runs a GRU of this dtype and device when ``engine`` is asked for.

    ``"auto"`` with a ``shape`` ``(batch, time, input, hidden)`` on the CPU takes the fastest installed engine
    that runs ``dtype`` for that shape and ``training`` (:mod:`grukit.ops.autotune`: measured once per
    machine and shape bucket, or a cost model with ``GRUKIT_AUTOTUNE=0``); without a shape it walks
    ``onednn -> native -> reference`` (``"torch"``, cuDNN, on CUDA). An explicit engine that is not
    installed here falls back the same way (its build or load warned once); an explicit engine that cannot
    run this dtype or device raises.
    """
    device = torch.device(device)
    if engine == "reference":
        return engine
    if device.type == "cuda":
        if engine == "auto":
            return "torch" if reset_after and dtype in (torch.float16, torch.bfloat16, torch.float32) else "reference"
        raise ValueError(f"GRU engine={engine!r} runs on the CPU; got a {device.type} input (use engine='auto')")
    if device.type != "cpu":
        if engine == "auto":
            return "reference"
        raise ValueError(f"GRU engine={engine!r} runs on the CPU; got a {device.type} input")
    if engine == "onednn" and dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"GRU engine='onednn' runs float32 and bfloat16, got {dtype}; use engine='native' or 'auto'")
    if engine == "native" and dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"GRU engine='native' runs float32, float64 and bfloat16, got {dtype}")
    if engine == "auto" and onednn.autocast_bf16(dtype):
        dtype = torch.bfloat16  # float32 under bf16 autocast computes in bf16: choose as for bf16
    if engine == "auto" and shape is not None:
        return autotune.choose(_auto_candidates(dtype), shape, dtype, training, reset_after)
    if engine in ("auto", "onednn") and dtype in (torch.float32, torch.bfloat16) and onednn.available():
        return "onednn"
    if dtype in (torch.float32, torch.float64, torch.bfloat16) and native.available():
        return "native"
    return "reference"


def _auto_candidates(dtype: torch.dtype) -> list[str]:
    """The CPU engines ``auto`` chooses among for ``dtype``, default first: the fast engines that are installed
    and run it (an explicit engine resolves to itself exactly then), and the reference when fewer than two
    fast engines do."""
    fast = []
    for engine in ("onednn", "native"):
        try:
            if resolve_gru(engine, dtype, torch.device("cpu")) == engine:
                fast.append(engine)
        except ValueError:  # this engine does not run dtype
            continue
    return fast if len(fast) > 1 else [*fast, "reference"]


def segment_bounds(sorted_lengths: Tensor, max_segments: int = MAX_SEGMENTS) -> list[int]:
    """Time boundaries ``[0, t1, ..., max length]`` for lengths sorted in descending order: at most
    ``max_segments`` segments, cut at the lengths found at evenly spaced ranks."""
    batch = sorted_lengths.numel()
    ranks = [min(batch - 1, (batch * k) // max_segments) for k in range(1, max_segments)]
    cuts = {int(sorted_lengths[r]) for r in ranks} | {int(sorted_lengths[0])}
    return [0, *sorted(cuts)]


def run_lengths(kernel: Kernel, x: Tensor, h0: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run a full-length kernel with the foundation's ``lengths`` semantics (see the module docstring).

    Args:
        kernel: one left-to-right layer, ``(x (T, B, I), h0 (B, H)) -> (T, B, H)``.
        x: ``(T, B, I)``; h0: ``(B, H)``; lengths: ``(B,)`` int64 CPU in ``[1, T]`` or ``None``.

    Returns:
        ``(output (T, B, H), h_n (B, H))``.
    """
    if lengths is None:
        output = kernel(x, h0)  # (T, B, H)
        return output, output[-1]
    steps, batch = x.shape[0], x.shape[1]
    sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
    order = order.to(x.device)
    # Each segment's active sequences are a prefix of ``order``; they are gathered per segment and their
    # states written straight back into the batch's own order, so nothing is sorted back at the end.
    output = x.new_zeros(steps, batch, h0.shape[-1])  # (T, B, H)
    h = h0.index_select(0, order)  # (B, H), longest first
    bounds = segment_bounds(sorted_lengths)
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        active = order[: int((sorted_lengths > t0).sum())]
        y = kernel(x[t0:t1].index_select(1, active), h[: active.numel()])  # (t1 - t0, active, H)
        output[t0:t1].index_copy_(1, active, y)
        h = y[-1]
    output.masked_fill_(~reference.valid_steps(steps, lengths, x.device), 0.0)  # steps past each end
    h_n = output[(lengths - 1).to(x.device), torch.arange(batch, device=x.device)]  # (B, H)
    return output, h_n


def gru_direction(
    engine: str,
    x: Tensor,
    h0: Tensor,
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    reset_after: bool,
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """One GRU layer and direction on a fast engine (``"onednn"``, ``"native"`` or ``"torch"``), with the
    semantics of ``reference.scan(gru_cell, ...)``: ``x`` ``(T, B, I)``, ``h0`` ``(B, H)`` -> ``(output, h_n)``."""
    if engine == "torch":
        output, (h_n,) = torch_direction("gru", x, (h0,), weights, lengths, reverse)
        return output, h_n
    sequence = onednn.gru_sequence if engine == "onednn" else native.gru_sequence
    if onednn.wants_bf16(x):  # bfloat16 under autocast: run_lengths builds the output in the batch's dtype
        x = x.to(torch.bfloat16)

    def kernel(x_part: Tensor, h_part: Tensor) -> Tensor:
        return sequence(x_part, h_part, *weights, reset_after)

    if reverse:
        x = reference.reverse_padded(x, lengths)
    output, h_n = run_lengths(kernel, x, h0, lengths)
    if reverse:
        output = reference.reverse_padded(output, lengths)
    return output, h_n


def torch_direction(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    lengths: Tensor | None,
    reverse: bool,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction through torch's own fused recurrent kernels (``torch._VF.gru`` / ``lstm``: oneDNN
    for the LSTM on the CPU, cuDNN on CUDA), with ``lengths`` through a packed sequence.

    Args:
        mode: ``"gru"`` (reset-after only) or ``"lstm"``; x: ``(T, B, I)``; state: ``(h0,)`` or ``(h0, c0)``,
        each ``(B, H)`` (``h0`` ``(B, P)`` with a projection); weights: ``(w_ih, w_hh, b_ih, b_hh)`` in torch's
        layout; w_hr: the LSTM's projection ``(P, H)`` or ``None``.

    Returns:
        ``(output (T, B, H or P), final state)``.
    """
    if reverse:
        x = reference.reverse_padded(x, lengths)
    flat = [w for w in (*weights, w_hr) if w is not None]
    has_bias = weights[2] is not None
    hx = tuple(s.unsqueeze(0) for s in state)  # (1, B, H) each
    call = torch._VF.gru if mode == "gru" else torch._VF.lstm
    hidden = hx[0] if mode == "gru" else hx
    if w_hr is not None:  # torch warns on every call that oneDNN has no projection, then runs its own path
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    if lengths is None:
        output, *final = call(x, hidden, flat, has_bias, 1, 0.0, False, False, False)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        sorted_hx = tuple(h.index_select(1, packed.sorted_indices) for h in hx)
        hidden = sorted_hx[0] if mode == "gru" else sorted_hx
        data, *final = call(packed.data, packed.batch_sizes, hidden, flat, has_bias, 1, 0.0, False, False)
        packed_out = torch.nn.utils.rnn.PackedSequence(
            data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        output, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, total_length=x.shape[0])
        final = [f.index_select(1, packed.unsorted_indices) for f in final]
    if reverse:
        output = reference.reverse_padded(output, lengths)
    return output, tuple(f.squeeze(0) for f in final)
