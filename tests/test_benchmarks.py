"""The report generators in ``benchmarks/``: the results page, the GRU-vs-LSTM page and the machine line they
share with the speed benchmark."""

import json

import pytest
import torch
from benchmarks import gru_vs_lstm, results
from benchmarks.machine import describe, machine_line
from benchmarks.results import render_markdown


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_report_describes_the_machine_with_one_helper():
    info = describe()
    assert info["threads"] == 1 and info["cores"] >= 1 and info["torch"] == torch.__version__
    line = machine_line({**info, "cpu": "Test CPU", "cores": 4, "avx512": True, "load_average_start": [1.25, 0, 0]})
    assert line.startswith("Test CPU, 4 cores (AVX-512), torch ") and line.endswith("load average 1.2 at the start")
    import benchmarks.finetuning_report as finetuning_report
    import benchmarks.gru_speed as gru_speed

    for module in (results, gru_vs_lstm, finetuning_report):
        assert module.machine_line is machine_line
    assert {"cpu", "cores", "avx512", "onednn", "date"} <= set(gru_speed.machine())


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
    page = render_markdown(rows, seed=3, wall_seconds=90.0, machine=machine_line())
    assert "- seed: 3; total wall time: 1.5 min" in page
    assert "| forecasting | airline | seasonal naive | MASE | 1.571 | 0.0 |" in page
    assert "| forecasting | airline | seasonal naive | sMAPE % | 10.6 |  |" in page
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
    page = render_markdown(rows, seed=0, wall_seconds=1.0, machine="m")
    assert "| GunPoint | accuracy | ≥ 0.990 | 0.980 | short by 0.010 |" in page
    assert "| airline, h = 12 | MASE | ≤ 0.338 (ETS (statsmodels)) | 0.300 | reached |" in page


def test_merge_renders_one_page_from_runs_saved_side_by_side(tmp_path):


    row = {"task": "t", "data": "d", "method": "m", "metric": "accuracy", "value": 0.5, "seconds": 1.0}
    for name, wall in (("a", 60.0), ("b", 120.0)):
        record = {"seed": 0, "wall_seconds": wall, "machine": "test machine", "rows": [{**row, "method": name}]}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    output = tmp_path / "results.md"
    results.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--output", str(output)])
    page = output.read_text()
    assert "| t | d | a | accuracy | 0.500 | 1.0 |" in page and "| t | d | b | accuracy | 0.500 | 1.0 |" in page
    assert "total wall time: 3.0 min" in page and "Merged from 2 runs" in page


def test_equal_parameter_lstm_is_the_closest_in_weights_to_the_gru():
    from grukit.nn import GRU, LSTM
    def count(module):
        return sum(p.numel() for p in module.parameters())

    for hidden, inputs in ((64, 12), (128, 64), (16, 3)):
        chosen = gru_vs_lstm.equal_parameter_hidden(hidden, inputs)
        gru = count(GRU(inputs, hidden))
        gaps = {h: abs(count(LSTM(inputs, h)) - gru) for h in (chosen - 1, chosen, chosen + 1)}
        assert min(gaps, key=gaps.get) == chosen
        assert chosen < hidden  # four gates to the GRU's three


def test_compare_writes_the_page_and_its_plot(tmp_path):
    output = tmp_path / "gru-vs-lstm.md"
    assert gru_vs_lstm.main(["--only", "airline", "--output", str(output)]) == 0
    page = output.read_text()
    assert "![GRU vs LSTM" in page and (tmp_path / "gru-vs-lstm.png").stat().st_size > 1000
    rows = [line for line in page.splitlines() if line.startswith("| GRU |") or line.startswith("| LSTM")]
    assert len(rows) == 3
    assert "## Which should I choose?" in page
