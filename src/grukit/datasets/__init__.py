"""Real data that installed packages ship, read offline, and a user's own files. Each loader of shipped data
raises an ImportError naming the pip package to install when the one it reads is missing; each reader of a
user's file raises a ValueError naming the file, line and column it cannot read."""

from grukit.datasets.files import (
    CsvTable,
    check_text_file,
    load_labelled,
    read_csv,
    read_labelled_texts,
    read_pairs,
    read_series_column,
    read_series_rows,
    read_tagged_sentences,
    read_text,
    split_labelled,
)
from grukit.datasets.images import DIRECTIONS, load_digit_rows, make_digit_clips
from grukit.datasets.pos import load_people_daily
from grukit.datasets.series import SEASONAL_PERIODS, SERIES, load_series
from grukit.datasets.text import (
    load_chinese_reviews,
    load_django_translations,
    load_kjv,
    load_rotten_tomatoes,
    number_word_pairs,
)
from grukit.datasets.ucr import bundled_ucr_names, load_ucr

__all__ = [
    "CsvTable",
    "DIRECTIONS",
    "SEASONAL_PERIODS",
    "SERIES",
    "bundled_ucr_names",
    "check_text_file",
    "load_chinese_reviews",
    "load_digit_rows",
    "load_django_translations",
    "load_kjv",
    "load_labelled",
    "load_people_daily",
    "load_rotten_tomatoes",
    "load_series",
    "load_ucr",
    "make_digit_clips",
    "number_word_pairs",
    "read_csv",
    "read_labelled_texts",
    "read_pairs",
    "read_series_column",
    "read_series_rows",
    "read_tagged_sentences",
    "read_text",
    "split_labelled",
]
