"""grukit's estimators refuse bad input with messages that say what was given and what was expected, instead of
truncating, mis-reading or silently returning the wrong number of answers."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from grukit.tasks import Forecaster, SequenceTagger, TextClassifier, Translator, VideoClassifier
from tasks_tiny import CASES, TEXTS, fitted


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_model():
    return fitted("text_char_int_labels")


# Labels ------------------------------------------------------------------------------------------------------
CLASSIFIERS = {  # name -> (case for X, the number of samples)
    "TextClassifier": ("text_char_int_labels", 8),
    "SequenceClassifier": ("sequence_classifier", 6),
    "VideoClassifier": ("video_str_labels", 6),
}


def _classifier(owner: str):
    case = CASES[CLASSIFIERS[owner][0]]
    return case[0](), case[1]()


@pytest.mark.parametrize("owner", list(CLASSIFIERS))
def test_fractional_class_labels_are_refused_not_truncated(owner):
    model, x = _classifier(owner)
    labels = [0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0][: CLASSIFIERS[owner][1]]
    with pytest.raises(ValueError, match=f"{owner} expected class labels, got fractional values such as 0.5"):
        model.fit(x, labels)
    whole = [float(label) for label in [0, 1, 2, 1, 0, 1, 0, 1][: CLASSIFIERS[owner][1]]]
    assert model.fit(x, whole).classes_ is not None  # whole numbers as floats are classes


@pytest.mark.parametrize("owner", list(CLASSIFIERS))
def test_labels_mixing_numbers_and_strings_are_refused(owner):
    model, x = _classifier(owner)
    labels = [0, "neg", 1, "pos", 0, "neg", 1, "pos"][: CLASSIFIERS[owner][1]]
    with pytest.raises(
        TypeError,
        match=f"{owner} expected labels that are all strings or all numbers, got number "
        r"and str labels \(e.g. 0, 'neg'\)",
    ):
        model.fit(x, labels)


def test_tags_mixing_numbers_and_strings_are_refused():
    with pytest.raises(TypeError, match="SequenceTagger expected labels that are all strings or all numbers"):
        SequenceTagger(epochs=1).fit([["a", "b"], ["c"]], [["N", 1], ["V"]])


@pytest.mark.parametrize("owner", list(CLASSIFIERS))
def test_nan_labels_are_refused(owner):
    model, x = _classifier(owner)
    labels = [0.0, np.nan, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0][: CLASSIFIERS[owner][1]]
    with pytest.raises(ValueError, match=f"{owner} got NaN or infinite labels in y"):
        model.fit(x, labels)


@pytest.mark.parametrize(
    "name", ["text_char_int_labels", "tagger", "translator", "sequence_classifier", "video_str_labels"]
)
def test_fit_without_y_names_the_estimator(name):
    make, x, _, _ = CASES[name]
    owner = type(make()).__name__
    with pytest.raises(ValueError, match=f"{owner} requires y to be passed, but the target y is None"):
        make().fit(x())


def test_a_multi_column_y_for_a_one_output_classifier_says_its_shape():
    with pytest.raises(ValueError, match=r"TextClassifier expected y of shape \(n,\), got \(8, 2\)"):
        TextClassifier(epochs=1).fit(TEXTS, np.zeros((8, 2), dtype=int))


# Parameters, refused at fit with their name and value --------------------------------------------------------
@pytest.mark.parametrize("value", [0, -5, 2.5])
def test_text_classifier_max_length_must_be_positive(value):
    with pytest.raises(ValueError, match=f"TextClassifier expected max_length to be a positive integer, got {value}"):
        TextClassifier(max_length=value, epochs=1).fit(TEXTS, [0, 1] * 4)


@pytest.mark.parametrize(
    "name", ["text_char_int_labels", "tagger", "translator", "forecaster", "sequence_classifier", "video_str_labels"]
)
@pytest.mark.parametrize(
    ("parameter", "value"),
    [("epochs", 0), ("epochs", -2), ("batch_size", 0), ("batch_size", -8), ("learning_rate", 0.0)],
)
def test_training_settings_must_be_positive(name, parameter, value):
    make, x, y, _ = CASES[name]
    model = make().set_params(**{parameter: value})
    kind = "number" if parameter == "learning_rate" else "integer"
    with pytest.raises(
        ValueError, match=f"{type(model).__name__} expected {parameter} to be a positive {kind}, got {value}"
    ):
        model.fit(x()) if y() is None else model.fit(x(), y())


@pytest.mark.parametrize("quantiles", [(0.0, 0.5, 0.9), (0.1, 0.5, 1.0), (-0.2, 0.5), (0.5, 1.5), (0.5, True)])
def test_forecaster_quantile_levels_must_lie_strictly_between_0_and_1(quantiles):
    series = CASES["forecaster"][1]()
    message = "Forecaster expected quantiles to be levels strictly between 0 and 1 (e.g. (0.1, 0.5, 0.9)), got"
    with pytest.raises(ValueError, match=re.escape(f"{message} {quantiles}")):
        Forecaster(horizon=4, lookback=8, season=4, epochs=1, quantiles=quantiles).fit(series)


# Non-finite input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_sequence_classifier_refuses_non_finite_series_at_predict(bad):
    model = fitted("sequence_classifier")
    series = CASES["sequence_classifier"][3]()
    series[1][2, 0] = bad
    with pytest.raises(
        ValueError, match="SequenceClassifier got NaN values or inf in series 1; every value must be finite"
    ):
        model.predict(series)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_video_classifier_refuses_non_finite_pixels(bad):
    model = fitted("video_str_labels")
    clips = CASES["video_str_labels"][3]()
    clips[2, 1, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="VideoClassifier got NaN or inf pixel values in clip 2"):
        model.predict(clips)
    with pytest.raises(ValueError, match="VideoClassifier got NaN or inf pixel values in clip 2"):
        VideoClassifier(epochs=1).fit(clips, ["a", "b", "a", "b"])


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_forecaster_refuses_non_finite_horizons_and_actuals(bad):
    model = fitted("forecaster")
    with pytest.raises(ValueError, match=f"Forecaster expected horizon to be a positive integer, got {bad}"):
        model.predict(bad)
    with pytest.raises(
        ValueError,
        match=r"Forecaster.score expected the actual values as a 1-D series of finite "
        r"numbers \(no NaN or inf\), got shape \(3,\) with NaN or inf",
    ):
        model.score([1.0, bad, 2.0])
    series = CASES["forecaster"][1]()
    series[10] = bad
    with pytest.raises(ValueError, match="Forecaster got NaN or infinite values"):
        Forecaster(horizon=4, lookback=8, season=4, epochs=1).fit(series)


@pytest.mark.parametrize("differencing", ["seasonal", "first", "none"])
def test_forecasts_of_a_series_near_1e200_are_finite_and_on_its_scale(differencing):
    series = 1e200 * (1.0 + 0.1 * np.sin(2 * np.pi * np.arange(60) / 4))
    model = Forecaster(horizon=4, lookback=8, season=4, differencing=differencing, hidden_size=4, epochs=2)
    forecast = model.fit(series).predict()
    lower, upper = model.predict_interval()
    assert np.isfinite(model.mean_) and np.isfinite(model.std_) and model.std_ > 0
    assert np.isfinite(forecast).all() and np.isfinite(lower).all() and np.isfinite(upper).all()
    assert (forecast > 0.5e200).all() and (forecast < 2e200).all()


# Texts and tokens ---------------------------------------------------------------------------------------------
def test_tagger_refuses_integer_tokens_at_fit_and_predict():
    with pytest.raises(TypeError, match=r"SequenceTagger expected every token to be a str, X\[1\]\[0\] is int 7"):
        SequenceTagger(epochs=1).fit([["a", "b"], [7, 8]], [["N", "V"], ["N", "V"]])
    model = fitted("tagger")
    with pytest.raises(TypeError, match=r"X\[0\]\[1\] is int64 3; pass words as strings"):
        model.predict([["the", np.int64(3)]])


def test_text_classifier_reads_a_series_or_one_column_as_a_list_of_texts(text_model):
    texts = ["good fun film", "bad", "zzz"]
    expected = text_model.predict(texts)
    assert len(expected) == 3
    frame = pd.DataFrame({"review": texts})
    np.testing.assert_array_equal(text_model.predict(frame), expected)
    np.testing.assert_array_equal(text_model.predict(frame["review"]), expected)
    np.testing.assert_array_equal(text_model.predict(np.array(texts)[:, None]), expected)
    np.testing.assert_array_equal(text_model.predict_proba(frame), text_model.predict_proba(texts))
    series = pd.Series(TEXTS, index=range(100, 108))  # an index that is not 0..n-1
    refit = TextClassifier(**text_model.get_params()).fit(series, pd.Series([2, 0, 2, 0, 1, 0, 1, 0]))
    np.testing.assert_array_equal(refit.predict(texts), expected)


def test_text_classifier_refuses_several_columns_by_name(text_model):
    frame = pd.DataFrame({"review": ["good", "bad"], "stars": ["5", "1"]})
    with pytest.raises(
        ValueError,
        match=r"TextClassifier expected texts as one column of strings, got 2 columns "
        r"\['review', 'stars'\] \(shape \(2, 2\)\); select the column that holds the texts",
    ):
        text_model.predict(frame)
    with pytest.raises(ValueError, match="got 3 columns"):
        text_model.fit(np.array([["a", "b", "c"]] * 8), [0, 1] * 4)


def test_text_classifier_refuses_non_strings_and_says_which(text_model):
    with pytest.raises(TypeError, match="TextClassifier expected each of the texts to be a str, item 1 is int"):
        text_model.predict(["fine", 3])
    with pytest.raises(TypeError, match="Translator expected each of the sources to be a str, item 0 is float"):
        Translator(epochs=1).fit([1.5], ["x"])


def test_sequence_classifier_refuses_one_dimensional_and_sparse_x():
    from scipy import sparse

    model = fitted("sequence_classifier")
    with pytest.raises(ValueError, match=r"got an array of shape \(10,\); Reshape your data: X\[None, :\] is one"):
        model.predict(np.zeros(10))
    with pytest.raises(TypeError, match="SequenceClassifier does not take sparse X"):
        model.predict(sparse.csr_matrix(np.ones((2, 5))))
    with pytest.raises(ValueError, match="Complex data not supported"):
        model.predict(np.ones((2, 5), dtype=complex))
