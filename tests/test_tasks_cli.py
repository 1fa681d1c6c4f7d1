"""The task subcommands of ``grukit`` on a user's own files."""

import numpy as np
import pytest
import torch

from grukit.cli import main


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
    assert lines[0] == "step,forecast,lower_80,upper_80" and len(lines) == 6
    step, point, lower, upper = (float(v) for v in lines[1].split(","))
    assert step == 1 and lower <= point <= upper and 30 < point < 80
    assert "filled 1 missing values" in capsys.readouterr().err


def test_forecast_names_the_columns_when_one_is_missing(tmp_path, capsys):
    csv = tmp_path / "prices.csv"
    csv.write_text("day,close\n1,2\n")
    assert main(["forecast", "--csv", str(csv), "--column", "price", "--horizon", "3"]) == 2
    assert "has no column(s) ['price']; its columns are ['day', 'close']" in capsys.readouterr().err


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
    assert main(["classify-series", "--csv", str(csv), "--epochs", "15", "--test-size", "0.3", "--quiet"]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.8


def test_tag_and_translate_read_plain_text_files(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the/D dog/N runs/V", "a/D cat/N sleeps/V", "the/D cat/N runs/V"] * 20) + "\n")
    assert main(["tag", "--file", str(corpus), "--epochs", "3", "--predict", "a dog sleeps"]) == 0
    assert "a/D  dog/N  sleeps/V" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("the/D dog\n")
    assert main(["tag", "--file", str(bad)]) == 2
    assert f"{bad} line 1: token 'dog' is not word/TAG" in capsys.readouterr().err
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("one\tun\ntwo\tdeux\nthree\n")
    assert main(["translate", "--pairs", str(pairs)]) == 2
    assert f"{pairs} line 3: expected source<TAB>target, got 1 field" in capsys.readouterr().err


def test_classify_series_refuses_a_gap_inside_a_series_naming_line_and_column(tmp_path, capsys):
    csv = tmp_path / "series.csv"
    csv.write_text("label,t0,t1,t2,t3\nup,1,2,3,\ndown,3,,1,0\nup,1,2,3,4\n")
    assert main(["classify-series", "--csv", str(csv)]) == 2
    assert f"{csv} line 3, column 't1': a value is missing inside the series" in capsys.readouterr().err

