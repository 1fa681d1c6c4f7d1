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
bound is carried through the same sums, which is exact for ``h ≤ m`` with seasonal differencing and
conservative beyond.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from grukit.tasks._base import GRUEstimator, recurrent_layer, run_recurrent
from grukit.tasks.baselines import mase
from grukit.text import BucketBatches

STRATEGIES = ("direct", "recursive")
DIFFERENCING = ("none", "first", "seasonal")


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

    Args:
        horizon: steps to forecast (the most ``predict`` gives with the direct strategy).
        lookback: past steps the GRU reads, ``L``.
        season: season length ``m`` (12 for monthly data with a yearly cycle; 1 or None for none).
        differencing: ``"seasonal"`` (needs ``season``), ``"first"`` or ``"none"``.
        log: model ``log x`` (for multiplicative seasonality; the series must be positive).
        strategy: ``"direct"`` or ``"recursive"``.
        quantiles: levels for the direct strategy, including 0.5 (the point forecast).
        hidden_size, num_layers, cell: the recurrent network (``cell="lstm"`` for comparisons).
        epochs, batch_size, learning_rate, random_state, verbose: training.

    Fitted: ``series_`` (the training series), ``module_`` (the network), ``mean_`` and ``std_`` (the scaling),
    ``levels_`` (the quantile levels it outputs), ``history_``.
    """

    def __init__(
        self,
        horizon: int = 12,
        lookback: int = 36,
        season: int | None = None,
        differencing: str = "seasonal",
        log: bool = False,
        strategy: str = "direct",
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        hidden_size: int = 16,
        num_layers: int = 1,
        cell: str = "gru",
        epochs: int = 50,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        random_state: int = 0,
        verbose: int = 0,
    ) -> None:
        self.horizon = horizon
        self.lookback = lookback
        self.season = season
        self.differencing = differencing
        self.log = log
        self.strategy = strategy
        self.quantiles = quantiles
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags

    # Transforms ------------------------------------------------------------------------------------------
    @property
    def _lag(self) -> int:
        return {"none": 0, "first": 1, "seasonal": self.season or 0}[self.differencing]

    def _validate(self, series: np.ndarray) -> None:
        for name in ("horizon", "lookback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Forecaster expected {name} to be a positive integer, got {value!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Forecaster expected strategy in {STRATEGIES}, got {self.strategy!r}")
        if self.differencing not in DIFFERENCING:
            raise ValueError(f"Forecaster expected differencing in {DIFFERENCING}, got {self.differencing!r}")
        if self.differencing == "seasonal" and not (self.season and self.season > 1):
            raise ValueError(
                f"Forecaster: differencing='seasonal' needs season > 1 (e.g. 12 for monthly data), got {self.season!r}"
            )
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
        if series.ndim != 1:
            raise ValueError(f"Forecaster expected a 1-D series, got shape {series.shape}")
        if not np.isfinite(series).all():
            raise ValueError("Forecaster got NaN or infinite values; fill or drop them first")
        if self.log and (series <= 0).any():
            raise ValueError("Forecaster with log=True needs a positive series; it has values <= 0")
        needed = self._lag + self.lookback + (self.horizon if self.strategy == "direct" else 1) + 1
        if len(series) < needed:
            raise ValueError(
                f"Forecaster needs at least {needed} points (differencing lag {self._lag} + lookback {self.lookback}"
                f" + horizon, and one window more), got {len(series)}"
            )

    def _features(self, z: np.ndarray, start: int) -> np.ndarray:
        """``(len(z), 1 + 2·[season > 1])``: the values and the season phase of positions ``start, start+1, …``."""
        columns = [z]
        if self.season and self.season > 1:
            phase = 2 * np.pi * (np.arange(start, start + len(z)) % self.season) / self.season
            columns += [np.sin(phase), np.cos(phase)]
        return np.stack(columns, axis=1).astype(np.float32)

    # Fit / predict --------------------------------------------------------------------------------------
    def fit(self, series: Sequence[float] | np.ndarray, y: None = None) -> Forecaster:
        """Fit on the whole ``series`` (a list, array or ``pandas.Series``); forecasts start after its end."""
        values = np.asarray(series, dtype=np.float64)
        self._validate(values)
        self._prepare_fit("hidden_size", "num_layers")
        self.series_ = values
        u = np.log(values) if self.log else values
        d = u[self._lag :] - u[: -self._lag] if self._lag else u
        # powers of two scale exactly: the same mean and std as d's own, without squaring values near 1e200
        scale = np.ldexp(1.0, int(np.frexp(np.abs(d).max())[1]))
        self.mean_, self.std_ = float((d / scale).mean() * scale), float((d / scale).std() * scale + 1e-8)
        z = (d - self.mean_) / self.std_
        features = self._features(z, self._lag)  # (N, F), position t of d is t + lag in the series
        steps = self.horizon if self.strategy == "direct" else 1
        levels = tuple(self.quantiles) if self.strategy == "direct" else (0.5,)
        starts = np.arange(len(z) - self.lookback - steps + 1)
        windows = torch.as_tensor(np.stack([features[s : s + self.lookback] for s in starts]))  # (W, L, F)
        targets = torch.as_tensor(
            np.stack([z[s + self.lookback : s + self.lookback + steps] for s in starts]), dtype=torch.float32
        )  # (W, steps)
        self.levels_ = levels
        self.module_ = self._network()
        batches = BucketBatches(
            len(starts), self.batch_size, lambda idx: (windows[idx], targets[idx]), shuffle=True, seed=self.random_state
        )
        self._train(self.module_, batches, pinball_loss(torch.tensor(levels)))
        return self

    def _network(self) -> ForecastNet:
        features = 3 if self.season and self.season > 1 else 1
        steps = self.horizon if self.strategy == "direct" else 1
        return ForecastNet(features, self.hidden_size, self.num_layers, steps, len(self.levels_), self.cell)

    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        return {"series": self.series_.tolist(), "mean": self.mean_, "std": self.std_, "levels": self.levels_}, {}

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        self.series_ = np.asarray(fitted["series"], dtype=np.float64)
        self.mean_, self.std_, self.levels_ = fitted["mean"], fitted["std"], tuple(fitted["levels"])
        self.module_ = self._network()

    @torch.no_grad()
    def _forecast_z(self, horizon: int) -> np.ndarray:
        """Forecasts of the standardised differenced series, ``(horizon, Q)``."""
        u = np.log(self.series_) if self.log else self.series_
        d = u[self._lag :] - u[: -self._lag] if self._lag else u
        z = list((d - self.mean_) / self.std_)
        if self.strategy == "direct":
            window = self._features(np.asarray(z[-self.lookback :]), self._lag + len(z) - self.lookback)
            return self.module_(torch.as_tensor(window)[None])[0, :horizon].numpy()  # (horizon, Q)
        for _ in range(horizon):
            window = self._features(np.asarray(z[-self.lookback :]), self._lag + len(z) - self.lookback)
            z.append(float(self.module_(torch.as_tensor(window)[None])[0, 0, 0]))
        return np.asarray(z[-horizon:])[:, None]

    def _undo(self, z: np.ndarray) -> np.ndarray:
        """Standardised differences ``(h,)`` → forecasts on the series' scale ``(h,)``."""
        d = z.astype(np.float64) * self.std_ + self.mean_  # float64: a float32 product overflows beyond 3.4e38
        u = list(np.log(self.series_) if self.log else self.series_)
        for step in d:
            u.append(step + (u[-self._lag] if self._lag else 0.0))
        forecast = np.asarray(u[len(self.series_) :])
        with np.errstate(over="ignore"):
            forecast = np.exp(forecast) if self.log else forecast
        if not np.isfinite(forecast).all():
            raise ValueError(
                "Forecaster's forecast overflows float64 (the series is near its largest value, 1.8e308); "
                "rescale the series first, e.g. divide it by its maximum"
            )
        return forecast

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

    def predict(self, horizon: int | None = None) -> np.ndarray:
        """Point forecasts (the median) of the ``horizon`` steps after the fitted series, ``(horizon,)``."""
        self._check_fitted("predict")
        horizon = self._check_horizon(horizon)
        z = self._forecast_z(horizon)
        return self._undo(z[:, self.levels_.index(0.5)])

    def predict_interval(self, horizon: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` forecasts at the lowest and highest quantile levels, each ``(horizon,)``
        (direct strategy only)."""
        self._check_fitted("predict_interval")
        if self.strategy != "direct":
            raise ValueError("Forecaster gives prediction intervals with strategy='direct' only")
        horizon = self._check_horizon(horizon)
        z = np.sort(self._forecast_z(horizon), axis=1)  # quantile crossing: sort the levels
        return self._undo(z[:, 0]), self._undo(z[:, -1])

    def score(self, actual: Sequence[float] | np.ndarray, y: None = None) -> float:
        """Negative MASE of the forecast of the ``len(actual)`` steps after the fitted series (higher is better,
        as sklearn's scores), scaled by the in-sample seasonal-naive error with ``season`` (1 without)."""
        actual = np.asarray(actual, dtype=np.float64)
        if actual.ndim != 1 or not np.isfinite(actual).all():
            raise ValueError(
                f"Forecaster.score expected the actual values as a 1-D series of finite numbers (no NaN or inf), "
                f"got shape {actual.shape}" + ("" if actual.ndim != 1 else " with NaN or inf")
            )
        return -mase(actual, self.predict(len(actual)), self.series_, self.season or 1)
