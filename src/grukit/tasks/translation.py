r"""Sequence-to-sequence translation: a GRU encoder-decoder with Bahdanau (additive) attention, trained with
teacher forcing, decoded greedily or by beam search, scored with sacrebleu (BLEU, chrF) and exact match.

Source tokens ``x_1..x_S``, target tokens ``y_1..y_T`` (with ``y_0 = <bos>``, ``y_{T+1} = <eos>``)::

    o_j = [GRU→(Emb x)_j ; GRU←(Emb x)_j]                       (2H,)  encoder, valid steps only
    s_0 = tanh(W_0 [h→_S ; h←_1])                               (H,)
    e_tj = vᵀ tanh(W_s s_{t−1} + W_o o_j),  α_t = softmax_j e_tj  (masked to the source length)
    c_t = Σ_j α_tj o_j                                          (2H,)
    s_t = GRUCell([Emb y_{t−1} ; c_t], s_{t−1})                 (H,)
    p(y_t | y_<t, x) = softmax(W_out [s_t ; c_t ; Emb y_{t−1}])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from grukit.nn import GRUCell, LSTMCell
from grukit.tasks._base import Batches, GRUEstimator, cross_entropy, recurrent_layer, run_recurrent
from grukit.train.metrics import SparseCategoricalAccuracy

TOKENS = ("char", "word")
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


class Vocabulary:
    """Characters, or whitespace-separated words, seen in training; ids 0-3 are ``SPECIALS``."""

    def __init__(self, kind: str, texts: Sequence[str]) -> None:
        if kind not in TOKENS:
            raise ValueError(f"expected tokens in {TOKENS}, got {kind!r}")
        self.kind = kind
        counts = Counter(token for text in texts for token in self.split(text))
        self.items = list(SPECIALS) + sorted(counts)
        self.index = {token: i for i, token in enumerate(self.items)}

    def split(self, text: str) -> list[str]:
        return list(text) if self.kind == "char" else text.split()

    def encode(self, text: str, max_length: int) -> list[int]:
        return [self.index.get(token, UNK) for token in self.split(text)[:max_length]]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.items[i] for i in ids if i not in (PAD, BOS, EOS)]
        return ("" if self.kind == "char" else " ").join(tokens)

    def __len__(self) -> int:
        return len(self.items)


class AttentionSeq2Seq(nn.Module):
    """The encoder-decoder of the module docstring. ``forward(src, src_lengths, tgt_in)`` → logits
    ``(B, T, V_tgt)`` under teacher forcing; ``src`` ``(B, S)``, ``tgt_in`` ``(B, T)`` (``<bos>`` first)."""

    def __init__(self, source: int, target: int, embedding: int, hidden: int, dropout: float, cell: str) -> None:
        super().__init__()
        self.cell_kind = cell
        self.source_embedding = nn.Embedding(source, embedding, padding_idx=PAD)
        self.target_embedding = nn.Embedding(target, embedding, padding_idx=PAD)
        self.encoder = recurrent_layer(cell, embedding, hidden, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.attend_state = nn.Linear(hidden, hidden, bias=False)
        self.attend_source = nn.Linear(2 * hidden, hidden)
        self.attend_score = nn.Linear(hidden, 1, bias=False)
        self.decoder = (GRUCell if cell == "gru" else LSTMCell)(embedding + 2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + 2 * hidden + embedding, target)

    def encode(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, object]:
        """Encoder outputs ``(B, S, 2H)``, their projection ``(B, S, H)``, the source mask ``(B, S)`` and ``s_0``."""
        outputs, h_n = run_recurrent(self.encoder, self.dropout(self.source_embedding(src)), lengths)
        state = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=-1)))  # (B, H)
        if self.cell_kind == "lstm":
            state = (state, torch.zeros_like(state))
        mask = torch.arange(src.shape[1])[None, :] < lengths[:, None]
        return outputs, self.attend_source(outputs), mask, state

    def step(
        self, previous: Tensor, state: object, outputs: Tensor, projected: Tensor, mask: Tensor
    ) -> tuple[Tensor, object, Tensor]:
        """One decoder step from token ids ``previous`` ``(B,)``: logits ``(B, V)``, the new state and the
        attention weights ``(B, S)``."""
        hidden = state[0] if isinstance(state, tuple) else state  # (B, H)
        energy = self.attend_score(torch.tanh(self.attend_state(hidden)[:, None, :] + projected)).squeeze(-1)  # (B, S)
        weights = torch.softmax(energy.masked_fill(~mask, float("-inf")), dim=-1)  # (B, S)
        context = torch.bmm(weights[:, None, :], outputs).squeeze(1)  # (B, 2H)
        embedded = self.dropout(self.target_embedding(previous))  # (B, E)
        state = self.decoder(torch.cat([embedded, context], dim=-1), state)
        hidden = state[0] if isinstance(state, tuple) else state
        logits = self.out(self.dropout(torch.cat([hidden, context, embedded], dim=-1)))  # (B, V)
        return logits, state, weights

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> Tensor:
        outputs, projected, mask, state = self.encode(src, lengths)
        logits = []
        for t in range(tgt_in.shape[1]):
            step_logits, state, _ = self.step(tgt_in[:, t], state, outputs, projected, mask)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)  # (B, T, V)


def _pad_rows(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([max(len(r), 1) for r in rows], dtype=torch.int64)
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        if not row:
            ids[i, 0] = UNK  # an empty source still needs one step
    return ids, lengths


class Translator(GRUEstimator):
    """Translate texts with a GRU encoder-decoder and Bahdanau attention (see the module docstring).

    ``fit(sources, targets)`` takes two aligned lists of strings; ``predict(sources)`` returns strings;
    ``score`` is exact-match accuracy; :meth:`evaluate` adds sacrebleu's BLEU and chrF.

    Args:
        tokens: ``"char"`` or ``"word"`` (whitespace-separated).
        embedding_size, hidden_size, dropout, cell: the network (``cell="lstm"`` for comparisons).
        max_length: tokens kept per source; outputs stop at ``<eos>`` or 2 × the longest training target.
        beam_size: 1 decodes greedily; more keeps that many hypotheses, ranked by log-probability divided by
            ``length ** length_penalty``.
        epochs, batch_size, learning_rate, random_state, verbose: training.
    """

    def __init__(
        self,
        tokens: str = "char",
        embedding_size: int = 64,
        hidden_size: int = 128,
        dropout: float = 0.1,
        cell: str = "gru",
        max_length: int = 200,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.tokens = tokens
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.cell = cell
        self.max_length = max_length
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    @staticmethod
    def _check_texts(texts: Sequence[str], what: str) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(f"Translator expected {what} as a list of strings, got a single string")
        texts = list(texts)
        if not texts:
            raise ValueError(f"Translator got no {what}")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"Translator expected {what}[{bad}] to be a str, got {type(texts[bad]).__name__}")
        return texts

    def fit(self, X: Sequence[str], y: Sequence[str]) -> Translator:
        sources, targets = self._check_texts(X, "sources"), self._check_texts(y, "targets")
        if len(sources) != len(targets):
            raise ValueError(f"Translator got {len(sources)} sources but {len(targets)} targets")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"Translator expected cell in ('gru', 'lstm'), got {self.cell!r}")
        self._seed()
        self.source_vocabulary_ = Vocabulary(self.tokens, sources)
        self.target_vocabulary_ = Vocabulary(self.tokens, targets)
        source_rows = [self.source_vocabulary_.encode(s, self.max_length) for s in sources]
        target_rows = [self.target_vocabulary_.encode(t, self.max_length) for t in targets]
        self.max_output_length_ = 2 * max(len(r) for r in target_rows) + 1

        def make_batch(indices: np.ndarray) -> tuple:
            src, lengths = _pad_rows([source_rows[i] for i in indices])
            full, _ = _pad_rows([[BOS, *target_rows[i], EOS] for i in indices])
            tgt_in, tgt_out = full[:, :-1], full[:, 1:]
            return (src, lengths, tgt_in), tgt_out, tgt_out != PAD

        self.module_ = AttentionSeq2Seq(
            len(self.source_vocabulary_),
            len(self.target_vocabulary_),
            self.embedding_size,
            self.hidden_size,
            self.dropout,
            self.cell,
        )
        batches = Batches(
            make_batch,
            len(sources),
            self.batch_size,
            shuffle=True,
            seed=self.random_state,
            lengths=np.array([len(r) for r in source_rows]),
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    @torch.no_grad()
    def _greedy(self, src: Tensor, lengths: Tensor) -> list[list[int]]:
        outputs, projected, mask, state = self.module_.encode(src, lengths)
        previous = torch.full((src.shape[0],), BOS, dtype=torch.int64)
        produced, finished = [], torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(self.max_output_length_):
            logits, state, _ = self.module_.step(previous, state, outputs, projected, mask)
            previous = logits.argmax(-1)
            produced.append(previous)
            finished |= previous == EOS
            if finished.all():
                break
        rows = torch.stack(produced, 1).tolist()
        return [row[: row.index(EOS)] if EOS in row else row for row in rows]

    @torch.no_grad()
    def _beam(self, src: Tensor, lengths: Tensor) -> list[int]:
        """Beam search for one source ``src`` ``(1, S)``: keep the ``beam_size`` best partial outputs by summed
        log-probability; an output ending in ``<eos>`` is ranked by ``log p / length ** length_penalty``; stop
        once ``beam_size`` outputs have ended."""
        outputs, projected, mask, state = self.module_.encode(src, lengths)
        beams: list[tuple[float, list[int], object]] = [(0.0, [], state)]
        finished: list[tuple[float, list[int]]] = []
        for _ in range(self.max_output_length_):
            k = len(beams)
            if isinstance(state, tuple):
                stacked = tuple(torch.cat([b[2][i] for b in beams]) for i in range(2))
            else:
                stacked = torch.cat([b[2] for b in beams])  # (k, H)
            previous = torch.tensor([b[1][-1] if b[1] else BOS for b in beams])
            logits, new_state, _ = self.module_.step(
                previous, stacked, outputs.expand(k, -1, -1), projected.expand(k, -1, -1), mask.expand(k, -1)
            )
            scores = torch.log_softmax(logits, -1) + torch.tensor([b[0] for b in beams])[:, None]  # (k, V)
            values, flat = scores.reshape(-1).topk(min(self.beam_size, scores.numel()))
            survivors = []
            for value, index in zip(values.tolist(), flat.tolist()):
                row, token = divmod(index, scores.shape[1])
                tokens = [*beams[row][1], token]
                if token == EOS:
                    finished.append((value / len(tokens) ** self.length_penalty, tokens[:-1]))
                    continue
                row_state = (
                    tuple(part[row : row + 1] for part in new_state)
                    if isinstance(new_state, tuple)
                    else new_state[row : row + 1]
                )
                survivors.append((value, tokens, row_state))
            beams = survivors
            if len(finished) >= self.beam_size or not beams:
                break
        finished += [(value / len(tokens) ** self.length_penalty, tokens) for value, tokens, _ in beams]
        return max(finished, key=lambda item: item[0])[1]

    def predict(self, X: Sequence[str], beam_size: int | None = None) -> list[str]:
        """Translations of ``X``; ``beam_size`` overrides the estimator's (1 = greedy)."""
        self._check_fitted("predict")
        beam_size = self.beam_size if beam_size is None else beam_size
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"Translator expected beam_size to be a positive integer, got {beam_size!r}")
        sources = self._check_texts(X, "sources")
        rows = [self.source_vocabulary_.encode(s, self.max_length) for s in sources]
        decoded: list[list[int]] = []
        if beam_size == 1:
            for start in range(0, len(rows), 256):
                decoded += self._greedy(*_pad_rows(rows[start : start + 256]))
        else:
            original, self.beam_size = self.beam_size, beam_size
            try:
                decoded = [self._beam(*_pad_rows([row])) for row in rows]
            finally:
                self.beam_size = original
        return [self.target_vocabulary_.decode(ids) for ids in decoded]

    def score(self, X: Sequence[str], y: Sequence[str]) -> float:
        """Exact-match accuracy of the greedy translations."""
        predicted = self.predict(X)
        return float(np.mean([p == t for p, t in zip(predicted, self._check_texts(y, "targets"))]))

    def evaluate(self, X: Sequence[str], y: Sequence[str], beam_size: int | None = None) -> dict[str, float]:
        """``{"exact_match": fraction, "bleu": sacrebleu corpus BLEU, "chrf": chrF}`` of ``predict(X)``
        against ``y``."""
        from grukit.datasets._packages import require

        sacrebleu = require("sacrebleu", "sacrebleu", "BLEU and chrF scoring")
        references = self._check_texts(y, "targets")
        predicted = self.predict(X, beam_size=beam_size)
        return {
            "exact_match": float(np.mean([p == t for p, t in zip(predicted, references)])),
            "bleu": float(sacrebleu.corpus_bleu(predicted, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(predicted, [references]).score),
        }
