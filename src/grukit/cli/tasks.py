"""``grukit`` subcommands for the task estimators, on a user's own files or the bundled data:

    grukit forecast --csv prices.csv --column close --horizon 10 [--season 5] [--log] [--out model/]
    grukit forecast --dataset airline --horizon 12 --log
    grukit classify-text --csv reviews.csv --text-column text --label-column label
    grukit classify-series --csv series.csv --label-column label   (one series per row, empty after it ends)
    grukit classify-series --dataset GunPoint
    grukit tag --file corpus.txt            (one sentence per line, tokens ``word/TAG`` separated by spaces)
    grukit translate --pairs pairs.tsv      (``source<TAB>target`` per line) [--translate "some text" ...]

Each command trains the estimator (a progress bar with the loss on stderr unless ``--quiet``), reports its score
on a held-out part (or the data's own test split), prints or writes the predictions and, with ``--out DIR``,
saves the fitted estimator there for ``grukit predict DIR ...``. Files are read by
:mod:`grukit.datasets.files`, which names the file, line and column of anything it cannot read.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grukit import datasets
from grukit.cli.distributed import add_scale_options
from grukit.cli.options import (
    check_model_out,
    nonblank_text,
    nonnegative_int,
    open_fraction,
    positive_int,
    random_seed,
)
from grukit.datasets.files import is_iso_date
from grukit.tasks import baselines, forecasting
from grukit.tasks.forecasting import DIFFERENCING, STRATEGIES, Forecaster
from grukit.tasks.sequence import SequenceClassifier
from grukit.tasks.tagging import SequenceTagger
from grukit.tasks.text import TOKENS, TextClassifier
from grukit.tasks.translation import Translator

LOG_CHOICES = {"auto": "auto", "on": True, "off": False}  # --log value -> Forecaster(log=...)


@contextlib.contextmanager
def training_output() -> Iterator[None]:
    """While training, what the training loop prints (its epoch lines) goes to stderr beside the progress bar,
    so stdout holds only the command's results."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def check_out(args: argparse.Namespace, estimator: type) -> None:
    """Refuse, before training, an ``--out`` that saving the ``estimator`` there would write over."""
    if args.out:
        check_model_out(Path(args.out), f"grukit.{estimator.__name__}")


def save_model(model, args: argparse.Namespace) -> None:
    if args.out:
        model.save_pretrained(args.out)
        print(f"saved the model to {args.out} (grukit predict {args.out} ...)")


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
    if missing.all():
        raise ValueError(f"{source} holds no numbers in the series, only missing values")
    if missing.any():
        print(f"note: filled {int(missing.sum())} missing values of {source} by linear interpolation", file=sys.stderr)
        positions = np.arange(len(values))
        values = np.interp(positions, positions[~missing], values[~missing])
    return values


# forecast --------------------------------------------------------------------------------------------------
def read_dated_series(path: str, column: str, date_column: str | None):
    """The column as a float64 array, or as a ``pandas.Series`` on a ``DatetimeIndex`` when the CSV has dates:
    ``date_column``, else the first other column whose every cell is an ISO date (``2024-01-31``,
    ``2024-01``, ``2024-01-31 12:00``)."""
    table = datasets.read_csv(path, [column] + ([date_column] if date_column else []))
    values = interpolate_missing(table.numbers(column), path)
    candidates = [date_column] if date_column else [name for name in table.header if name != column]
    for name in candidates:
        cells = [cell.strip() for cell in table.column(name)]
        if all(is_iso_date(cell) for cell in cells):
            import pandas as pd

            index = pd.DatetimeIndex(pd.to_datetime(cells, format="ISO8601"))
            if not index.is_monotonic_increasing or index.has_duplicates:
                raise ValueError(f"{path} column {name!r}: the dates must rise, oldest first, without repeats")
            return pd.Series(values, index=index, name=column), name
        if date_column:
            bad = next(cell for cell in cells if not is_iso_date(cell))
            raise ValueError(f"{path} column {date_column!r}: {bad!r} is not an ISO date such as 2024-01-31")
    return values, None


def forecast_rows(model: Forecaster, point, bounds) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a forecast: ``date`` (or ``step``), ``forecast`` and, with an interval,
    ``lower_80``, ``upper_80`` (named by the interval's nominal coverage in percent)."""
    dated = hasattr(point, "index")
    first = ["date"] if dated else ["step"]
    keys = [str(d.date()) if d == d.normalize() else d.isoformat() for d in point.index] if dated else None
    keys = keys or [str(step) for step in range(1, len(point) + 1)]
    header = [*first, "forecast"]
    columns = [np.asarray(point)]
    if bounds is not None:
        level = round(100 * model.coverage_)
        header += [f"lower_{level}", f"upper_{level}"]
        columns += [np.asarray(bounds[0]), np.asarray(bounds[1])]
    rows = [[key, *(f"{column[i]:.6g}" for column in columns)] for i, key in enumerate(keys)]
    return header, rows


OUTPUT_HEADERS = ("date,forecast", "step,forecast", "text,label", "text,tags", "text,translation", "row,label")


def check_output(output: str | None) -> None:
    """Refuse an ``--output`` that is a folder, or a file other than a CSV of predictions grukit wrote (one
    whose header starts as one of ``OUTPUT_HEADERS``): an earlier output may be replaced, nothing else."""
    if not output:
        return
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"--output {output} is a folder; expected the name of a CSV file to write")
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline(200)
        if not first.startswith(OUTPUT_HEADERS):
            raise ValueError(
                f"--output {output} exists and is not a CSV of predictions grukit wrote; grukit will not write over "
                "it: choose another name"
            )


def write_rows(header: list[str], rows: list[list[str]], output: str | None, what: str) -> None:
    """CSV rows to ``output`` (see :func:`check_output`), or printed (stdout) without it."""
    import csv
    import io

    check_output(output)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if output:
        Path(output).write_text(buffer.getvalue(), encoding="utf-8")
        print(f"wrote {len(rows)} {what} to {output}")
    else:
        sys.stdout.write(buffer.getvalue())


def forecast(args: argparse.Namespace) -> int:
    if args.csv:
        if not args.column:
            raise ValueError("--csv needs --column NAME (the series to forecast)")
        if args.output and Path(args.output).resolve() == Path(args.csv).resolve():
            raise ValueError(f"--output {args.output} is the --csv file itself; write the forecasts elsewhere")
        series, date_column = read_dated_series(args.csv, args.column, args.date_column)
    else:
        if args.date_column:
            raise ValueError("--date-column reads a --csv file; a --dataset has its dates already")
        series, date_column = datasets.load_series(args.dataset), "its index"
    check_output(args.output)
    check_out(args, Forecaster)
    dates = forecasting.dates_of(series)
    if dates is not None and dates[1] is None:
        print(f"note: the dates in {date_column} have no regular spacing: forecasts are numbered steps",
              file=sys.stderr)
        series = np.asarray(series)
    model = Forecaster(
        horizon=args.horizon,
        lookback=args.lookback,
        season=args.season,
        differencing=args.differencing,
        log=LOG_CHOICES[args.log],
        strategy=args.strategy,
        epochs=args.epochs,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    if args.evaluate:
        if len(series) <= 2 * args.horizon:
            raise ValueError(f"--evaluate holds out the last {args.horizon} of {len(series)} points: too few left")
        train, test = series[: -args.horizon], np.asarray(series[-args.horizon :])
        with training_output():
            model.fit(train)
        season = model.season_
        naive = baselines.mase(test, baselines.seasonal_naive_forecast(np.asarray(train), args.horizon, season),
                               np.asarray(train), season)
        print(f"held-out last {args.horizon} points: MASE {-model.score(test):.3f} (seasonal naive {naive:.3f})")
    with training_output():
        model.fit(series)
    if args.season is None and model.season_ > 1:
        print(f"season {model.season_} from the dates' frequency ({model.dates_['freq']}); --season 1 for none",
              file=sys.stderr)
    point = model.predict(args.horizon)
    bounds = model.predict_interval(args.horizon) if args.strategy == "direct" else None
    write_rows(*forecast_rows(model, point, bounds), args.output, "forecasts")
    save_model(model, args)
    return 0


# classify-text ---------------------------------------------------------------------------------------------
def classify_text(args: argparse.Namespace) -> int:
    texts, labels = datasets.read_labelled_texts(args.csv, args.text_column, args.label_column)
    train, test = holdout(len(texts), args.test_size, args.seed, args.csv)
    check_out(args, TextClassifier)
    model = TextClassifier(tokens=args.tokens, epochs=args.epochs, random_state=args.seed, verbose=verbosity(args))
    with training_output():
        model.fit([texts[i] for i in train], labels[train])
    accuracy = model.score([texts[i] for i in test], labels[test])
    print(f"held-out accuracy {accuracy:.3f} on {len(test)} texts ({len(train)} for training)")
    for text in args.predict or []:
        print(f"{model.predict([text])[0]}\t{text}")
    save_model(model, args)
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
    check_out(args, SequenceClassifier)
    model = SequenceClassifier(
        epochs=args.epochs, min_steps=args.min_steps, random_state=args.seed, verbose=verbosity(args)
    )
    steps_per_epoch = math.ceil(len(y_train) / model.batch_size)
    if args.epochs * steps_per_epoch < args.min_steps:
        epochs = math.ceil(args.min_steps / steps_per_epoch)
        print(f"note: --min-steps {args.min_steps} raises --epochs {args.epochs} to {epochs} ({steps_per_epoch} "
              "steps per epoch)", file=sys.stderr)
    with training_output():
        model.fit(x_train, y_train)
    print(f"test accuracy {model.score(x_test, y_test):.3f} on {len(y_test)} series ({len(y_train)} for training)")
    save_model(model, args)
    return 0


# tag -------------------------------------------------------------------------------------------------------
def tag(args: argparse.Namespace) -> int:
    sentences = datasets.read_tagged_sentences(args.file) if args.file else datasets.load_people_daily()
    train, test = holdout(len(sentences), args.test_size, args.seed, args.file or "People's Daily")
    words = [[w for w, _ in s] for s in sentences]
    tags = [[t for _, t in s] for s in sentences]
    check_out(args, SequenceTagger)
    model = SequenceTagger(epochs=args.epochs, random_state=args.seed, verbose=verbosity(args))
    with training_output():
        model.fit([words[i] for i in train], [tags[i] for i in train])
    accuracy = model.score([words[i] for i in test], [tags[i] for i in test])
    print(f"held-out token accuracy {accuracy:.3f} on {len(test)} sentences ({len(train)} for training)")
    for text in args.predict or []:
        tokens = text.split()
        if not tokens:
            raise ValueError("--predict got an empty sentence")
        print("  ".join(f"{w}/{t}" for w, t in zip(tokens, model.predict([tokens])[0])))
    save_model(model, args)
    return 0


# translate -------------------------------------------------------------------------------------------------
def translate(args: argparse.Namespace) -> int:
    pairs = datasets.read_pairs(args.pairs)
    train, test = holdout(len(pairs), args.test_size, args.seed, args.pairs)
    check_out(args, Translator)
    model = Translator(
        tokens=args.tokens, epochs=args.epochs, beam_size=args.beam_size, random_state=args.seed,
        verbose=verbosity(args),
    )
    with training_output():
        model.fit([pairs[i][0] for i in train], [pairs[i][1] for i in train])
    scores = model.evaluate([pairs[i][0] for i in test], [pairs[i][1] for i in test])
    print(
        f"held-out ({len(test)} pairs): exact match {scores['exact_match']:.3f}, BLEU {scores['bleu']:.1f}, "
        f"chrF {scores['chrf']:.1f}"
    )
    for text in args.translate or []:
        print(f"{text}\t{model.predict([text])[0]}")
    save_model(model, args)
    return 0


def verbosity(args: argparse.Namespace) -> int:
    """The estimators' ``verbose``: 1 (a progress bar per epoch with the loss) unless ``--quiet``."""
    return 0 if args.quiet else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``forecast``, ``classify-text``, ``classify-series``, ``tag`` and ``translate`` to ``grukit``."""

    def common(parser: argparse.ArgumentParser, epochs: int) -> None:
        parser.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training data")
        parser.add_argument("--seed", type=random_seed, default=0, help="seeds the split and the training")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        add_scale_options(parser)
        parser.add_argument("--out", metavar="DIR", help="save the trained model in this folder (new, empty or an "
                            "earlier model folder) for 'grukit predict DIR' (default: not saved)")

    def test_size(parser: argparse.ArgumentParser, default: float) -> None:
        parser.add_argument("--test-size", type=open_fraction, default=default, help="share held out for the score")

    parser = subparsers.add_parser("forecast", help="forecast a series from a CSV column or a bundled dataset")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="UTF-8 CSV holding the series, oldest first (missing values: empty or NaN)")
    source.add_argument("--dataset", choices=datasets.SERIES, help="a bundled series")
    parser.add_argument("--column", help="the CSV column to forecast (needed with --csv)")
    parser.add_argument("--horizon", type=positive_int, required=True, help="steps to forecast")
    parser.add_argument("--lookback", type=positive_int, help="past steps the network reads (default: chosen from "
                        "the season, the horizon and the series' length)")
    parser.add_argument("--date-column", help="the CSV column of ISO dates (default: the first column that holds "
                        "only dates, if any); forecasts are then dated")
    parser.add_argument("--season", type=positive_int, help="season length, e.g. 12 for monthly data (default: from "
                        "the dates' frequency, else detected from the autocorrelation, else none)")
    parser.add_argument("--differencing", choices=DIFFERENCING, default="auto",
                        help="auto: seasonal with a season, else first")
    parser.add_argument("--log", nargs="?", choices=LOG_CHOICES, const="on", default="auto",
                        help="model log values: on (positive series), off, or auto (on for a positive series with "
                        "multiplicative seasonality); a bare --log means on")
    parser.add_argument("--strategy", choices=STRATEGIES, default="direct", help="how the horizon is forecast")
    parser.add_argument("--evaluate", action="store_true", help="first score a fit that holds out the last horizon")
    parser.add_argument("--output", help="write date (or step),forecast,lower_80,upper_80 (an 80%% prediction "
                        "interval) to this CSV file (default: print them)")
    common(parser, 50)
    parser.set_defaults(handler=forecast)

    parser = subparsers.add_parser("classify-text", help="train a text classifier on a CSV of texts and labels")
    parser.add_argument("--csv", required=True, help="UTF-8 CSV with a text and a label column")
    parser.add_argument("--text-column", default="text", help="the column of texts")
    parser.add_argument("--label-column", default="label", help="the column of labels")
    parser.add_argument("--tokens", choices=TOKENS, default="auto",
                        help="how texts are split into tokens (auto: BPE for text with spaces, characters without)")
    test_size(parser, 0.2)
    parser.add_argument("--predict", nargs="*", type=nonblank_text, help="texts to classify afterwards (default: none)")
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
    parser.add_argument("--min-steps", type=nonnegative_int, default=0, help="train at least this many optimizer "
                        "steps, raising --epochs if needed (small sets need about 1000; the command says so)")
    common(parser, 100)
    parser.set_defaults(handler=classify_series)

    parser = subparsers.add_parser("tag", help="train a POS / sequence tagger on word/TAG lines")
    parser.add_argument("--file", help="one sentence per line, tokens word/TAG (default: People's Daily 1998)")
    test_size(parser, 0.1)
    parser.add_argument("--predict", nargs="*", type=nonblank_text,
                        help="space-separated sentences to tag afterwards (default: none)")
    common(parser, 3)
    parser.set_defaults(handler=tag)

    parser = subparsers.add_parser("translate", help="train a translator on source<TAB>target pairs")
    parser.add_argument("--pairs", required=True, help="UTF-8 file, one source<TAB>target pair per line")
    parser.add_argument("--tokens", choices=("char", "word"), default="char", help="how texts are split")
    parser.add_argument("--beam-size", type=positive_int, default=1, help="1 decodes greedily")
    test_size(parser, 0.1)
    parser.add_argument("--translate", nargs="*", type=nonblank_text,
                        help="texts to translate afterwards (default: none)")
    common(parser, 20)
    parser.set_defaults(handler=translate)
