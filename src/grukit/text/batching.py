"""Token streams for language-model training: a token file written once and memory-mapped, and batches for
truncated back-propagation through time (TBPTT).

TBPTT layout: a stream of ``N`` tokens is cut into ``B`` contiguous streams of ``n = ⌊(N − 1) / B⌋ + 1``
tokens (the tail that does not fill a row is dropped)::

    row b = tokens[b·(n−1) : b·(n−1) + n]              (B, n)
    batch i: x = rows[:, i·T : (i+1)·T]                (B, T)
             y = rows[:, i·T + 1 : (i+1)·T + 1]        (B, T)  the next token of each x

so batch ``i + 1`` continues exactly where batch ``i`` stopped in every row, and the hidden state at the end
of one batch is the right initial state of the next (carried, detached from the graph).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids below ``vocab_size``."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_token_file(path: str | Path, chunks: Iterable[list[int]], vocab_size: int) -> int:
    """Append the ids of each chunk to the binary file ``path`` (raw little-endian, no header) and write
    ``path + '.json'`` with its dtype and length. Memory holds one chunk at a time. Returns the token count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size).newbyteorder("<")
    count = 0
    with open(path, "wb") as handle:
        for ids in chunks:
            array = np.asarray(ids, dtype=dtype)
            if array.size and int(array.max()) >= vocab_size:
                raise ValueError(f"token id {int(array.max())} is outside the vocabulary of size {vocab_size}")
            handle.write(array.tobytes())
            count += array.size
    meta = {"dtype": dtype.str, "count": count, "vocab_size": vocab_size}
    Path(f"{path}.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


def read_token_file(path: str | Path) -> np.memmap:
    """Memory-map a file written by :func:`write_token_file` (read-only; pages load on demand)."""
    path = Path(path)
    meta_path = Path(f"{path}.json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no token file at {str(path)!r} (with its {meta_path.name})")
    meta = json.loads(meta_path.read_text("utf-8"))
    expected = meta["count"] * np.dtype(meta["dtype"]).itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"token file {str(path)!r} holds {path.stat().st_size} bytes, its metadata says {expected}")
    if meta["count"] == 0:
        return np.zeros(0, dtype=np.dtype(meta["dtype"]))
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["count"],))


class TBPTTBatches:
    """Batches for truncated BPTT over one token stream (see the module docstring for the layout).

    Args:
        tokens: 1-D ids (a numpy array, a memory map, a list or a tensor).
        batch_size: ``B``, the number of contiguous streams.
        seq_len: ``T``, steps per batch; the last batch may be shorter.

    Indexing gives ``(x, y)``, both int64 ``(B, T)`` tensors; only that batch's slice is read from disk.
    """

    def __init__(self, tokens: np.ndarray | list[int] | Tensor, batch_size: int, seq_len: int) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TBPTTBatches expected {name} to be a positive integer, got {value!r}")
        if isinstance(tokens, Tensor):
            tokens = tokens.cpu().numpy()
        tokens = np.asarray(tokens) if not isinstance(tokens, np.ndarray) else tokens
        if tokens.ndim != 1:
            raise ValueError(f"TBPTTBatches expected a 1-D token stream, got shape {tokens.shape}")
        row_len = (len(tokens) - 1) // batch_size + 1
        if row_len < 2:
            raise ValueError(
                f"TBPTTBatches needs at least 2 tokens per stream: {len(tokens)} tokens cannot fill "
                f"{batch_size} streams; use a smaller batch_size or more text"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.row_len = row_len
        self.stride = row_len - 1

    def __len__(self) -> int:
        return -(-(self.row_len - 1) // self.seq_len)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.row_len - 1)
        rows = np.stack(
            [
                np.asarray(self.tokens[b * self.stride + start : b * self.stride + stop + 1])
                for b in range(self.batch_size)
            ]
        ).astype(np.int64)  # (B, T + 1)
        window = torch.from_numpy(rows)
        return window[:, :-1], window[:, 1:]  # (B, T) each

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in range(len(self)):
            yield self[index]
