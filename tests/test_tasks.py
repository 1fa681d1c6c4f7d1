"""grukit.tasks: sklearn-style estimators fit small slices of real data and beat trivial baselines; they
take variable-length input, clone, and fail with clear errors."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from grukit import datasets
from grukit.tasks import (
    Forecaster,
    SequenceClassifier,
    SequenceTagger,
    TextClassifier,
    Translator,
    VideoClassifier,
    baselines,
)

SMALL = {
    SequenceClassifier: {"hidden_size": 16, "filters": (16, 32, 16), "epochs": 20, "min_steps": 0, "batch_size": 8},
    Forecaster: {"horizon": 12, "lookback": 24, "season": 12, "log": True, "hidden_size": 16, "epochs": 30},
    TextClassifier: {"vocab_size": 2000, "max_length": 60, "hidden_size": 32, "epochs": 2},
    SequenceTagger: {"hidden_size": 32, "epochs": 2},
    Translator: {"tokens": "word", "hidden_size": 64, "epochs": 8},
    VideoClassifier: {"features": 32, "hidden_size": 32, "epochs": 4},
}


@pytest.fixture(autouse=True)
def one_thread():
    """These tests train small networks; one thread is fastest for them on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Sequence classification ------------------------------------------------------------------------------------
def test_sequence_classifier_on_basic_motions_beats_one_nn_euclidean():
    x_train, y_train = datasets.load_ucr("BasicMotions", "train")
    x_test, y_test = datasets.load_ucr("BasicMotions", "test")
    model = SequenceClassifier(**SMALL[SequenceClassifier]).fit(x_train, y_train)
    euclidean = np.mean(baselines.one_nearest_neighbour(x_train, y_train, x_test, "euclidean") == y_test)
    assert euclidean == pytest.approx(0.6)
    assert model.score(x_test, y_test) >= 0.85
    assert set(model.classes_) == {"badminton", "running", "standing", "walking"}
    probabilities = model.predict_proba(x_test)
    assert probabilities.shape == (40, 4)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


def test_sequence_classifier_variable_length_japanese_vowels():
    x_train, y_train = datasets.load_ucr("JapaneseVowels", "train")
    x_test, y_test = datasets.load_ucr("JapaneseVowels", "test")
    model = SequenceClassifier(hidden_size=16, filters=(16, 32, 16), epochs=5, min_steps=0).fit(x_train, y_train)
    assert model.score(x_test, y_test) > 0.5  # 9 speakers: chance is about 0.11
    # a series gets the same answer alone as in a batch with longer series (padding is masked everywhere)
    short = min(x_test, key=len)
    alone = model.predict_proba([short])
    together = model.predict_proba([short, *x_test[:5]])[:1]
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_sequence_classifier_reads_univariate_two_dimensional_input():
    x_train, y_train = datasets.load_ucr("GunPoint", "train")
    model = SequenceClassifier(hidden_size=4, filters=(4, 4, 4), epochs=1, min_steps=0).fit(x_train[:, 0, :], y_train)
    assert model.n_channels_ == 1
    assert model.predict(x_train[:3]).shape == (3,)
    with pytest.raises(ValueError, match="fitted on 1 channels, got X with 6"):
        model.predict(np.zeros((2, 6, 150), dtype=np.float32))


def test_one_nn_dtw_matches_the_published_gunpoint_number():
    x_train, y_train = datasets.load_ucr("GunPoint", "train")
    x_test, y_test = datasets.load_ucr("GunPoint", "test")
    assert np.mean(baselines.one_nearest_neighbour(x_train, y_train, x_test, "dtw") == y_test) == pytest.approx(
        0.907, abs=1e-3
    )  # UCR archive (Dau et al. 2019): 1-NN DTW, no window, error 0.093


def test_dtw_of_a_series_with_its_time_warped_copy_is_zero():
    a = np.array([[0.0], [1.0], [2.0], [1.0]])
    b = np.array([[0.0], [1.0], [1.0], [2.0], [2.0], [1.0]])
    c = np.array([[5.0], [5.0]])
    distances = baselines.dtw_distances([a], [b, c])
    assert distances[0, 0] == 0.0
    assert distances[0, 1] == pytest.approx(25 + 16 + 9 + 16)


# Forecasting ------------------------------------------------------------------------------------------------
def test_forecaster_on_airline_beats_seasonal_naive():
    series = datasets.load_series("airline").to_numpy()
    train, test = series[:-12], series[-12:]
    model = Forecaster(**SMALL[Forecaster]).fit(train)
    forecast = model.predict()
    assert forecast.shape == (12,)
    seasonal_naive = baselines.mase(test, baselines.seasonal_naive_forecast(train, 12, 12), train, 12)
    assert seasonal_naive == pytest.approx(1.571, abs=1e-3)
    assert -model.score(test) < seasonal_naive
    lower, upper = model.predict_interval(6)
    assert lower.shape == upper.shape == (6,)
    assert np.all(lower <= forecast[:6] + 1e-9) and np.all(forecast[:6] <= upper + 1e-9)


def test_forecaster_recursive_strategy_forecasts_beyond_its_training_horizon():
    series = datasets.load_series("airline").to_numpy()
    options = {**SMALL[Forecaster], "strategy": "recursive", "horizon": 1, "epochs": 5}
    model = Forecaster(**options).fit(series)
    assert model.predict(30).shape == (30,)
    with pytest.raises(ValueError, match="intervals with strategy='direct' only"):
        model.predict_interval()


def test_forecaster_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs season > 1"):
        Forecaster(season=None, differencing="seasonal").fit(np.arange(100.0))
    with pytest.raises(ValueError, match="needs at least 61 points"):
        Forecaster(horizon=12, lookback=36, season=12).fit(np.arange(50.0))
    with pytest.raises(ValueError, match="NaN"):
        Forecaster(differencing="first").fit(np.r_[np.arange(100.0), np.nan])
    with pytest.raises(ValueError, match="log=True needs a positive series"):
        Forecaster(differencing="first", log=True).fit(np.arange(100.0) - 5)
    model = Forecaster(horizon=3, lookback=5, differencing="first", hidden_size=4, epochs=1).fit(np.arange(40.0))
    with pytest.raises(ValueError, match="fitted to forecast 3 steps directly, asked for 5"):
        model.predict(5)


def test_forecast_error_measures():
    train = np.array([1.0, 2.0, 3.0, 4.0])
    assert baselines.mase([5.0, 6.0], [5.5, 6.5], train) == pytest.approx(0.5)
    assert baselines.smape([100.0], [100.0]) == 0.0
    assert baselines.smape([1.0], [3.0]) == pytest.approx(100.0)


# Text -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", ["bpe", "char"])
def test_text_classifier_on_chinese_reviews_beats_the_majority(tokens):
    texts, labels = datasets.load_chinese_reviews()
    order = np.random.default_rng(0).permutation(len(texts))
    train, test = order[:3000], order[3000:3600]
    model = TextClassifier(tokens=tokens, **{k: v for k, v in SMALL[TextClassifier].items()})
    model.fit([texts[i] for i in train], labels[train])
    majority = np.mean(labels[test] == np.bincount(labels[train]).argmax())
    assert model.score([texts[i] for i in test], labels[test]) > majority + 0.05
    probabilities = model.predict_proba(["很好", "太差了，不推荐", ""])
    assert probabilities.shape == (3, 2)


def test_text_classifier_rejects_a_single_string():
    model = TextClassifier(epochs=1, hidden_size=4).fit(["good", "bad", "fine", "awful"], [1, 0, 1, 0])
    with pytest.raises(TypeError, match="a list of texts, got a single string"):
        model.predict("good")


# Tagging ----------------------------------------------------------------------------------------------------
def test_sequence_tagger_on_people_daily_beats_the_most_frequent_tag_overall():
    lines = datasets.load_people_daily()[:1200]
    words = [[w for w, _ in line] for line in lines]
    tags = [[t for _, t in line] for line in lines]
    model = SequenceTagger(**SMALL[SequenceTagger]).fit(words[:1000], tags[:1000])
    predicted = model.predict(words[1000:])
    assert [len(p) for p in predicted] == [len(w) for w in words[1000:]]
    commonest = max(model.tags_, key=lambda tag: sum(t.count(tag) for t in tags[:1000]))
    everything_commonest = np.mean([t == commonest for line in tags[1000:] for t in line])
    assert model.score(words[1000:], tags[1000:]) > everything_commonest + 0.3


def test_sequence_tagger_chunks_long_sentences_and_checks_lengths():
    words = [["a", "b", "c", "d", "e"], ["b", "a"]]
    tags = [["x", "y", "x", "y", "x"], ["y", "x"]]
    model = SequenceTagger(hidden_size=4, embedding_size=4, chunk_length=2, epochs=1, min_count=1).fit(words, tags)
    assert [len(p) for p in model.predict(words)] == [5, 2]
    with pytest.raises(ValueError, match="sentence 1 has 2 tokens but 1 tags"):
        model.fit(words, [tags[0], ["y"]])


# Translation ------------------------------------------------------------------------------------------------
def test_translator_number_words_on_unseen_numbers():
    pairs = datasets.number_word_pairs(range(1000), "en", "fr")
    order = np.random.default_rng(0).permutation(1000)
    sources, targets = [pairs[i][0] for i in order], [pairs[i][1] for i in order]
    model = Translator(**SMALL[Translator]).fit(sources[:900], targets[:900])
    greedy = model.evaluate(sources[900:], targets[900:])
    beam = model.evaluate(sources[900:], targets[900:], beam_size=3)
    assert greedy["exact_match"] > 0.5  # copying the source would never be right
    assert greedy["bleu"] > 50 and greedy["chrf"] > 80
    assert beam["exact_match"] >= greedy["exact_match"] - 0.05
    assert model.predict(sources[:3]) == targets[:3]  # seen in training


def test_translator_char_tokens_lstm_cell_round_trip_shapes():
    model = Translator(tokens="char", cell="lstm", hidden_size=8, embedding_size=8, epochs=1)
    model.fit(["ab", "ba", "abc"], ["xy", "yx", "xyz"])
    outputs = model.predict(["ab", "c"], beam_size=2)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


# Video ------------------------------------------------------------------------------------------------------
def test_video_classifier_learns_the_direction_of_motion():
    clips, digits, directions = datasets.make_digit_clips(600, frames=6, canvas=14)
    labels = np.stack([digits, directions], 1)
    model = VideoClassifier(**SMALL[VideoClassifier]).fit(clips[:500], labels[:500])
    predicted = model.predict(clips[500:])
    assert predicted.shape == (100, 2)
    assert np.mean(predicted[:, 1] == directions[500:]) > 0.6  # four directions: chance 0.25
    single = VideoClassifier(features=8, hidden_size=8, epochs=1).fit(clips[:50], directions[:50])
    assert single.predict(clips[:4]).shape == (4,)
    with pytest.raises(ValueError, match=r"frames of shape \(1, 14, 14\), got \(1, 8, 8\)"):
        single.predict(np.zeros((1, 6, 1, 8, 8)))


# sklearn conventions ----------------------------------------------------------------------------------------
ESTIMATORS = [SequenceClassifier, Forecaster, TextClassifier, SequenceTagger, Translator, VideoClassifier]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_clone_and_get_params(estimator):
    model = estimator(**SMALL[estimator])
    params = model.get_params()
    assert params["epochs"] == SMALL[estimator]["epochs"]
    copy = clone(model)
    assert copy is not model and copy.get_params() == params
    copy.set_params(random_state=7, cell="lstm")
    assert copy.get_params()["cell"] == "lstm" and model.get_params()["cell"] == "gru"


@pytest.mark.parametrize(
    ("estimator", "call"),
    [
        (SequenceClassifier, lambda m: m.predict(np.zeros((2, 1, 10)))),
        (Forecaster, lambda m: m.predict(3)),
        (TextClassifier, lambda m: m.predict_proba(["text"])),
        (SequenceTagger, lambda m: m.predict([["word"]])),
        (Translator, lambda m: m.predict(["one"])),
        (VideoClassifier, lambda m: m.predict(np.zeros((1, 2, 1, 8, 8)))),
    ],
)
def test_predict_before_fit_says_to_fit_first(estimator, call):
    with pytest.raises(NotFittedError, match=f"This {estimator.__name__} is not fitted yet: call fit"):
        call(estimator())


def test_lstm_cell_fits_too():
    x_train, y_train = datasets.load_ucr("BasicMotions", "train")
    model = SequenceClassifier(hidden_size=4, filters=(4, 4, 4), epochs=1, min_steps=0, cell="lstm").fit(
        x_train, y_train
    )
    assert model.predict(x_train[:2]).shape == (2,)
    with pytest.raises(ValueError, match="expected cell in \\('gru', 'lstm'\\), got 'rnn'"):
        SequenceClassifier(cell="rnn").fit(x_train, y_train)
