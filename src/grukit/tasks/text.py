r"""Text classification (sentiment in any language) with a bidirectional GRU over characters or BPE tokens.

For token ids ``w_1..w_T`` of one text::

    e_t = Embedding(w_t)                                   (E,)
    o_t = [GRU→(e)_t ; GRU←(e)_t]                          (2H,)   both directions, over the valid steps only
    v   = [mean_t o_t ; max_t o_t]                         (4H,)
    p   = softmax(W dropout(v) + b)                        (classes,)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from torch import Tensor, nn

from grukit.tasks._base import (
    GRUEstimator,
    check_labels,
    check_texts,
    cross_entropy,
    labels_from_json,
    labels_to_json,
    masked_mean_max,
    recurrent_layer,
    run_recurrent,
)
from grukit.text import BPETokenizer, BucketBatches, CharTokenizer, pad_sequences, tokenizer_from_files
from grukit.train.metrics import SparseCategoricalAccuracy

TOKENS = ("char", "bpe")
PAD, UNK = 0, 1
SPECIALS = {"pad": "<pad>", "unk": "<unk>"}


def train_text_tokenizer(
    kind: str, texts: Sequence[str], vocab_size: int, min_count: int = 2
) -> CharTokenizer | BPETokenizer:
    """The tokenizer :class:`TextClassifier` learns on its training texts: the ``vocab_size − 2`` most frequent
    characters seen at least ``min_count`` times, or a lowercased byte-pair encoding of at most ``vocab_size``
    symbols (Hugging Face ``tokenizers``). Id 0 pads, id 1 is unknown."""
    if kind not in TOKENS:
        raise ValueError(f"expected tokens in {TOKENS}, got {kind!r}")
    if kind == "char":
        return CharTokenizer.train(texts, SPECIALS, min_count=min_count, max_size=vocab_size, order="frequency")
    return BPETokenizer.train(
        texts, vocab_size, min_frequency=min_count, specials=tuple(SPECIALS), byte_level=False, lowercase=True
    )


def encode_texts(tokenizer: CharTokenizer | BPETokenizer, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Ids of each text, cut to ``max_length``; an empty text becomes ``[UNK]`` (a sequence needs a step)."""
    return [np.asarray(ids[:max_length] or [UNK], dtype=np.int64) for ids in tokenizer.encode_batch(list(texts))]


class BiGRUPool(nn.Module):
    """Embedding, bidirectional GRU, mean + max pooling over valid steps, linear head.
    Shapes: ``ids`` ``(B, T)``, ``lengths`` ``(B,)`` → logits ``(B, classes)``."""

    def __init__(self, vocabulary: int, classes: int, embedding: int, hidden: int, dropout: float, cell: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, embedding, padding_idx=PAD)
        self.rnn = recurrent_layer(cell, embedding, hidden, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        embedded = self.dropout(self.embedding(ids))  # (B, T, E)
        outputs, _ = run_recurrent(self.rnn, embedded, lengths)  # (B, T, 2H)
        return self.head(self.dropout(masked_mean_max(outputs, lengths)))  # (B, classes)


class TextClassifier(ClassifierMixin, GRUEstimator):
    """Classify texts (any language, any labels) with a BiGRU over characters or BPE tokens.

    Args:
        tokens: ``"char"`` or ``"bpe"`` (learned on the training texts).
        vocab_size: most tokens kept (BPE merges stop there; characters: the most frequent).
        max_length: tokens read per text (the rest is cut).
        embedding_size, hidden_size, dropout, cell: the network (``cell="lstm"`` for comparisons).
        epochs, batch_size, learning_rate, random_state, verbose: training.

    ``texts`` is a list of strings, a ``pandas.Series`` or a one-column ``DataFrame`` of them; labels are all
    strings or all numbers (whole ones).

    Fitted: ``classes_``, ``encoder_`` (the tokenizer), ``module_``, ``history_``.
    """

    def __init__(
        self,
        tokens: str = "bpe",
        vocab_size: int = 8000,
        max_length: int = 200,
        embedding_size: int = 64,
        hidden_size: int = 64,
        dropout: float = 0.4,
        cell: str = "gru",
        epochs: int = 8,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.tokens = tokens
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.cell = cell
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, texts: Sequence[str], y: Sequence | None = None) -> TextClassifier:
        texts = check_texts(texts, "TextClassifier")
        y = check_labels(y, "TextClassifier", len(texts), "texts")
        self._prepare_fit("vocab_size", "max_length", "embedding_size", "hidden_size")
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        targets = torch.as_tensor(self.label_encoder_.transform(y), dtype=torch.int64)
        if not any(texts):
            raise ValueError("TextClassifier got only empty texts: there is nothing to learn tokens from")
        self.encoder_ = train_text_tokenizer(self.tokens, texts, self.vocab_size)
        rows = encode_texts(self.encoder_, texts, self.max_length)
        self.module_ = BiGRUPool(
            self.encoder_.vocab_size, len(self.classes_), self.embedding_size, self.hidden_size, self.dropout, self.cell
        )
        batches = BucketBatches(
            len(rows),
            self.batch_size,
            lambda idx: (pad_sequences([rows[i] for i in idx], torch.int64), targets[idx]),
            lengths=np.array([len(r) for r in rows]),
            shuffle=True,
            seed=self.random_state,
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        return {"classes": labels_to_json(self.classes_)}, self.encoder_.files()

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.label_encoder_ = LabelEncoder()
        self.classes_ = self.label_encoder_.classes_ = labels_from_json(fitted["classes"])
        self.encoder_ = tokenizer_from_files(files)
        if self.encoder_ is None:
            raise KeyError("the tokenizer file (char_tokenizer.json or tokenizer.json)")
        self.module_ = BiGRUPool(
            self.encoder_.vocab_size, len(self.classes_), self.embedding_size, self.hidden_size, self.dropout, self.cell
        )

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(n, len(classes_))``."""
        self._check_fitted("predict_proba")
        rows = encode_texts(self.encoder_, check_texts(texts, "TextClassifier"), self.max_length)
        order = np.argsort([len(r) for r in rows], kind="stable")  # batch similar lengths together
        probabilities = np.zeros((len(rows), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(rows), 256):
            chosen = order[start : start + 256]
            logits = self.module_(*pad_sequences([rows[i] for i in chosen], torch.int64))
            probabilities[chosen] = torch.softmax(logits, dim=-1).numpy()
        return probabilities

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The most probable label of each text, ``(n,)``."""
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(texts).argmax(1)]
