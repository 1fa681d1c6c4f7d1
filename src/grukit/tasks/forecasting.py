r"""Multi-step forecasting of one series with a GRU, sklearn style: ``fit(series)``, ``predict(horizon)``.

The series ``x_1..x_n`` is transformed before the network sees it, and the forecasts transformed back::

    u_t = log x_t  (with log=True)  else x_t
    d_t = u_t − u_{t−m}  (differencing="seasonal", m = season)  |  u_t − u_{t−1}  ("first")  |  u_t  ("none")
    z_t = (d_t − mean d) / std d    (mean and std taken of d / 2^k, 2^k ≈ max |d|: exact, and no overflow at 1e200)

The GRU reads a window ``z_{t−L+1..t}`` (``L = lookback``) with the season phase ``(sin, cos)(2π t/m)`` as two
more features per step, and its last state predicts

- ``strategy="direct"``: every step ``z_{t+1..t+h}`` at once, for each quantile level ``τ`` (pinball loss
  ``ℓ_τ(y, q) = max(τ (y − q), (τ − 1)(y − q))``); the point forecast is the median, the outer levels give a
  prediction interval;
- ``strategy="recursive"``: ``z_{t+1}`` only, fed back ``h`` times (point forecasts, no interval).

Undoing the differencing adds forecasts to past values (``û_{n+k} = u_{n+k−m} + d̂_{n+k}``); an interval
bound is carried through the same sums.

The interval is calibrated by split conformal prediction (conformalised quantile regression). The latest
``calibration`` share of the windows is held out (with a gap of ``h`` windows, so no training target overlaps
them) and a first network is trained on the rest; on each held-out window ``i`` and step ``k`` the score is
``s_ik = max(l̂_ik − u_ik, u_ik − û_ik)`` (on the log scale with log=True), and the bounds are widened by
``c_k = the ⌈(n+1)(1−α)⌉/n quantile of s_1k..s_nk``, ``1 − α = q_max − q_min`` (0.8 for levels 0.1 and 0.9).
The network that forecasts is then trained on every window.

Defaults a newcomer can rely on: ``season=None`` takes the season from a pandas ``DatetimeIndex``'s frequency
(12 for monthly, 4 quarterly, 52 weekly, 7 daily, 24 hourly), else detects it (:func:`detect_season`: the
candidate lag ``m`` in 4, 7, 12, 24, 52 whose autocorrelation of the first differences is largest and
significant), else none; ``differencing="auto"`` is seasonal with a season and first without; ``log="auto"``
models ``log x`` for a positive series whose seasonality is multiplicative (:func:`prefers_log`); ``lookback=None``
reads ``max(3m, 3h)`` steps, shrunk on a short series to half the span windows can start in. A ``pandas.Series``
with a ``DatetimeIndex`` in gives ``pandas.Series`` indexed by the future dates out.

Global mode: ``fit([series_1, …, series_S])`` learns one network across all the series; ``predict(h)`` returns
one forecast per series, in order. Each series is put on a common footing (ES-RNN style with ``hybrid=True``)::

    u_t = log x_t (log) else x_t;      y_t = u_t − s_t;      σ = std(y_t − y_{t−1})
    window ending at T:  z_{T−L+1..T} = (y − a_T) / σ,     targets (y_{T+k} − a_T) / σ,  k = 1..h

with the anchor ``a_T = y_T`` and ``s_t = 0`` (plain), or, with ``hybrid=True``, ``a_T = ℓ_T`` and ``s_t`` the
level and (additive, on ``u``) seasonal states of exponential smoothing fitted to each series (statsmodels,
no trend). The forecast is ``û_{n+k} = a_n + σ ẑ_k + s_{n+k}``, ``s_{n+k}`` the last fitted season repeated. A
series shorter than a window is padded on the left with its first value. With several ``lookback`` values
and ``ensemble`` seeds each, one network is trained per (lookback, seed) pair and every quantile forecast is
the median of theirs. The global interval is the raw quantiles (no conformal step); its coverage is measured
in ``benchmarks/m3.py``.

Combination with a statistical model (``combine="theta"`` or ``"ets"``, either mode). Per series, the Theta
method or exponential smoothing (damped additive trend, multiplicative season when the M4 90 % seasonality test
holds; a series of fewer than 4 points gets the naive forecast) gives ``ŝ_{n+k}``, and with the GRU's quantile
forecasts ``q̂_τ`` (values, after undoing the transforms) and median ``ĝ = q̂_0.5``::

    ŷ_{n+k} = w ĝ_{n+k} + (1 − w) ŝ_{n+k}                  (the point forecast)
    q̃_τ,n+k = q̂_τ,n+k + (ŷ_{n+k} − ĝ_{n+k})                (each level shifted as the median: the GRU's widths)

The weight ``w`` (``combine_weight``) is given, or chosen on a validation split cut from the training series:
the last ``h`` points of every series are held out, a copy without the combination is fitted to the rest and
the statistical model too, and ``w`` is the first of ``0, 0.1, …, 1`` minimising the mean over series of
``combine_metric`` (MASE, or sMAPE) of ``ŷ`` on the held-out points; then the GRU and the statistical model are
refitted on the whole series. ``w = 1`` is the GRU alone, ``w = 0`` the statistical forecast.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from grukit.datasets._packages import require
from grukit.tasks._base import GRUEstimator, recurrent_layer, run_recurrent
from grukit.tasks.baselines import ets_forecast, is_seasonal, mase, naive_forecast, smape, theta_forecast
from grukit.text import BucketBatches
from grukit.train import seed_everything

STRATEGIES = ("direct", "recursive")
DIFFERENCING = ("auto", "none", "first", "seasonal")
# pandas frequency code (without multiple or anchor) -> season length
SEASONS = {
    "Y": 1, "YS": 1, "YE": 1, "A": 1, "AS": 1, "BA": 1, "BY": 1, "BYS": 1, "BYE": 1,
    "Q": 4, "QS": 4, "QE": 4, "BQ": 4, "BQS": 4, "BQE": 4,
    "M": 12, "MS": 12, "ME": 12, "BM": 12, "BMS": 12, "BME": 12, "SM": 24, "SMS": 24, "SME": 24,
    "W": 52, "D": 7, "B": 5, "C": 5, "h": 24, "H": 24, "bh": 8, "BH": 8, "min": 60, "T": 60,
}
MIN_CALIBRATION_WINDOWS = 5
SEASON_CANDIDATES = (4, 7, 12, 24, 52)
COMBINATIONS = (None, "theta", "ets")
COMBINE_METRICS = ("mase", "smape")
COMBINE_GRID = tuple(k / 10 for k in range(11))  # the weights w tried on the validation split
MIN_STATISTICAL_POINTS = 4  # shorter series get the naive forecast in the combination


def season_from_frequency(freq: str | None) -> int | None:
    """The season length of a pandas frequency string (``"MS"`` → 12, ``"W-SAT"`` → 52), ``None`` when it has
    none grukit knows (a multiple such as ``"2D"`` included)."""
    if not freq:
        return None
    code = freq.split("-")[0]
    return SEASONS.get(code)


def dates_of(series: object) -> tuple[object, str | None] | None:
    """``(index, frequency)`` of a pandas object with a ``DatetimeIndex`` (frequency from the index, else
    inferred, else ``None``); ``None`` for anything else."""
    index = getattr(series, "index", None)
    if index is None or type(index).__name__ != "DatetimeIndex":
        return None
    import pandas as pd

    freq = index.freqstr if index.freq is not None else (pd.infer_freq(index) if len(index) >= 3 else None)
    return index, freq


def detect_season(values: np.ndarray, candidates: Sequence[int] = SEASON_CANDIDATES) -> int:
    """The season length of ``values`` ``(n,)``: of the ``candidates`` ``m`` with at least ``3m`` first differences
    ``d``, the one whose autocorrelation ``r_m`` of ``d`` is largest, provided it is significant,
    ``r_m > max(0.3, 2.58 √((1 + 2 Σ_{k<m} r_k²) / len(d)))`` (Bartlett's standard error, 99 %); 1 when none is."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    centred = d - d.mean() if len(d) else d
    energy = float((centred**2).sum())
    best, best_r = 1, 0.0
    for m in candidates:
        if len(d) < 3 * m or energy == 0:
            continue
        r = np.array([(centred[k:] * centred[:-k]).sum() / energy for k in range(1, m + 1)])  # r_1..r_m
        limit = max(0.3, 2.58 * math.sqrt((1 + 2 * (r[:-1] ** 2).sum()) / len(d)))
        if r[-1] > limit and r[-1] > best_r:
            best, best_r = m, float(r[-1])
    return best


def prefers_log(values: np.ndarray, season: int) -> bool:
    """Whether a positive series ``(n,)`` with season ``m`` is better described with multiplicative seasonality.
    Classical decomposition: trend ``T_t`` the centred ``m``-moving average (``2×m`` for even ``m``), seasonal
    indices the mean per phase of ``x − T`` (additive) or ``x / T`` (multiplicative); ``True`` when the
    multiplicative remainder ``Σ (x − T·S)²`` is below 0.9 × the additive ``Σ (x − T − S)²``. ``False`` without a
    season, with values ``≤ 0`` or fewer than three seasons."""
    x = np.asarray(values, dtype=np.float64)
    if season < 2 or len(x) < 3 * season or (x <= 0).any():
        return False
    weights = np.ones(season) if season % 2 else np.r_[0.5, np.ones(season - 1), 0.5]
    trend = np.convolve(x, weights / season, mode="valid")  # (n − 2·half,)
    half = (len(weights) - 1) // 2
    middle = x[half : half + len(trend)]
    phase = np.arange(half, half + len(trend)) % season
    additive, ratio = middle - trend, middle / trend
    add_index = np.array([additive[phase == p].mean() for p in range(season)])
    mul_index = np.array([ratio[phase == p].mean() for p in range(season)])
    add_error = ((additive - add_index[phase]) ** 2).sum()
    mul_error = ((middle - trend * mul_index[phase]) ** 2).sum()
    return bool(mul_error < 0.9 * add_error)


def smoothing_states(u: np.ndarray, season: int) -> tuple[np.ndarray, np.ndarray]:
    """Level ``ℓ_t`` and seasonal ``s_t`` states ``(n,)`` each of exponential smoothing without trend fitted to
    ``u`` ``(n,)`` (statsmodels' ``ExponentialSmoothing``, additive season when ``n ≥ 3m``, else none and
    ``s = 0``)."""
    holtwinters = require("statsmodels.tsa.holtwinters", "statsmodels", "Forecaster(hybrid=True)")
    seasonal = season > 1 and len(u) >= 3 * season
    heuristic = len(u) >= max(10, 2 * season + 2)  # statsmodels' heuristic start needs two seasons, ten points
    model = holtwinters.ExponentialSmoothing(
        u, seasonal="add" if seasonal else None, seasonal_periods=season if seasonal else None,
        initialization_method="heuristic" if heuristic else "estimated",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from the optimizer
        fitted = model.fit()
    states = np.asarray(fitted.season if seasonal else np.zeros(len(u)), dtype=np.float64)
    return np.asarray(fitted.level, dtype=np.float64), states


def statistical_forecast(method: str, values: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The ``horizon`` forecasts ``(horizon,)`` of ``method`` fitted to ``values`` ``(n,)``: ``"theta"``
    (:func:`grukit.tasks.baselines.theta_forecast`) or ``"ets"`` (damped additive trend; a multiplicative season,
    additive for a series with values ``≤ 0``, when :func:`grukit.tasks.baselines.is_seasonal` holds). Fewer than
    ``MIN_STATISTICAL_POINTS`` points, a constant series, or a fit that does not give finite numbers, give the
    naive forecast."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < MIN_STATISTICAL_POINTS or np.ptp(x) == 0:  # statsmodels' Theta fits a drift even to a flat line
        return naive_forecast(x, horizon)
    if method == "theta":
        forecast = theta_forecast(x, horizon, season)
    else:
        seasonal = ("mul" if (x > 0).all() else "add") if is_seasonal(x, season) else None
        forecast = ets_forecast(x, horizon, season, trend="add", damped=True, seasonal=seasonal)
    return forecast if np.isfinite(forecast).all() else naive_forecast(x, horizon)


def combination_scores(
    actuals: Sequence[np.ndarray], learned: Sequence[np.ndarray], statistical: Sequence[np.ndarray],
    trains: Sequence[np.ndarray], season: int, metric: str, grid: Sequence[float] = COMBINE_GRID,
) -> np.ndarray:
    """The mean over series of ``metric`` (``"mase"`` or ``"smape"``) of ``w · learned + (1 − w) · statistical``
    against ``actuals``, for every ``w`` in ``grid``: ``(len(grid),)``. Series whose score is not finite (a
    constant training series under MASE, zeros under sMAPE) are left out of every mean alike."""
    table = []
    for actual, gru, stat, train in zip(actuals, learned, statistical, trains):
        m = season if len(train) > season else 1
        if len(train) <= m:  # one point: no in-sample error to scale MASE by
            continue
        forecasts = [w * np.asarray(gru) + (1 - w) * stat for w in grid]
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "mase":
                table.append([mase(actual, forecast, train, m) for forecast in forecasts])
            else:
                table.append([smape(actual, forecast) for forecast in forecasts])
    table = np.asarray(table, dtype=np.float64).reshape(-1, len(grid))  # (series, weights)
    table = table[np.isfinite(table).all(axis=1)]
    if not len(table):
        raise ValueError(
            f"Forecaster could not score the combination: no series has a finite validation {metric} (constant "
            "or zero series); give combine_weight explicitly"
        )
    return table.mean(axis=0)


def is_collection(series: object) -> bool:
    """Whether ``series`` is several series (a list or tuple of 1-D sequences) rather than one."""
    return (
        isinstance(series, (list, tuple)) and len(series) > 0
        and all(not isinstance(item, (str, bytes)) and np.ndim(item) == 1 for item in series)
    )


def future_dates(last: str, freq: str, horizon: int):
    """The ``horizon`` dates after ``last`` at frequency ``freq`` (a ``pandas.DatetimeIndex``)."""
    import pandas as pd

    return pd.date_range(start=pd.Timestamp(last), periods=horizon + 1, freq=freq)[1:]


def pinball_loss(quantiles: Tensor) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """``loss(outputs (B, h, Q), targets (B, h), mask=None)``: mean pinball loss over levels ``quantiles`` ``(Q,)``."""

    def loss(outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        error = targets.unsqueeze(-1) - outputs  # (B, h, Q)
        return torch.maximum(quantiles * error, (quantiles - 1.0) * error).mean()

    return loss


class ForecastNet(nn.Module):
    """GRU over the window, a linear map of its last state to ``(steps, Q)``.
    Shapes: ``x`` ``(B, L, 1 + 2·[season > 1])`` → ``(B, steps, Q)``."""

    def __init__(self, features: int, hidden_size: int, num_layers: int, steps: int, levels: int, cell: str) -> None:
        super().__init__()
        self.steps, self.levels = steps, levels
        self.rnn = recurrent_layer(cell, features, hidden_size, num_layers=num_layers)
        self.head = nn.Linear(hidden_size, steps * levels)

    def forward(self, x: Tensor) -> Tensor:
        _, h_n = run_recurrent(self.rnn, x, None)  # (L, B, H)
        return self.head(h_n[-1]).view(-1, self.steps, self.levels)  # (B, steps, Q)


class Forecaster(GRUEstimator):
    """Forecast a univariate series ``horizon`` steps ahead (see the module docstring for the method).

    ``fit`` takes one series, or a list of series for global mode (see the module docstring); ``predict`` and
    ``predict_interval`` then give a list, one entry per series.

    Args:
        horizon: steps to forecast (the most ``predict`` gives with the direct strategy).
        lookback: past steps the GRU reads, ``L`` (``None``: chosen from the season, horizon and length; in
            global mode a tuple trains one network per lookback, e.g. ``(12, 18, 24)``).
        season: season length ``m`` (12 for monthly data with a yearly cycle; 1 for none; ``None``: from the
            frequency of a pandas ``DatetimeIndex``, else detected, else none).
        differencing: ``"auto"`` (seasonal with a season, else first), ``"seasonal"``, ``"first"`` or ``"none"``
            (one series; global mode normalises by windows instead).
        log: model ``log x`` (the series must be positive); ``"auto"``: for a positive series with multiplicative
            seasonality, and in global mode whenever every series is positive.
        hybrid: global mode: level and seasonality from per-series exponential smoothing (statsmodels), the GRU
            forecasts the remainder.
        ensemble: global mode: networks (seeds) per lookback; forecasts are the median over all networks.
        windows_per_series: global mode: train on each series' latest windows only (``None``: all).
        strategy: ``"direct"`` or ``"recursive"``.
        quantiles: levels for the direct strategy, including 0.5 (the point forecast); the outer two bound the
            prediction interval (0.1 and 0.9: an 80 % interval).
        calibration: share of the latest windows held out to calibrate the interval (0 keeps the raw quantiles;
            fewer than 5 windows also do, with a warning).
        hidden_size, num_layers, cell: the recurrent network (``cell="lstm"`` for comparisons).
        epochs, batch_size, learning_rate, random_state, verbose: training.
        combine: ``"theta"`` or ``"ets"`` combines the GRU's forecast with that statistical model's (see the module
            docstring), ``None`` forecasts with the GRU alone (direct strategy only).
        combine_weight: the GRU's weight ``w`` in ``[0, 1]``; ``None`` chooses it on the last ``horizon`` points
            of the training series.
        combine_metric: ``"mase"`` or ``"smape"``, the validation score that chooses ``w``.

    Fitted: ``series_`` (the training series), ``season_``, ``log_``, ``lookback_`` and ``differencing_`` (as used),
    ``global_`` (global mode: per series ``y``, anchors, ``σ`` and seasonal tail; ``None`` for one series),
    ``dates_`` (the last
    date and the frequency, or ``None``), ``module_`` (the network), ``mean_`` and ``std_`` (the scaling),
    ``levels_`` (the quantile levels it outputs), ``interval_correction_`` ``(horizon,)`` (the conformal widening
    ``c_k``, log scale with log=True), ``coverage_`` (the interval's nominal coverage), ``history_``,
    ``combine_`` (the ``combine`` it was fitted with; predictions follow it, not a later ``set_params``),
    ``combine_weight_`` (``w``; 1.0 without ``combine``), ``combine_scores_`` (the validation score of each weight
    in ``COMBINE_GRID`` when ``w`` was chosen, else ``None``), ``statistical_`` ``(S, horizon)`` (the statistical
    forecasts after each fitted series, ``S = 1`` for one series; ``None`` without ``combine``).
    """

    def __init__(
        self,
        horizon: int = 12,
        lookback: int | tuple[int, ...] | None = None,
        season: int | None = None,
        differencing: str = "auto",
        log: bool | str = "auto",
        hybrid: bool = False,
        ensemble: int = 1,
        windows_per_series: int | None = None,
        strategy: str = "direct",
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        calibration: float = 0.2,
        hidden_size: int = 16,
        num_layers: int = 1,
        cell: str = "gru",
        epochs: int = 50,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
        combine: str | None = None,
        combine_weight: float | None = None,
        combine_metric: str = "mase",
    ) -> None:
        self.horizon = horizon
        self.lookback = lookback
        self.season = season
        self.differencing = differencing
        self.log = log
        self.hybrid = hybrid
        self.ensemble = ensemble
        self.windows_per_series = windows_per_series
        self.strategy = strategy
        self.quantiles = quantiles
        self.calibration = calibration
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose
        self.combine = combine
        self.combine_weight = combine_weight
        self.combine_metric = combine_metric

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags

    # Transforms ------------------------------------------------------------------------------------------
    @property
    def _lag(self) -> int:
        return {"none": 0, "first": 1, "seasonal": self.season_}[self.differencing_]

    @property
    def _steps(self) -> int:
        return self.horizon if self.strategy == "direct" else 1

    def _check_parameters(self) -> None:
        """Refuse settings that cannot work, whatever the series."""
        value = self.horizon
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Forecaster expected horizon to be a positive integer, got {value!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Forecaster expected strategy in {STRATEGIES}, got {self.strategy!r}")
        season = self.season
        if season is not None and (isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1):
            raise ValueError(f"Forecaster expected season to be a positive integer or None, got {season!r}")
        if self.differencing not in DIFFERENCING:
            raise ValueError(f"Forecaster expected differencing in {DIFFERENCING}, got {self.differencing!r}")
        if self.log not in (True, False, "auto"):
            raise ValueError(f"Forecaster expected log to be True, False or 'auto', got {self.log!r}")
        lookbacks = self.lookback if isinstance(self.lookback, (tuple, list)) else (self.lookback,)
        if self.lookback is not None and not (lookbacks and all(
            not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1 for value in lookbacks
        )):
            raise ValueError(
                f"Forecaster expected lookback to be a positive integer, a tuple of them or None, got {self.lookback!r}"
            )
        for name in ("ensemble", *(("windows_per_series",) if self.windows_per_series is not None else ())):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Forecaster expected {name} to be a positive integer, got {value!r}")
        self._check_combination()

    def _check_combination(self) -> None:
        if self.combine not in COMBINATIONS:
            raise ValueError(f"Forecaster expected combine in {COMBINATIONS}, got {self.combine!r}")
        if self.combine_metric not in COMBINE_METRICS:
            raise ValueError(f"Forecaster expected combine_metric in {COMBINE_METRICS}, got {self.combine_metric!r}")
        weight = self.combine_weight
        if weight is not None:
            if self.combine is None:
                raise ValueError(
                    f"Forecaster got combine_weight={weight!r} without a model to combine with; set combine='theta' "
                    "or 'ets'"
                )
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight <= 1:
                raise ValueError(f"Forecaster expected combine_weight to be a number in [0, 1] or None, got {weight!r}")
        if self.combine is not None and self.strategy != "direct":
            raise ValueError(
                f"Forecaster combines forecasts with strategy='direct' only, got strategy={self.strategy!r} and "
                f"combine={self.combine!r}"
            )

    def _settle(self, series: object, values: np.ndarray) -> None:
        """Set ``dates_``, ``season_``, ``log_``, ``differencing_`` and ``lookback_`` from the parameters and one
        ``series`` (its index and ``values``)."""
        self._check_parameters()
        if self.hybrid or self.ensemble != 1 or isinstance(self.lookback, (tuple, list)) or self.windows_per_series:
            raise ValueError(
                "Forecaster: hybrid=True, ensemble > 1, several lookbacks and windows_per_series work in global mode, "
                "fit(list of series); got one series (wrap it as fit([series]) to use them)"
            )
        usable = values.ndim == 1 and bool(np.isfinite(values).all())  # else _validate says what is wrong
        dates = dates_of(series)
        if dates is not None and dates[1] is None:
            warnings.warn(
                "Forecaster: the series' DatetimeIndex has no regular frequency, so forecasts are numbered steps, "
                "not dates; give the index a frequency (series.asfreq('MS') for monthly data)",
                stacklevel=4,
            )
        self.dates_ = {"last": dates[0][-1].isoformat(), "freq": dates[1]} if dates and dates[1] else None
        inferred = season_from_frequency(dates[1]) if dates else None
        if self.season is not None:
            self.season_ = int(self.season)
        elif inferred is not None:
            self.season_ = inferred
        else:
            self.season_ = detect_season(values) if usable else 1
        if self.differencing == "auto":
            self.differencing_ = "seasonal" if self.season_ > 1 else "first"
        else:
            self.differencing_ = self.differencing
        self.log_ = bool(self.log) if self.log != "auto" else usable and prefers_log(values, self.season_)
        if self.lookback is not None:
            self.lookback_ = int(self.lookback)
        else:  # half of the span that windows can start in, at most max(3m, 3h)
            span = len(values) - self._lag - self._steps + 1
            self.lookback_ = max(1, min(3 * max(self.season_, self.horizon), span // 2))

    def _validate(self, series: np.ndarray) -> None:
        if self.differencing_ == "seasonal" and self.season_ < 2:
            raise ValueError(
                f"Forecaster: differencing='seasonal' needs season > 1 (e.g. 12 for monthly data), got {self.season!r}"
            )
        self._check_quantiles()
        share = self.calibration
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share < 1:
            raise ValueError(f"Forecaster expected calibration to be a share in [0, 1), got {share!r}")
        if series.ndim != 1:
            raise ValueError(f"Forecaster expected a 1-D series, got shape {series.shape}")
        if not np.isfinite(series).all():
            raise ValueError("Forecaster got NaN or infinite values; fill or drop them first")
        if self.log_ and (series <= 0).any():
            raise ValueError("Forecaster with log=True needs a positive series; it has values <= 0")
        needed = self._lag + self.lookback_ + self._steps + 1
        if len(series) < needed:
            shrinks = "; the lookback shrinks to fit shorter series" if self.lookback is None else ""
            raise ValueError(
                f"Forecaster needs at least {needed} points (differencing lag {self._lag} + lookback "
                f"{self.lookback_} + horizon, and one window more{shrinks}), got {len(series)}"
            )

    def _check_quantiles(self) -> None:
        levels = tuple(self.quantiles) if isinstance(self.quantiles, (tuple, list, np.ndarray)) else None
        if levels is None or not all(
            isinstance(q, numbers.Real) and not isinstance(q, bool) and 0 < q < 1 for q in levels
        ):
            raise ValueError(
                f"Forecaster expected quantiles to be levels strictly between 0 and 1 (e.g. (0.1, 0.5, 0.9)), "
                f"got {self.quantiles!r}"
            )
        if 0.5 not in levels:
            raise ValueError(
                f"Forecaster expected quantiles to include 0.5 (the point forecast), got {self.quantiles!r}"
            )

    def _features(self, z: np.ndarray, start: int) -> np.ndarray:
        """``(len(z), 1 + 2·[season > 1])``: the values and the season phase of positions ``start, start+1, …``."""
        columns = [z]
        if self.season_ > 1:
            phase = 2 * np.pi * (np.arange(start, start + len(z)) % self.season_) / self.season_
            columns += [np.sin(phase), np.cos(phase)]
        return np.stack(columns, axis=1).astype(np.float32)

    def _log(self, values: np.ndarray) -> np.ndarray:
        return np.log(values) if self.log_ else values

    # Fit / predict --------------------------------------------------------------------------------------
    def fit(self, series: Sequence[float] | np.ndarray | Sequence[Sequence[float]], y: None = None) -> Forecaster:
        """Fit on the whole ``series`` (a list, array or ``pandas.Series``); forecasts start after its end. A list
        of series fits one network to all of them (global mode). With ``combine``, the weight is chosen first on
        the series without their last ``horizon`` points (see the module docstring)."""
        self._check_combination()
        collection = is_collection(series)
        if self.combine is not None and self.combine_weight is None:
            weight, scores = self._choose_weight(series, collection)
        else:
            weight, scores = (1.0 if self.combine is None else float(self.combine_weight)), None
        if collection:
            self._fit_global(series)
        else:
            self._fit_one(series)
        self.combine_, self.combine_weight_, self.combine_scores_ = self.combine, weight, scores
        self.statistical_ = None if self.combine is None else np.stack([
            statistical_forecast(self.combine, values, self.horizon, self.season_)
            for values in (self.series_ if collection else [self.series_])
        ])  # (S, horizon)
        return self

    def _choose_weight(self, series: object, collection: bool) -> tuple[float, list[float]]:
        """``w`` and the validation score of every weight in ``COMBINE_GRID``: a copy without the combination is
        fitted to each series but its last ``horizon`` points and forecasts them, as does the statistical model."""
        horizon = self.horizon
        items = [np.asarray(item, dtype=np.float64) for item in (series if collection else [series])]
        kept = [values for values in items if len(values) >= horizon + 2]
        if not kept:
            raise ValueError(
                f"Forecaster(combine={self.combine!r}) chooses its weight on the last {horizon} points of the series, "
                f"which leaves fewer than 2 points (the longest has {max(len(v) for v in items)}); give combine_weight"
            )
        parts, actuals = [values[:-horizon] for values in kept], [values[-horizon:] for values in kept]
        params = {**self.get_params(), "combine": None, "combine_weight": None, "verbose": 0}
        dates = dates_of(series) if not collection else None
        season = self.season
        if season is None:  # the frequency of the dates, which the plain arrays below no longer carry
            season = season_from_frequency(dates[1]) if dates and dates[1] else None
        try:
            inner = type(self)(**{**params, "season": season}).fit(parts if collection else parts[0])
        except ValueError as error:
            raise ValueError(
                f"Forecaster(combine={self.combine!r}) chooses its weight on the series without their last {horizon} "
                f"points, and that fit failed: {error}. Give combine_weight explicitly, or a longer series"
            ) from error
        learned = inner.predict() if collection else [inner.predict()]
        statistical = [statistical_forecast(self.combine, part, horizon, inner.season_) for part in parts]
        scores = combination_scores(actuals, learned, statistical, parts, inner.season_, self.combine_metric)
        return float(COMBINE_GRID[int(np.argmin(scores))]), scores.tolist()

    def _fit_one(self, series: Sequence[float] | np.ndarray) -> None:
        """Fit one series (see the module docstring)."""
        self.global_ = None
        values = np.asarray(series, dtype=np.float64)
        self._settle(series, values)
        self._validate(values)
        self._prepare_fit("hidden_size", "num_layers")
        self.series_ = values
        u = self._log(values)
        d = u[self._lag :] - u[: -self._lag] if self._lag else u
        # powers of two scale exactly: the same mean and std as d's own, without squaring values near 1e200
        scale = np.ldexp(1.0, int(np.frexp(np.abs(d).max())[1]))
        self.mean_, self.std_ = float((d / scale).mean() * scale), float((d / scale).std() * scale + 1e-8)
        z = (d - self.mean_) / self.std_
        features = self._features(z, self._lag)  # (N, F), position t of d is t + lag in the series
        steps = self._steps
        self.levels_ = tuple(self.quantiles) if self.strategy == "direct" else (0.5,)
        lookback = self.lookback_
        starts = np.arange(len(z) - lookback - steps + 1)
        windows = torch.as_tensor(np.stack([features[s : s + lookback] for s in starts]))  # (W, L, F)
        targets = torch.as_tensor(
            np.stack([z[s + lookback : s + lookback + steps] for s in starts]), dtype=torch.float32
        )  # (W, steps)
        self.interval_correction_ = [0.0] * steps
        held_out = int(round(self.calibration * len(starts))) if self.strategy == "direct" else 0
        trained = len(starts) - held_out - steps + 1  # windows whose targets end before the held-out ones begin
        if self.strategy == "direct" and self.calibration > 0:
            if held_out >= MIN_CALIBRATION_WINDOWS and trained >= held_out:
                self.module_ = self._fit_network(windows[:trained], targets[:trained])
                self.interval_correction_ = self._conformal(u, starts[-held_out:], windows[-held_out:]).tolist()
            else:
                warnings.warn(
                    f"Forecaster: {len(starts)} windows leave too few to calibrate the interval (calibration="
                    f"{self.calibration} holds out {held_out}, at least {MIN_CALIBRATION_WINDOWS} needed, and as "
                    "many to train on); predict_interval gives the raw quantiles",
                    stacklevel=3,
                )
        self.module_ = self._fit_network(windows, targets)

    # Global mode ----------------------------------------------------------------------------------------
    def _fit_global(self, collection: Sequence) -> None:
        """Fit one network per (lookback, seed) to the windows of every series in ``collection``."""
        self._check_parameters()
        self._check_quantiles()
        if self.strategy != "direct":
            raise ValueError(f"Forecaster's global mode forecasts with strategy='direct', got {self.strategy!r}")
        series = [np.asarray(item, dtype=np.float64) for item in collection]
        for index, values in enumerate(series):
            if not np.isfinite(values).all():
                raise ValueError(f"Forecaster got NaN or infinite values in series {index}; fill or drop them first")
            if len(values) < 2:
                raise ValueError(f"Forecaster's global mode needs 2 points or more per series, series {index} has "
                                 f"{len(values)}")
            if self.log is True and (values <= 0).any():
                raise ValueError(f"Forecaster with log=True needs positive series; series {index} has values <= 0")
        if all(len(values) <= self.horizon for values in series):
            raise ValueError(
                f"Forecaster needs a series longer than the horizon ({self.horizon}) to learn from; the longest has "
                f"{max(len(values) for values in series)} points"
            )
        self._prepare_fit("hidden_size", "num_layers")
        dated = [dates_of(item) for item in collection]
        self.dates_ = [{"last": d[0][-1].isoformat(), "freq": d[1]} if d and d[1] else None for d in dated]
        inferred = season_from_frequency(next((d[1] for d in dated if d and d[1]), None))
        if self.season is not None:
            self.season_ = int(self.season)
        else:  # the frequency, else the season most series show
            self.season_ = inferred or Counter(detect_season(values) for values in series).most_common(1)[0][0]
        self.log_ = all((values > 0).all() for values in series) if self.log == "auto" else bool(self.log)
        lookbacks = self.lookback if isinstance(self.lookback, (tuple, list)) else (self.lookback,)
        default = max(2 * self.season_, self.horizon)
        self.lookback_ = tuple(int(value) if value is not None else default for value in lookbacks)
        self.differencing_, self.levels_ = "none", tuple(self.quantiles)
        self.series_ = series
        self.global_ = [self._series_state(values) for values in series]
        members = []
        for lookback in self.lookback_:
            windows, targets = self._global_windows(lookback)
            members += [self._fit_network(windows, targets, self.random_state + seed) for seed in range(self.ensemble)]
        self.module_ = nn.ModuleList(members)

    def _series_state(self, values: np.ndarray) -> dict:
        """What global mode keeps of one series: ``y`` (deseasonalised, log with log_), the anchors ``a_t``, the
        scale ``σ`` and ``tail``, the seasonal states the forecasts repeat ``(m,)`` (see the module docstring)."""
        u = np.log(values) if self.log_ else values
        level, seasonal = smoothing_states(u, self.season_) if self.hybrid else (None, np.zeros(len(u)))
        y = u - seasonal
        sigma = float(np.diff(y).std()) if len(y) > 2 else 0.0
        if not sigma > 1e-9 * (1.0 + np.abs(y).mean()):  # a constant series: any positive scale will do
            sigma = 1e-3 * (1.0 + float(np.abs(y).mean()))
        tail = np.zeros(self.season_)
        tail[self.season_ - min(self.season_, len(u)) :] = seasonal[-self.season_ :]
        return {"y": y.tolist(), "anchor": (level if self.hybrid else y).tolist(), "sigma": sigma,
                "tail": tail.tolist()}

    def _global_windows(self, lookback: int) -> tuple[Tensor, Tensor]:
        """Training windows ``(W, L, 1)`` and targets ``(W, h)`` of every series: window ends ``T`` from
        ``min(L − 1, ⌊(n − h)/2⌋)`` (short series are padded) to ``n − h − 1``, the latest ``windows_per_series``."""
        horizon, inputs, targets = self.horizon, [], []
        for state in self.global_:
            y, anchor, sigma = np.asarray(state["y"]), np.asarray(state["anchor"]), state["sigma"]
            last = len(y) - horizon - 1
            if last < 0:
                continue
            ends = np.arange(min(lookback - 1, max(1, (len(y) - horizon) // 2), last), last + 1)
            if self.windows_per_series:
                ends = ends[-self.windows_per_series :]
            padded = np.r_[np.full(lookback, y[0]), y]  # y_t sits at t + L
            windows = np.lib.stride_tricks.sliding_window_view(padded, lookback)[ends + 1]  # (E, L): y_{T−L+1..T}
            future = np.lib.stride_tricks.sliding_window_view(y, horizon)[ends + 1]  # (E, h): y_{T+1..T+h}
            inputs.append((windows - anchor[ends, None]) / sigma)
            targets.append((future - anchor[ends, None]) / sigma)
        return (torch.as_tensor(np.concatenate(inputs)[:, :, None], dtype=torch.float32),
                torch.as_tensor(np.concatenate(targets), dtype=torch.float32))

    @torch.no_grad()
    def _global_quantiles(self, horizon: int) -> np.ndarray:
        """Quantile forecasts of ``u`` ``(S, horizon, Q)``, levels sorted: the median over the networks of
        ``a_n + σ ẑ_k + s_{n+k}``."""
        anchor = np.array([state["anchor"][-1] for state in self.global_])  # (S,)
        sigma = np.array([state["sigma"] for state in self.global_])  # (S,)
        steps = np.arange(horizon) % self.season_
        seasonal = np.array([np.asarray(state["tail"])[steps] for state in self.global_])  # (S, horizon)
        forecasts, networks = [], iter(self.module_)
        for lookback in self.lookback_:
            windows = np.stack([np.r_[np.full(lookback, state["y"][0]), state["y"]][-lookback:]
                                for state in self.global_])  # (S, L)
            batch = torch.as_tensor(((windows - anchor[:, None]) / sigma[:, None])[:, :, None], dtype=torch.float32)
            # each network's levels sorted (quantile crossing); the median of sorted levels stays sorted
            forecasts += [np.sort(next(networks)(batch)[:, :horizon].numpy(), axis=2) for _ in range(self.ensemble)]
        z = np.median(np.stack(forecasts), axis=0)  # (S, horizon, Q)
        return anchor[:, None, None] + sigma[:, None, None] * z + seasonal[:, :, None]

    def _fit_network(self, windows: Tensor, targets: Tensor, seed: int | None = None) -> ForecastNet:
        seed = self.random_state if seed is None else seed
        seed_everything(seed)
        module = self._network()
        batches = BucketBatches(
            len(windows), self.batch_size, lambda idx: (windows[idx], targets[idx]), shuffle=True, seed=seed,
        )
        self._train(module, batches, pinball_loss(torch.tensor(self.levels_)))
        return module

    @torch.no_grad()
    def _conformal(self, u: np.ndarray, starts: np.ndarray, windows: Tensor) -> np.ndarray:
        """The widening ``c_k`` ``(steps,)`` from the held-out windows at ``starts`` (see the module docstring)."""
        z = np.sort(self.module_(windows).numpy(), axis=2)  # (n, steps, Q)
        scores = []
        for window, start in zip(z, starts):
            origin = start + self.lookback_ + self._lag  # the first forecast position in the series
            actual = u[origin : origin + self._steps]
            lower, upper = self._undo_u(u[:origin], window[:, 0]), self._undo_u(u[:origin], window[:, -1])
            scores.append(np.maximum(lower - actual, actual - upper))
        scores = np.asarray(scores)  # (n, steps)
        n = len(scores)
        rank = min(1.0, math.ceil((n + 1) * self.coverage_) / n)
        return np.quantile(scores, rank, axis=0, method="higher")

    @property
    def coverage_(self) -> float:
        """The nominal coverage of :meth:`predict_interval`: the outer quantile levels' distance."""
        return float(max(self.levels_) - min(self.levels_))

    def _network(self) -> ForecastNet:
        features = 3 if self.season_ > 1 and not self.global_ else 1
        return ForecastNet(features, self.hidden_size, self.num_layers, self._steps, len(self.levels_), self.cell)

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        combination = {
            "combine_weight": self.combine_weight_,
            "combine_scores": self.combine_scores_,
            "statistical": None if self.statistical_ is None else self.statistical_.tolist(),
        }
        if self.global_:
            return {
                **combination,
                "series": [values.tolist() for values in self.series_],
                "global": self.global_,
                "levels": self.levels_,
                "season": self.season_,
                "dates": self.dates_,
                "lookback": list(self.lookback_),
                "log": self.log_,
            }, {}
        return {
            **combination,
            "series": self.series_.tolist(),
            "mean": self.mean_,
            "std": self.std_,
            "levels": self.levels_,
            "season": self.season_,
            "differencing": self.differencing_,
            "dates": self.dates_,
            "interval_correction": self.interval_correction_,
            "lookback": self.lookback_,
            "log": self.log_,
        }, {}

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.global_ = fitted.get("global")
        # folders from before the combination existed forecast with the GRU alone
        self.combine_ = self.combine
        self.combine_weight_ = float(fitted.get("combine_weight", 1.0))
        self.combine_scores_ = fitted.get("combine_scores")
        statistical = fitted.get("statistical")
        self.statistical_ = None if statistical is None else np.asarray(statistical, dtype=np.float64)
        if (self.statistical_ is None) != (self.combine is None):
            raise ValueError(
                f"Forecaster's saved folder has combine={self.combine!r} but "
                + ("no statistical forecasts" if self.statistical_ is None else "statistical forecasts")
                + "; the folder was edited or is damaged"
            )
        if self.global_:
            self.series_ = [np.asarray(values, dtype=np.float64) for values in fitted["series"]]
            self.levels_, self.season_, self.dates_ = tuple(fitted["levels"]), int(fitted["season"]), fitted["dates"]
            self.lookback_, self.log_, self.differencing_ = tuple(fitted["lookback"]), bool(fitted["log"]), "none"
            self.module_ = nn.ModuleList(self._network() for _ in range(len(self.lookback_) * self.ensemble))
            return
        self.series_ = np.asarray(fitted["series"], dtype=np.float64)
        self.mean_, self.std_, self.levels_ = fitted["mean"], fitted["std"], tuple(fitted["levels"])
        # folders from before season / differencing were fitted attributes hold them in the parameters only
        self.season_ = int(fitted.get("season", self.season or 1))
        self.differencing_ = fitted.get("differencing", self.differencing)
        self.dates_ = fitted.get("dates")
        self.interval_correction_ = list(fitted.get("interval_correction", [0.0] * self._steps))
        self.lookback_ = int(fitted.get("lookback", self.lookback))
        self.log_ = bool(fitted.get("log", self.log))
        self.module_ = self._network()

    def _history(self, series: object | None) -> tuple[np.ndarray, dict | None]:
        """The values forecasts follow (``series``, else the fitted series) and their dates record."""
        if series is None:
            return self.series_, self.dates_
        values = np.asarray(series, dtype=np.float64)
        if values.ndim != 1 or not np.isfinite(values).all() or (self.log_ and (values <= 0).any()):
            raise ValueError(
                "Forecaster expected series to be 1-D finite numbers" + (" > 0 (log=True)" if self.log_ else "")
                + f", got shape {values.shape}"
            )
        if len(values) < self._lag + self.lookback_:
            raise ValueError(
                f"Forecaster reads the last {self._lag + self.lookback_} points (lookback {self.lookback_} + "
                f"differencing lag {self._lag}), got a series of {len(values)}"
            )
        dates = dates_of(series)
        freq = self.dates_["freq"] if self.dates_ else dates[1] if dates else None
        return values, ({"last": dates[0][-1].isoformat(), "freq": freq} if dates and freq else None)

    @torch.no_grad()
    def _forecast_z(self, values: np.ndarray, horizon: int) -> np.ndarray:
        """Forecasts of the standardised differenced series after ``values``, ``(horizon, Q)``."""
        u = self._log(values)
        d = u[self._lag :] - u[: -self._lag] if self._lag else u
        z = list((d - self.mean_) / self.std_)
        if self.strategy == "direct":
            window = self._features(np.asarray(z[-self.lookback_ :]), self._lag + len(z) - self.lookback_)
            return self.module_(torch.as_tensor(window)[None])[0, :horizon].numpy()  # (horizon, Q)
        for _ in range(horizon):
            window = self._features(np.asarray(z[-self.lookback_ :]), self._lag + len(z) - self.lookback_)
            z.append(float(self.module_(torch.as_tensor(window)[None])[0, 0, 0]))
        return np.asarray(z[-horizon:])[:, None]

    def _undo_u(self, u_history: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Standardised differences ``(h,)`` after ``u_history`` → forecasts of ``u`` (log scale with log=True)."""
        d = z.astype(np.float64) * self.std_ + self.mean_  # float64: a float32 product overflows beyond 3.4e38
        u = list(u_history[-self._lag :]) if self._lag else []
        for step in d:
            u.append(step + (u[-self._lag] if self._lag else 0.0))
        return np.asarray(u[len(u) - len(d) :])

    def _to_values(self, u: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            forecast = np.exp(u) if self.log_ else u
        if not np.isfinite(forecast).all():
            raise ValueError(
                "Forecaster's forecast overflows float64 (the series is near its largest value, 1.8e308); "
                "rescale the series first, e.g. divide it by its maximum"
            )
        return forecast

    def _output(self, values: np.ndarray, dates: dict | None):
        """``values`` as they go out: a ``pandas.Series`` indexed by the future dates when the input had dates."""
        if dates is None:
            return values
        import pandas as pd

        return pd.Series(values, index=future_dates(dates["last"], dates["freq"], len(values)))

    def _global_dates(self, series: object | None) -> list:
        if series is not None:
            raise ValueError(
                "Forecaster in global mode forecasts after the series it was fitted on; predict(series=...) reads a "
                "newer history of one series only: refit to forecast other series"
            )
        return self.dates_

    def _check_horizon(self, horizon: int | None) -> int:
        horizon = self.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"Forecaster expected horizon to be a positive integer, got {horizon!r}")
        if self.strategy == "direct" and horizon > self.horizon:
            raise ValueError(
                f"Forecaster was fitted to forecast {self.horizon} steps directly, asked for {horizon}; "
                "refit with a larger horizon or use strategy='recursive'"
            )
        return int(horizon)

    def _combined(self, median: np.ndarray, values: np.ndarray | None, horizon: int) -> np.ndarray:
        """The combination ``ŷ = w ĝ + (1 − w) ŝ`` ``(S, horizon)`` of the GRU's medians ``ĝ`` ``(S, horizon)``
        (``w = 0`` gives ``ŝ`` and ``w = 1`` gives ``ĝ`` exactly); ``ŝ`` the stored statistical forecasts, or those
        after ``values`` (a newer history of one series); ``ĝ`` itself without ``combine``."""
        if self.combine_ is None:
            return median
        if values is None:
            statistical = self.statistical_[:, :horizon]
        else:
            statistical = statistical_forecast(self.combine_, values, self.horizon, self.season_)[None, :horizon]
        weight = self.combine_weight_
        return weight * median + (1.0 - weight) * statistical

    def predict(self, horizon: int | None = None, *, series: object | None = None, combined: bool = True):
        """Point forecasts (the median) of the ``horizon`` steps after the fitted series (or after ``series``, a
        newer history read with the fitted network and scaling), ``(horizon,)``; a ``pandas.Series`` indexed by
        the future dates when the series had a ``DatetimeIndex`` with a frequency. In global mode a list, one
        forecast per fitted series, in order. With ``combine``, the combination ``ŷ``; ``combined=False`` gives
        the GRU's own forecast ``ĝ``."""
        self._check_fitted("predict")
        horizon = self._check_horizon(horizon)
        if self.global_:
            self._global_dates(series)
            median = self._to_values(self._global_quantiles(horizon)[:, :, sorted(self.levels_).index(0.5)])
            forecasts = self._combined(median, None, horizon) if combined else median  # (S, horizon)
            return [self._output(row, dates) for row, dates in zip(forecasts, self.dates_)]
        values, dates = self._history(series)
        z = self._forecast_z(values, horizon)
        median = self._to_values(self._undo_u(self._log(values), z[:, self.levels_.index(0.5)]))[None]  # (1, h)
        if combined:
            median = self._combined(median, None if series is None else values, horizon)
        return self._output(median[0], dates)

    def predict_interval(self, horizon: int | None = None, *, series: object | None = None):
        """``(lower, upper)``, each ``(horizon,)`` (or a dated ``pandas.Series``, as :meth:`predict`): the
        prediction interval of nominal coverage ``coverage_`` (0.8 for levels 0.1 and 0.9), the outer quantile
        forecasts widened by the conformal correction (direct strategy only). In global mode ``(lowers, uppers)``,
        two lists with one entry per fitted series, the raw outer quantiles."""
        self._check_fitted("predict_interval")
        if self.strategy != "direct":
            raise ValueError("Forecaster gives prediction intervals with strategy='direct' only")
        horizon = self._check_horizon(horizon)
        if self.global_:
            dates = self._global_dates(series)
            quantiles = self._to_values(self._global_quantiles(horizon))  # (S, horizon, Q)
            median = quantiles[:, :, sorted(self.levels_).index(0.5)]  # (S, horizon)
            shift = self._combined(median, None, horizon) - median  # every level moves as the median
            return ([self._output(row, day) for row, day in zip(quantiles[:, :, 0] + shift, dates)],
                    [self._output(row, day) for row, day in zip(quantiles[:, :, -1] + shift, dates)])
        values, dates = self._history(series)
        z = np.sort(self._forecast_z(values, horizon), axis=1)  # quantile crossing: sort the levels
        u = self._log(values)
        correction = np.asarray(self.interval_correction_[:horizon])
        median = self._undo_u(u, z[:, sorted(self.levels_).index(0.5)])
        # a negative correction narrows the interval; it never moves a bound past the point forecast
        lower = self._to_values(np.minimum(self._undo_u(u, z[:, 0]) - correction, median))
        upper = self._to_values(np.maximum(self._undo_u(u, z[:, -1]) + correction, median))
        point = self._to_values(median)[None]  # (1, horizon)
        shift = (self._combined(point, None if series is None else values, horizon) - point)[0]
        return self._output(lower + shift, dates), self._output(upper + shift, dates)

    def score(self, actual: Sequence[float] | np.ndarray, y: None = None) -> float:
        """Negative MASE of the forecast of the ``len(actual)`` steps after the fitted series (higher is better,
        as sklearn's scores), scaled by the in-sample seasonal-naive error with ``season_`` (1 without)."""
        actual = np.asarray(actual, dtype=np.float64)
        if actual.ndim != 1 or not np.isfinite(actual).all():
            raise ValueError(
                f"Forecaster.score expected the actual values as a 1-D series of finite numbers (no NaN or inf), "
                f"got shape {actual.shape}" + ("" if actual.ndim != 1 else " with NaN or inf")
            )
        return -mase(actual, np.asarray(self.predict(len(actual))), self.series_, self.season_)
