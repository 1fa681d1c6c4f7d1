r"""Text classification (sentiment in any language) with a bidirectional GRU over characters or BPE tokens.

For token ids ``w_1..w_T`` of one text::

    e_t = Embedding(w_t)                                   (E,)
    o_t = [GRU→(e)_t ; GRU←(e)_t]                          (2H,)   both directions, over the valid steps only
    v   = [mean_t o_t ; max_t o_t]                         (4H,)
    p   = softmax(W dropout(v) + b)                        (classes,)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from torch import Tensor, nn

from grukit.tasks._base import Batches, GRUEstimator, cross_entropy, masked_mean_max, recurrent_layer, run_recurrent
from grukit.train.metrics import SparseCategoricalAccuracy

TOKENS = ("char", "bpe")
PAD, UNK = 0, 1


class TextEncoder:
    """Text → token ids: characters seen at least ``min_count`` times, or a byte-pair encoding learned on the
    training texts with Hugging Face ``tokenizers``. Id 0 pads, id 1 is unknown. ``len(encoder)`` is the
    vocabulary size."""

    def __init__(self, kind: str, vocab_size: int, min_count: int = 2) -> None:
        if kind not in TOKENS:
            raise ValueError(f"expected tokens in {TOKENS}, got {kind!r}")
        self.kind, self.vocab_size, self.min_count = kind, vocab_size, min_count

    def fit(self, texts: Sequence[str]) -> TextEncoder:
        if self.kind == "char":
            counts = Counter(char for text in texts for char in text)
            frequent = [char for char, n in counts.most_common(self.vocab_size - 2) if n >= self.min_count]
            self.vocabulary = {char: index + 2 for index, char in enumerate(frequent)}
            self.size = len(self.vocabulary) + 2
            return self
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            min_frequency=self.min_count,
            special_tokens=["[PAD]", "[UNK]"],
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        self.tokenizer = tokenizer
        self.size = tokenizer.get_vocab_size()
        return self

    def __len__(self) -> int:
        return self.size

    def encode(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        """Ids of each text, cut to ``max_length``; an empty text becomes ``[UNK]`` (a sequence needs a step)."""
        if self.kind == "char":
            ids = [[self.vocabulary.get(char, UNK) for char in text[:max_length]] for text in texts]
        else:
            ids = [encoding.ids[:max_length] for encoding in self.tokenizer.encode_batch(list(texts))]
        return [np.asarray(row or [UNK], dtype=np.int64) for row in ids]


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


def _pad_ids(rows: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.from_numpy(row)
    return ids, lengths


def check_texts(texts: Sequence[str], owner: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{owner} expected a list of texts, got a single string")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{owner} expected every text to be a str, text {bad} is {type(texts[bad]).__name__}")
    if not texts:
        raise ValueError(f"{owner} got no texts")
    return texts


class TextClassifier(ClassifierMixin, GRUEstimator):
    """Classify texts (any language, any labels) with a BiGRU over characters or BPE tokens.

    Args:
        tokens: ``"char"`` or ``"bpe"`` (learned on the training texts).
        vocab_size: most tokens kept (BPE merges stop there; characters: the most frequent).
        max_length: tokens read per text (the rest is cut).
        embedding_size, hidden_size, dropout, cell: the network (``cell="lstm"`` for comparisons).
        epochs, batch_size, learning_rate, random_state, verbose: training.

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

    def fit(self, texts: Sequence[str], y: Sequence) -> TextClassifier:
        texts = check_texts(texts, "TextClassifier")
        y = np.asarray(y)
        if len(y) != len(texts):
            raise ValueError(f"TextClassifier got {len(texts)} texts but {len(y)} labels")
        self._seed()
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        targets = torch.as_tensor(self.label_encoder_.transform(y), dtype=torch.int64)
        self.encoder_ = TextEncoder(self.tokens, self.vocab_size).fit(texts)
        rows = self.encoder_.encode(texts, self.max_length)
        self.module_ = BiGRUPool(
            len(self.encoder_), len(self.classes_), self.embedding_size, self.hidden_size, self.dropout, self.cell
        )
        batches = Batches(
            lambda idx: (_pad_ids([rows[i] for i in idx]), targets[idx]),
            len(rows),
            self.batch_size,
            shuffle=True,
            seed=self.random_state,
            lengths=np.array([len(r) for r in rows]),
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(n, len(classes_))``."""
        self._check_fitted("predict_proba")
        rows = self.encoder_.encode(check_texts(texts, "TextClassifier"), self.max_length)
        order = np.argsort([len(r) for r in rows], kind="stable")  # batch similar lengths together
        probabilities = np.zeros((len(rows), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(rows), 256):
            chosen = order[start : start + 256]
            logits = self.module_(*_pad_ids([rows[i] for i in chosen]))
            probabilities[chosen] = torch.softmax(logits, dim=-1).numpy()
        return probabilities

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The most probable label of each text, ``(n,)``."""
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(texts).argmax(1)]
