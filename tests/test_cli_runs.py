"""``grukit`` never writes over a user's files: ``--out`` folders it did not write, a finished run started
again without ``--resume``, a resume on other text or another model config, a forecast written over its
input."""

import json

import pytest
import torch

from grukit.cli import main

TEXT = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n" * 12
CONFIG = {
    "tokenizer": {"type": "char"},
    "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1},
    "training": {"batch_size": 2, "seq_len": 8, "warmup_steps": 1, "checkpoint_every": 1},
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grukit: error: "), err
    return code, err


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def files(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper(), encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    return corpus, other, config


def train(corpus, config, out, *extra: str) -> list[str]:
    return ["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(out), "--no-progress", *extra]


def test_lm_train_refuses_to_start_again_over_a_run_and_resumes_only_on_its_own_text(tmp_path, files, capsys):
    corpus, other, config = files
    out = tmp_path / "run"
    assert main(train(corpus, config, out, "--steps", "2")) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert (out / "checkpoint" / "manifest.json").is_file() and (out / "train_log.csv").is_file()

    code, err = run(train(corpus, config, out, "--steps", "2"), capsys)
    assert code == 2 and f"--out {out} already holds a training run" in err and "pass --resume" in err
    code, err = run(train(other, config, out, "--steps", "4", "--resume"), capsys)
    assert code == 2 and f"was trained on {corpus} (sha256" in err and f"not on {other} (sha256" in err
    changed = tmp_path / "wider.json"
    changed.write_text(json.dumps({**CONFIG, "model": {**CONFIG["model"], "hidden_size": 16}}))
    code, err = run(train(corpus, changed, out, "--steps", "4", "--resume"), capsys)
    assert code == 2 and "differs from the checkpoint" in err and "'hidden_size'" in err
    assert snapshot(out) == before  # nothing of the earlier run was touched

    assert main(train(corpus, config, out, "--steps", "4", "--resume")) == 0
    assert "4 steps" in capsys.readouterr().out
    steps = [line.split(",")[0] for line in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]


def test_lm_runs_refuse_a_folder_holding_a_users_files(tmp_path, files, capsys):
    corpus, _, config = files
    mywork = tmp_path / "mywork"
    mywork.mkdir()
    (mywork / "thesis.tex").write_text("years of work")
    for argv in (train(corpus, config, mywork), train(corpus, config, mywork, "--resume"),
                 ["finetune", "lm", "--lm", str(tmp_path), "--text", str(corpus), "--out", str(mywork)]):
        code, err = run(argv, capsys)
        assert code == 2 and f"--out {mywork} is not empty and is not a grukit run folder (it holds thesis.tex)" in err
    assert [p.name for p in mywork.iterdir()] == ["thesis.tex"]
    assert (mywork / "thesis.tex").read_text() == "years of work"


def test_finetune_classify_keeps_a_users_folder_and_rewrites_only_its_own(tmp_path, files, capsys):
    corpus, _, config = files
    data = tmp_path / "reviews.csv"
    rows = [f"a fine film number {i},pos" for i in range(8)] + [f"a dull film number {i},neg" for i in range(8)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    mywork = tmp_path / "mywork"
    mywork.mkdir()
    (mywork / "notes.txt").write_text("keep me")
    argv = ["finetune", "classify", "--scratch", str(config), "--method", "scratch", "--data", str(data),
            "--epochs", "1", "--batch-size", "4", "--no-progress", "--out"]
    code, err = run([*argv, str(mywork)], capsys)
    assert code == 2 and f"--out {mywork} is not empty and is not a model folder grukit wrote" in err
    assert "notes.txt" in err and (mywork / "notes.txt").read_text() == "keep me"

    out = tmp_path / "clf"
    assert main([*argv, str(out)]) == 0
    assert main([*argv, str(out), "--seed", "1"]) == 0  # its own earlier output is replaced
    assert (out / "results.json").is_file() and (out / "config.json").is_file()
    (out / "mine.txt").write_text("added by hand")
    capsys.readouterr()
    code, err = run([*argv, str(out)], capsys)
    assert code == 2 and "mine.txt" in err and (out / "mine.txt").read_text() == "added by hand"


def test_forecast_never_writes_over_its_input(tmp_path, capsys):
    csv = tmp_path / "prices.csv"
    csv.write_text("close\n" + "".join(f"{i % 7}\n" for i in range(40)))
    before = csv.read_bytes()
    code, err = run(["forecast", "--csv", str(csv), "--column", "close", "--horizon", "2", "--output", str(csv)],
                    capsys)
    assert code == 2 and "is the --csv file itself" in err and csv.read_bytes() == before
