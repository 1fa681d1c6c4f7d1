"""What grukit's sklearn-style estimators share: padding, length-aware pooling, re-iterable mini-batches,
the choice of recurrent layer, and training through :class:`grukit.train.Trainer`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from grukit.nn import GRU, LSTM
from grukit.train import Callback, History, LearningRateScheduler, Trainer, seed_everything
from grukit.train.losses import LossFn
from grukit.train.metrics import Metric

CELLS = {"gru": GRU, "lstm": LSTM}


def recurrent_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> GRU | LSTM:
    """A :class:`grukit.nn.GRU` (``cell="gru"``) or :class:`grukit.nn.LSTM` (``"lstm"``), batch first."""
    if cell not in CELLS:
        raise ValueError(f"expected cell in {tuple(CELLS)}, got {cell!r}")
    return CELLS[cell](input_size, hidden_size, batch_first=True, **kwargs)


def run_recurrent(layer: GRU | LSTM, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(output (B, T, D*H), h_n (D*L, B, H))`` of a GRU or LSTM (the LSTM's ``h_n``, not its cell state)."""
    output, state = layer(x, None, lengths)
    return output, state[0] if isinstance(state, tuple) else state


def pad(sequences: Sequence[np.ndarray], dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Zero-pad ``n`` arrays of shape ``(T_i, ...)`` to ``(n, max T_i, ...)``; returns it and the lengths ``(n,)``."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    batch = torch.zeros((len(sequences), int(lengths.max()), *np.shape(sequences[0])[1:]), dtype=dtype)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = torch.as_tensor(np.asarray(sequence), dtype=dtype)
    return batch, lengths


def time_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(B, T)`` boolean, True at the valid steps ``t < lengths[b]``."""
    return torch.arange(steps)[None, :] < lengths[:, None]


def masked_mean_max(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean and max over the valid steps of ``x`` ``(B, T, F)``, concatenated: ``(B, 2F)``."""
    mask = time_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
    mean = (x * mask).sum(1) / lengths[:, None].to(x.dtype)  # (B, F)
    maximum = x.masked_fill(~mask, float("-inf")).amax(1)  # (B, F)
    return torch.cat([mean, maximum], dim=-1)


class Batches:
    """Mini-batches that can be iterated once per epoch: ``make_batch(indices)`` builds each one.

    With ``shuffle``, each epoch draws a new order from its own generator (seeded, so runs repeat). With
    ``lengths``, the shuffled order is cut into pools of 32 batches sorted by length, so a batch holds
    sequences of similar length and little padding; the order of the batches is shuffled again.
    """

    def __init__(
        self,
        make_batch: Callable[[np.ndarray], tuple],
        size: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        lengths: np.ndarray | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("no samples to make batches from: the data is empty")
        self.make_batch, self.size, self.batch_size, self.shuffle = make_batch, size, batch_size, shuffle
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[tuple]:
        order = self.rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        if self.lengths is not None:
            pool = 32 * self.batch_size
            order = np.concatenate(
                [
                    chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    for chunk in np.split(order, range(pool, self.size, pool))
                ]
            )
        batches = [order[k : k + self.batch_size] for k in range(0, self.size, self.batch_size)]
        if self.shuffle and self.lengths is not None:
            batches = [batches[k] for k in self.rng.permutation(len(batches))]
        for indices in batches:
            yield self.make_batch(indices)


def cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over the last axis of ``logits``, averaged over the positions ``mask`` keeps."""
    per_element = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    if mask is None:
        return per_element.mean()
    weights = mask.reshape(-1).to(per_element.dtype)
    return (per_element * weights).sum() / weights.sum().clamp_min(1.0)


class GRUEstimator(BaseEstimator):
    """Base of grukit's estimators: sklearn's parameter handling (``get_params`` / ``set_params`` /
    ``clone`` read the ``__init__`` arguments), the fitted check, and one training entry point."""

    def _check_fitted(self, action: str) -> None:
        check_is_fitted(self, "module_", msg=f"This %(name)s is not fitted yet: call fit(...) before {action}().")

    def _train(
        self,
        module: nn.Module,
        batches: Batches,
        loss_fn: LossFn,
        metrics: Sequence[Metric] = (),
        callbacks: Sequence[Callback] = (),
        epochs: int | None = None,
    ) -> History:
        """Adam for ``self.epochs`` epochs through the shared :class:`Trainer`, gradients clipped to norm 1, the
        learning rate on a cosine from ``self.learning_rate`` towards 0 (``lr_e = lr · ½ (1 + cos(π e / E))``,
        so the last epochs settle instead of jumping between minima); sets ``history_``. ``epochs`` overrides
        ``self.epochs``."""
        optimizer = torch.optim.Adam(module.parameters(), lr=self.learning_rate)
        epochs, peak = epochs or self.epochs, self.learning_rate
        cosine = LearningRateScheduler(lambda epoch, _lr: peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
        callbacks = [cosine, *callbacks]
        trainer = Trainer(module, loss_fn, optimizer, metrics=list(metrics), clipnorm=1.0, callbacks=callbacks)
        self.history_ = trainer.fit(batches, epochs=epochs, verbose=self.verbose)
        module.eval()
        return self.history_

    def _seed(self) -> None:
        seed_everything(self.random_state)
