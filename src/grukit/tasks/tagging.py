r"""Sequence tagging (part of speech, named entities, any per-token label) with a bidirectional GRU.

Each word is represented by its own embedding (frequent training words) and by embeddings of its
characters (their mean, the first and the last), so words never seen in training still carry information
(in Chinese a word's characters, its last one above all, say much of its class)::

    x_t = [WordEmb(w_t) ; mean_k CharEmb(c_{t,k}) ; CharEmb(c_{t,1}) ; CharEmb(c_{t,last}) ; TagEmb(d(w_t))]   (5E,)

where ``d(w)`` is the word's most frequent tag in training (a tag dictionary; "unknown" for rare words), the
baseline's answer, which the network learns when to overrule from the context.
    o_t = [GRU→(x)_t ; GRU←(x)_t]                          (2H,)
    p(tag_t) = softmax(W o_t + b)                           (tags,)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from grukit.tasks._base import GRUEstimator, check_labels, cross_entropy, recurrent_layer, run_recurrent
from grukit.text import (
    BucketBatches,
    CharTokenizer,
    WordTokenizer,
    lengths_to_mask,
    pad_sequences,
    tokenizer_from_json,
)
from grukit.train.checkpoint import CheckpointError
from grukit.train.metrics import SparseCategoricalAccuracy

PAD, UNK = 0, 1
SPECIALS = {"pad": "<pad>", "unk": "<unk>"}


class WordCharBiGRU(nn.Module):
    """Shapes: ``words``, ``dictionary`` (the dictionary tag id + 2 of each word; 1 unknown) ``(B, T)``,
    ``chars`` ``(B, T, K)``, ``lengths`` ``(B,)`` → logits ``(B, T, tags)``."""

    def __init__(
        self, words: int, chars: int, tags: int, embedding: int, hidden: int, layers: int, dropout: float, cell: str
    ) -> None:
        super().__init__()
        self.tag_embedding = nn.Embedding(tags + 2, embedding, padding_idx=PAD)
        self.word_embedding = nn.Embedding(words, embedding, padding_idx=PAD)
        self.char_embedding = nn.Embedding(chars, embedding, padding_idx=PAD)
        self.rnn = recurrent_layer(cell, 5 * embedding, hidden, num_layers=layers, bidirectional=True, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, words: Tensor, chars: Tensor, dictionary: Tensor, lengths: Tensor) -> Tensor:
        char_mask = (chars != PAD).unsqueeze(-1)  # (B, T, K, 1)
        char_vectors = self.char_embedding(chars)  # (B, T, K, E)
        mean = (char_vectors * char_mask).sum(2) / char_mask.sum(2).clamp_min(1)  # (B, T, E)
        last_index = (char_mask.squeeze(-1).sum(2) - 1).clamp_min(0)  # (B, T)
        last = char_vectors.gather(
            2, last_index[..., None, None].expand(-1, -1, 1, char_vectors.shape[-1])
        )  # (B,T,1,E)
        parts = [
            self.word_embedding(words),
            mean,
            char_vectors[:, :, 0],
            last.squeeze(2),
            self.tag_embedding(dictionary),
        ]
        x = self.dropout(torch.cat(parts, dim=-1))  # (B, T, 5E)
        outputs, _ = run_recurrent(self.rnn, x, lengths)  # (B, T, 2H)
        return self.head(self.dropout(outputs))  # (B, T, tags)


def _check_sentences(sentences: Sequence[Sequence[str]], owner: str, what: str = "X") -> list[list[str]]:
    if isinstance(sentences, str):
        raise TypeError(f"{owner} expected {what} as a list of token lists, got a single string")
    result = [list(s) for s in sentences]
    if not result:
        raise ValueError(f"{owner} got no sentences")
    for index, sentence in enumerate(result):
        if not sentence:
            raise ValueError(f"{owner} expected every sentence to have at least one token; {what}[{index}] is empty")
        if isinstance(sentences[index], str):
            raise TypeError(
                f"{owner} expected {what}[{index}] to be a list of tokens, got the string {sentences[index]!r}"
            )
        if what == "X":
            bad = next((k for k, token in enumerate(sentence) if not isinstance(token, str)), None)
            if bad is not None:
                raise TypeError(
                    f"{owner} expected every token to be a str, X[{index}][{bad}] is "
                    f"{type(sentence[bad]).__name__} {sentence[bad]}; pass words as strings (e.g. map str first)"
                )
    return result


class SequenceTagger(GRUEstimator):
    """Tag every token of every sentence (sklearn style: ``X`` is a list of token lists, ``y`` a list of tag
    lists of the same lengths; ``predict`` returns tag lists; ``score`` is token accuracy).

    Args:
        embedding_size, hidden_size, num_layers, dropout, cell: the network (``cell="lstm"`` for comparisons).
        min_count: training words seen fewer times share the unknown-word embedding (their characters still count).
        max_chars: characters read per word.
        chunk_length: sentences longer than this are tagged in pieces of this many tokens.
        epochs, batch_size, learning_rate, random_state, verbose: training.

    Fitted: ``tags_`` (the tag set), ``words_``, ``chars_`` (vocabularies), ``dictionary_`` (each word id's most
    frequent tag id + 2), ``module_``, ``history_``.
    """

    def __init__(
        self,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.2,
        min_count: int = 2,
        max_chars: int = 4,
        chunk_length: int = 100,
        cell: str = "gru",
        epochs: int = 3,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.min_count = min_count
        self.max_chars = max_chars
        self.chunk_length = chunk_length
        self.cell = cell
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    def _chunks(self, sentences: list[list[str]]) -> list[tuple[int, int, int]]:
        """``(sentence, start, stop)`` pieces of at most ``chunk_length`` tokens."""
        return [
            (index, start, min(start + self.chunk_length, len(sentence)))
            for index, sentence in enumerate(sentences)
            for start in range(0, len(sentence), self.chunk_length)
        ]

    def _encode(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Word ids ``(T,)`` and character ids ``(T, max_chars)``."""
        words = np.array(self.words_.encode_tokens(tokens), dtype=np.int64)
        chars = np.zeros((len(tokens), self.max_chars), dtype=np.int64)
        for position, token in enumerate(tokens):
            ids = self.chars_.encode(token[: self.max_chars])
            chars[position, : len(ids)] = ids
        return words, chars

    def _batch(self, encoded: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(words (B, T), chars (B, T, K), dictionary tags (B, T), lengths (B,))``."""
        words, lengths = pad_sequences([w for w, _ in encoded], torch.int64)  # (B, T), (B,)
        chars, _ = pad_sequences([c for _, c in encoded], torch.int64)  # (B, T, K)
        return words, chars, self.dictionary_[words], lengths

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, X: Sequence[Sequence[str]], y: Sequence[Sequence[str]] | None = None) -> SequenceTagger:
        sentences = _check_sentences(X, "SequenceTagger")
        if y is None:
            raise ValueError(
                "SequenceTagger requires y to be passed, but the target y is None: call fit(X, y) with one tag "
                "list per sentence"
            )
        tag_lists = _check_sentences(y, "SequenceTagger", "y")
        if len(sentences) != len(tag_lists):
            raise ValueError(f"SequenceTagger got {len(sentences)} sentences but {len(tag_lists)} tag lists")
        for index, (tokens, tags) in enumerate(zip(sentences, tag_lists)):
            if len(tokens) != len(tags):
                raise ValueError(f"SequenceTagger: sentence {index} has {len(tokens)} tokens but {len(tags)} tags")
        flat_tags = [tag for tags in tag_lists for tag in tags]
        tag_set = set(check_labels(flat_tags, "SequenceTagger", len(flat_tags), "tokens").tolist())
        self._prepare_fit("embedding_size", "hidden_size", "num_layers", "max_chars", "chunk_length")
        self.words_ = WordTokenizer.train(sentences, SPECIALS, min_count=self.min_count)
        self.chars_ = CharTokenizer.train((token for sentence in sentences for token in sentence), SPECIALS, 2)
        self.tags_ = sorted(tag_set)
        tag_index = {tag: index for index, tag in enumerate(self.tags_)}
        tag_counts: dict[str, Counter] = {}
        for tokens, tags in zip(sentences, tag_lists):
            for token, tag in zip(tokens, tags):
                if token in self.words_.index:
                    tag_counts.setdefault(token, Counter())[tag] += 1
        self.dictionary_ = torch.full((self.words_.vocab_size,), UNK, dtype=torch.int64)  # by word id; PAD stays 0
        self.dictionary_[PAD] = PAD
        for token, counts in tag_counts.items():
            self.dictionary_[self.words_.index[token]] = tag_index[counts.most_common(1)[0][0]] + 2
        chunks = self._chunks(sentences)
        encoded = [self._encode(sentences[i][a:b]) for i, a, b in chunks]
        targets = [np.array([tag_index[t] for t in tag_lists[i][a:b]], dtype=np.int64) for i, a, b in chunks]

        def make_batch(indices: np.ndarray) -> tuple:
            words, chars, dictionary, lengths = self._batch([encoded[i] for i in indices])
            gold, _ = pad_sequences([targets[i] for i in indices], torch.int64)  # (B, T)
            mask = lengths_to_mask(lengths, words.shape[1])  # (B, T)
            return (words, chars, dictionary, lengths), gold, mask

        self.module_ = self._network()
        batches = BucketBatches(
            len(chunks),
            self.batch_size,
            make_batch,
            lengths=np.array([b - a for _, a, b in chunks]),
            shuffle=True,
            seed=self.random_state,
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        files = {
            "word_tokenizer.json": self.words_.to_json().encode("utf-8"),
            "char_tokenizer.json": self.chars_.to_json().encode("utf-8"),
        }
        return {"tags": self.tags_, "dictionary": self.dictionary_.tolist()}, files

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        tags = fitted["tags"]
        kinds = {type(tag) for tag in tags} if isinstance(tags, list) else set()
        if not kinds or not (kinds == {str} or kinds <= {int, float}) or tags != sorted(set(tags)):
            raise CheckpointError(
                f'config.json "fitted" tags must be a sorted list of distinct strings (or numbers), as fit() writes '
                f"them, got {tags!r:.80}; reordered tags would make predict() name the wrong ones"
            )
        self.tags_ = tags
        self.words_ = tokenizer_from_json(files["word_tokenizer.json"].decode("utf-8"))
        self.chars_ = tokenizer_from_json(files["char_tokenizer.json"].decode("utf-8"))
        dictionary = fitted["dictionary"]
        if (
            not isinstance(dictionary, list)
            or len(dictionary) != self.words_.vocab_size
            or not all(isinstance(i, int) and 0 <= i < len(self.tags_) + 2 for i in dictionary)
        ):
            raise CheckpointError(
                f'config.json "fitted" dictionary must list one tag id + 2 (0 to {len(self.tags_) + 1}) for each of '
                f"the {self.words_.vocab_size} words, got {dictionary!r:.80}"
            )
        self.dictionary_ = torch.tensor(dictionary, dtype=torch.int64)
        self.module_ = self._network()

    def _network(self) -> WordCharBiGRU:
        return WordCharBiGRU(
            self.words_.vocab_size,
            self.chars_.vocab_size,
            len(self.tags_),
            self.embedding_size,
            self.hidden_size,
            self.num_layers,
            self.dropout,
            self.cell,
        )

    @torch.no_grad()
    def predict(self, X: Sequence[Sequence[str]]) -> list[list[str]]:
        """One tag list per sentence."""
        self._check_fitted("predict")
        sentences = _check_sentences(X, "SequenceTagger")
        chunks = self._chunks(sentences)
        tagged: list[list[str]] = [[] for _ in sentences]
        order = sorted(range(len(chunks)), key=lambda k: chunks[k][2] - chunks[k][1])
        pieces: dict[int, list[str]] = {}
        for start in range(0, len(order), 128):
            chosen = order[start : start + 128]
            batch = self._batch([self._encode(sentences[i][a:b]) for i, a, b in (chunks[k] for k in chosen)])
            lengths = batch[-1]
            best = self.module_(*batch).argmax(-1)  # (B, T)
            for row, k in enumerate(chosen):
                pieces[k] = [self.tags_[t] for t in best[row, : int(lengths[row])].tolist()]
        for k, (index, _, _) in enumerate(chunks):  # chunks are in sentence order
            tagged[index].extend(pieces[k])
        return tagged

    def score(self, X: Sequence[Sequence[str]], y: Sequence[Sequence[str]]) -> float:
        """Token accuracy of :meth:`predict` against ``y``."""
        predicted = self.predict(X)
        gold = _check_sentences(y, "SequenceTagger", "y")
        if len(gold) != len(predicted):
            raise ValueError(f"SequenceTagger got {len(predicted)} sentences but {len(gold)} tag lists to score them")
        for index, (tags, tokens) in enumerate(zip(gold, predicted)):
            if len(tags) != len(tokens):
                raise ValueError(f"SequenceTagger: sentence {index} has {len(tokens)} tokens but {len(tags)} tags")
        pairs = [(p, g) for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs)]
        return sum(p == g for p, g in pairs) / len(pairs)
