"""A user's own data files, read with errors that name the file, the line and the column.

Every reader decodes UTF-8 (a leading byte-order mark is accepted) and refuses, with one sentence naming the
file, what it cannot read faithfully rather than guessing:

- an empty (or whitespace-only) file, a binary one, UTF-16 or UTF-32, and any other encoding such as Latin-1
  or Windows-1252 (the line of the first byte that is not UTF-8 is named);
- in a CSV: a blank line before the last row (in a one-column file it might be a missing value or a stray
  line; skipping it would shift every later row by one), a row wider than the header, a missing column, a
  cell that should be a number and is not.

Missing numbers are written as an empty cell or ``NaN`` / ``NA``.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MISSING = frozenset({"", "nan", "na"})
ISO_DATE = re.compile(r"\d{4}-\d{2}(-\d{2}([ T]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?")
_CHUNK_BYTES = 1 << 20


def _decoded_pieces(path: str | os.PathLike) -> Iterator[str]:
    """The text of ``path`` in pieces of about a megabyte, checked as described in the module docstring."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a UTF-8 text file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line, seen_text, first = 1, False, True
    with open(path, "rb") as handle:
        while True:
            data = handle.read(_CHUNK_BYTES)
            if first and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise ValueError(f"{path} is UTF-16 text; save it as UTF-8")
            first = False
            if b"\x00" in data:
                zero_line = line + data[: data.index(b"\x00")].count(b"\n")
                raise ValueError(
                    f"{path} holds a NUL byte on line {zero_line}: it is binary, UTF-16 or UTF-32, not UTF-8 text"
                )
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as error:
                bad_line = line + data[: max(0, error.start)].count(b"\n")
                byte = data[error.start] if 0 <= error.start < len(data) else None
                shown = f"byte 0x{byte:02x}" if byte is not None else "an incomplete character"
                raise ValueError(
                    f"{path} is not UTF-8: {shown} on line {bad_line}; if it is Latin-1 or Windows-1252 text, "
                    "save it as UTF-8"
                ) from None
            line += data.count(b"\n")
            seen_text = seen_text or bool(text.strip())
            if text:
                yield text
            if not data:
                break
    if not seen_text:
        raise ValueError(f"{path} is empty; expected UTF-8 text")


def check_text_file(path: str | os.PathLike) -> None:
    """Read ``path`` through once, in bounded memory, and raise a ValueError naming it (and the line) unless it
    is non-empty UTF-8 text."""
    for _ in _decoded_pieces(path):
        pass


def read_text(path: str | os.PathLike) -> str:
    """The whole text of a non-empty UTF-8 file (a byte-order mark dropped); a ValueError names the file
    otherwise."""
    return "".join(_decoded_pieces(path))


@dataclass
class CsvTable:
    """A CSV file's header and rows as strings, with the line of the file each row starts on."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        """Every row's cell in column ``name`` (a row shorter than the header has ``""`` there)."""
        index = self.header.index(name)
        return [row[index] if index < len(row) else "" for row in self.rows]

    def numbers(self, name: str, missing: bool = True) -> np.ndarray:
        """Column ``name`` as float64 ``(rows,)``; an empty, ``NaN`` or ``NA`` cell is NaN when ``missing``.

        Raises:
            ValueError: naming the file, line and column of the first cell that is not a finite number.
        """
        return np.array(
            [self.number(value, line, name, missing) for value, line in zip(self.column(name), self.lines)]
        )

    def number(self, value: str, line: int, name: str, missing: bool = True) -> float:
        """One cell as a float, with the error the module docstring describes."""
        text = value.strip()
        if text.lower() in MISSING:
            if missing:
                return float("nan")
            raise ValueError(f"{self.path} line {line}, column {name!r}: the cell is empty; expected a number")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{self.path} line {line}, column {name!r}: {value!r} is not a number") from None
        if not np.isfinite(number):
            raise ValueError(f"{self.path} line {line}, column {name!r}: {value!r} is not a finite number")
        return number


def read_csv(path: str | os.PathLike, columns: list[str], short_rows: bool = False) -> CsvTable:
    """A CSV file with a header row holding ``columns``; see the module docstring for what is refused.

    Args:
        short_rows: accept rows with fewer cells than the header (their missing cells read as ``""``), as in a
            file of series of different lengths.
    """
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
        rows, lines, blank = [], [], None
        previous_line = reader.line_num
        for row in reader:
            start, previous_line = previous_line + 1, reader.line_num
            if not row or not any(cell.strip() for cell in row):
                blank = blank or start
                continue
            if blank is not None:
                raise ValueError(
                    f"{path} line {blank} is blank: write NaN there for a missing value, or delete the line "
                    "(skipping it would shift every later row by one)"
                )
            if len(row) > len(header) or (len(row) < len(header) and not short_rows):
                spans = (f" (a quoted cell runs from line {start} to line {reader.line_num}: is a closing quote "
                         "missing?)" if reader.line_num > start else "")
                raise ValueError(f"{path} line {start} has {len(row)} cells; its header has {len(header)}{spans}")
            rows.append(row)
            lines.append(start)
    except csv.Error as error:
        raise ValueError(f"{path} line {reader.line_num} is not valid CSV: {error}") from None
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        named = ", ".join(repr(name) for name in repeated)
        raise ValueError(f"{path} has more than one column named {named}; give each column its own name")
    missing = [name for name in columns if name not in header]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its columns are {header}")
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return CsvTable(str(path), header, rows, lines)


def read_series_column(path: str | os.PathLike, column: str) -> np.ndarray:
    """One column of a CSV as a float64 series ``(T,)``, oldest first; missing values are NaN."""
    values = read_csv(path, [column]).numbers(column)
    if np.isnan(values).all():
        raise ValueError(f"{path} column {column!r} holds no numbers")
    return values


def is_iso_date(text: str) -> bool:
    """Whether ``text`` is an ISO date, ``2024-01``, ``2024-01-31`` or ``2024-01-31 12:00[:00]`` (``T`` too)."""
    return ISO_DATE.fullmatch(text.strip()) is not None


def read_lines(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped, one item (a text, a sentence) per line."""
    lines = [line.strip() for line in read_text(path).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path} holds only blank lines; expected one item per line")
    return lines


def read_series_rows(
    path: str | os.PathLike, label_column: str | None
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One labelled series per row: ``(series, labels)`` with each series ``(T_i, 1)`` and labels ``(n,)`` str
    (with ``label_column=None``: every column holds values, and ``labels`` is ``None``).

    A series shorter than the widest one ends early: the cells after its last value are empty (or ``NaN``,
    or the row simply stops). A missing value before a series' last one is refused, naming its line and
    column: dropping it would shift the rest of that series in time.
    """
    table = read_csv(path, [label_column] if label_column else [], short_rows=True)
    label_index = table.header.index(label_column) if label_column else -1
    value_columns = [name for i, name in enumerate(table.header) if i != label_index]
    series, labels = [], []
    for row, line in zip(table.rows, table.lines):
        cells = [cell for i, cell in enumerate(row) if i != label_index]
        values = np.array([table.number(cell, line, name) for cell, name in zip(cells, value_columns)])
        present = np.flatnonzero(~np.isnan(values))
        if len(present) == 0:
            raise ValueError(f"{path} line {line} holds no values")
        gap = np.flatnonzero(np.isnan(values[: present[-1]]))
        if len(gap):
            raise ValueError(
                f"{path} line {line}, column {value_columns[gap[0]]!r}: a value is missing inside the series; only "
                "the cells after a series ends may be empty"
            )
        series.append(values[: present[-1] + 1, None])
        if label_column:
            label = row[label_index].strip() if label_index < len(row) else ""
            if not label:
                raise ValueError(f"{path} line {line}, column {label_column!r}: the label is empty")
            labels.append(label)
    return series, np.array(labels) if label_column else None


def read_labelled_texts(
    path: str | os.PathLike, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` from a CSV with a text and a label column; labels ``(n,)`` str. An empty text or
    label is refused, naming its line."""
    if text_column == label_column:
        raise ValueError(f"{path}: the texts and the labels are both column {text_column!r}; name two columns")
    table = read_csv(path, [text_column, label_column])
    texts, labels = table.column(text_column), table.column(label_column)
    for text, label, line in zip(texts, labels, table.lines):
        for name, value in ((text_column, text), (label_column, label)):
            if not value.strip():
                raise ValueError(f"{path} line {line}, column {name!r}: the cell is empty")
    return texts, np.array([label.strip() for label in labels])


def load_labelled(data: str) -> tuple[list[str], np.ndarray, list[str]]:
    """``(texts, label ids (n,) int64, label names)`` for ``"rotten_tomatoes"`` or a CSV with columns
    ``text,label`` (names sorted; the id is the index of the name)."""
    if data == "rotten_tomatoes":
        from grukit.datasets.text import load_rotten_tomatoes

        texts, labels = load_rotten_tomatoes()
        return texts, labels, ["rotten", "fresh"]
    texts, labels = read_labelled_texts(data)
    names = sorted(set(labels.tolist()))
    if len(names) < 2:
        raise ValueError(f"{data} has one label, {names[0]!r}; a classifier needs at least two")
    return texts, np.searchsorted(np.array(names), labels).astype(np.int64), names


def split_labelled(
    texts: list[str], labels: np.ndarray, train_size: int | None, seed: int
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """80/20 stratified split (``random_state=0``); then, with ``train_size``, a stratified sample of that many
    training labels drawn with ``seed``. Returns ``(train texts, train labels, test texts, test labels)``."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if len(labels) < 5 or counts[counts > 0].min() < 2:
        raise ValueError(
            f"need at least 5 labelled texts and 2 of each label for an 80/20 stratified split, got {len(labels)} "
            f"texts with label counts {counts.tolist()}"
        )
    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=0)
    if train_size is not None and train_size < len(train_x):
        train_x, _, train_y, _ = train_test_split(
            train_x, train_y, train_size=train_size, stratify=train_y, random_state=seed
        )
    return train_x, np.asarray(train_y), test_x, np.asarray(test_y)


def read_tagged_sentences(path: str | os.PathLike) -> list[list[tuple[str, str]]]:
    """One sentence per line, tokens ``word/TAG`` separated by spaces (blank lines are skipped)."""
    sentences = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if tokens:
            bad = next((token for token in tokens if "/" not in token.strip("/")), None)
            if bad is not None:
                raise ValueError(f"{path} line {number}: token {bad!r} is not word/TAG")
            sentences.append([tuple(token.rsplit("/", 1)) for token in tokens])
    return sentences


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``source<TAB>target`` per line (blank lines are skipped)."""
    pairs = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path} line {number}: expected source<TAB>target, got {len(parts)} field(s)")
            source, target = parts[0].strip(), parts[1].strip()
            if not source or not target:
                raise ValueError(f"{path} line {number}: the {'source' if not source else 'target'} is empty")
            pairs.append((source, target))
    return pairs
