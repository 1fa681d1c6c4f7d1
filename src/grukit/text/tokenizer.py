"""Tokenizers: one symbol per character, or byte-level BPE trained locally with Hugging Face ``tokenizers``.

Both turn text into ``list[int]`` and back, train on an iterable of texts (streamed, never the whole corpus
in memory at once), and save into / load from a model folder:

- :class:`CharTokenizer` writes ``char_tokenizer.json`` (the character list, readable);
- :class:`BPETokenizer` writes ``tokenizer.json`` (Hugging Face's own format).

Byte-level BPE starts from the 256 bytes, so every string — English, Chinese, emoji — encodes and decodes
back exactly. The character tokenizer round-trips every character it saw in training; any other character
becomes id 0 (``UNKNOWN``), decoded as U+FFFD.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

CHAR_FILE = "char_tokenizer.json"
BPE_FILE = "tokenizer.json"
UNKNOWN = "\ufffd"


class TextTokenizer(Protocol):
    """What grukit's language models need from a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def stream_decoder(self) -> Callable[[int], str]: ...

    def files(self) -> dict[str, bytes]: ...

    def save(self, folder: str | Path) -> None: ...


def _check_text(owner: str, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{owner}.encode expected a str, got {type(text).__name__}")
    return text


class CharTokenizer:
    """One id per character. Id 0 is reserved for characters unseen in training (decoded as U+FFFD).

    Args:
        chars: the vocabulary, ids ``1 … len(chars)`` in this order; each entry a single character.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1 or c == UNKNOWN]
        if bad:
            raise ValueError(f"CharTokenizer expected single characters other than U+FFFD, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer expected distinct characters, got duplicates")
        self.chars = [UNKNOWN, *chars]
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary = every distinct character in ``texts``, sorted by code point."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        seen.discard(UNKNOWN)
        if not seen:
            raise ValueError("CharTokenizer.train got no text: the corpus is empty")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, 0) for c in _check_text("CharTokenizer", text)]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]  # a negative id would index from the end
        if bad:
            raise ValueError(f"CharTokenizer.decode got id {bad[0]}, outside [0, {self.vocab_size})")
        return "".join(self.chars[i] for i in ids)

    def stream_decoder(self) -> Callable[[int], str]:
        """A function from one id to the text it adds."""
        return lambda token: self.chars[int(token)]

    def files(self) -> dict[str, bytes]:
        payload = {"type": "char", "chars": self.chars[1:]}
        return {CHAR_FILE: (json.dumps(payload, ensure_ascii=False, indent=1) + "\n").encode("utf-8")}

    def save(self, folder: str | Path) -> None:
        for name, data in self.files().items():
            (Path(folder) / name).write_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> CharTokenizer:
        payload = json.loads(data.decode("utf-8"))
        if payload.get("type") != "char":
            raise ValueError(f"{CHAR_FILE} should hold type 'char', got {payload.get('type')!r}")
        return cls(payload["chars"])


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from Hugging Face ``tokenizers``, trained locally.

    Args:
        tokenizer: a trained ``tokenizers.Tokenizer`` with a byte-level decoder.
    """

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges (at most) on ``texts`` on top of the 256 byte symbols."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(
                f"BPETokenizer expected vocab_size of at least 257 (256 bytes + merges), got {vocab_size!r}"
            )
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(_check_text("BPETokenizer", text)).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def stream_decoder(self) -> Callable[[int], str]:
        """A function from one id to the text it completes: bytes of a character split across tokens
        are held back until the character is whole, so memory stays constant."""
        stream = decoders.DecodeStream(skip_special_tokens=False)
        return lambda token: stream.step(self.tokenizer, int(token)) or ""

    def files(self) -> dict[str, bytes]:
        return {BPE_FILE: self.tokenizer.to_str().encode("utf-8")}

    def save(self, folder: str | Path) -> None:
        for name, data in self.files().items():
            (Path(folder) / name).write_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> BPETokenizer:
        return cls(HFTokenizer.from_str(data.decode("utf-8")))


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 4000) -> CharTokenizer | BPETokenizer:
    """Train a ``"char"`` or ``"bpe"`` tokenizer on ``texts``."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size)
    raise ValueError(f"tokenizer type must be 'char' or 'bpe', got {kind!r}")


def tokenizer_from_files(files: dict[str, bytes]) -> CharTokenizer | BPETokenizer | None:
    """The tokenizer stored among a folder's files (name → bytes), or ``None`` when there is none."""
    if CHAR_FILE in files:
        return CharTokenizer.from_bytes(files[CHAR_FILE])
    if BPE_FILE in files:
        return BPETokenizer.from_bytes(files[BPE_FILE])
    return None


def load_tokenizer(folder: str | Path) -> CharTokenizer | BPETokenizer:
    """Load the tokenizer saved in ``folder`` (``char_tokenizer.json`` or ``tokenizer.json``)."""
    folder = Path(folder)
    files = {name: (folder / name).read_bytes() for name in (CHAR_FILE, BPE_FILE) if (folder / name).is_file()}
    tokenizer = tokenizer_from_files(files)
    if tokenizer is None:
        raise FileNotFoundError(f"{str(folder)!r} holds no tokenizer: expected {CHAR_FILE} or {BPE_FILE}")
    return tokenizer
