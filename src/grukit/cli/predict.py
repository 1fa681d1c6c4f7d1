"""``grukit predict DIR [INPUT] [--output FILE]``: run any model a training command saved with ``--out``.

What INPUT holds depends on the model in DIR (its ``config.json`` names it):

- a text classifier (``classify-text``, ``finetune classify``), a tagger (``tag``) or a translator
  (``translate``): a UTF-8 text file with one text (for the tagger, one space-separated sentence) per line, or a
  CSV whose ``--column`` (default ``text``) holds them;
- a sequence classifier (``classify-series``): a CSV with one series per row (a ``--label-column``, if present,
  is ignored);
- a forecaster (``forecast``): no INPUT (forecast what follows the series it was trained on, ``--horizon``
  steps), or a CSV whose ``--column`` holds a newer history to forecast from.

Predictions are printed as ``prediction<TAB>input`` lines (the forecaster: CSV rows), or written as a CSV to
``--output``; labels are written by their names, as they were given in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grukit.cli.options import positive_int
from grukit.cli.tasks import check_output, forecast_rows, read_dated_series, write_rows
from grukit.datasets.files import read_csv, read_lines, read_series_rows
from grukit.saved import load
from grukit.train.checkpoint import read_config

TEXT_MODELS = ("TextClassifier", "GRUClassifier", "SequenceTagger", "Translator")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``grukit`` command."""
    parser = subparsers.add_parser("predict", help="predict with a model a training command saved (--out DIR)")
    parser.add_argument("model", metavar="DIR", help="the model folder a training command wrote with --out")
    parser.add_argument("input", metavar="INPUT", nargs="?",
                        help="texts (one per line, or a CSV), series (a CSV, one per row) or, for a forecaster, a "
                        "newer history (a CSV; default: forecast after the training series)")
    parser.add_argument("--column", help="the CSV column of texts (default: text) or of the forecaster's series")
    parser.add_argument("--label-column", default="label", help="a column of a series CSV to ignore if present")
    parser.add_argument("--horizon", type=positive_int, help="steps to forecast (default: the model's horizon)")
    parser.add_argument("--output", help="write the predictions to this CSV file (default: print them)")
    parser.set_defaults(handler=run_predict)


def read_texts(path: str, column: str | None) -> list[str]:
    """One text per line, or a CSV's ``column`` (default ``text``) when the file ends in ``.csv``."""
    if path.lower().endswith(".csv") or column:
        name = column or "text"
        texts = read_csv(path, [name]).column(name)
        blank = next((i for i, text in enumerate(texts) if not text.strip()), None)
        if blank is not None:
            raise ValueError(f"{path}: row {blank + 1} of column {name!r} is empty; expected a text in every row")
        return texts
    return read_lines(path)


def run_predict(args: argparse.Namespace) -> int:
    architecture = str(read_config(args.model).get("architecture", "")).removeprefix("grukit.")
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        raise ValueError(f"--output {args.output} is the INPUT file itself; write the predictions elsewhere")
    check_output(args.output)
    if architecture == "Forecaster":
        return predict_forecast(args, load(args.model))
    if args.horizon is not None:
        raise ValueError(f"--horizon is for a forecaster; {args.model} holds a {architecture}")
    if architecture in ("GRULanguageModel", "grukit-gru-lm"):
        raise ValueError(f"{args.model} holds a language model: continue a prompt with 'grukit lm generate "
                         f"{args.model} --prompt TEXT'")
    if architecture not in (*TEXT_MODELS, "grukit-gru-classifier", "SequenceClassifier"):
        raise ValueError(f"grukit predict reads models saved by grukit's training commands; {args.model} holds a "
                         f"{architecture or 'model of unknown kind'}, which it cannot run")
    if not args.input:
        raise ValueError(f"{args.model} holds a {architecture}: give INPUT, the file of what to predict")
    model = load(args.model)
    if architecture == "SequenceClassifier":
        series, _ = read_series_rows(args.input, args.label_column if has_column(args.input, args.label_column)
                                     else None)
        inputs = [f"row {i}" for i in range(1, len(series) + 1)]
        predictions = [str(label) for label in model.predict(series)]
        header = ["row", "label"]
        rows = [[str(i), label] for i, label in enumerate(predictions, start=1)]
    else:
        inputs = read_texts(args.input, args.column)
        predictions = predict_texts(model, architecture, inputs)
        header = ["text", {"SequenceTagger": "tags", "Translator": "translation"}.get(architecture, "label")]
        rows = [[text, prediction] for text, prediction in zip(inputs, predictions)]
    if args.output:
        write_rows(header, rows, args.output, "predictions")
    else:
        for shown, prediction in zip(inputs, predictions):
            print(f"{prediction}\t{shown}")
    return 0


def has_column(path: str, name: str) -> bool:
    return name in read_csv(path, []).header


def predict_texts(model, architecture: str, texts: list[str]) -> list[str]:
    """Each text's label name, tags (``word/TAG`` separated by spaces) or translation."""
    if architecture == "SequenceTagger":
        sentences = [text.split() for text in texts]
        return [" ".join(f"{w}/{t}" for w, t in zip(s, tags)) for s, tags in zip(sentences, model.predict(sentences))]
    if architecture in ("GRUClassifier", "grukit-gru-classifier"):
        from grukit.lm.classifier import predict

        ids = predict(model, model.encoder.tokenizer.encode_batch(texts))
        names = model.labels or [str(i) for i in range(model.num_classes)]
        return [names[i] for i in ids]
    return [str(prediction) for prediction in model.predict(texts)]


def predict_forecast(args: argparse.Namespace, model) -> int:
    horizon = args.horizon or model.horizon
    history = None
    if args.input:
        if not args.column:
            raise ValueError("a forecaster's INPUT is a CSV of a newer history: give --column NAME, its series")
        history, _ = read_dated_series(args.input, args.column, None)
    elif args.column:
        raise ValueError("--column names a column of INPUT; give INPUT (a CSV) too, or neither")
    point = model.predict(horizon, series=history)
    bounds = model.predict_interval(horizon, series=history) if model.strategy == "direct" else None
    write_rows(*forecast_rows(model, point, bounds), args.output, "forecasts")
    return 0

