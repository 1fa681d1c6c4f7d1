"""``grukit`` subcommands for the task estimators, on a user's own files or the bundled data:

    grukit forecast --csv prices.csv --column close --horizon 10 [--season 5] [--log]
    grukit forecast --dataset airline --horizon 12 --season 12 --log
    grukit classify-text --csv reviews.csv --text-column text --label-column label
    grukit classify-series --csv series.csv --label-column label   (one series per row, NaN-padded)
    grukit classify-series --dataset GunPoint
    grukit tag --file corpus.txt            (one sentence per line, tokens ``word/TAG`` separated by spaces)
    grukit translate --pairs pairs.tsv      (``source<TAB>target`` per line) [--translate "some text" ...]

Each command trains the estimator, reports its score on a held-out part (or the data's own test split) and
prints or writes the predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from grukit import datasets
from grukit.tasks.forecasting import DIFFERENCING, STRATEGIES, Forecaster
from grukit.tasks.sequence import SequenceClassifier
from grukit.tasks.tagging import SequenceTagger
from grukit.tasks.text import TOKENS, TextClassifier
from grukit.tasks.translation import Translator


def _read_csv(path: str, columns: list[str]):
    import pandas as pd

    if not Path(path).is_file():
        raise SystemExit(f"error: no such file: {path}")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SystemExit(f"error: {path} has no column(s) {missing}; its columns are {list(frame.columns)}")
    return frame


def _holdout(size: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_size < 1.0:
        raise SystemExit(f"error: --test-size must be in (0, 1), got {test_size}")
    order = np.random.default_rng(seed).permutation(size)
    cut = size - max(1, int(round(test_size * size)))
    return order[:cut], order[cut:]


# forecast --------------------------------------------------------------------------------------------------
def forecast(args: argparse.Namespace) -> int:
    if args.csv:
        if not args.column:
            raise SystemExit("error: --csv needs --column NAME (the series to forecast)")
        frame = _read_csv(args.csv, [args.column])
        values = frame[args.column].astype(float)
        if values.isna().any():
            print(f"note: filled {int(values.isna().sum())} missing values by linear interpolation", file=sys.stderr)
            values = values.interpolate(limit_direction="both")
        series = values.to_numpy()
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
        train, test = series[: -args.horizon], series[-args.horizon :]
        model.fit(train)
        from grukit.tasks import baselines

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
    frame = _read_csv(args.csv, [args.text_column, args.label_column]).dropna(
        subset=[args.text_column, args.label_column]
    )
    texts = frame[args.text_column].astype(str).tolist()
    labels = frame[args.label_column].astype(str).to_numpy()
    train, test = _holdout(len(texts), args.test_size, args.seed)
    model = TextClassifier(tokens=args.tokens, epochs=args.epochs, random_state=args.seed, verbose=args.verbose)
    model.fit([texts[i] for i in train], labels[train])
    accuracy = model.score([texts[i] for i in test], labels[test])
    print(f"held-out accuracy {accuracy:.3f} on {len(test)} texts ({len(train)} for training)")
    for text in args.predict or []:
        print(f"{model.predict([text])[0]}\t{text}")
    return 0


# classify-series -------------------------------------------------------------------------------------------
def _series_from_csv(path: str, label_column: str) -> tuple[list[np.ndarray], np.ndarray]:
    frame = _read_csv(path, [label_column])
    values = frame.drop(columns=label_column).to_numpy(dtype=float)  # (n, T), NaN after a shorter series ends
    series = [row[~np.isnan(row)][:, None] for row in values]
    empty = [i for i, s in enumerate(series) if len(s) == 0]
    if empty:
        raise SystemExit(f"error: rows {empty[:5]} of {path} hold no values")
    return series, frame[label_column].astype(str).to_numpy()


def classify_series(args: argparse.Namespace) -> int:
    if args.dataset:
        x_train, y_train = datasets.load_ucr(args.dataset, "train")
        x_test, y_test = datasets.load_ucr(args.dataset, "test")
    else:
        if not args.csv or not args.label_column:
            raise SystemExit("error: give --dataset NAME, or --csv FILE with --label-column NAME")
        series, labels = _series_from_csv(args.csv, args.label_column)
        if args.test_csv:
            x_train, y_train = series, labels
            x_test, y_test = _series_from_csv(args.test_csv, args.label_column)
        else:
            train, test = _holdout(len(series), args.test_size, args.seed)
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
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise SystemExit(f"error: no such file: {args.file}")
        sentences = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            tokens = line.split()
            if tokens:
                bad = next((t for t in tokens if "/" not in t.strip("/")), None)
                if bad is not None:
                    raise SystemExit(f"error: {args.file} line {number}: token {bad!r} is not word/TAG")
                sentences.append([tuple(token.rsplit("/", 1)) for token in tokens])
    else:
        sentences = datasets.load_people_daily()
    train, test = _holdout(len(sentences), args.test_size, args.seed)
    words = [[w for w, _ in s] for s in sentences]
    tags = [[t for _, t in s] for s in sentences]
    model = SequenceTagger(epochs=args.epochs, random_state=args.seed, verbose=args.verbose)
    model.fit([words[i] for i in train], [tags[i] for i in train])
    accuracy = model.score([words[i] for i in test], [tags[i] for i in test])
    print(f"held-out token accuracy {accuracy:.3f} on {len(test)} sentences ({len(train)} for training)")
    for text in args.predict or []:
        tokens = text.split()
        print("  ".join(f"{w}/{t}" for w, t in zip(tokens, model.predict([tokens])[0])))
    return 0


# translate -------------------------------------------------------------------------------------------------
def translate(args: argparse.Namespace) -> int:
    path = Path(args.pairs)
    if not path.is_file():
        raise SystemExit(f"error: no such file: {args.pairs}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            parts = line.split("\t")
            if len(parts) != 2:
                raise SystemExit(
                    f"error: {args.pairs} line {number}: expected source<TAB>target, got {len(parts)} field(s)"
                )
            pairs.append((parts[0].strip(), parts[1].strip()))
    train, test = _holdout(len(pairs), args.test_size, args.seed)
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
        parser.add_argument("--epochs", type=int, default=epochs)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))

    parser = subparsers.add_parser("forecast", help="forecast a series from a CSV column or a bundled dataset")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV file holding the series, oldest first")
    source.add_argument("--dataset", choices=datasets.SERIES, help="a bundled series")
    parser.add_argument("--column", help="the CSV column to forecast")
    parser.add_argument("--horizon", type=int, required=True)
    parser.add_argument("--lookback", type=int, default=36)
    parser.add_argument("--season", type=int, default=None, help="season length, e.g. 12 for monthly data")
    parser.add_argument("--differencing", choices=DIFFERENCING, help="default: seasonal with --season, else first")
    parser.add_argument("--log", action="store_true", help="model log values (positive series)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="direct")
    parser.add_argument("--evaluate", action="store_true", help="first score a fit that holds out the last horizon")
    parser.add_argument("--output", help="write step,forecast,lower,upper here instead of printing")
    common(parser, 50)
    parser.set_defaults(handler=forecast)

    parser = subparsers.add_parser("classify-text", help="train a text classifier on a CSV of texts and labels")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--tokens", choices=TOKENS, default="bpe")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--predict", nargs="*", help="texts to classify afterwards")
    common(parser, 8)
    parser.set_defaults(handler=classify_text)

    parser = subparsers.add_parser("classify-series", help="train a GRU-FCN on labelled series")
    parser.add_argument(
        "--dataset", help=f"a UCR / UEA set shipped with sktime, e.g. {', '.join(['GunPoint', 'BasicMotions'])}"
    )
    parser.add_argument(
        "--csv", help="one series per row: a label column and the values (NaN after a shorter series ends)"
    )
    parser.add_argument("--test-csv", help="a separate test file in the same layout")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--min-steps", type=int, default=1000, help="train at least this many optimizer steps")
    common(parser, 100)
    parser.set_defaults(handler=classify_series)

    parser = subparsers.add_parser("tag", help="train a POS / sequence tagger on word/TAG lines")
    parser.add_argument("--file", help="one sentence per line, tokens word/TAG (default: People's Daily 1998)")
    parser.add_argument("--test-size", type=float, default=0.1)
    parser.add_argument("--predict", nargs="*", help="space-separated sentences to tag afterwards")
    common(parser, 3)
    parser.set_defaults(handler=tag)

    parser = subparsers.add_parser("translate", help="train a translator on source<TAB>target pairs")
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--tokens", choices=("char", "word"), default="char")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--test-size", type=float, default=0.1)
    parser.add_argument("--translate", nargs="*", help="texts to translate afterwards")
    common(parser, 20)
    parser.set_defaults(handler=translate)
