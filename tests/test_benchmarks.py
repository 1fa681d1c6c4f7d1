"""The report generators in ``benchmarks/``: the results page, the GRU-vs-LSTM page and the machine line they
share with the speed benchmark."""

import json

import pytest
import torch
from benchmarks import gru_vs_lstm, results
from benchmarks.machine import cpu_isa, describe, has_bf16_instructions, isa_class, machine_line
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
    assert {"cpu", "cores", "avx512", "isa", "onednn_isa", "onednn", "date"} <= set(gru_speed.machine())


def test_results_page_gives_each_row_as_mean_and_std_over_the_seeds():
    def row(method, metric, value, seconds=None, detail=""):
        return {"task": "forecasting", "data": "airline", "method": method, "metric": metric, "value": value,
                "seconds": seconds, "detail": detail}

    runs = [
        {"seed": 1, "rows": [row("grukit", "MASE", 0.40, 3.0, "weight 0.5"), row("seasonal naive", "MASE", 1.5712)]},
        {"seed": 0, "rows": [row("grukit", "MASE", 0.30, 1.0, "weight 0.7"), row("seasonal naive", "MASE", 1.5712),
                             row("seasonal naive", "sMAPE %", 10.57)]},
    ]
    rows = results.aggregate(runs)
    assert [(r["method"], r["metric"]) for r in rows] == [
        ("grukit", "MASE"), ("seasonal naive", "MASE"), ("seasonal naive", "sMAPE %")
    ]
    grukit = rows[0]
    assert grukit["value"] == pytest.approx(0.35) and grukit["std"] == pytest.approx(0.05)
    assert grukit["values"] == [0.30, 0.40] and grukit["seeds"] == [0, 1] and grukit["seconds"] == pytest.approx(2.0)
    page = render_markdown(rows, seeds=[0, 1], wall_seconds=90.0, machine=machine_line())
    assert "- seeds: 0, 1; total wall time: 1.5 min" in page
    assert "| forecasting | airline | grukit | MASE | 0.350 ± 0.050 | 0.300, 0.400 | 2.0 |" in page
    assert "| forecasting | airline | seasonal naive | MASE | 1.571 ± 0.000 | 1.571, 1.571 |  |" in page
    assert "| forecasting | airline | seasonal naive | sMAPE % | 10.6 |  |  |" in page  # one seed: no spread shown
    assert "- airline, grukit: seed 0: weight 0.7; seed 1: weight 0.5" in page
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
    page = render_markdown(rows, seeds=[0], wall_seconds=1.0, machine="m")
    assert "| GunPoint | accuracy | ≥ 0.990 | 0.980 | short by 0.010 |" in page
    assert "| airline, h = 12 | MASE | ≤ 0.338 (ETS (statsmodels)) | 0.300 | reached |" in page


def test_merge_renders_one_page_from_runs_saved_side_by_side(tmp_path):
    row = {"task": "t", "data": "d", "method": "m", "metric": "accuracy", "value": 0.5, "seconds": 1.0}
    for name, seed, wall, value in (("a", 0, 60.0, 0.5), ("b", 1, 120.0, 0.7)):
        runs = [{"seed": seed, "rows": [{**row, "value": value}]}]
        record = {"wall_seconds": wall, "machine": "test machine", "runs": runs}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    output = tmp_path / "results.md"
    results.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--output", str(output)])
    page = output.read_text()
    assert "| t | d | m | accuracy | 0.600 ± 0.100 | 0.500, 0.700 | 1.0 |" in page
    assert "seeds: 0, 1; total wall time: 3.0 min" in page and "Merged from 2 runs" in page


def test_results_refuses_seeds_that_are_not_distinct_integers(capsys):
    for bad in ("0,x", "1,1", ""):
        with pytest.raises(SystemExit):
            results.main(["--only", "sentiment", "--seeds", bad, "--output", "unused.md"])
        assert "--seeds expected" in capsys.readouterr().err


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


def test_isa_class_names_the_best_instruction_set_the_cpu_flags_list():
    assert isa_class(["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]) == "AMX"
    assert isa_class(["avx2", "avx512f", "avx512_bf16"]) == "AVX-512 BF16"
    assert isa_class(["avx2", "avx512f"]) == "AVX-512"
    assert isa_class(["sse4_2", "avx2"]) == "AVX2"
    assert isa_class(["sse4_2"]) == "older than AVX2"
    assert has_bf16_instructions("AMX") and has_bf16_instructions("AVX-512 BF16")
    assert not has_bf16_instructions("AVX-512")


def test_speed_benchmark_reports_isa_peaks_and_each_contenders_share_of_its_own_peak(tmp_path, monkeypatch):
    import benchmarks.gru_speed as gru_speed

    # (batch, time, input, hidden): seconds instead of minutes; no memory probes (fresh processes)
    monkeypatch.setattr(gru_speed, "CONFIGS", {"c1": (2, 6, 3, 4), "c3": (1, 6, 3, 4)})
    monkeypatch.setattr(gru_speed, "MEMORY_CASES", ())
    measure_peaks = gru_speed.measure_peaks
    monkeypatch.setattr(gru_speed, "measure_peaks", lambda size, repeats: measure_peaks(64, 1))
    output = tmp_path / "speed.json"
    gru_speed.main(["--quick", "--cases", "c1", "c3", "--repeats", "1", "--threads", "1", "--no-keras", "--no-doc",
                    "--output", str(output)])
    results = json.loads(output.read_text())
    machine = results["machine"]
    assert machine["isa"] == cpu_isa()["isa"] and "onednn_isa" in machine
    peaks = results["peaks"]
    assert set(peaks) == {"float32", "bfloat16", "int8"} and min(peaks.values()) > 0
    c1 = results["cases"]["c1"]
    for mode in ("inference", "training"):
        for name, entry in c1[mode].items():
            precision = results["contenders"][name]["precision"]
            assert entry["precision"] == precision
            assert entry["percent_of_peak"] == pytest.approx(100 * entry["gflops"] / peaks[precision])
            assert name == gru_speed.BASELINE or "speedup_vs_torch.nn.GRU" in entry  # all against float32 nn.GRU
    assert c1["training"]["torch.nn.GRU bf16"]["precision"] == "bfloat16"
    for name in (gru_speed.AUTOCAST_BF16, gru_speed.MODULE_BF16, "grukit int8"):
        assert (name in c1["inference"]) != (name in results["not_measured"])  # measured, or says why not
    assert "grukit int8" not in c1["training"]
    assert c1["training"]["grukit auto"]["engine"] in ("onednn", "native", "reference")
    page = gru_speed.markdown(results)
    assert f"ISA **{machine['isa']}**" in page and "bfloat16 **" in page and "| grukit auto (ran " in page
    assert ("| bf16 training, AMX | c1 | training |" in page) == (machine["isa"] == "AMX")
    assert "| float32 batch-1 training | c3 | training | grukit auto |" in page
    elsewhere = gru_speed.markdown({**results, "machine": {**machine, "isa": "AVX-512"}})
    assert "| bf16 training, AVX-512 BF16 only | c1 | training |" in elsewhere
    assert "| bf16 training, AMX" not in elsewhere and "| bf16 inference, AMX" not in elsewhere


def test_single_step_benchmark_writes_every_contender_and_its_ratio(tmp_path, capsys):
    from benchmarks import single_step

    output = tmp_path / "single_step.json"
    arguments = ["--quick", "--threads", "1", "--hidden", "32", "--repeats", "2", "--output", str(output)]
    assert single_step.main(arguments) == 0
    results = json.loads(output.read_text())
    assert results["machine"]["threads"] == 1 and results["batch"] == 1 and results["dtype"] == "float32"
    names = [row["contender"] for row in results["rows"]]
    assert names == list(single_step.contenders(32)) and single_step.BASELINE in names
    assert all(row["median_us"] > 0 and row["weight_gb_per_s"] > 0 and row["vs_nn_gru"] > 0 for row in results["rows"])
    printed = capsys.readouterr().out
    assert printed.startswith(machine_line(results["machine"]).split(";")[0]) and "| 32 | grukit GRU.step |" in printed
