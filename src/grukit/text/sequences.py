r"""Variable-length sequences as batches: padding, lengths ↔ masks, and length-bucketed mini-batches.

A batch of ``B`` sequences of lengths ``T_b`` (each ``(T_b, ...)``) is right-padded to ``T = max_b T_b``::

    batch[b, t] = sequence_b[t]   for t < T_b,   value otherwise        (B, T, ...)
    lengths[b]  = T_b                                                   (B,)
    mask[b, t]  = t < lengths[b]                                        (B, T)  True at real steps

:class:`BucketBatches` orders samples for training so that a batch holds sequences of similar length
(the recurrence costs one step per padded position)::

    order   = a random permutation of the N samples (or 0 … N−1 without shuffling)
    pools   = order cut into pools of ``pool · batch_size`` samples, each sorted by length (stable)
    batches = every pool cut into batches of ``batch_size``, then the batches shuffled

Every sample is still seen once per epoch; only which samples share a batch depends on their lengths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

BatchT = TypeVar("BatchT")


def _as_tensor(sequence: object, dtype: torch.dtype | None) -> Tensor:
    if isinstance(sequence, Tensor):
        return sequence if dtype is None else sequence.to(dtype)
    return torch.as_tensor(np.asarray(sequence), dtype=dtype)


def pad_sequences(
    sequences: Iterable[object],
    dtype: torch.dtype | None = None,
    value: float = 0,
    max_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Right-pad ``B`` sequences (lists, arrays or tensors, each ``(T_b, ...)``) into one tensor.

    Args:
        sequences: the sequences; all share their trailing shape ``(...)``. Empty ones are allowed (length 0).
        dtype: of the batch; ``None`` promotes the non-empty sequences' dtypes (as ``torch.as_tensor`` reads them),
            so ``[[1, 2], [1.5]]`` stays float.
        value: written at the padded positions.
        max_length: keep only each sequence's first ``max_length`` steps.

    Returns:
        ``(batch (B, T, ...), lengths (B,) int64)`` with ``T = max_b T_b`` (after cutting).
    """
    if not isinstance(sequences, (str, bytes)) and not hasattr(sequences, "__len__"):
        sequences = list(sequences)  # a generator
    if isinstance(sequences, (str, bytes)) or not len(sequences):
        raise ValueError(f"pad_sequences expected a non-empty list of sequences, got {sequences!r:.60}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"pad_sequences expected max_length to be a positive integer or None, got {max_length!r}")
    tensors = []
    for index, sequence in enumerate(sequences):
        try:
            tensors.append(_as_tensor(sequence, dtype))
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"pad_sequences expected sequences of numbers, sequence {index} is {sequence!r:.60} "
                f"({type(sequence).__name__}): {error}"
            ) from error
    if dtype is None:  # empty sequences carry no values, so their default dtype must not widen the batch
        filled = [tensor.dtype for tensor in tensors if tensor.numel()] or [tensors[0].dtype]
        dtype = functools.reduce(torch.promote_types, filled)
    if max_length is not None:
        tensors = [tensor[:max_length] for tensor in tensors]
    trailing = tuple(tensors[0].shape[1:])
    for index, tensor in enumerate(tensors):
        if tensor.dim() == 0:
            raise ValueError(f"pad_sequences expected sequences of shape (time, ...), sequence {index} is a scalar")
        if tuple(tensor.shape[1:]) != trailing:
            raise ValueError(
                f"pad_sequences expected every sequence of shape (time, {', '.join(map(str, trailing))}) like "
                f"sequence 0, sequence {index} has shape {tuple(tensor.shape)}"
            )
    lengths = torch.tensor([tensor.shape[0] for tensor in tensors], dtype=torch.int64)  # (B,)
    batch = torch.full((len(tensors), int(lengths.max()), *trailing), value, dtype=dtype)  # (B, T, ...)
    for row, tensor in enumerate(tensors):
        batch[row, : tensor.shape[0]] = tensor
    return batch, lengths


def lengths_to_mask(lengths: Tensor, steps: int | None = None) -> Tensor:
    """``(B, T)`` boolean mask, True at the real steps ``t < lengths[b]``; ``T`` defaults to ``max(lengths)``.

    Raises:
        ValueError: for lengths that are not whole non-negative numbers, or longer than ``steps``.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths_to_mask expected lengths of shape (batch,), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths_to_mask expected integer lengths, got {lengths.dtype}: {lengths.tolist()!r:.80}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths_to_mask expected lengths >= 0, got {int(lengths.min())}")
    steps = longest if steps is None else steps
    if longest > steps:
        raise ValueError(f"lengths_to_mask got a length of {longest}, more than the {steps} steps of the mask")
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


def mask_to_lengths(mask: Tensor, owner: str = "mask_to_lengths") -> Tensor:
    """``(B, T)`` right-padded mask (real steps first, padding after) → ``(B,)`` int64 lengths.

    Raises:
        ValueError: naming ``owner``, for a mask with gaps or left padding, which lengths cannot express.
    """
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{owner} expected a mask of shape (batch, time), got {got}")
    mask = mask.bool()
    lengths = mask.sum(1)  # (B,)
    if not torch.equal(lengths_to_mask(lengths, mask.shape[1]), mask):
        row = int((lengths_to_mask(lengths, mask.shape[1]) != mask).any(1).nonzero()[0])
        raise ValueError(
            f"{owner} supports right-padded masks only (real steps first, padding after); got a mask with gaps "
            f"or left padding (first in row {row}; with Keras' pad_sequences, pass padding='post')"
        )
    return lengths


class BucketBatches(Generic[BatchT]):
    """Mini-batches that can be iterated once per epoch, bucketed by length (see the module docstring).

    Args:
        size: ``N``, the number of samples.
        batch_size: samples per batch (the last one may be smaller).
        make_batch: builds a batch from the sample indices ``(b,)`` (an int64 array); without it the batches
            are the index arrays themselves.
        lengths: ``(N,)`` sample lengths; without them samples are not bucketed (the order is only shuffled).
        shuffle: draw a new order every epoch; without it batches follow ``0 … N−1`` (sorted within pools
            when ``lengths`` are given).
        pool: batches per sorted pool. Larger pools waste less padding but mix lengths across batches less.
        seed: an int seeds a generator owned by this object (so runs repeat, and epochs differ); a
            ``numpy.random.Generator`` is used as it is; ``None`` draws from torch's global generator, so a
            checkpoint that saves torch's RNG state resumes with the same order.

    ``len()`` is the number of batches per epoch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        make_batch: Callable[[np.ndarray], BatchT] | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = False,
        pool: int = 32,
        seed: int | np.random.Generator | None = 0,
    ) -> None:
        if size == 0:
            raise ValueError("BucketBatches got no samples to make batches from: the data is empty")
        for name, number in (("size", size), ("batch_size", batch_size), ("pool", pool)):
            if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 1:
                raise ValueError(f"BucketBatches expected {name} to be a positive integer, got {number!r}")
        self.lengths = None if lengths is None else np.asarray(lengths)
        if self.lengths is not None and self.lengths.shape != (size,):
            raise ValueError(f"BucketBatches expected lengths of shape ({size},), got {self.lengths.shape}")
        self.size, self.batch_size, self.pool, self.shuffle = int(size), int(batch_size), int(pool), bool(shuffle)
        self.make_batch = make_batch
        valid_seed = (
            seed is None
            or isinstance(seed, np.random.Generator)
            or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0)
        )
        if not valid_seed:
            raise ValueError(
                f"BucketBatches expected seed to be a non-negative integer, a numpy.random.Generator or None, "
                f"got {seed!r}"
            )
        self.rng = np.random.default_rng(seed) if isinstance(seed, (int, np.integer)) else seed

    def _permutation(self, n: int) -> np.ndarray:
        if self.rng is None:
            return torch.randperm(n).numpy()
        return self.rng.permutation(n)

    def order(self) -> list[np.ndarray]:
        """One epoch's batches as index arrays (draws from the generator when shuffling)."""
        order = self._permutation(self.size) if self.shuffle else np.arange(self.size)
        if self.lengths is not None:
            step = self.pool * self.batch_size
            pools = np.split(order, range(step, self.size, step))
            order = np.concatenate([pool[np.argsort(self.lengths[pool], kind="stable")] for pool in pools])
        batches = [order[start : start + self.batch_size] for start in range(0, self.size, self.batch_size)]
        if self.shuffle and self.lengths is not None:
            batches = [batches[k] for k in self._permutation(len(batches))]
        return batches

    def state_dict(self) -> dict | None:
        """The owned generator's state (JSON), which :class:`grukit.train.Trainer` records at every epoch's start
        for an exact resume; ``None`` when drawing from torch's global generator (the trainer saves that)."""
        return None if self.rng is None else {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from a :meth:`state_dict`: the next epoch draws the order it would have drawn then."""
        if state is None or self.rng is None:
            if state is not None or self.rng is not None:
                raise ValueError(
                    "BucketBatches.load_state_dict got a state that does not match the generator: a state comes from "
                    "a seeded BucketBatches, None from one drawing from torch's global generator"
                )
            return
        self.rng.bit_generator.state = state["bit_generator"]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[BatchT]:
        for indices in self.order():
            yield indices if self.make_batch is None else self.make_batch(indices)
