"""What ``fit`` / ``evaluate`` / ``predict`` accept, turned into the batches :class:`grukit.train.Trainer` runs.

Accepted: numpy arrays, torch tensors, Python lists (of numbers, or of variable-length sequences), a torch
``Dataset`` of ``(x, y)`` items, or a ``DataLoader`` (used as it is). Variable-length sequences are
zero-padded per batch and their lengths kept: a batch is then ``((x (B, T, ...), lengths (B,)), y)``, and
the model turns lengths into a mask for the recurrent layers, the loss and the metrics. Targets that are
sequences are zero-padded the same way (the mask keeps the padding out of the loss).

With ``shuffle``, variable-length samples are bucketed by :class:`grukit.text.BucketBatches`: a random
order is cut into pools of 100 batches, each pool sorted by length and cut into batches, and the batches
shuffled. Every sample is still seen once per epoch in a random batch; batches just hold sequences of
similar length, which saves most of the padding (the recurrence costs one step per padded position).
Shuffling draws from torch's global RNG, so a resumed checkpoint continues with the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from grukit.text.sequences import BucketBatches, pad_sequences

BUCKET_POOL = 100  # batches per sorted pool when bucketing variable-length samples


def _as_tensor(value: object) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.dtype == torch.float64:
        return tensor.float()
    if tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        return tensor.long()
    return tensor


def _is_sequence_list(value: object) -> bool:
    """A Python list/tuple whose items are themselves sequences (lists, arrays, tensors)."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    return isinstance(first, (list, tuple, np.ndarray, Tensor)) and np.ndim(first) >= 1


def _first_non_finite(values: Tensor | list[Tensor] | None) -> int | None:
    """Index of the first sample holding a NaN or inf (``None`` if all are finite or not floating point)."""
    if values is None:
        return None
    if isinstance(values, Tensor):
        if not values.is_floating_point() or values.numel() == 0:
            return None
        finite = torch.isfinite(values.reshape(len(values), -1)).all(1)  # (N,)
        return None if bool(finite.all()) else int((~finite).nonzero()[0])
    return next(
        (i for i, item in enumerate(values) if item.is_floating_point() and not bool(torch.isfinite(item).all())),
        None,
    )


class Samples:
    """``x`` and optional ``y``, each a tensor ``(N, ...)`` or a list of ``N`` variable-length tensors."""

    def __init__(self, x: Tensor | list[Tensor], y: Tensor | list[Tensor] | None) -> None:
        self.x = x
        self.y = y

    @classmethod
    def from_user(cls, x: object, y: object, caller: str) -> Samples:
        xs = [_as_tensor(item) for item in x] if _is_sequence_list(x) else _as_tensor(x)
        ys = None
        if y is not None:
            ys = [_as_tensor(item) for item in y] if _is_sequence_list(y) else _as_tensor(y)
        n = len(xs)
        if n == 0:
            raise ValueError(f"{caller} got no samples: x is empty")
        if ys is not None and len(ys) != n:
            raise ValueError(f"{caller} got {n} samples in x but {len(ys)} in y; they must have the same length")
        if isinstance(xs, list) and any(item.shape[0] == 0 for item in xs):
            empty = next(i for i, item in enumerate(xs) if item.shape[0] == 0)
            raise ValueError(f"{caller} got an empty sequence at x[{empty}]; every sequence needs at least one step")
        for name, values in (("x", xs), ("y", ys)):
            bad = _first_non_finite(values)
            if bad is not None:
                raise ValueError(
                    f"{caller} got non-finite values in {name} (first at sample {bad}); expected finite numbers, "
                    "as NaN or inf would turn the loss and then every weight into NaN"
                )
        return cls(xs, ys)

    @property
    def variable_length(self) -> bool:
        return isinstance(self.x, list)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: Sequence[int] | slice) -> Samples:
        def take(value):
            if value is None:
                return None
            if isinstance(value, list):
                return value[index] if isinstance(index, slice) else [value[i] for i in index]
            return value[index] if isinstance(index, slice) else value[torch.as_tensor(index, dtype=torch.long)]

        return Samples(take(self.x), take(self.y))

    def targets_max(self) -> int | None:
        """The largest integer target (for the class-count check), ``None`` for float targets."""
        if self.y is None:
            return None
        values = torch.cat([t.reshape(-1) for t in self.y]) if isinstance(self.y, list) else self.y.reshape(-1)
        if values.is_floating_point() or values.numel() == 0:
            return None
        return int(values.max())

    def collate(self, index: np.ndarray | Tensor) -> tuple:
        """The batch of the samples ``index`` ``(B,)``: ``((x, lengths), y)`` for variable lengths (zero-padded),
        else ``((x,), y)``; without ``y`` just ``(inputs,)``."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.variable_length:
            inputs: tuple = pad_sequences([self.x[i] for i in index.tolist()])  # (B, T, ...), (B,)
        else:
            inputs = (self.x[index],)
        if self.y is None:
            return (inputs,)
        if isinstance(self.y, list):
            targets, _ = pad_sequences([self.y[i] for i in index.tolist()])  # (B, T, ...)
        else:
            targets = self.y[index]
        return inputs, targets


class Batches(BucketBatches):
    """Re-iterable batches of :class:`Samples` for :class:`~grukit.train.Trainer`: each ``iter`` reshuffles
    (from torch's global RNG), bucketing variable-length samples by length (see the module docstring)."""

    def __init__(self, samples: Samples, batch_size: int, shuffle: bool) -> None:
        lengths = [item.shape[0] for item in samples.x] if samples.variable_length and shuffle else None
        super().__init__(
            len(samples), batch_size, samples.collate, lengths=lengths, shuffle=shuffle, pool=BUCKET_POOL, seed=None
        )
        self.samples = samples


def pad_collate(items: list) -> tuple:
    """``DataLoader`` collate for ``(x, y)`` items of a user's ``Dataset``: stacks, padding variable lengths."""
    first = items[0]
    pairs = first if isinstance(first, (tuple, list)) else None
    xs = [_as_tensor(item[0] if pairs else item) for item in items]
    ys = [_as_tensor(item[1]) for item in items] if pairs and len(first) > 1 else None
    samples = Samples(xs if any(x.shape != xs[0].shape for x in xs) else torch.stack(xs), None)
    if ys is not None:
        samples.y = ys if any(y.shape != ys[0].shape for y in ys) else torch.stack(ys)
    return samples.collate(torch.arange(len(items)))


def make_batches(x: object, y: object, batch_size: int, shuffle: bool, caller: str) -> Batches | DataLoader:
    """The batches for ``x`` / ``y`` (``y`` is ``None`` for a ``Dataset`` / ``DataLoader``, or for predict)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{caller} expected batch_size to be a positive integer, got {batch_size!r}")
    if isinstance(x, DataLoader):
        if len(x.dataset) == 0:
            raise ValueError(f"{caller} got an empty DataLoader")
        return x
    if isinstance(x, Dataset):
        if len(x) == 0:
            raise ValueError(f"{caller} got an empty Dataset")
        return DataLoader(x, batch_size=batch_size, shuffle=shuffle, collate_fn=pad_collate)
    return Batches(Samples.from_user(x, y, caller), batch_size, shuffle)
