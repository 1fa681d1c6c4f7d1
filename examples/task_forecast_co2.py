"""Forecast two years of Mauna Loa CO₂ (monthly means) with grukit's Forecaster, against statsmodels' ETS.

python examples/task_forecast_co2.py
"""

from grukit.datasets import load_series
from grukit.tasks import Forecaster
from grukit.tasks.baselines import ets_forecast, mase, seasonal_naive_forecast


def main() -> None:
    series = load_series("co2_monthly").to_numpy()
    horizon, season = 24, 12
    train, test = series[:-horizon], series[-horizon:]
    model = Forecaster(horizon=horizon, season=season, differencing="first", epochs=30).fit(train)
    lower, upper = model.predict_interval()
    print(f"GRU forecaster MASE {-model.score(test):.3f}")
    print(f"seasonal naive MASE {mase(test, seasonal_naive_forecast(train, horizon, season), train, season):.3f}")
    ets = ets_forecast(train, horizon, season, trend="add", damped=True, seasonal="add")
    print(f"ETS(A,Ad,A)    MASE {mase(test, ets, train, season):.3f}")
    print(f"80 % interval holds {((test >= lower) & (test <= upper)).mean():.0%} of the held-out months")


if __name__ == "__main__":
    main()
