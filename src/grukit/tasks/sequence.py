r"""Sequence classification (motion, sensors, any multichannel series, equal or variable length) with a
GRU-FCN: a recurrent branch beside a small fully convolutional one (Karim et al. 2018, "LSTM Fully
Convolutional Networks for Time Series Classification"; GRU-FCN: Elsayed et al. 2018).

For a series ``x`` ``(T, C)`` standardised per channel with the training set's mean and deviation::

    r = h_T of GRU(x)                                       (H,)   the recurrent branch, last valid step
    u = ReLU(BN(Conv1d_k=7(x))) → ReLU(BN(Conv1d_k=5(·))) → ReLU(BN(Conv1d_k=3(·)))    (T, F)
    v = mean_t u_t over the valid steps                     (F,)   the convolutional branch
    logits = W [dropout(r); v] + b                          (classes,)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from torch import Tensor, nn

from grukit.tasks._base import (
    GRUEstimator,
    check_labels,
    cross_entropy,
    fitted_floats,
    fitted_int,
    labels_from_json,
    labels_to_json,
    recurrent_layer,
    run_recurrent,
)
from grukit.text import BucketBatches, lengths_to_mask, pad_sequences
from grukit.train.metrics import SparseCategoricalAccuracy


def as_series_list(x: np.ndarray | Sequence[np.ndarray], owner: str = "SequenceClassifier") -> list[np.ndarray]:
    """Accept ``(n, C, T)`` (sktime's numpy3D), ``(n, T)`` (univariate) or a list of ``(T_i, C)`` / ``(T_i,)``
    arrays (a ``pandas.DataFrame`` reads as ``(n, time)``); return a list of ``(T_i, C)`` float32 arrays.
    Raises on sparse, complex, NaN or infinite input and on mixed channel counts."""
    if sparse.issparse(x):
        raise TypeError(f"{owner} does not take sparse X; pass a dense array, e.g. X.toarray()")
    if not isinstance(x, (list, tuple)) and hasattr(x, "__array__"):
        x = np.asarray(x)  # a DataFrame or any array-like of one shape
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim == 3:
            series = list(np.transpose(x, (0, 2, 1)))
        elif x.ndim == 2 and x.shape[1] == 0:
            raise ValueError(
                f"{owner} got 0 feature(s) (shape={x.shape}) while a minimum of 1 is required: the series are empty"
            )
        elif x.ndim == 2:
            series = list(x[:, :, None])
        else:
            hint = "; Reshape your data: X[None, :] is one univariate series" if x.ndim == 1 else ""
            raise ValueError(
                f"{owner} expected X of shape (n, channels, time), (n, time) or a list of (time, channels) "
                f"arrays, got an array of shape {x.shape}{hint}"
            )
    else:
        series = [np.asarray(s) for s in x]
        series = [s[:, None] if s.ndim == 1 else s for s in series]
    if not series:
        raise ValueError(f"{owner} got no series: X is empty")
    for index, s in enumerate(series):
        if s.ndim != 2 or len(s) == 0:
            raise ValueError(f"{owner} expected series {index} of shape (time >= 1, channels), got {s.shape}")
        if s.shape[1] != series[0].shape[1]:
            raise ValueError(
                f"{owner} expected every series to have {series[0].shape[1]} channels (series 0), "
                f"series {index} has {s.shape[1]}"
            )
    if any(np.iscomplexobj(s) for s in series):
        raise ValueError(f"{owner} got complex values: Complex data not supported; pass real series")
    try:
        result = [np.asarray(s, dtype=np.float32) for s in series]
    except (TypeError, ValueError) as error:  # the same type, so callers (and sklearn's checks) can still tell
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{owner} expected series of numbers, got {error}") from error
    bad = next((index for index, s in enumerate(result) if not np.isfinite(s).all()), None)
    if bad is not None:
        raise ValueError(
            f"{owner} got NaN values or inf in series {bad}; every value must be finite (trim a variable-length "
            "series instead of padding it with NaN)"
        )
    return result


class GRUFCN(nn.Module):
    """The network of :class:`SequenceClassifier` (see the module docstring); without ``filters`` only the
    recurrent branch.

    Shapes: ``x`` ``(B, T, C)``, ``lengths`` ``(B,)``; returns logits ``(B, classes)``.
    """

    def __init__(
        self, channels: int, classes: int, hidden_size: int, filters: tuple[int, int, int], dropout: float, cell: str
    ) -> None:
        super().__init__()
        self.rnn = recurrent_layer(cell, channels, hidden_size)
        blocks: list[nn.Module] = []
        previous = channels
        for width, kernel in zip(filters, (7, 5, 3)):
            blocks.append(
                nn.Sequential(nn.Conv1d(previous, width, kernel, padding="same"), nn.BatchNorm1d(width), nn.ReLU())
            )
            previous = width
        self.conv = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + (filters[-1] if filters else 0), classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        _, h_n = run_recurrent(self.rnn, x, lengths)  # h_n (1, B, H)
        recurrent = self.dropout(h_n[-1])  # (B, H)
        if not self.conv:
            return self.head(recurrent)  # (B, classes)
        mask = lengths_to_mask(lengths, x.shape[1])[:, None, :].to(x.dtype)  # (B, 1, T)
        features = x.transpose(1, 2)  # (B, C, T)
        for block in self.conv:
            # zero the padding after every block, so a series' features never depend on its batch-mates' lengths
            features = block(features * mask)  # (B, F_k, T)
        pooled = (features * mask).sum(-1) / lengths[:, None].to(x.dtype)  # (B, F)
        return self.head(torch.cat([recurrent, pooled], dim=-1))  # (B, classes)


class SequenceClassifier(ClassifierMixin, GRUEstimator):
    """Classify univariate or multichannel series, of one length or many, with a GRU-FCN.

    Args:
        hidden_size: GRU units ``H``.
        filters: output channels of the three convolutions (kernels 7, 5, 3: odd, so "same" padding is
            symmetric; the paper uses 8, 5, 3); ``()`` leaves the GRU alone (a plain recurrent classifier).
        dropout: on the recurrent features, in training.
        epochs, batch_size, learning_rate: Adam training, the rate on a cosine decay from ``learning_rate``.
        min_steps: train for more than ``epochs`` when that gives fewer optimizer steps than this: small sets
            (tens of series, a few batches an epoch) need about a thousand steps (fitted: ``epochs_``).
        cell: ``"gru"`` or ``"lstm"`` (LSTM-FCN), for comparisons.
        random_state: seed for weights and batch order.
        verbose: 0 silent, 1 progress bars, 2 one line per epoch.

    ``X`` is ``(n, channels, time)`` as sktime gives it, ``(n, time)`` for univariate series, or a list of
    ``(time_i, channels)`` arrays of any lengths. ``y`` holds any labels; ``classes_`` lists them.
    """

    def __init__(
        self,
        hidden_size: int = 64,
        filters: tuple[int, int, int] = (128, 256, 128),
        dropout: float = 0.5,
        epochs: int = 100,
        min_steps: int = 1000,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        cell: str = "gru",
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.hidden_size = hidden_size
        self.filters = filters
        self.dropout = dropout
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.cell = cell
        self.random_state = random_state
        self.verbose = verbose

    def _standardise(self, series: list[np.ndarray]) -> list[np.ndarray]:
        return [(s - self.mean_) / self.scale_ for s in series]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def fit(self, X: np.ndarray | Sequence[np.ndarray], y: Sequence | None = None) -> SequenceClassifier:
        series = as_series_list(X)
        y = check_labels(y, "SequenceClassifier", len(series), "series")
        self._prepare_fit("hidden_size")
        self.encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.encoder_.classes_
        targets = torch.as_tensor(self.encoder_.transform(y), dtype=torch.int64)
        stacked = np.concatenate(series).astype(np.float64)  # (Σ T_i, C); float64: float32 squares overflow at 1e19
        self.mean_ = stacked.mean(0).astype(np.float32)
        self.scale_ = (stacked.std(0) + 1e-6).astype(np.float32)
        self.n_channels_ = series[0].shape[1]
        if len(self.filters) not in (0, 3):
            raise ValueError(f"SequenceClassifier expected filters as three channel counts or (), got {self.filters!r}")
        inputs = self._standardise(series)

        def make_batch(indices: np.ndarray) -> tuple:
            x, lengths = pad_sequences([inputs[i] for i in indices], torch.float32)
            return (x, lengths), targets[indices]

        self.module_ = self._network()
        batches = BucketBatches(len(series), self.batch_size, make_batch, shuffle=True, seed=self.random_state)
        self.epochs_ = max(self.epochs, math.ceil(self.min_steps / len(batches)))
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()], epochs=self.epochs_)
        return self

    def _network(self) -> GRUFCN:
        return GRUFCN(
            self.n_channels_, len(self.classes_), self.hidden_size, tuple(self.filters), self.dropout, self.cell
        )

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        return {
            "classes": labels_to_json(self.classes_),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "n_channels": self.n_channels_,
            "epochs": self.epochs_,
        }, {}

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.encoder_ = LabelEncoder()
        self.classes_ = self.encoder_.classes_ = labels_from_json(fitted["classes"])
        self.n_channels_ = fitted_int(fitted["n_channels"], "n_channels")
        self.epochs_ = fitted_int(fitted["epochs"], "epochs")
        self.mean_ = fitted_floats(fitted["mean"], "mean", self.n_channels_)
        self.scale_ = fitted_floats(fitted["scale"], "scale", self.n_channels_, positive=True)
        self.module_ = self._network()

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``(n, len(classes_))``."""
        self._check_fitted("predict_proba")
        series = as_series_list(X)
        if series[0].shape[1] != self.n_channels_:
            raise ValueError(
                f"SequenceClassifier was fitted on {self.n_channels_} channels, got X with {series[0].shape[1]}"
            )
        inputs = self._standardise(series)
        probabilities = []
        for start in range(0, len(inputs), 256):
            x, lengths = pad_sequences(inputs[start : start + 256], torch.float32)
            probabilities.append(torch.softmax(self.module_(x, lengths), dim=-1))
        return torch.cat(probabilities).numpy()

    def predict(self, X: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The most probable label of each series, ``(n,)``."""
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(X).argmax(1)]
