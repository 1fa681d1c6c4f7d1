"""Time series that ``statsmodels`` and ``sktime`` ship, as ``pandas.Series`` with a time index."""

from __future__ import annotations

import pandas as pd

from grukit.datasets._packages import require

SERIES = ("co2", "co2_monthly", "sunspots", "elnino", "nile", "airline")
SEASONAL_PERIODS = {"co2": 52, "co2_monthly": 12, "sunspots": 11, "elnino": 12, "nile": 1, "airline": 12}


def load_series(name: str) -> pd.Series:
    """One univariate series by name.

    - ``co2``: Mauna Loa CO₂, weekly from 1958 (2,284 points), its 59 missing weeks filled by time
      interpolation; ``co2_monthly``: the monthly means of those weeks (526 points).
    - ``sunspots``: yearly sunspot activity 1700-2008 (309).
    - ``elnino``: monthly sea surface temperature 1950-2010, the 61 × 12 table flattened in time order (732).
    - ``nile``: yearly Nile flow at Aswan 1871-1970 (100).
    - ``airline``: monthly international airline passengers 1949-1960 (144), from ``sktime``.

    :data:`SEASONAL_PERIODS` gives each one's season length (the period a seasonal-naive forecast repeats).
    """
    if name not in SERIES:
        raise ValueError(f"load_series expected a name in {SERIES}, got {name!r}")
    if name == "airline":
        datasets = require("sktime.datasets", "sktime", "The airline series")
        series = datasets.load_airline()
        return series.set_axis(series.index.to_timestamp()).astype("float64").rename("airline")
    sm_datasets = require("statsmodels.datasets", "statsmodels", f"The {name} series")
    if name.startswith("co2"):
        weekly = sm_datasets.co2.load_pandas().data["co2"].interpolate(method="time")
        if name == "co2":
            return weekly.rename("co2")
        return weekly.resample("MS").mean().rename("co2_monthly")
    if name == "sunspots":
        frame = sm_datasets.sunspots.load_pandas().data
        index = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
        return pd.Series(frame["SUNACTIVITY"].to_numpy(float), index=index, name="sunspots")
    if name == "nile":
        frame = sm_datasets.nile.load_pandas().data
        index = pd.to_datetime(frame["year"].astype(int).astype(str), format="%Y")
        return pd.Series(frame["volume"].to_numpy(float), index=index, name="nile")
    frame = sm_datasets.elnino.load_pandas().data
    values = frame.drop(columns="YEAR").to_numpy(float).reshape(-1)  # row-major: year by year, Jan..Dec
    start = f"{int(frame['YEAR'].iloc[0])}-01-01"
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="MS"), name="elnino")
