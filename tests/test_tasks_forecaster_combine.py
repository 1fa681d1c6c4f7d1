"""Forecaster's combination with a statistical model (``combine="theta"`` / ``"ets"``): the weight chosen on the
validation split, the two ends of the weight range, argument checks, intervals, and a save / load round trip in
global and single-series mode."""

import re

import numpy as np
import pandas as pd
import pytest

from grukit import load
from grukit.tasks.baselines import smape
from grukit.tasks.forecasting import COMBINE_GRID, Forecaster, combination_scores, statistical_forecast


def trending(n: int = 36, slopes=(0.5, 1.0, 2.0)) -> list[np.ndarray]:
    """Positive noisy lines: Theta (a trend method) forecasts them well, a GRU trained for 2 epochs does not."""
    rng = np.random.default_rng(0)
    return [100 + slope * np.arange(n) + rng.normal(0, 0.5, n) for slope in slopes]


def test_global_weight_is_chosen_on_the_validation_split_and_combines_the_forecasts():
    series = trending()
    model = Forecaster(horizon=4, lookback=6, epochs=2, combine="theta", combine_metric="smape").fit(series)
    assert model.combine_weight_ in COMBINE_GRID and 0.0 <= model.combine_weight_ <= 1.0
    assert len(model.combine_scores_) == len(COMBINE_GRID)
    assert model.combine_scores_[COMBINE_GRID.index(model.combine_weight_)] == min(model.combine_scores_)
    # the validation scores are those of a copy fitted without the last 4 points, against those points
    parts = [values[:-4] for values in series]
    inner = Forecaster(horizon=4, lookback=6, epochs=2).fit(parts)
    theta = [statistical_forecast("theta", part, 4, 1) for part in parts]
    expected = [np.mean([smape(v[-4:], w * g + (1 - w) * s) for v, g, s in zip(series, inner.predict(), theta)])
                for w in COMBINE_GRID]
    np.testing.assert_allclose(model.combine_scores_, expected, rtol=1e-12)
    # a trend the 2-epoch GRU misses: Theta must carry weight
    assert model.combine_weight_ < 1.0
    w = model.combine_weight_
    for values, point, gru, stat in zip(series, model.predict(), model.predict(combined=False), model.statistical_):
        np.testing.assert_array_equal(stat, statistical_forecast("theta", values, 4, 1))
        np.testing.assert_allclose(point, w * gru + (1 - w) * stat, rtol=1e-12)
    lowers, uppers = model.predict_interval()
    for lower, point, upper in zip(lowers, model.predict(), uppers):
        assert (lower <= point).all() and (point <= upper).all()


def test_weight_zero_is_the_statistical_forecast_and_one_the_gru():
    values = trending(n=40)[1]
    statistical = Forecaster(horizon=4, lookback=6, epochs=1, calibration=0, combine="ets", combine_weight=0.0)
    statistical.fit(values)
    np.testing.assert_array_equal(statistical.predict(), statistical_forecast("ets", values, 4, 1))
    assert statistical.combine_weight_ == 0.0 and statistical.combine_scores_ is None
    gru = Forecaster(horizon=4, lookback=6, epochs=1, calibration=0, combine="ets", combine_weight=1.0).fit(values)
    alone = Forecaster(horizon=4, lookback=6, epochs=1, calibration=0).fit(values)
    np.testing.assert_array_equal(gru.predict(), alone.predict())
    np.testing.assert_array_equal(gru.predict_interval()[0], alone.predict_interval()[0])
    assert alone.combine_weight_ == 1.0 and alone.statistical_ is None
    # global mode: w = 0 gives Theta's forecast of each series, exactly
    series = trending()
    model = Forecaster(horizon=3, lookback=6, epochs=1, combine="theta", combine_weight=0).fit(series)
    for values, point in zip(series, model.predict()):
        np.testing.assert_array_equal(point, statistical_forecast("theta", values, 3, 1))


def test_single_series_mode_chooses_a_weight_and_reads_a_newer_history():
    t = np.arange(60)
    values = pd.Series(100 + t + 10 * np.sin(2 * np.pi * t / 12), index=pd.date_range("2000-01", periods=60, freq="MS"))
    model = Forecaster(horizon=6, lookback=12, epochs=1, calibration=0, combine="ets").fit(values)
    assert model.season_ == 12 and model.combine_weight_ in COMBINE_GRID
    forecast = model.predict()
    assert isinstance(forecast, pd.Series) and forecast.index[0] == pd.Timestamp("2005-01-01")
    w, newer = model.combine_weight_, values.to_numpy()[:-3]
    expected = w * model.predict(series=newer, combined=False) + (1 - w) * statistical_forecast("ets", newer, 6, 12)
    np.testing.assert_allclose(model.predict(series=newer), expected, rtol=1e-12)


@pytest.mark.parametrize("collection", [True, False], ids=["global", "single"])
def test_a_saved_combined_model_forecasts_the_same(tmp_path, collection):
    series = trending(n=40)
    model = Forecaster(horizon=4, lookback=6, epochs=1, calibration=0, combine="theta")
    model.fit(series if collection else series[0])
    model.save_pretrained(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.combine_weight_ == model.combine_weight_ and loaded.combine_scores_ == model.combine_scores_
    for before, after in zip(np.atleast_2d(model.predict()), np.atleast_2d(loaded.predict())):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(model.predict_interval(), loaded.predict_interval()):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"combine": "arima"}, "combine in (None, 'theta', 'ets'), got 'arima'"),
        ({"combine": "theta", "combine_weight": 1.5}, "combine_weight to be a number in [0, 1] or None, got 1.5"),
        ({"combine": "theta", "combine_weight": True}, "combine_weight to be a number in [0, 1] or None, got True"),
        ({"combine_weight": 0.5}, "combine_weight=0.5 without a model to combine with"),
        ({"combine": "ets", "combine_metric": "mape"}, "combine_metric in ('mase', 'smape'), got 'mape'"),
        ({"combine": "ets", "strategy": "recursive"}, "strategy='direct' only, got strategy='recursive'"),
    ],
)
def test_bad_combination_arguments_say_what_was_expected(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Forecaster(horizon=4, epochs=1, **options).fit(trending()[0])


def test_a_series_too_short_to_hold_out_the_horizon_asks_for_the_weight():
    with pytest.raises(ValueError, match="Give combine_weight explicitly"):
        Forecaster(horizon=4, lookback=6, epochs=1, combine="theta").fit(trending(n=14)[0])
    model = Forecaster(horizon=4, lookback=6, epochs=1, calibration=0, combine="theta", combine_weight=0.5)
    assert len(model.fit(trending(n=14)[0]).predict()) == 4


def test_combination_scores_leave_out_series_that_cannot_be_scored():
    constant, line = np.full(10, 5.0), np.arange(10.0)
    scores = combination_scores([np.full(2, 5.0), np.array([10.0, 11.0])], [np.full(2, 5.0), np.array([9.0, 9.0])],
                                [np.full(2, 5.0), np.array([10.0, 11.0])], [constant, line], 1, "mase")
    np.testing.assert_allclose(scores, [w * 1.5 for w in COMBINE_GRID])  # the constant series has no MASE scale
    with pytest.raises(ValueError, match="no series has a finite validation mase"):
        combination_scores([np.full(2, 5.0)], [np.full(2, 5.0)], [np.full(2, 5.0)], [constant], 1, "mase")


@pytest.mark.parametrize("method", ["theta", "ets"])
@pytest.mark.parametrize("level", [5.0, -3.0, 0.0])
def test_a_flat_series_gets_a_flat_statistical_forecast(method, level):
    np.testing.assert_array_equal(statistical_forecast(method, np.full(30, level), 4, 1), np.full(4, level))


def test_predictions_follow_the_fitted_combination_not_a_later_set_params():
    series = trending()[0]
    model = Forecaster(horizon=4, lookback=6, epochs=2, combine="theta", combine_weight=0.0).fit(series)
    before = np.asarray(model.predict())
    np.testing.assert_allclose(before, statistical_forecast("theta", series, 4, 1))
    model.set_params(combine=None)
    np.testing.assert_array_equal(np.asarray(model.predict()), before)
    np.testing.assert_array_equal(np.asarray(model.predict(series=series)), before)
    plain = Forecaster(horizon=4, lookback=6, epochs=2).fit(series)
    alone = np.asarray(plain.predict())
    plain.set_params(combine="theta")
    np.testing.assert_array_equal(np.asarray(plain.predict()), alone)
