r"""Text classification (sentiment in any language) with a bidirectional GRU over characters or BPE tokens.

For token ids ``w_1..w_T`` of one text::

    e_t = [Embedding(w_t) ; r(w_t) ; r(w_{t−1} w_t) ; …]   (E + N K,)  r: naive-Bayes evidence of the n-grams
                                                                    ending at t, n = 1..N (``nb_order``; 0 before
                                                                    the text starts)
    o_t = [GRU→(e)_t ; GRU←(e)_t]                          (2H,)   both directions, over the valid steps only
    v   = [mean_t o_t ; max_t o_t]                         (4H,)
    p   = softmax(W dropout(v) + b)                        (classes,)

The naive-Bayes evidence of a token (or of a run of n tokens, hashed into ``2^20`` buckets; fewer, down to
``2^16``, above 4 classes, so a model of many classes stays small) is its log-count ratio,
as in NBSVM (Wang & Manning 2012), learned on the training texts. With ``n_c(f)`` the number of training texts of
class ``c`` that hold feature ``f`` and ``α = 1``::

    p_c(f) = α + n_c(f),   q_c(f) = α + Σ_{c' ≠ c} n_c'(f)
    r_c(f) = log (p_c(f) / ‖p_c‖₁) − log (q_c(f) / ‖q_c‖₁)          K = 1 channel (c = the second class) for two
                                                                     classes, one per class (one-vs-rest) above
The GRU composes this evidence in context (negation, contrast) instead of summing it as a linear model does. The
ratios a training text sees are computed out of fold (5 folds: from the texts of the other folds), so the network
learns how far evidence from unseen texts can be trusted; prediction uses the ratios of all training texts.
``nb_order=0`` gives the plain BiGRU.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.model_selection import KFold
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
from grukit.train.checkpoint import CheckpointError
from grukit.train.metrics import SparseCategoricalAccuracy

TOKENS = ("auto", "char", "bpe")
SPACED = 0.05  # "auto": texts whose characters are at least 5 % whitespace are read as BPE tokens, others as characters
PAD, UNK = 0, 1
SPECIALS = {"pad": "<pad>", "unk": "<unk>"}
NGRAM_BUCKETS = 1 << 20  # hashed token runs, at most (4 MiB of float32 per evidence channel and n-gram length)
EVIDENCE_FLOATS = 1 << 22  # more classes get fewer buckets, so a table stays near 16 MiB (at least 2^16 buckets)
NB_FOLDS = 5
MAX_NB_ORDER = 3
NB_ALPHA = 1.0


def choose_tokens(texts: Sequence[str]) -> str:
    """``"auto"``'s choice: ``"bpe"`` for texts written with spaces between words (English prose is about 17 %
    whitespace), ``"char"`` for texts without (Chinese or Japanese, well under 5 %), where each character carries
    meaning and BPE would glue characters into rare pieces."""
    characters = sum(len(text) for text in texts)
    spaces = sum(ch.isspace() for text in texts for ch in text)
    return "bpe" if characters and spaces / characters >= SPACED else "char"


def train_text_tokenizer(
    kind: str, texts: Sequence[str], vocab_size: int, min_count: int = 2
) -> CharTokenizer | BPETokenizer:
    """The tokenizer :class:`TextClassifier` learns on its training texts: the ``vocab_size − 2`` most frequent
    characters seen at least ``min_count`` times, or a lowercased byte-pair encoding of at most ``vocab_size``
    symbols (Hugging Face ``tokenizers``); ``"auto"`` picks one by :func:`choose_tokens`. Id 0 pads, id 1 is
    unknown."""
    if kind not in TOKENS:
        raise ValueError(f"expected tokens in {TOKENS}, got {kind!r}")
    if kind == "auto":
        kind = choose_tokens(texts)
    if kind == "char":
        return CharTokenizer.train(texts, SPECIALS, min_count=min_count, max_size=vocab_size, order="frequency")
    return BPETokenizer.train(
        texts, vocab_size, min_frequency=min_count, specials=tuple(SPECIALS), byte_level=False, lowercase=True
    )


def encode_texts(tokenizer: CharTokenizer | BPETokenizer, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Ids of each text, cut to ``max_length``; an empty text becomes ``[UNK]`` (a sequence needs a step)."""
    return [np.asarray(ids[:max_length] or [UNK], dtype=np.int64) for ids in tokenizer.encode_batch(list(texts))]


def evidence_channels(classes: int) -> int:
    """``K``, the naive-Bayes channels per feature: one for two classes, one per class above."""
    return 1 if classes == 2 else classes


def bucket_count(channels: int) -> int:
    """Buckets of a hashed n-gram table with ``channels`` evidence channels: ``2^20`` up to 4 channels, then
    halved as the channels double (``2^20 · 4 / channels`` rounded down to a power of two), never under ``2^16``."""
    return max(1 << 16, min(NGRAM_BUCKETS, 1 << (EVIDENCE_FLOATS // channels).bit_length() - 1))


def ngram_buckets(ids: Tensor | np.ndarray, n: int, buckets: int = NGRAM_BUCKETS) -> Tensor | np.ndarray:
    """The hashed bucket of each run of ``n ≥ 2`` tokens ending at a step: ``(…, T)`` int64 ids (a tensor or an
    array) → ``(…, T − n + 1)`` buckets, ``(((w_1 P + w_2) P + …) P + w_n) mod buckets`` with ``P = 1,000,003``."""
    steps = max(ids.shape[-1] - n + 1, 0)
    hashed = ids[..., :steps]
    for k in range(1, n):
        hashed = hashed * 1_000_003 + ids[..., k : k + steps]
    return hashed % buckets


def log_count_ratios(
    rows: Sequence[np.ndarray], targets: np.ndarray, vocabulary: int, classes: int, order: int
) -> list[np.ndarray]:
    """The naive-Bayes log-count ratios ``r_c``, one table per n-gram length ``n = 1..order``: every token id
    ``(vocabulary, K)``, then every bucket of hashed ``n``-token runs ``(bucket_count(K), K)``, from the texts
    ``rows`` (token ids) and their class indices ``targets`` (module docstring). A text counts a feature once,
    however often it holds it."""
    channels = evidence_channels(classes)
    wanted = range(1, 2) if channels == 1 else range(classes)
    buckets = bucket_count(channels)
    tables = []
    for n in range(1, order + 1):
        size = vocabulary if n == 1 else buckets
        # the features each text holds (once per text), and their counts per class; most buckets stay unseen
        kept = [(ids if n == 1 else ngram_buckets(ids, n, buckets), target) for ids, target in zip(rows, targets)
                if len(ids) >= n]
        held = [np.unique(ids) for ids, _ in kept]
        features, inverse = np.unique(np.concatenate([np.zeros(0, np.int64), *held]), return_inverse=True)
        owners = np.repeat(np.array([target for _, target in kept], np.int64), [len(ids) for ids in held])
        counts = np.zeros((classes, len(features)))
        np.add.at(counts, (owners, inverse), 1)
        table = np.empty((size, channels), dtype=np.float32)
        for column, c in enumerate(wanted):
            p, q = counts[c], counts.sum(0) - counts[c]
            p_norm, q_norm = NB_ALPHA * size + p.sum(), NB_ALPHA * size + q.sum()  # ‖p_c‖₁, ‖q_c‖₁ over every feature
            table[:, column] = np.log(NB_ALPHA / p_norm) - np.log(NB_ALPHA / q_norm)  # an unseen feature
            table[features, column] = np.log((NB_ALPHA + p) / p_norm) - np.log((NB_ALPHA + q) / q_norm)
        tables.append(table)
    tables[0][PAD] = 0.0
    return tables


def token_evidence(ids: Tensor, tables: Sequence[Tensor]) -> Tensor:
    """``[r(w_t) ; r(w_{t−1} w_t) ; …]`` per step: ids ``(B, T)`` and the tables of :func:`log_count_ratios`
    (``(V, K)``, then ``(buckets, K)`` each) → ``(B, T, order · K)``; a step with fewer than ``n − 1``
    tokens before it gets 0 for the ``n``-gram."""
    parts = [tables[0][ids]]
    for n, table in enumerate(tables[1:], start=2):
        runs = table[ngram_buckets(ids, n, table.shape[0])]  # (B, max(T − n + 1, 0), K)
        parts.append(torch.cat([runs.new_zeros(ids.shape[0], min(n - 1, ids.shape[1]), table.shape[1]), runs], 1))
    return torch.cat(parts, dim=-1)


class BiGRUPool(nn.Module):
    """Embedding (with the naive-Bayes evidence of n-grams up to ``order`` when ``channels`` > 0), bidirectional
    GRU, mean + max pooling over valid steps, linear head. Shapes: ``ids`` ``(B, T)``, ``lengths`` ``(B,)``,
    optional ``evidence`` ``(B, T, order · K)`` (training passes its out-of-fold values; ``None`` reads the
    tables) → logits ``(B, classes)``."""

    def __init__(
        self, vocabulary: int, classes: int, embedding: int, hidden: int, dropout: float, cell: str,
        channels: int = 0, order: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, embedding, padding_idx=PAD)
        self.rnn = recurrent_layer(cell, embedding + order * channels, hidden, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, classes)
        self.channels = channels
        self.order = order if channels else 0
        for n in range(1, self.order + 1):
            rows = vocabulary if n == 1 else bucket_count(channels)
            self.register_buffer(f"ratios_{n}", torch.zeros(rows, channels))

    def ratio_tables(self) -> list[Tensor]:
        """The log-count ratio tables, unigrams first."""
        return [getattr(self, f"ratios_{n}") for n in range(1, self.order + 1)]

    def forward(self, ids: Tensor, lengths: Tensor, evidence: Tensor | None = None) -> Tensor:
        embedded = self.dropout(self.embedding(ids))  # (B, T, E)
        if self.order:
            if evidence is None:
                evidence = token_evidence(ids, self.ratio_tables())
            embedded = torch.cat([embedded, evidence.to(embedded.dtype)], dim=-1)  # (B, T, E + order · K)
        outputs, _ = run_recurrent(self.rnn, embedded, lengths)  # (B, T, 2H)
        return self.head(self.dropout(masked_mean_max(outputs, lengths)))  # (B, classes)


class TextClassifier(ClassifierMixin, GRUEstimator):
    """Classify texts (any language, any labels) with a BiGRU over characters or BPE tokens.

    Args:
        tokens: ``"char"`` or ``"bpe"`` (learned on the training texts); ``"auto"``: BPE for texts with spaces
            between words, characters for texts without (Chinese), by :func:`choose_tokens`.
        vocab_size: most tokens kept (BPE merges stop there; characters: the most frequent).
        max_length: tokens read per text (the rest is cut).
        embedding_size, hidden_size, dropout, cell: the network (``cell="lstm"`` for comparisons).
        nb_order: each token also carries the naive-Bayes evidence of the n-grams of ``1..nb_order`` tokens that
            end at it (module docstring); ``0`` gives the plain BiGRU.
        epochs, batch_size, learning_rate, random_state, verbose: training.

    ``texts`` is a list of strings, a ``pandas.Series`` or a one-column ``DataFrame`` of them; labels are all
    strings or all numbers (whole ones).

    Fitted: ``classes_``, ``tokens_`` (``"char"`` or ``"bpe"``), ``encoder_`` (the tokenizer), ``module_``,
    ``history_``.
    """

    def __init__(
        self,
        tokens: str = "auto",
        vocab_size: int = 8000,
        max_length: int = 200,
        embedding_size: int = 64,
        hidden_size: int = 64,
        dropout: float = 0.4,
        cell: str = "gru",
        nb_order: int = 3,
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
        self.nb_order = nb_order
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
        order = self.nb_order
        if isinstance(order, bool) or not isinstance(order, numbers.Integral) or not 0 <= order <= MAX_NB_ORDER:
            raise ValueError(
                f"TextClassifier expected nb_order to be an integer from 0 (no naive-Bayes evidence) to "
                f"{MAX_NB_ORDER}, got {order!r}"
            )
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "TextClassifier needs texts of at least 2 classes to learn from, got only the label "
                f"{self.classes_.tolist()[0]!r}"
            )
        targets = torch.as_tensor(self.label_encoder_.transform(y), dtype=torch.int64)
        if not any(texts):
            raise ValueError("TextClassifier got only empty texts: there is nothing to learn tokens from")
        if self.tokens not in TOKENS:
            raise ValueError(f"TextClassifier expected tokens in {TOKENS}, got {self.tokens!r}")
        self.tokens_ = choose_tokens(texts) if self.tokens == "auto" else self.tokens
        self.encoder_ = train_text_tokenizer(self.tokens_, texts, self.vocab_size)
        rows = encode_texts(self.encoder_, texts, self.max_length)
        self.module_ = self._network()
        evidence = self._out_of_fold_evidence(rows, targets.numpy()) if self.nb_order else None

        def batch(idx: np.ndarray) -> tuple:
            ids, lengths = pad_sequences([rows[i] for i in idx], torch.int64)
            if evidence is None:
                return (ids, lengths), targets[idx]
            return (ids, lengths, pad_sequences([evidence[i] for i in idx], torch.float32)[0]), targets[idx]

        batches = BucketBatches(
            len(rows), self.batch_size, batch, lengths=np.array([len(r) for r in rows]), shuffle=True,
            seed=self.random_state,
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    def _network(self) -> BiGRUPool:
        return BiGRUPool(
            self.encoder_.vocab_size, len(self.classes_), self.embedding_size, self.hidden_size, self.dropout,
            self.cell, evidence_channels(len(self.classes_)), self.nb_order,
        )

    def _out_of_fold_evidence(self, rows: list[np.ndarray], targets: np.ndarray) -> list[Tensor]:
        """Set the network's ratio tables from every training text and return each training text's evidence
        ``(T_i, nb_order · K)`` computed from the ratios of the other folds' texts (one fold: from all of them)."""
        vocabulary, classes, order = self.encoder_.vocab_size, len(self.classes_), self.nb_order
        tables = log_count_ratios(rows, targets, vocabulary, classes, order)
        for buffer, table in zip(self.module_.ratio_tables(), tables):
            buffer.copy_(torch.from_numpy(table))
        evidence: list[Tensor] = [torch.empty(0)] * len(rows)
        folds = min(NB_FOLDS, len(rows))
        if folds < 2:
            held_out = [(np.arange(len(rows)), np.arange(len(rows)))]
        else:
            held_out = KFold(folds, shuffle=True, random_state=self.random_state).split(np.zeros(len(rows)))
        for kept, out in held_out:
            if folds >= 2:
                tables = log_count_ratios([rows[i] for i in kept], targets[kept], vocabulary, classes, order)
            fold_tables = [torch.from_numpy(table) for table in tables]
            for i in out:
                evidence[i] = token_evidence(torch.from_numpy(rows[i])[None], fold_tables)[0]
        return evidence

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        return {"classes": labels_to_json(self.classes_), "nb_order": int(self.nb_order)}, self.encoder_.files()

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.label_encoder_ = LabelEncoder()
        self.classes_ = self.label_encoder_.classes_ = labels_from_json(fitted["classes"])
        self.encoder_ = tokenizer_from_files(files)
        if self.encoder_ is None:
            raise KeyError("the tokenizer file (char_tokenizer.json or tokenizer.json)")
        self.tokens_ = "char" if isinstance(self.encoder_, CharTokenizer) else "bpe"
        order = fitted.get("nb_order", 0)  # folders saved before the evidence have none
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_NB_ORDER:
            raise CheckpointError(
                f'config.json "fitted" nb_order must be an integer from 0 to {MAX_NB_ORDER}, as fit() writes it, '
                f"got {order!r:.80}"
            )
        self.nb_order = order
        self.module_ = self._network()

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
            probabilities[chosen] = torch.softmax(logits.float(), dim=-1).numpy()
        return probabilities

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The most probable label of each text, ``(n,)``."""
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(texts).argmax(1)]
