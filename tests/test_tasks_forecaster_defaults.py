"""Forecaster's defaults a newcomer relies on: default arguments on a non-seasonal series, the season from a
pandas frequency, dates in and dates out, a calibrated 80 % interval, and a save / load round trip."""

import numpy as np
import pandas as pd
import pytest
import torch

from grukit import load
from grukit.tasks.forecasting import Forecaster, season_from_frequency


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ar_series(seed: int, n: int, season: int = 12) -> np.ndarray:
    """A seasonal cycle plus AR(1) noise (phi 0.7, sigma 0.5): stationary, so coverage can be measured."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n)
    for t in range(1, n):
        noise[t] = 0.7 * noise[t - 1] + rng.normal(0, 0.5)
    return 20 + 2 * np.sin(2 * np.pi * np.arange(n) / season) + noise


def test_default_arguments_work_on_a_non_seasonal_series():
    walk = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 120))
    model = Forecaster(epochs=2).fit(walk)  # no season, no differencing argument
    assert (model.season_, model.differencing_) == (1, "first")
    forecast = model.predict()
    assert forecast.shape == (12,) and np.all(np.abs(forecast - walk[-1]) < 20)


@pytest.mark.parametrize("freq, season", [("MS", 12), ("W-SAT", 52), ("QS-JAN", 4), ("D", 7), ("h", 24), ("YS", 1),
                                          ("2D", None)])
def test_season_from_a_pandas_frequency(freq, season):
    assert season_from_frequency(freq) == season


def test_a_dated_series_in_gives_dated_forecasts_out_and_survives_saving(tmp_path):
    index = pd.date_range("2010-01-01", periods=120, freq="MS")
    series = pd.Series(ar_series(1, 120), index=index)
    model = Forecaster(horizon=4, lookback=24, epochs=2).fit(series)
    assert (model.season_, model.differencing_) == (12, "seasonal")
    point = model.predict()
    assert isinstance(point, pd.Series)
    assert list(point.index) == list(pd.date_range("2020-01-01", periods=4, freq="MS"))
    lower, upper = model.predict_interval()
    assert list(lower.index) == list(point.index) and (lower <= point).all() and (point <= upper).all()
    assert Forecaster(season=1, horizon=4, lookback=24, epochs=1).fit(series).season_ == 1  # explicit wins

    loaded = load(model.save_pretrained(tmp_path / "model"))
    pd.testing.assert_series_equal(loaded.predict(), point)
    assert loaded.interval_correction_ == model.interval_correction_


def coverage(model: Forecaster, series: np.ndarray, start: int, horizon: int) -> float:
    """Share of the held-out values after ``start`` inside the interval, from every forecast origin."""
    hits = []
    for origin in range(start, len(series) - horizon + 1):
        lower, upper = model.predict_interval(series=series[:origin])
        actual = series[origin : origin + horizon]
        hits.append((lower <= actual) & (actual <= upper))
    return float(np.mean(hits))


def test_the_80_percent_interval_covers_about_80_percent_of_held_out_values():
    series = ar_series(0, 700)
    settings = {"horizon": 6, "lookback": 24, "season": 1, "epochs": 5}
    calibrated = Forecaster(**settings).fit(series[:500])
    raw = Forecaster(**settings, calibration=0).fit(series[:500])
    assert calibrated.coverage_ == pytest.approx(0.8)
    measured, uncalibrated = coverage(calibrated, series, 500, 6), coverage(raw, series, 500, 6)  # 1,170 values
    assert 0.70 <= measured <= 0.90, measured
    assert abs(measured - 0.8) < abs(uncalibrated - 0.8), (measured, uncalibrated)


def test_too_short_a_series_to_calibrate_warns_and_keeps_the_raw_quantiles():
    with pytest.warns(UserWarning, match="too few to calibrate"):
        model = Forecaster(horizon=3, lookback=6, epochs=1).fit(ar_series(0, 24))
    assert model.interval_correction_ == [0.0, 0.0, 0.0]


def test_default_arguments_work_on_a_short_non_seasonal_yearly_series():
    index = pd.date_range("1980-01-01", periods=40, freq="YS")
    series = pd.Series(100 + np.cumsum(np.random.default_rng(3).normal(1, 2, 40)), index=index)
    with pytest.warns(UserWarning, match="too few to calibrate"):  # 40 points leave 15 windows
        model = Forecaster(horizon=11, epochs=2).fit(series)
    assert (model.season_, model.differencing_, model.log_) == (1, "first", False)
    assert model.lookback_ == 14  # shrunk from max(3·1, 3·11) = 33 to half the 29 window starts
    forecast = model.predict()
    assert list(forecast.index) == list(pd.date_range("2020-01-01", periods=11, freq="YS"))
    assert np.all(np.abs(forecast - series.iloc[-1]) < 60)


def test_the_season_is_detected_when_no_dates_give_it():
    assert Forecaster(horizon=4, epochs=1).fit(ar_series(0, 120)).season_ == 12
    quarterly = 10 + np.tile([0.0, 3.0, -2.0, 1.0], 20) + np.random.default_rng(1).normal(0, 0.3, 80)
    assert Forecaster(horizon=4, epochs=1).fit(quarterly).season_ == 4
    walk = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 120))
    assert Forecaster(horizon=4, epochs=1).fit(walk).season_ == 1


def multiplicative_series(n: int = 144) -> np.ndarray:
    t = np.arange(n)
    noise = 1 + 0.02 * np.random.default_rng(0).normal(size=n)
    return np.exp(0.01 * t) * (100 + 30 * np.sin(2 * np.pi * t / 12)) * noise


def test_log_is_chosen_for_a_positive_series_with_multiplicative_seasonality(tmp_path):
    model = Forecaster(horizon=6, epochs=1).fit(multiplicative_series())
    assert (model.season_, model.log_) == (12, True)
    additive = 100 + 0.5 * np.arange(144) + 20 * np.sin(2 * np.pi * np.arange(144) / 12)
    assert not Forecaster(horizon=6, epochs=1).fit(additive).log_
    assert not Forecaster(horizon=6, epochs=1).fit(multiplicative_series() - 150).log_  # values <= 0
    assert not Forecaster(horizon=6, epochs=1, log=False).fit(multiplicative_series()).log_
    loaded = load(model.save_pretrained(tmp_path / "model"))
    assert loaded.log_ and np.array_equal(loaded.predict(), model.predict())
