"""The task subcommands of ``grukit`` on a user's own files, and the results page."""

import numpy as np
import pytest
import torch

from grukit.cli import main
from grukit.tasks.results import machine, render_markdown


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_forecast_reads_a_users_csv_column_and_writes_forecasts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    values = 50 + np.cumsum(rng.normal(0, 1, 120)) + 3 * np.sin(np.arange(120) * 2 * np.pi / 7)
    values[10] = np.nan  # a missing day
    csv = tmp_path / "weather.csv"
    csv.write_text("day,temperature\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    output = tmp_path / "forecast.csv"
    argv = ["forecast", "--csv", str(csv), "--column", "temperature", "--horizon", "5", "--season", "7"]
    assert main([*argv, "--epochs", "2", "--lookback", "14", "--output", str(output)]) == 0
    lines = output.read_text().splitlines()
    assert lines[0] == "step,forecast,lower,upper" and len(lines) == 6
    step, point, lower, upper = (float(v) for v in lines[1].split(","))
    assert step == 1 and lower <= point <= upper and 30 < point < 80
    assert "filled 1 missing values" in capsys.readouterr().err


def test_forecast_names_the_columns_when_one_is_missing(tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text("day,close\n1,2\n")
    with pytest.raises(SystemExit, match=r"has no column\(s\) \['price'\]; its columns are \['day', 'close'\]"):
        main(["forecast", "--csv", str(csv), "--column", "price", "--horizon", "3"])


def test_classify_series_from_a_csv_with_variable_lengths(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for index in range(60):
        label = index % 2
        length = rng.integers(15, 30)
        series = np.sin(np.linspace(0, 3, length) * (1 + 2 * label)) + rng.normal(0, 0.1, length)
        rows.append(f"{'up' if label else 'down'}," + ",".join(f"{v:.4f}" for v in series) + "," * (30 - length))
    csv = tmp_path / "series.csv"
    csv.write_text("label," + ",".join(f"t{i}" for i in range(30)) + "\n" + "\n".join(rows) + "\n")
    assert main(["classify-series", "--csv", str(csv), "--epochs", "15", "--min-steps", "0", "--test-size", "0.3"]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.8


def test_tag_and_translate_read_plain_text_files(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the/D dog/N runs/V", "a/D cat/N sleeps/V", "the/D cat/N runs/V"] * 20) + "\n")
    assert main(["tag", "--file", str(corpus), "--epochs", "3", "--predict", "a dog sleeps"]) == 0
    assert "a/D  dog/N  sleeps/V" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("the/D dog\n")
    with pytest.raises(SystemExit, match="line 1: token 'dog' is not word/TAG"):
        main(["tag", "--file", str(bad)])
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("one\tun\ntwo\tdeux\nthree\n")
    with pytest.raises(SystemExit, match="line 3: expected source<TAB>target, got 1 field"):
        main(["translate", "--pairs", str(pairs)])


def test_results_page_has_machine_seed_and_one_table():
    rows = [
        {
            "task": "forecasting",
            "data": "airline",
            "method": "seasonal naive",
            "metric": "MASE",
            "value": 1.5712,
            "seconds": 0.01,
        },
        {
            "task": "forecasting",
            "data": "airline",
            "method": "seasonal naive",
            "metric": "sMAPE %",
            "value": 10.57,
            "seconds": None,
        },
    ]
    page = render_markdown(rows, seed=3, wall_seconds=90.0, machine_line=machine())
    assert "- seed: 3; total wall time: 1.5 min" in page
    assert "| forecasting | airline | seasonal naive | MASE | 1.571 | 0.0 |" in page
    assert "| forecasting | airline | seasonal naive | sMAPE % | 10.6 |  |" in page
    assert "torch" in machine() and "cores" in machine()
    assert "## Targets" not in page  # no row of a target task


def test_results_page_states_each_target_reached_or_the_gap():
    def row(data, method, metric, value):
        return {"task": "x", "data": data, "method": method, "metric": metric, "value": value, "seconds": None}

    rows = [
        row("GunPoint", "grukit SequenceClassifier", "accuracy", 0.98),
        row("airline, h = 12", "grukit Forecaster", "MASE", 0.30),
        row("airline, h = 12", "seasonal naive", "MASE", 1.571),
        row("airline, h = 12", "ETS (statsmodels)", "MASE", 0.338),
    ]
    page = render_markdown(rows, seed=0, wall_seconds=1.0, machine_line="m")
    assert "| GunPoint | accuracy | ≥ 0.990 | 0.980 | short by 0.010 |" in page
    assert "| airline, h = 12 | MASE | ≤ 0.338 (ETS (statsmodels)) | 0.300 | reached |" in page


def test_merge_renders_one_page_from_runs_saved_side_by_side(tmp_path):
    import json

    from grukit.tasks.results import main as results_main

    row = {"task": "t", "data": "d", "method": "m", "metric": "accuracy", "value": 0.5, "seconds": 1.0}
    for name, wall in (("a", 60.0), ("b", 120.0)):
        record = {"seed": 0, "wall_seconds": wall, "machine": "test machine", "rows": [{**row, "method": name}]}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    output = tmp_path / "results.md"
    results_main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--output", str(output)])
    page = output.read_text()
    assert "| t | d | a | accuracy | 0.500 | 1.0 |" in page and "| t | d | b | accuracy | 0.500 | 1.0 |" in page
    assert "total wall time: 3.0 min" in page and "Merged from 2 runs" in page


def test_equal_parameter_lstm_is_the_closest_in_weights_to_the_gru():
    from grukit.nn import GRU, LSTM
    from grukit.tasks.compare import equal_parameter_hidden

    def count(module):
        return sum(p.numel() for p in module.parameters())

    for hidden, inputs in ((64, 12), (128, 64), (16, 3)):
        chosen = equal_parameter_hidden(hidden, inputs)
        gru = count(GRU(inputs, hidden))
        gaps = {h: abs(count(LSTM(inputs, h)) - gru) for h in (chosen - 1, chosen, chosen + 1)}
        assert min(gaps, key=gaps.get) == chosen
        assert chosen < hidden  # four gates to the GRU's three


def test_compare_writes_the_page_and_its_plot(tmp_path):
    from grukit.tasks.compare import main as compare_main

    output = tmp_path / "gru-vs-lstm.md"
    assert compare_main(["--only", "airline", "--output", str(output)]) == 0
    page = output.read_text()
    assert "![GRU vs LSTM" in page and (tmp_path / "gru-vs-lstm.png").stat().st_size > 1000
    rows = [line for line in page.splitlines() if line.startswith("| GRU |") or line.startswith("| LSTM")]
    assert len(rows) == 3
    assert "## Which should I choose?" in page
