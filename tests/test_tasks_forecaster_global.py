"""Forecaster's global mode: one network over many series, forecasts per series in order, per-series scaling,
the exponential-smoothing hybrid, the median ensemble, intervals, dates, and a save / load round trip."""

import numpy as np
import pandas as pd
import pytest
import torch

from grukit import load
from grukit.tasks.forecasting import Forecaster


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def walks(scales=(0.01, 1.0, 1e4), n=40) -> list[np.ndarray]:
    """Positive random walks on very different scales."""
    rng = np.random.default_rng(0)
    return [scale * (50 + np.cumsum(rng.normal(0, 1, n))) for scale in scales]


def seasonal(n: int, seed: int) -> np.ndarray:
    """A growing monthly series with a strong multiplicative season."""
    t = np.arange(n)
    noise = 1 + 0.01 * np.random.default_rng(seed).normal(size=n)
    return (100 + t) * (1 + 0.4 * np.sin(2 * np.pi * t / 12)) * noise


def test_one_forecast_per_series_in_order_each_on_its_own_scale():
    series = walks()
    model = Forecaster(horizon=4, lookback=6, epochs=2).fit(series)
    forecasts = model.predict()
    assert isinstance(forecasts, list) and [f.shape for f in forecasts] == [(4,)] * 3
    for values, forecast in zip(series, forecasts):  # per-series scaling: each near its own last value
        assert np.all(np.abs(forecast / values[-1] - 1) < 0.5), (values[-1], forecast)
    assert model.log_ and model.season_ == 1 and len(model.predict(2)[0]) == 2
    lowers, uppers = model.predict_interval()
    assert all((lo <= f).all() and (f <= hi).all() for lo, f, hi in zip(lowers, forecasts, uppers))


def test_series_shorter_than_a_window_are_padded_and_still_forecast():
    series = [*walks(n=40), walks(scales=(2.0,), n=5)[0]]
    model = Forecaster(horizon=4, lookback=12, epochs=1).fit(series)
    assert len(model.predict()) == 4 and np.isfinite(model.predict()[3]).all()


def test_the_ensemble_trains_one_network_per_lookback_and_seed_and_takes_the_median():
    series = walks()
    model = Forecaster(horizon=3, lookback=(4, 8), ensemble=2, epochs=1).fit(series)
    assert model.lookback_ == (4, 8) and len(model.module_) == 4
    single = Forecaster(horizon=3, lookback=4, epochs=1).fit(series)  # the ensemble's first network, alone
    for name, value in model.module_[0].state_dict().items():
        assert torch.equal(value, single.module_[0].state_dict()[name])
    assert not all(np.allclose(a, b) for a, b in zip(model.predict(), single.predict()))
    three = Forecaster(horizon=3, lookback=4, ensemble=3, epochs=1).fit(series)
    alone = [Forecaster(horizon=3, lookback=4, epochs=1, random_state=seed).fit(series).predict() for seed in range(3)]
    for index, forecast in enumerate(three.predict()):
        np.testing.assert_allclose(forecast, np.median([members[index] for members in alone], axis=0), rtol=1e-6)


def test_the_hybrid_takes_the_season_from_exponential_smoothing():
    series = [seasonal(96, seed) for seed in range(4)]
    model = Forecaster(horizon=12, lookback=12, season=12, hybrid=True, epochs=1).fit(series)
    for values, forecast in zip(series, model.predict()):
        # one barely trained epoch: the season still comes through, from the smoothing states
        assert np.corrcoef(forecast, values[-12:])[0, 1] > 0.9


def test_dated_series_give_dated_forecasts():
    index = pd.date_range("2015-01-01", periods=48, freq="MS")
    series = [pd.Series(seasonal(48, seed), index=index) for seed in range(3)]
    model = Forecaster(horizon=3, lookback=12, epochs=1).fit(series)
    assert model.season_ == 12
    forecast = model.predict()[1]
    assert list(forecast.index) == list(pd.date_range("2019-01-01", periods=3, freq="MS"))


def test_a_saved_global_model_forecasts_the_same(tmp_path):
    series = [seasonal(60, seed) for seed in range(3)]
    model = Forecaster(horizon=6, lookback=(6, 12), season=12, hybrid=True, epochs=1).fit(series)
    loaded = load(model.save_pretrained(tmp_path / "global"))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.predict(), model.predict()))
    for got, expected in zip(loaded.predict_interval(), model.predict_interval()):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert (loaded.lookback_, loaded.log_, loaded.season_) == (model.lookback_, model.log_, model.season_)


def test_global_mode_errors_say_what_is_wrong():
    series = walks()
    with pytest.raises(ValueError, match="NaN or infinite values in series 1"):
        Forecaster(epochs=1).fit([series[0], np.r_[series[1][:-1], np.nan]])
    with pytest.raises(ValueError, match=r"work in global mode.*fit\(\[series\]\)"):
        Forecaster(hybrid=True, epochs=1).fit(series[0])
    model = Forecaster(horizon=3, lookback=4, epochs=1).fit(series)
    with pytest.raises(ValueError, match="global mode forecasts after the series it was fitted on"):
        model.predict(series=series[0])
    with pytest.raises(ValueError, match="longer than the horizon"):
        Forecaster(horizon=5, epochs=1).fit([[1.0, 2.0], [3.0, 4.0]])
