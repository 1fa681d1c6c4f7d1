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

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from grukit.nn import GRUCell, LSTMCell
from grukit.tasks._base import GRUEstimator, check_texts, cross_entropy, fitted_int, recurrent_layer, run_recurrent
from grukit.text import (
    BucketBatches,
    CharTokenizer,
    WordTokenizer,
    lengths_to_mask,
    pad_sequences,
    tokenizer_from_json,
)
from grukit.train.metrics import SparseCategoricalAccuracy

TOKENS = ("char", "word")
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}  # ids 0-3


def train_vocabulary(kind: str, texts: Sequence[str]) -> CharTokenizer | WordTokenizer:
    """The characters, or whitespace-separated words, of ``texts``, sorted; ids 0-3 are ``SPECIALS``."""
    if kind not in TOKENS:
        raise ValueError(f"expected tokens in {TOKENS}, got {kind!r}")
    return (CharTokenizer if kind == "char" else WordTokenizer).train(texts, SPECIALS)


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
        mask = lengths_to_mask(lengths, src.shape[1])  # (B, S)
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
    """``(ids (B, T), lengths (B,))``; an empty row becomes ``[<unk>]`` (a source needs one step)."""
    return pad_sequences([row or [UNK] for row in rows], torch.int64)


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
        return check_texts(texts, "Translator", what)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, X: Sequence[str], y: Sequence[str] | None = None) -> Translator:
        sources = self._check_texts(X, "sources")
        if y is None:
            raise ValueError(
                "Translator requires y to be passed, but the target y is None: call fit(X, y) with one target "
                "text per source text"
            )
        targets = self._check_texts(y, "targets")
        if len(sources) != len(targets):
            raise ValueError(f"Translator got {len(sources)} sources but {len(targets)} targets")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"Translator expected cell in ('gru', 'lstm'), got {self.cell!r}")
        self._prepare_fit("embedding_size", "hidden_size", "max_length")
        for what, texts in (("sources", sources), ("targets", targets)):
            if not any(texts):
                raise ValueError(f"Translator got only empty {what}: there is nothing to learn a vocabulary from")
        self.source_vocabulary_ = train_vocabulary(self.tokens, sources)
        self.target_vocabulary_ = train_vocabulary(self.tokens, targets)
        source_rows = [self.source_vocabulary_.encode(s)[: self.max_length] for s in sources]
        target_rows = [self.target_vocabulary_.encode(t)[: self.max_length] for t in targets]
        self.max_output_length_ = 2 * max(len(r) for r in target_rows) + 1

        def make_batch(indices: np.ndarray) -> tuple:
            src, lengths = _pad_rows([source_rows[i] for i in indices])
            full, _ = _pad_rows([[BOS, *target_rows[i], EOS] for i in indices])
            tgt_in, tgt_out = full[:, :-1], full[:, 1:]
            return (src, lengths, tgt_in), tgt_out, tgt_out != PAD

        self.module_ = self._network()
        batches = BucketBatches(
            len(sources),
            self.batch_size,
            make_batch,
            lengths=np.array([len(r) for r in source_rows]),
            shuffle=True,
            seed=self.random_state,
        )
        self._train(self.module_, batches, cross_entropy, [SparseCategoricalAccuracy()])
        return self

    def _network(self) -> AttentionSeq2Seq:
        return AttentionSeq2Seq(
            self.source_vocabulary_.vocab_size,
            self.target_vocabulary_.vocab_size,
            self.embedding_size,
            self.hidden_size,
            self.dropout,
            self.cell,
        )

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        files = {
            "source_tokenizer.json": self.source_vocabulary_.to_json().encode("utf-8"),
            "target_tokenizer.json": self.target_vocabulary_.to_json().encode("utf-8"),
        }
        return {"max_output_length": self.max_output_length_}, files

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.source_vocabulary_ = tokenizer_from_json(files["source_tokenizer.json"].decode("utf-8"))
        self.target_vocabulary_ = tokenizer_from_json(files["target_tokenizer.json"].decode("utf-8"))
        # fit() writes 2 × the longest target (cut to max_length) + 1; more would let a decoder run for ever
        self.max_output_length_ = fitted_int(
            fitted["max_output_length"], "max_output_length", 1, 2 * self.max_length + 1
        )
        self.module_ = self._network()

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
    def _beam(self, src: Tensor, lengths: Tensor, beam_size: int) -> list[int]:
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
            values, flat = scores.reshape(-1).topk(min(beam_size, scores.numel()))
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
            if len(finished) >= beam_size or not beams:
                break
        finished += [(value / len(tokens) ** self.length_penalty, tokens) for value, tokens, _ in beams]
        return max(finished, key=lambda item: item[0])[1]

    def predict(self, X: Sequence[str], beam_size: int | None = None) -> list[str]:
        """Translations of ``X``; ``beam_size`` overrides the estimator's (1 = greedy)."""
        self._check_fitted("predict")
        beam_size = self.beam_size if beam_size is None else beam_size
        if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
            raise ValueError(f"Translator expected beam_size to be a positive integer, got {beam_size!r}")
        penalty = self.length_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not math.isfinite(penalty):
            raise ValueError(f"Translator expected length_penalty to be a finite number, got {penalty!r}")
        sources = self._check_texts(X, "sources")
        rows = [self.source_vocabulary_.encode(s)[: self.max_length] for s in sources]
        decoded: list[list[int]] = []
        if beam_size == 1:
            for start in range(0, len(rows), 256):
                decoded += self._greedy(*_pad_rows(rows[start : start + 256]))
        else:  # the beam size is an argument, not set on self, so predictions from several threads never mix
            decoded = [self._beam(*_pad_rows([row]), int(beam_size)) for row in rows]
        return [self.target_vocabulary_.decode(ids) for ids in decoded]

    def _references(self, X: Sequence[str], y: Sequence[str]) -> list[str]:
        """``y`` checked as one target text per source of ``X``."""
        references = self._check_texts(y, "targets")
        if len(references) != len(X):
            raise ValueError(f"Translator got {len(X)} sources but {len(references)} targets to score them against")
        return references

    def score(self, X: Sequence[str], y: Sequence[str]) -> float:
        """Exact-match accuracy of the greedy translations."""
        sources = self._check_texts(X, "sources")
        references = self._references(sources, y)
        return float(np.mean([p == t for p, t in zip(self.predict(sources), references)]))

    def evaluate(self, X: Sequence[str], y: Sequence[str], beam_size: int | None = None) -> dict[str, float]:
        """``{"exact_match": fraction, "bleu": sacrebleu corpus BLEU, "chrf": chrF}`` of ``predict(X)``
        against ``y``."""
        from grukit.datasets._packages import require

        sacrebleu = require("sacrebleu", "sacrebleu", "BLEU and chrF scoring")
        sources = self._check_texts(X, "sources")
        references = self._references(sources, y)
        predicted = self.predict(sources, beam_size=beam_size)
        return {
            "exact_match": float(np.mean([p == t for p, t in zip(predicted, references)])),
            "bleu": float(sacrebleu.corpus_bleu(predicted, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(predicted, [references]).score),
        }
