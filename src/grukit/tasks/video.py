r"""Video classification: a small CNN applied to every frame (Keras' ``TimeDistributed``), a GRU over the
frame features, and one classifier per label column on its last state::

    f_t = CNN(frame_t)                      (F,)   the same weights for every frame
    h_T = GRU(f_1..f_T)                      (H,)
    p_k = softmax(W_k h_T + b_k)             one head per output k (e.g. the digit, its direction of motion)

The CNN is two 3×3 convolution + ReLU + 2×2 max-pool blocks (16 and 32 channels) and a linear map to ``F``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from torch import Tensor, nn

from grukit.tasks._base import (
    GRUEstimator,
    check_labels,
    fitted_int,
    labels_from_json,
    labels_to_json,
    recurrent_layer,
    run_recurrent,
)
from grukit.text import BucketBatches
from grukit.train.checkpoint import CheckpointError


class FrameCNNGRU(nn.Module):
    """Shapes: ``clips`` ``(B, T, C, height, width)`` → logits of every head concatenated ``(B, Σ classes_k)``."""

    def __init__(self, channels: int, height: int, width: int, features: int, hidden: int, heads: list[int], cell: str):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (height // 4) * (width // 4), features),
            nn.ReLU(),
        )
        self.rnn = recurrent_layer(cell, features, hidden)
        self.head = nn.Linear(hidden, sum(heads))

    def forward(self, clips: Tensor) -> Tensor:
        batch, steps = clips.shape[:2]
        frames = self.cnn(clips.flatten(0, 1)).view(batch, steps, -1)  # TimeDistributed: (B*T, C, h, w) → (B, T, F)
        _, h_n = run_recurrent(self.rnn, frames, None)  # (1, B, H)
        return self.head(h_n[-1])  # (B, Σ classes)


class VideoClassifier(ClassifierMixin, GRUEstimator):
    """Classify clips ``(n, frames, channels, height, width)`` (height and width at least 4), with one label
    per clip (``y`` ``(n,)``) or several (``y`` ``(n, k)``: e.g. the digit and its direction of motion).

    ``predict`` returns labels of ``y``'s shape; ``score`` is the fraction of clips with every label right.

    Args:
        features: frame feature size ``F``; hidden_size, cell: the recurrent layer.
        epochs, batch_size, learning_rate, random_state, verbose: training.
    """

    def __init__(
        self,
        features: int = 64,
        hidden_size: int = 64,
        cell: str = "gru",
        epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.features = features
        self.hidden_size = hidden_size
        self.cell = cell
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    @staticmethod
    def _check_clips(clips: np.ndarray, shape: tuple | None = None) -> Tensor:
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim == 5 and not len(clips):
            raise ValueError(f"VideoClassifier got no clips: X has shape {clips.shape}")
        if clips.ndim != 5 or clips.shape[3] < 4 or clips.shape[4] < 4:
            raise ValueError(
                f"VideoClassifier expected clips of shape (n, frames, channels, height >= 4, width >= 4), "
                f"got {clips.shape}"
            )
        if shape is not None and clips.shape[2:] != shape:
            raise ValueError(f"VideoClassifier was fitted on frames of shape {shape}, got {clips.shape[2:]}")
        if not np.isfinite(clips).all():
            bad = int(np.flatnonzero(~np.isfinite(clips).reshape(len(clips), -1).all(1))[0])
            raise ValueError(f"VideoClassifier got NaN or inf pixel values in clip {bad}; every value must be finite")
        return torch.from_numpy(clips)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> VideoClassifier:
        clips = self._check_clips(X)
        labels = check_labels(y, "VideoClassifier", len(clips), "clips", multi_output=True)
        self.multi_output_ = labels.ndim == 2
        columns = labels if self.multi_output_ else labels[:, None]
        self._prepare_fit("features", "hidden_size")
        self.encoders_ = [LabelEncoder().fit(columns[:, k]) for k in range(columns.shape[1])]
        self.classes_ = [encoder.classes_ for encoder in self.encoders_]
        self.frame_shape_ = tuple(clips.shape[2:])
        targets = torch.as_tensor(np.stack([e.transform(columns[:, k]) for k, e in enumerate(self.encoders_)], 1))
        sizes = [len(c) for c in self.classes_]

        def loss(outputs: Tensor, gold: Tensor, mask: Tensor | None = None) -> Tensor:
            pieces = outputs.split(sizes, dim=-1)
            return sum(nn.functional.cross_entropy(piece, gold[:, k]) for k, piece in enumerate(pieces))

        self.module_ = self._network()
        batches = BucketBatches(
            len(clips), self.batch_size, lambda idx: (clips[idx], targets[idx]), shuffle=True, seed=self.random_state
        )
        self._train(self.module_, batches, loss)
        return self

    def _network(self) -> FrameCNNGRU:
        channels, height, width = self.frame_shape_
        sizes = [len(c) for c in self.classes_]
        return FrameCNNGRU(channels, height, width, self.features, self.hidden_size, sizes, self.cell)

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        return {
            "classes": [labels_to_json(classes) for classes in self.classes_],
            "multi_output": self.multi_output_,
            "frame_shape": list(self.frame_shape_),
        }, {}

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        if not isinstance(fitted["classes"], list) or not fitted["classes"]:
            raise CheckpointError(
                f'config.json "fitted" classes must be a non-empty list, got {fitted["classes"]!r:.80}'
            )
        self.classes_ = [labels_from_json(entry, f"classes[{k}]") for k, entry in enumerate(fitted["classes"])]
        self.encoders_ = []
        for classes in self.classes_:
            encoder = LabelEncoder()
            encoder.classes_ = classes
            self.encoders_.append(encoder)
        self.multi_output_ = fitted["multi_output"]
        if not isinstance(self.multi_output_, bool) or (len(self.classes_) > 1 and not self.multi_output_):
            raise CheckpointError(
                f'config.json "fitted" multi_output must be true or false (true with several label columns), '
                f"got {self.multi_output_!r} with {len(self.classes_)} label column(s)"
            )
        shape = fitted["frame_shape"]
        if not isinstance(shape, list) or len(shape) != 3:
            raise CheckpointError(
                f'config.json "fitted" frame_shape must be [channels, height, width], got {shape!r:.80}'
            )
        self.frame_shape_ = (fitted_int(shape[0], "frame_shape channels"),) + tuple(
            fitted_int(size, "frame_shape height and width", minimum=4) for size in shape[1:]
        )
        self.module_ = self._network()

    @torch.no_grad()
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels ``(n,)``, or ``(n, k)`` when fitted on several label columns."""
        self._check_fitted("predict")
        clips = self._check_clips(X, self.frame_shape_)
        logits = torch.cat([self.module_(clips[start : start + 256]) for start in range(0, len(clips), 256)])
        pieces = logits.split([len(c) for c in self.classes_], dim=-1)
        columns = np.stack([classes[p.argmax(-1).numpy()] for classes, p in zip(self.classes_, pieces)], 1)
        return columns if self.multi_output_ else columns[:, 0]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Fraction of clips whose labels are all right."""
        predicted = self.predict(X)
        gold = np.asarray(y)
        if gold.shape != predicted.shape:
            raise ValueError(
                f"VideoClassifier.score expected y of shape {predicted.shape} (the labels predict() gives), "
                f"got {gold.shape}"
            )
        return float(np.mean(np.all((predicted == gold).reshape(len(gold), -1), axis=1)))
