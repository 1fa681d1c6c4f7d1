r"""Classical baselines computed on the same data and splits as grukit's estimators, and the forecast
error measures.

Forecast errors, for a hold-out ``y_1..y_h``, forecasts ``ŷ`` and the training series ``x_1..x_n`` with
season length ``m``::

    MASE  = mean_t |y_t − ŷ_t| / ( 1/(n−m) · Σ_{i>m} |x_i − x_{i−m}| )
    sMAPE = 100 · mean_t 2 |y_t − ŷ_t| / (|y_t| + |ŷ_t|)

Dynamic time warping between series ``a`` ``(T_a, C)`` and ``b`` ``(T_b, C)`` ("dependent" DTW, one warping
path shared by all channels, no window)::

    D[i, j] = ‖a_i − b_j‖² + min(D[i−1, j−1], D[i−1, j], D[i, j−1]),   dtw(a, b) = D[T_a, T_b]
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

from grukit.datasets._packages import require


# Forecasting -----------------------------------------------------------------------------------------------
def mase(actual: np.ndarray, forecast: np.ndarray, train: np.ndarray, season: int = 1) -> float:
    """Mean absolute scaled error: the forecast's MAE over the in-sample MAE of the seasonal-naive forecast."""
    actual, forecast, train = (np.asarray(a, dtype=float) for a in (actual, forecast, train))
    if actual.shape != forecast.shape:
        raise ValueError(f"mase expected forecast of shape {actual.shape} (the actual's), got {forecast.shape}")
    if len(train) <= season:
        raise ValueError(f"mase needs more than season={season} training points, got {len(train)}")
    scale = np.mean(np.abs(train[season:] - train[:-season]))
    return float(np.mean(np.abs(actual - forecast)) / scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric mean absolute percentage error, in percent (0-200)."""
    actual, forecast = np.asarray(actual, dtype=float), np.asarray(forecast, dtype=float)
    if actual.shape != forecast.shape:
        raise ValueError(f"smape expected forecast of shape {actual.shape} (the actual's), got {forecast.shape}")
    return float(np.mean(2.0 * np.abs(actual - forecast) / (np.abs(actual) + np.abs(forecast))) * 100.0)


def naive_forecast(train: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last observation ``horizon`` times."""
    return np.full(horizon, float(np.asarray(train)[-1]))


def seasonal_naive_forecast(train: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last full season: ``ŷ_{n+k} = x_{n+k−m·⌈k/m⌉}``."""
    train = np.asarray(train, dtype=float)
    last_season = train[-season:]
    return np.array([last_season[k % season] for k in range(horizon)])


def ets_forecast(
    train: np.ndarray,
    horizon: int,
    season: int,
    trend: str | None = "add",
    damped: bool = False,
    seasonal: str | None = "add",
) -> np.ndarray:
    """Holt-Winters exponential smoothing (statsmodels ``ExponentialSmoothing``), fitted by maximum likelihood,
    e.g. ETS(A,Ad,A) with ``trend="add", damped=True, seasonal="add"``."""
    holtwinters = require("statsmodels.tsa.holtwinters", "statsmodels", "The ETS baseline")
    model = holtwinters.ExponentialSmoothing(
        np.asarray(train, dtype=float),
        trend=trend,
        damped_trend=damped,
        seasonal=seasonal if season > 1 else None,
        seasonal_periods=season if season > 1 else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from the optimizer
        return np.asarray(model.fit().forecast(horizon))


def is_seasonal(train: np.ndarray, season: int) -> bool:
    """The M4 competition's 90 % seasonality test: ``|r_m| > 1.645 √((1 + 2 Σ_{k<m} r_k²) / n)``, ``r_k`` the
    autocorrelation of the series at lag ``k``; ``False`` for ``m ≤ 1`` or fewer than ``3m`` points."""
    x = np.asarray(train, dtype=float)
    if season <= 1 or len(x) < 3 * season:
        return False
    centred = x - x.mean()
    energy = float((centred**2).sum())
    if energy == 0:
        return False
    r = np.array([(centred[k:] * centred[:-k]).sum() / energy for k in range(1, season + 1)])
    return bool(abs(r[-1]) > 1.645 * np.sqrt((1 + 2 * (r[:-1] ** 2).sum()) / len(x)))


def theta_forecast(train: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The Theta method (Assimakopoulos & Nikolopoulos, 2000; statsmodels ``ThetaModel``): half the linear trend
    added to simple exponential smoothing, after multiplicative deseasonalising when :func:`is_seasonal` holds."""
    theta = require("statsmodels.tsa.forecasting.theta", "statsmodels", "The Theta baseline")
    x = np.asarray(train, dtype=float)
    seasonal = is_seasonal(x, season)
    model = theta.ThetaModel(
        x, period=season if seasonal else 1, deseasonalize=seasonal, use_test=False,
        method="multiplicative" if (x > 0).all() else "additive",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(model.fit().forecast(horizon))


def sarima_forecast(
    train: np.ndarray,
    horizon: int,
    season: int,
    order: tuple[int, int, int] = (1, 1, 1),
    seasonal_order: tuple[int, int, int] = (0, 1, 1),
    log: bool = False,
) -> np.ndarray:
    """SARIMA(p,d,q)(P,D,Q)_m by statsmodels' state-space ``SARIMAX``; ``log`` fits it to ``log(x)``."""
    sarimax = require("statsmodels.tsa.statespace.sarimax", "statsmodels", "The SARIMA baseline")
    values = np.asarray(train, dtype=float)
    model = sarimax.SARIMAX(np.log(values) if log else values, order=order, seasonal_order=(*seasonal_order, season))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forecast = np.asarray(model.fit(disp=False).forecast(horizon))
    return np.exp(forecast) if log else forecast


# Sequence classification -----------------------------------------------------------------------------------
def _as_series_list(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """``(n, C, T)`` array or list of ``(T_i, C)`` arrays → list of ``(T_i, C)`` float64 arrays."""
    if isinstance(x, np.ndarray) and x.ndim == 3:
        return [s.T.astype(np.float64) for s in x]
    return [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in x]


def dtw_distances(queries: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> np.ndarray:
    """Dependent DTW distance (see the module docstring) between every query and every reference,
    ``(n_queries, n_references)``. Vectorised over all pairs: one numpy step per cell ``(i, j)``, so the
    cost is ``max T_a · max T_b`` array operations over ``n_queries · n_references`` pairs."""
    a_len = np.array([len(s) for s in queries])
    b_len = np.array([len(s) for s in references])
    channels = queries[0].shape[1]
    a = np.zeros((len(queries), a_len.max(), channels))
    b = np.zeros((len(references), b_len.max(), channels))
    for k, s in enumerate(queries):
        a[k, : len(s)] = s
    for k, s in enumerate(references):
        b[k, : len(s)] = s
    pair_a, pair_b = np.repeat(a_len, len(b_len)), np.tile(b_len, len(a_len))
    result = np.full(len(pair_a), np.inf)
    previous = np.full((len(pair_a), b.shape[1] + 1), np.inf)  # D[i-1, 0..T_b], column 0 is the border
    previous[:, 0] = 0.0
    for i in range(a.shape[1]):
        cost = ((a[:, None, i, None, :] - b[None, :, :, :]) ** 2).sum(-1).reshape(len(pair_a), -1)  # (pairs, T_b)
        current = np.full_like(previous, np.inf)
        diagonal_or_up = np.minimum(previous[:, :-1], previous[:, 1:])  # min(D[i-1, j-1], D[i-1, j])
        for j in range(b.shape[1]):
            current[:, j + 1] = cost[:, j] + np.minimum(diagonal_or_up[:, j], current[:, j])
        done = pair_a == i + 1
        result[done] = current[done, pair_b[done]]
        previous = current
    return result.reshape(len(a_len), len(b_len))


def one_nearest_neighbour(
    x_train: np.ndarray | Sequence[np.ndarray],
    y_train: np.ndarray,
    x_test: np.ndarray | Sequence[np.ndarray],
    metric: str = "dtw",
) -> np.ndarray:
    """1-NN labels for ``x_test`` under ``metric`` ``"euclidean"`` (equal lengths only) or ``"dtw"``.
    Series as ``(n, C, T)`` arrays or lists of ``(T_i, C)`` arrays."""
    train, test = _as_series_list(x_train), _as_series_list(x_test)
    if metric == "euclidean":
        if len({len(s) for s in train + test}) != 1:
            raise ValueError("1-NN Euclidean needs series of one length; use metric='dtw' for variable length")
        flat_train = np.stack([s.reshape(-1) for s in train])
        flat_test = np.stack([s.reshape(-1) for s in test])
        distances = ((flat_test[:, None, :] - flat_train[None, :, :]) ** 2).sum(-1)
    elif metric == "dtw":
        distances = np.concatenate([dtw_distances(test[k : k + 64], train) for k in range(0, len(test), 64)])
    else:
        raise ValueError(f"one_nearest_neighbour expected metric 'euclidean' or 'dtw', got {metric!r}")
    return np.asarray(y_train)[distances.argmin(axis=1)]


# Text ------------------------------------------------------------------------------------------------------
def tfidf_logistic_regression(
    train_texts: Sequence[str],
    y_train: np.ndarray,
    test_texts: Sequence[str],
    analyzer: str = "word",
    ngram_range: tuple[int, int] = (1, 2),
    seed: int = 0,
) -> np.ndarray:
    """TF-IDF features (scikit-learn, sublinear tf) and logistic regression with ``C`` chosen by 3-fold CV
    over {0.3, 1, 3, 10}; returns the predicted labels of ``test_texts``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, sublinear_tf=True, min_df=2),
        LogisticRegressionCV(Cs=[0.3, 1.0, 3.0, 10.0], cv=3, max_iter=2000, random_state=seed),
    )
    pipeline.fit(list(train_texts), y_train)
    return pipeline.predict(list(test_texts))


def nb_logistic_regression(
    train_texts: Sequence[str],
    y_train: np.ndarray,
    test_texts: Sequence[str],
    analyzer: str = "word",
    ngram_range: tuple[int, int] = (1, 3),
    seed: int = 0,
) -> np.ndarray:
    """NBSVM-style baseline for two classes (Wang & Manning 2012, with logistic regression): binary n-gram
    features scaled by their naive-Bayes log-count ratios ``r = log(p/‖p‖₁) − log(q/‖q‖₁)`` (``p``, ``q``: 1 +
    the counts in the second and the first class), ``C`` chosen by 3-fold CV over {0.1, 0.3, 1, 3}; returns the
    predicted labels of ``test_texts``. The linear counterpart of ``TextClassifier``'s naive-Bayes evidence."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegressionCV

    classes = np.unique(y_train)
    if len(classes) != 2:
        raise ValueError(f"nb_logistic_regression expected two classes, got {len(classes)}")
    vectorizer = CountVectorizer(analyzer=analyzer, ngram_range=ngram_range, binary=True)
    x_train = vectorizer.fit_transform(list(train_texts))
    second = np.asarray(y_train) == classes[1]
    p = 1 + np.asarray(x_train[second].sum(0)).ravel()
    q = 1 + np.asarray(x_train[~second].sum(0)).ravel()
    ratios = np.log(p / p.sum()) - np.log(q / q.sum())
    model = LogisticRegressionCV(Cs=[0.1, 0.3, 1.0, 3.0], cv=3, max_iter=3000, random_state=seed)
    model.fit(x_train.multiply(ratios).tocsr(), y_train)
    return model.predict(vectorizer.transform(list(test_texts)).multiply(ratios).tocsr())


# Tagging ---------------------------------------------------------------------------------------------------
def most_frequent_tag(
    train: Sequence[Sequence[tuple[str, str]]], test: Sequence[Sequence[tuple[str, str]]], unknown: str = "n"
) -> float:
    """Token accuracy on ``test`` of tagging each word with its most frequent training tag (``unknown`` for
    words never seen in training). Sentences are lists of ``(word, tag)``."""
    counts: dict[str, Counter] = {}
    for sentence in train:
        for word, tag in sentence:
            counts.setdefault(word, Counter())[tag] += 1
    best = {word: counter.most_common(1)[0][0] for word, counter in counts.items()}
    total = correct = 0
    for sentence in test:
        for word, tag in sentence:
            correct += best.get(word, unknown) == tag
            total += 1
    return correct / total if total else float("nan")
