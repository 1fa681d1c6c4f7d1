"""Tiny data and tiny estimators, one case per task, shared by the estimator tests (saving, sklearn conformance).
Every estimator here trains in a fraction of a second."""

import numpy as np

from grukit.tasks import (
    Forecaster,
    SequenceClassifier,
    SequenceTagger,
    TextClassifier,
    Translator,
    VideoClassifier,
)

TEXTS = ["a good film", "bad plot", "good acting", "awful and bad", "great fun", "dull bad film", "fine", "poor"]
SENTENCES = [["the", "cat", "sat"], ["a", "dog", "ran", "far"], ["the", "dog", "sat"], ["cats", "ran"]]
TAGS = [["D", "N", "V"], ["D", "N", "V", "R"], ["D", "N", "V"], ["N", "V"]]


def _series(n: int = 60) -> np.ndarray:
    t = np.arange(n)
    return 100 + 10 * np.sin(2 * np.pi * t / 4) + 0.5 * t


def _sequences() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(length, 2)).astype(np.float32) for length in (5, 9, 7, 6, 8, 5)]


def _clips() -> np.ndarray:
    return np.random.default_rng(1).random((6, 3, 1, 8, 8)).astype(np.float32)


# name -> (estimator, training X, training y, X to predict); every estimator tiny, one or two epochs
CASES = {
    "text_bpe_str_labels": (
        lambda: TextClassifier(tokens="bpe", vocab_size=60, max_length=20, embedding_size=8, hidden_size=8, epochs=2),
        lambda: TEXTS,
        lambda: ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"],
        lambda: ["good fun film", "bad", "unseen words here"],
    ),
    "text_char_int_labels": (
        lambda: TextClassifier(tokens="char", vocab_size=40, max_length=20, embedding_size=8, hidden_size=8, epochs=2),
        lambda: TEXTS,
        lambda: [2, 0, 2, 0, 1, 0, 1, 0],
        lambda: ["good fun film", "bad", "zzz"],
    ),
    "tagger": (
        lambda: SequenceTagger(embedding_size=4, hidden_size=8, min_count=1, epochs=2),
        lambda: SENTENCES,
        lambda: TAGS,
        lambda: [["the", "cat", "ran"], ["unknown", "dog"]],
    ),
    "tagger_int_tags": (
        lambda: SequenceTagger(embedding_size=4, hidden_size=8, min_count=1, epochs=1),
        lambda: SENTENCES,
        lambda: [[{"D": 0, "N": 1, "V": 2, "R": 3}[tag] for tag in tags] for tags in TAGS],
        lambda: [["the", "cat", "ran"], ["unknown", "dog"]],
    ),
    "translator": (
        lambda: Translator(tokens="word", embedding_size=8, hidden_size=8, epochs=2),
        lambda: ["one two", "two", "three one", "two three"],
        lambda: ["un deux", "deux", "trois un", "deux trois"],
        lambda: ["one", "three two", "four"],
    ),
    "forecaster": (
        lambda: Forecaster(horizon=4, lookback=8, season=4, hidden_size=4, epochs=2),
        _series,
        lambda: None,
        lambda: None,
    ),
    "sequence_classifier": (
        lambda: SequenceClassifier(hidden_size=4, filters=(4, 4, 4), epochs=2, min_steps=0, batch_size=4),
        _sequences,
        lambda: np.array([3, 7, 3, 7, 5, 5]),
        lambda: _sequences()[:4],
    ),
    "video_two_label_columns": (
        lambda: VideoClassifier(features=4, hidden_size=4, epochs=2, batch_size=4),
        _clips,
        lambda: np.array([[0, 1], [1, 2], [0, 2], [1, 1], [0, 1], [1, 2]]),
        lambda: _clips()[:4],
    ),
    "video_str_labels": (
        lambda: VideoClassifier(features=4, hidden_size=4, epochs=1, batch_size=4),
        _clips,
        lambda: np.array(["up", "down", "up", "left", "down", "up"]),
        lambda: _clips()[:4],
    ),
}


def _plain(value):
    """Predictions as JSON with their types: arrays keep their dtype, lists their items' Python types."""
    if isinstance(value, np.ndarray):
        return {"dtype": value.dtype.str, "values": value.tolist()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return {"list": value, "types": sorted({type(item).__name__ for row in value for item in row})}


def predictions(model, x) -> dict:
    """Everything each estimator predicts for ``x``, as JSON."""
    result = {}
    if isinstance(model, Forecaster):
        result["predict"] = _plain(model.predict())
        result["predict_interval"] = _plain(model.predict_interval(3))
        return result
    result["predict"] = _plain(model.predict(x))
    if hasattr(model, "predict_proba"):
        result["predict_proba"] = _plain(model.predict_proba(x))
    return result


def fitted(name: str):
    """The estimator of case ``name``, fitted on its training data."""
    make, x, y, _ = CASES[name]
    return make().fit(x()) if y() is None else make().fit(x(), y())
