"""Tokenizers: characters, words, or BPE (Hugging Face ``tokenizers``, trained locally), with one interface.

Every tokenizer turns text into ``list[int]`` and back and has::

    train(texts, ...)        classmethod; streams ``texts`` (never the whole corpus in memory at once)
    encode(text) / encode_batch(texts) / decode(ids) / stream_decoder()
    vocab_size, kind ("char" | "word" | "bpe"), pad_id / unk_id / bos_id / eos_id (``None`` when absent)
    to_json() -> str, from_json(str)    the whole tokenizer as one JSON text (no pickle)
    files() -> {name: bytes}, save(folder), from_bytes(bytes)   the same JSON as the file of a model folder

Reserved ids ("specials") come first, ``0 … k−1``, in the order given; the vocabulary follows. ``encode``
maps text never seen in training to ``unk_id``; ``decode`` drops ``pad`` / ``bos`` / ``eos`` and writes the
unknown symbol. Files (one per kind, so :func:`load_tokenizer` finds them):

- :class:`CharTokenizer` ``char_tokenizer.json`` and :class:`WordTokenizer` ``word_tokenizer.json``: the
  specials and the symbol list, readable;
- :class:`BPETokenizer` ``tokenizer.json``: Hugging Face's own format.

The language models' defaults: a character tokenizer reserves only id 0 for unknown characters (decoded
as U+FFFD); byte-level BPE starts from the 256 bytes, so every string — English, Chinese, emoji — encodes
and decodes back exactly.
"""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

CHAR_FILE = "char_tokenizer.json"
WORD_FILE = "word_tokenizer.json"
BPE_FILE = "tokenizer.json"
UNKNOWN = "\ufffd"
ROLES = ("pad", "unk", "bos", "eos")
BPE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
ORDERS = ("sorted", "frequency")
SPLITS = ("whitespace", "words")
# One token per CJK ideograph (Chinese has no spaces between words); runs of other letters or digits, and
# runs of punctuation, are tokens too.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD_PATTERN = re.compile(f"[{CJK}]|[^\\W{CJK}]+|[^\\w\\s]+")


class TextTokenizer(Protocol):
    """What grukit's models and estimators need from a tokenizer (see the module docstring)."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int | None: ...

    @property
    def unk_id(self) -> int | None: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def stream_decoder(self) -> Callable[[int], str]: ...

    def to_json(self) -> str: ...

    def files(self) -> dict[str, bytes]: ...

    def save(self, folder: str | Path) -> None: ...


def _check_text(owner: str, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{owner}.encode expected a str, got {type(text).__name__}")
    return text


def _check_texts(owner: str, texts: object) -> list[str]:
    """``texts`` as a list of str for ``encode_batch``; a single string is refused (it is not a list of texts)."""
    if isinstance(texts, str):
        raise TypeError(f"{owner}.encode_batch expected a list of texts, got a single string; use encode(text)")
    texts = list(texts)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise TypeError(
            f"{owner}.encode_batch expected each text to be a str, text {bad} is {type(texts[bad]).__name__}"
        )
    return texts


def _checked_texts(owner: str, texts: Iterable[object]) -> Iterator[str]:
    """``texts`` one by one (streamed), refusing any that is not a str."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{owner} expected each text to be a str, text {index} is {type(text).__name__}")
        yield text


def _check_ids(owner: str, ids: Iterable[object], vocab_size: int) -> list[int]:
    """``ids`` as ints in ``[0, vocab_size)``; a float or out-of-range id is refused (a negative one would index
    from the end, a fractional one would be cut)."""
    checked = []
    for token in ids:
        try:
            value = operator.index(token)
        except TypeError as error:
            raise TypeError(f"{owner}.decode expected integer ids, got {token!r} ({type(token).__name__})") from error
        if not 0 <= value < vocab_size:
            raise ValueError(f"{owner}.decode got id {value}, outside [0, {vocab_size})")
        checked.append(value)
    return checked


def _json_object(owner: str, text: str) -> dict:
    """The JSON object in ``text`` (a tokenizer file), with an error naming ``owner`` otherwise."""
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}.from_json expected JSON text, got {str(text)[:40]!r}: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{owner}.from_json expected a JSON object, got {type(payload).__name__}")
    return payload


def _check_specials(owner: str, specials: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(specials, Mapping):
        raise ValueError(f"{owner} expected specials as {{role: symbol}}, got {specials!r:.80}")
    specials = dict(specials)
    unknown = [role for role in specials if role not in ROLES]
    if unknown:
        raise ValueError(f"{owner} expected special roles among {ROLES}, got {unknown}")
    symbols = list(specials.values())
    if any(not isinstance(s, str) or not s for s in symbols) or len(set(symbols)) != len(symbols):
        raise ValueError(f"{owner} expected distinct non-empty strings as special symbols, got {symbols!r}")
    return specials


def _check_count(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner} expected {name} to be an integer of at least {minimum}, got {value!r}")


class _SpecialIds:
    """``pad_id`` / ``unk_id`` / ``bos_id`` / ``eos_id`` from a tokenizer's ``special_id(role)``."""

    def special_id(self, role: str) -> int | None:
        raise NotImplementedError

    @property
    def pad_id(self) -> int | None:
        return self.special_id("pad")

    @property
    def unk_id(self) -> int | None:
        return self.special_id("unk")

    @property
    def bos_id(self) -> int | None:
        return self.special_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_id("eos")


class _VocabularyTokenizer(_SpecialIds):
    """Shared by :class:`CharTokenizer` and :class:`WordTokenizer`: a list of symbols, each one id.

    ``symbols = [*specials.values(), *vocabulary]``; a text is split into tokens (characters or words),
    each looked up, unseen ones becoming ``unk_id``.
    """

    kind: ClassVar[str]
    file: ClassVar[str]
    default_specials: ClassVar[dict[str, str]]

    def __init__(self, vocabulary: Iterable[str], specials: Mapping[str, str] | None = None) -> None:
        owner = type(self).__name__
        specials = _check_specials(owner, self.default_specials if specials is None else specials)
        vocabulary = list(vocabulary)
        bad = [token for token in vocabulary if not self._is_token(token) or token in specials.values()]
        if bad:
            raise ValueError(f"{owner} expected {self._token_description()}, got {bad[:5]!r}")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError(f"{owner} expected distinct tokens, got duplicates")
        self.specials = specials
        self.symbols = [*specials.values(), *vocabulary]
        self.index = {token: i for i, token in enumerate(vocabulary, start=len(specials))}
        self._skipped = {self.special_id(role) for role in ("pad", "bos", "eos")} - {None}

    # What a subclass says about its tokens ------------------------------------------------------------------
    def _is_token(self, token: object) -> bool:
        raise NotImplementedError

    def _token_description(self) -> str:
        raise NotImplementedError

    def split(self, text: str) -> list[str]:
        """The tokens of ``text``."""
        raise NotImplementedError

    def _joiner(self) -> str:
        raise NotImplementedError

    def _options(self) -> dict:
        return {}

    # Training -----------------------------------------------------------------------------------------------
    @classmethod
    def _from_counts(
        cls,
        counts: Counter,
        specials: Mapping[str, str] | None,
        min_count: int,
        max_size: int | None,
        order: str,
        **options,
    ):
        owner = cls.__name__
        _check_count(owner, "min_count", min_count, 1)
        if order not in ORDERS:
            raise ValueError(f"{owner} expected order in {ORDERS}, got {order!r}")
        specials = _check_specials(owner, cls.default_specials if specials is None else specials)
        if max_size is not None:
            _check_count(owner, "max_size", max_size, len(specials))
        for symbol in specials.values():
            counts.pop(symbol, None)
        if order == "sorted":
            kept = sorted(token for token, n in counts.items() if n >= min_count)
        else:  # most frequent first, ties in the order first seen (Counter.most_common is stable)
            kept = [token for token, n in counts.most_common() if n >= min_count]
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(kept, specials, **options)

    # Encoding -----------------------------------------------------------------------------------------------
    def special_id(self, role: str) -> int | None:
        """The id reserved for ``role`` (one of ``ROLES``), ``None`` when this tokenizer has none."""
        return list(self.specials).index(role) if role in self.specials else None

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode_tokens(self, tokens: Iterable[str]) -> list[int]:
        """Ids of already split ``tokens``; unseen ones become ``unk_id``."""
        unknown, tokens = self.unk_id, list(tokens)
        ids = [self.index.get(token, unknown) for token in tokens]
        if unknown is None and None in ids:
            missing = next(t for t, i in zip(tokens, ids) if i is None)
            raise ValueError(f"{type(self).__name__} has no unknown id and never saw the token {missing!r}")
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_tokens(self.split(_check_text(type(self).__name__, text)))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in _check_texts(type(self).__name__, texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = _check_ids(type(self).__name__, ids, self.vocab_size)
        return self._joiner().join(self.symbols[i] for i in ids if i not in self._skipped)

    def stream_decoder(self) -> Callable[[int], str]:
        """A function from one id to the text it adds."""
        return lambda token: self.decode([token])

    # Saving -------------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """``{"type": kind, "specials": {role: symbol}, "<tokens>": [...], **options}``, readable."""
        payload = {"type": self.kind, "specials": self.specials, self._list_key(): self.symbols[len(self.specials) :]}
        return json.dumps({**payload, **self._options()}, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def _list_key(cls) -> str:
        return f"{cls.kind}s"

    @classmethod
    def _option_types(cls) -> dict[str, type]:
        """The options ``to_json`` writes besides the specials and the tokens, with their JSON types."""
        return {}

    @classmethod
    def from_json(cls, text: str):
        payload = _json_object(cls.__name__, text)
        if payload.get("type") != cls.kind:
            raise ValueError(
                f"{cls.__name__}.from_json expected a tokenizer of type {cls.kind!r}, got {payload.get('type')!r}"
            )
        key, types = cls._list_key(), cls._option_types()
        unknown = sorted(set(payload) - {"type", "specials", key, *types})
        if unknown:
            raise ValueError(
                f"{cls.__name__}.from_json got unknown entries {unknown}; expected {['specials', key, *types]}"
            )
        if not isinstance(payload.get(key), list):
            raise ValueError(
                f"{cls.__name__}.from_json expected {key!r} to be a list of tokens, got {payload.get(key)!r:.80}"
            )
        options = {name: payload[name] for name in types if name in payload}
        wrong = next((name for name, value in options.items() if not isinstance(value, types[name])), None)
        if wrong is not None:
            raise ValueError(
                f"{cls.__name__}.from_json expected {wrong!r} to be a {types[wrong].__name__}, "
                f"got {options[wrong]!r:.80}"
            )
        return cls(payload[key], payload.get("specials", cls.default_specials), **options)

    def files(self) -> dict[str, bytes]:
        return {self.file: self.to_json().encode("utf-8")}

    def save(self, folder: str | Path) -> None:
        for name, data in self.files().items():
            (Path(folder) / name).write_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls.from_json(data.decode("utf-8"))


class CharTokenizer(_VocabularyTokenizer):
    """One id per character.

    Args:
        chars: the vocabulary, ids ``len(specials) …`` in this order; each entry a single character.
        specials: ``{role: symbol}`` for the reserved ids ``0 …`` in this order, roles among ``ROLES``. The
            default, ``{"unk": "\\ufffd"}``, is the language models' layout: id 0 for unseen characters,
            decoded as U+FFFD.

    ``to_json()`` gives ``{"type": "char", "specials": {...}, "chars": [...]}``; ``from_json`` reads it back
    (a file without ``"specials"`` has the default layout).
    """

    kind = "char"
    file = CHAR_FILE
    default_specials: ClassVar[dict[str, str]] = {"unk": UNKNOWN}

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        specials: Mapping[str, str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        order: str = "sorted",
    ) -> CharTokenizer:
        """Vocabulary = the characters of ``texts`` seen at least ``min_count`` times, ``"sorted"`` by code
        point or by ``"frequency"`` (most frequent first, ties in the order first seen), the first
        ``max_size − len(specials)`` of them when ``max_size`` caps ``vocab_size``."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(_check_text(cls.__name__, text))
        if not counts:
            raise ValueError("CharTokenizer.train got no text: the corpus is empty")
        return cls._from_counts(counts, specials, min_count, max_size, order)

    @property
    def chars(self) -> list[str]:
        """The symbol of every id, specials first."""
        return self.symbols

    def extended(self, chars: Iterable[str]) -> CharTokenizer:
        """A copy whose vocabulary also holds ``chars``: the ones it lacks get the next ids ``vocab_size …``, in
        the order given; every existing id is unchanged, so a model's old rows still mean the same symbols."""
        added: list[str] = []
        for char in chars:
            if not self._is_token(char):
                raise ValueError(f"CharTokenizer.extended expected single characters, got {char!r:.40}")
            if char not in self.index and char not in self.specials.values() and char not in added:
                added.append(char)
        return CharTokenizer([*self.symbols[len(self.specials) :], *added], self.specials)

    def _is_token(self, token: object) -> bool:
        return isinstance(token, str) and len(token) == 1

    def _token_description(self) -> str:
        return "single characters, distinct from the special symbols"

    def split(self, text: str) -> list[str]:
        return list(text)

    def _joiner(self) -> str:
        return ""


class WordTokenizer(_VocabularyTokenizer):
    """One id per word.

    Args:
        words: the vocabulary, ids ``len(specials) …`` in this order.
        specials: ``{role: symbol}`` for the reserved ids ``0 …`` in this order (default ``{"unk": "<unk>"}``).
        split: ``"whitespace"`` (``str.split``) or ``"words"``: one token per CJK ideograph (Chinese is
            written without spaces), per run of other letters and digits, and per run of punctuation.
        lowercase: lowercase texts before splitting.

    ``decode`` joins words with single spaces. ``to_json()`` gives ``{"type": "word", "specials": {...},
    "words": [...], "split": ..., "lowercase": ...}``; ``from_json`` reads it back.
    """

    kind = "word"
    file = WORD_FILE
    default_specials: ClassVar[dict[str, str]] = {"unk": "<unk>"}

    def __init__(
        self,
        words: Iterable[str],
        specials: Mapping[str, str] | None = None,
        split: str = "whitespace",
        lowercase: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"WordTokenizer expected split in {SPLITS}, got {split!r}")
        self.split_mode, self.lowercase = split, bool(lowercase)
        super().__init__(words, specials)

    @classmethod
    def train(
        cls,
        texts: Iterable[str | Sequence[str]],
        specials: Mapping[str, str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        order: str = "sorted",
        split: str = "whitespace",
        lowercase: bool = False,
    ) -> WordTokenizer:
        """Vocabulary = the words of ``texts`` seen at least ``min_count`` times, ordered and capped as in
        :meth:`CharTokenizer.train`. A text may also be a list of words already split (a tagged sentence)."""
        splitter = cls([], specials, split, lowercase)
        counts: Counter = Counter()
        for index, text in enumerate(texts):
            if isinstance(text, str):
                counts.update(splitter.split(text))
                continue
            words = list(text) if isinstance(text, Iterable) else None
            if words is None or not all(isinstance(word, str) for word in words):
                raise TypeError(
                    f"WordTokenizer.train expected each text to be a str or a list of words (str), text {index} is "
                    f"{text!r:.60}"
                )
            counts.update(words)
        return cls._from_counts(counts, specials, min_count, max_size, order, split=split, lowercase=lowercase)

    def _is_token(self, token: object) -> bool:
        return isinstance(token, str) and bool(token)

    def _token_description(self) -> str:
        return "non-empty strings, distinct from the special symbols"

    def split(self, text: str) -> list[str]:
        text = text.lower() if self.lowercase else text
        return text.split() if self.split_mode == "whitespace" else WORD_PATTERN.findall(text)

    def _joiner(self) -> str:
        return " "

    def _options(self) -> dict:
        return {"split": self.split_mode, "lowercase": self.lowercase}

    @classmethod
    def _option_types(cls) -> dict[str, type]:
        return {"split": str, "lowercase": bool}


class BPETokenizer(_SpecialIds):
    """Byte-pair encoding from Hugging Face ``tokenizers``, trained locally.

    Args:
        tokenizer: a trained ``tokenizers.Tokenizer``. Its special tokens are found by their symbols,
            ``BPE_SPECIALS`` (``[PAD]``, ``[UNK]``, ``[BOS]``, ``[EOS]``).

    ``to_json()`` is Hugging Face's ``tokenizer.json`` text (normaliser, pre-tokeniser, merges and specials);
    ``from_json`` reads it back.
    """

    kind = "bpe"
    file = BPE_FILE

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 4000,
        min_frequency: int = 2,
        specials: Sequence[str] = (),
        byte_level: bool = True,
        lowercase: bool = False,
    ) -> BPETokenizer:
        """Learn merges on ``texts`` until ``vocab_size`` symbols (at most).

        ``byte_level`` (the language models'): start from the 256 bytes, so nothing is ever unknown, and
        decode back exactly. Otherwise: NFKC-normalise, split on whitespace and punctuation
        (``\\w+|[^\\w\\s]+``), start from the characters seen, and map unseen characters to ``[UNK]`` (give
        ``"unk"`` among ``specials``). ``specials`` are roles among ``ROLES``; they take ids ``0 …`` in order.
        ``lowercase`` lowercases texts first.
        """
        if any(role not in ROLES for role in specials) or len(set(specials)) != len(specials):
            raise ValueError(f"BPETokenizer expected distinct special roles among {ROLES}, got {list(specials)}")
        minimum = 257 if byte_level else len(specials) + 1
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
            need = "256 bytes + merges" if byte_level else "the specials + one symbol"
            raise ValueError(f"BPETokenizer expected vocab_size of at least {minimum} ({need}), got {vocab_size!r}")
        symbols = [BPE_SPECIALS[role] for role in specials]
        steps = [] if byte_level else [normalizers.NFKC()]
        steps += [normalizers.Lowercase()] if lowercase else []
        if byte_level:
            tokenizer = HFTokenizer(models.BPE())
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            alphabet = pre_tokenizers.ByteLevel.alphabet()
        else:
            tokenizer = HFTokenizer(models.BPE(unk_token=BPE_SPECIALS["unk"] if "unk" in specials else None))
            tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
            alphabet = []
        if steps:
            tokenizer.normalizer = steps[0] if len(steps) == 1 else normalizers.Sequence(steps)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=symbols,
            initial_alphabet=alphabet,
            show_progress=False,
        )
        tokenizer.train_from_iterator(_checked_texts("BPETokenizer.train", texts), trainer=trainer)
        return cls(tokenizer)

    def special_id(self, role: str) -> int | None:
        """The id of ``role``'s symbol (``BPE_SPECIALS``), ``None`` when the tokenizer has none."""
        return self.tokenizer.token_to_id(BPE_SPECIALS[role])

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(_check_text("BPETokenizer", text)).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(_check_texts("BPETokenizer", texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(_check_ids("BPETokenizer", ids, self.vocab_size))

    def stream_decoder(self) -> Callable[[int], str]:
        """A function from one id to the text it completes: bytes of a character split across tokens
        are held back until the character is whole, so memory stays constant."""
        stream = decoders.DecodeStream(skip_special_tokens=False)
        return lambda token: stream.step(self.tokenizer, _check_ids("BPETokenizer", [token], self.vocab_size)[0]) or ""

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        _json_object(cls.__name__, text)
        try:
            return cls(HFTokenizer.from_str(text))
        except Exception as error:  # the tokenizers library raises a bare Exception for a malformed file
            raise ValueError(f"BPETokenizer.from_json could not read the Hugging Face tokenizer: {error}") from error

    def files(self) -> dict[str, bytes]:
        return {BPE_FILE: self.to_json().encode("utf-8")}

    def save(self, folder: str | Path) -> None:
        for name, data in self.files().items():
            (Path(folder) / name).write_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> BPETokenizer:
        return cls.from_json(data.decode("utf-8"))


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer
KINDS = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 4000) -> CharTokenizer | BPETokenizer:
    """Train a language model's ``"char"`` or byte-level ``"bpe"`` tokenizer on ``texts``."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size)
    raise ValueError(f"tokenizer type must be 'char' or 'bpe', got {kind!r}")


def tokenizer_from_json(text: str) -> Tokenizer:
    """The tokenizer whose :meth:`to_json` gave ``text`` (any kind)."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"tokenizer_from_json expected JSON text, got {text[:40]!r}: {error}") from error
    if isinstance(payload, dict) and payload.get("type") in ("char", "word"):
        return KINDS[payload["type"]].from_json(text)
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        return BPETokenizer.from_json(text)
    got = payload.get("type") if isinstance(payload, dict) else type(payload).__name__
    raise ValueError(f"tokenizer_from_json expected a char, word or Hugging Face BPE tokenizer, got {got!r}")


def tokenizer_from_files(files: dict[str, bytes]) -> Tokenizer | None:
    """The tokenizer stored among a folder's files (name → bytes), or ``None`` when there is none."""
    for name, cls in ((CHAR_FILE, CharTokenizer), (WORD_FILE, WordTokenizer), (BPE_FILE, BPETokenizer)):
        if name in files:
            return cls.from_bytes(files[name])
    return None


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load the tokenizer saved in ``folder`` (``char_tokenizer.json``, ``word_tokenizer.json`` or
    ``tokenizer.json``)."""
    folder = Path(folder)
    names = (CHAR_FILE, WORD_FILE, BPE_FILE)
    files = {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    tokenizer = tokenizer_from_files(files)
    if tokenizer is None:
        raise FileNotFoundError(f"{str(folder)!r} holds no tokenizer: expected {' or '.join(names)}")
    return tokenizer
