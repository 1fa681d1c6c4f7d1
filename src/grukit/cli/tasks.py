"""``grukit`` subcommands for the task estimators, on a user's own files or the bundled data:

    grukit forecast --csv prices.csv --column close --horizon 10 [--season 5] [--log]
    grukit forecast --dataset airline --horizon 12 --season 12 --log
    grukit classify-text --csv reviews.csv --text-column text --label-column label
    grukit classify-series --csv series.csv --label-column label   (one series per row, empty after it ends)
    grukit classify-series --dataset GunPoint
    grukit tag --file corpus.txt            (one sentence per line, tokens ``word/TAG`` separated by spaces)
    grukit translate --pairs pairs.tsv      (``source<TAB>target`` per line) [--translate "some text" ...]

Each command trains the estimator, reports its score on a held-out part (or the data's own test split) and
prints or writes the predictions. Files are read by :mod:`grukit.datasets.files`, which names the file, line
and column of anything it cannot read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from grukit import datasets
from grukit.cli.options import nonnegative_int, open_fraction, positive_int
from grukit.tasks import baselines
from grukit.tasks.forecasting import DIFFERENCING, STRATEGIES, Forecaster
from grukit.tasks.sequence import SequenceClassifier
from grukit.tasks.tagging import SequenceTagger
from grukit.tasks.text import TOKENS, TextClassifier
from grukit.tasks.translation import Translator


def holdout(size: int, test_size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled ``(train indices, test indices)`` with ``round(test_size · size)`` (at least one) held out."""
    if size < 2:
        raise ValueError(f"{what} holds {size} example(s); need at least 2 to train on some and test on one")
    order = np.random.default_rng(seed).permutation(size)
    cut = size - min(size - 1, max(1, int(round(test_size * size))))
    return order[:cut], order[cut:]


def interpolate_missing(values: np.ndarray, source: str) -> np.ndarray:
    """Fill NaNs linearly between their neighbours (by the nearest value at either end), saying so on stderr."""
    missing = np.isnan(values)
    if missing.any():
        print(f"note: filled {int(missing.sum())} missing values of {source} by linear interpolation", file=sys.stderr)
        positions = np.arange(len(values))
        values = np.interp(positions, positions[~missing], values[~missing])
    return values


# forecast --------------------------------------------------------------------------------------------------
def forecast(args: argparse.Namespace) -> int:
    if args.csv:
        if not args.column:
            raise ValueError("--csv needs --column NAME (the series to forecast)")
        if args.output and Path(args.output).resolve() == Path(args.csv).resolve():
            raise ValueError(f"--output {args.output} is the --csv file itself; write the forecasts elsewhere")
        series = interpolate_missing(datasets.read_series_column(args.csv, args.column), args.csv)
    else:
        series = datasets.load_series(args.dataset).to_numpy()
    differencing = args.differencing or ("seasonal" if args.season and args.season > 1 else "first")
    model = Forecaster(
        horizon=args.horizon,
        lookback=args.lookback,
        season=args.season,
        differencing=differencing,
        log=args.log,
        strategy=args.strategy,
        epochs=args.epochs,
        random_state=args.seed,
        verbose=args.verbose,
    )
    if args.evaluate:
        if len(series) <= 2 * args.horizon:
            raise ValueError(f"--evaluate holds out the last {args.horizon} of {len(series)} points: too few left")
        train, test = series[: -args.horizon], series[-args.horizon :]
        model.fit(train)
        season = args.season or 1
        naive = baselines.mase(test, baselines.seasonal_naive_forecast(train, args.horizon, season), train, season)
        print(f"held-out last {args.horizon} points: MASE {-model.score(test):.3f} (seasonal naive {naive:.3f})")
    model.fit(series)
    point = model.predict(args.horizon)
    lower, upper = model.predict_interval(args.horizon) if args.strategy == "direct" else (point, point)
    lines = ["step,forecast,lower,upper"] + [
        f"{step},{p:.6g},{lo:.6g},{hi:.6g}" for step, (p, lo, hi) in enumerate(zip(point, lower, upper), start=1)
    ]
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {args.horizon} forecasts to {args.output}")
    else:
        print("\n".join(lines))
    return 0


# classify-text ---------------------------------------------------------------------------------------------
def classify_text(args: argparse.Namespace) -> int:
    texts, labels = datasets.read_labelled_texts(args.csv, args.text_column, args.label_column)
    train, test = holdout(len(texts), args.test_size, args.seed, args.csv)
    model = TextClassifier(tokens=args.tokens, epochs=args.epochs, random_state=args.seed, verbose=args.verbose)
    model.fit([texts[i] for i in train], labels[train])
    accuracy = model.score([texts[i] for i in test], labels[test])
    print(f"held-out accuracy {accuracy:.3f} on {len(test)} texts ({len(train)} for training)")
    for text in args.predict or []:
        print(f"{model.predict([text])[0]}\t{text}")
    return 0


# classify-series -------------------------------------------------------------------------------------------
def classify_series(args: argparse.Namespace) -> int:
    if args.dataset:
        if args.csv or args.test_csv:
            raise ValueError("give --dataset NAME or --csv FILE, not both")
        x_train, y_train = datasets.load_ucr(args.dataset, "train")
        x_test, y_test = datasets.load_ucr(args.dataset, "test")
    elif not args.csv:
        raise ValueError("give --dataset NAME, or --csv FILE with --label-column NAME")
    else:
        series, labels = datasets.read_series_rows(args.csv, args.label_column)
        if args.test_csv:
            x_train, y_train = series, labels
            x_test, y_test = datasets.read_series_rows(args.test_csv, args.label_column)
        else:
            train, test = holdout(len(series), args.test_size, args.seed, args.csv)
            x_train, y_train = [series[i] for i in train], labels[train]
            x_test, y_test = [series[i] for i in test], labels[test]
    model = SequenceClassifier(
        epochs=args.epochs, min_steps=args.min_steps, random_state=args.seed, verbose=args.verbose
    )
    model.fit(x_train, y_train)
    print(f"test accuracy {model.score(x_test, y_test):.3f} on {len(y_test)} series ({len(y_train)} for training)")
    return 0


# tag -------------------------------------------------------------------------------------------------------
def tag(args: argparse.Namespace) -> int:
    sentences = datasets.read_tagged_sentences(args.file) if args.file else datasets.load_people_daily()
    train, test = holdout(len(sentences), args.test_size, args.seed, args.file or "People's Daily")
    words = [[w for w, _ in s] for s in sentences]
    tags = [[t for _, t in s] for s in sentences]
    model = SequenceTagger(epochs=args.epochs, random_state=args.seed, verbose=args.verbose)
    model.fit([words[i] for i in train], [tags[i] for i in train])
    accuracy = model.score([words[i] for i in test], [tags[i] for i in test])
    print(f"held-out token accuracy {accuracy:.3f} on {len(test)} sentences ({len(train)} for training)")
    for text in args.predict or []:
        tokens = text.split()
        if not tokens:
            raise ValueError("--predict got an empty sentence")
        print("  ".join(f"{w}/{t}" for w, t in zip(tokens, model.predict([tokens])[0])))
    return 0


# translate -------------------------------------------------------------------------------------------------
def translate(args: argparse.Namespace) -> int:
    pairs = datasets.read_pairs(args.pairs)
    train, test = holdout(len(pairs), args.test_size, args.seed, args.pairs)
    model = Translator(
        tokens=args.tokens, epochs=args.epochs, beam_size=args.beam_size, random_state=args.seed, verbose=args.verbose
    )
    model.fit([pairs[i][0] for i in train], [pairs[i][1] for i in train])
    scores = model.evaluate([pairs[i][0] for i in test], [pairs[i][1] for i in test])
    print(
        f"held-out ({len(test)} pairs): exact match {scores['exact_match']:.3f}, BLEU {scores['bleu']:.1f}, "
        f"chrF {scores['chrf']:.1f}"
    )
    for text in args.translate or []:
        print(f"{text}\t{model.predict([text])[0]}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``forecast``, ``classify-text``, ``classify-series``, ``tag`` and ``translate`` to ``grukit``."""

    def common(parser: argparse.ArgumentParser, epochs: int) -> None:
        parser.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training data")
        parser.add_argument("--seed", type=nonnegative_int, default=0, help="seeds the split and the training")
        parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="0 silent, 1 per epoch, 2 more")

    def test_size(parser: argparse.ArgumentParser, default: float) -> None:
        parser.add_argument("--test-size", type=open_fraction, default=default, help="share held out for the score")

    parser = subparsers.add_parser("forecast", help="forecast a series from a CSV column or a bundled dataset")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="UTF-8 CSV holding the series, oldest first (missing values: empty or NaN)")
    source.add_argument("--dataset", choices=datasets.SERIES, help="a bundled series")
    parser.add_argument("--column", help="the CSV column to forecast (needed with --csv)")
    parser.add_argument("--horizon", type=positive_int, required=True, help="steps to forecast")
    parser.add_argument("--lookback", type=positive_int, default=36, help="past steps the network reads")
    parser.add_argument("--season", type=positive_int, help="season length, e.g. 12 for monthly data (default: none)")
    parser.add_argument("--differencing", choices=DIFFERENCING, help="default: seasonal with --season, else first")
    parser.add_argument("--log", action="store_true", help="model log values (positive series)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="direct", help="how the horizon is forecast")
    parser.add_argument("--evaluate", action="store_true", help="first score a fit that holds out the last horizon")
    parser.add_argument("--output", help="write step,forecast,lower,upper to this file (default: print them)")
    common(parser, 50)
    parser.set_defaults(handler=forecast)

    parser = subparsers.add_parser("classify-text", help="train a text classifier on a CSV of texts and labels")
    parser.add_argument("--csv", required=True, help="UTF-8 CSV with a text and a label column")
    parser.add_argument("--text-column", default="text", help="the column of texts")
    parser.add_argument("--label-column", default="label", help="the column of labels")
    parser.add_argument("--tokens", choices=TOKENS, default="bpe", help="how texts are split into tokens")
    test_size(parser, 0.2)
    parser.add_argument("--predict", nargs="*", help="texts to classify afterwards (default: none)")
    common(parser, 8)
    parser.set_defaults(handler=classify_text)

    parser = subparsers.add_parser("classify-series", help="train a GRU-FCN on labelled series")
    parser.add_argument("--dataset", help="a UCR / UEA set shipped with sktime, e.g. GunPoint, BasicMotions")
    parser.add_argument(
        "--csv", help="one series per row: a label column and the values (empty after a shorter series ends)"
    )
    parser.add_argument("--test-csv", help="a separate test file in the same layout (default: hold out --test-size)")
    parser.add_argument("--label-column", default="label", help="the column of labels")
    test_size(parser, 0.2)
    parser.add_argument("--min-steps", type=nonnegative_int, default=1000, help="train at least this many steps")
    common(parser, 100)
    parser.set_defaults(handler=classify_series)

    parser = subparsers.add_parser("tag", help="train a POS / sequence tagger on word/TAG lines")
    parser.add_argument("--file", help="one sentence per line, tokens word/TAG (default: People's Daily 1998)")
    test_size(parser, 0.1)
    parser.add_argument("--predict", nargs="*", help="space-separated sentences to tag afterwards (default: none)")
    common(parser, 3)
    parser.set_defaults(handler=tag)

    parser = subparsers.add_parser("translate", help="train a translator on source<TAB>target pairs")
    parser.add_argument("--pairs", required=True, help="UTF-8 file, one source<TAB>target pair per line")
    parser.add_argument("--tokens", choices=("char", "word"), default="char", help="how texts are split")
    parser.add_argument("--beam-size", type=positive_int, default=1, help="1 decodes greedily")
    test_size(parser, 0.1)
    parser.add_argument("--translate", nargs="*", help="texts to translate afterwards (default: none)")
    common(parser, 20)
    parser.set_defaults(handler=translate)
