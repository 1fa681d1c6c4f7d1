"""What a newcomer does first with the ``grukit`` command, and what they must see: every training command
keeps its model with ``--out`` and ``grukit predict`` runs it, printing label names; flags mean what they
say (``--epochs``, ``--steps``), and conflicts are named before training; ``lm train`` needs no config
file; fine-tuning names the characters a model has never seen; forecasts carry the CSV's dates."""

import json

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


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grukit: error: "), captured.err
    return code, captured.out, captured.err


CORPUS = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n" * 12


def test_classify_text_saves_and_predict_prints_label_names_or_writes_a_csv(tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    rows = [f"great fine film {i},good" for i in range(12)] + [f"dull bad film {i},bad" for i in range(12)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    code, _, err = run(["classify-text", "--csv", str(data), "--tokens", "char", "--epochs", "2", "--out", str(out)],
                       capsys)
    assert code == 0 and "Epoch 1/2" in err and "loss" in err  # the progress bar, on stderr
    texts = tmp_path / "new.txt"
    texts.write_text("great fine\ndull bad\n")
    code, out_text, _ = run(["predict", str(out), str(texts)], capsys)
    lines = out_text.splitlines()
    assert code == 0 and [line.split("\t")[1] for line in lines] == ["great fine", "dull bad"]
    assert {line.split("\t")[0] for line in lines} <= {"good", "bad"}
    written = tmp_path / "labels.csv"
    assert run(["predict", str(out), str(texts), "--output", str(written)], capsys)[0] == 0
    assert written.read_text().splitlines()[0] == "text,label"

    mywork = tmp_path / "mywork"
    mywork.mkdir()
    (mywork / "notes.txt").write_text("keep")
    code, _, err = run(["classify-text", "--csv", str(data), "--epochs", "1", "--quiet", "--out", str(mywork)], capsys)
    assert code == 2 and "is not a model folder grukit wrote" in err and (mywork / "notes.txt").read_text() == "keep"


def test_tag_translate_and_classify_series_save_models_predict_runs(tmp_path, capsys):
    corpus = tmp_path / "tags.txt"
    corpus.write_text("\n".join(["the/D dog/N runs/V", "a/D cat/N sleeps/V"] * 20) + "\n")
    tagger = tmp_path / "tagger"
    assert run(["tag", "--file", str(corpus), "--epochs", "3", "--quiet", "--out", str(tagger)], capsys)[0] == 0
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a dog sleeps\n")
    code, out, _ = run(["predict", str(tagger), str(sentences)], capsys)
    assert code == 0 and out == "a/D dog/N sleeps/V\ta dog sleeps\n"

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(["one\tun", "two\tdeux", "three\ttrois"] * 6) + "\n")
    translator = tmp_path / "translator"
    assert run(["translate", "--pairs", str(pairs), "--epochs", "1", "--quiet", "--out", str(translator)],
               capsys)[0] == 0
    sources = tmp_path / "sources.txt"
    sources.write_text("one\ntwo\n")
    code, out, _ = run(["predict", str(translator), str(sources)], capsys)
    assert code == 0 and [line.split("\t")[1] for line in out.splitlines()] == ["one", "two"]

    rng = np.random.default_rng(0)
    rows = [f"{'up' if i % 2 else 'down'}," + ",".join(f"{v:.3f}" for v in rng.normal(i % 2, 0.1, 8))
            for i in range(20)]
    series = tmp_path / "series.csv"
    series.write_text("label," + ",".join(f"t{i}" for i in range(8)) + "\n" + "\n".join(rows) + "\n")
    classifier = tmp_path / "series_model"
    code, _, err = run(["classify-series", "--csv", str(series), "--epochs", "2", "--out", str(classifier)], capsys)
    assert code == 0 and "Epoch 2/2" in err and "Epoch 3/" not in err  # --epochs 2 means two epochs
    code, out, _ = run(["predict", str(classifier), str(series)], capsys)  # the label column is ignored
    assert code == 0 and len(out.splitlines()) == 20 and {line.split("\t")[0] for line in out.splitlines()} <= {
        "up", "down"}
    argv = ["classify-series", "--csv", str(series), "--epochs", "1", "--min-steps", "6", "--quiet"]
    code, _, err = run(argv, capsys)
    assert code == 0 and "--min-steps 6 raises --epochs 1 to 6 (1 steps per epoch)" in err


def test_forecast_writes_dates_and_the_interval_level_and_predict_reuses_the_model(tmp_path, capsys):
    months = [f"{2015 + i // 12}-{i % 12 + 1:02d}-01" for i in range(96)]
    values = 100 + np.arange(96) + 10 * np.sin(np.arange(96) * 2 * np.pi / 12)
    values += np.random.default_rng(0).normal(0, 1, 96)
    data = tmp_path / "sales.csv"
    data.write_text("month,sales\n" + "".join(f"{m},{v:.3f}\n" for m, v in zip(months, values)))
    output, model = tmp_path / "forecast.csv", tmp_path / "forecaster"
    argv = ["forecast", "--csv", str(data), "--column", "sales", "--horizon", "3", "--lookback", "12", "--epochs", "2",
            "--quiet", "--output", str(output), "--out", str(model)]
    code, _, err = run(argv, capsys)
    assert code == 0 and "season 12 from the dates' frequency (MS)" in err
    lines = output.read_text().splitlines()
    assert lines[0] == "date,forecast,lower_80,upper_80"
    assert [line.split(",")[0] for line in lines[1:]] == ["2023-01-01", "2023-02-01", "2023-03-01"]
    code, out, _ = run(["predict", str(model), "--horizon", "2"], capsys)
    assert code == 0 and out.splitlines() == lines[:3]


def test_lm_train_runs_without_a_config_and_runs_every_step_asked_for(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    out = tmp_path / "run"
    code, text, _ = run(["lm", "train", "--text", str(corpus), "--out", str(out), "--steps", "9", "--quiet"], capsys)
    # the tiny preset trains 3 epochs of 2 steps on this text: --steps 9 raises the epochs instead of stopping at 6
    assert code == 0 and "training for 9 steps: 5 epoch(s) of 2 steps" in text and "\n9 steps, last train loss" in text
    assert len((out / "train_log.csv").read_text().splitlines()) == 1 + 9

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hiden_size": 8}}))
    code, _, err = run(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(tmp_path / "x")],
                       capsys)
    assert code == 2 and "section 'model'" in err and "['hiden_size']" in err and "'hidden_size'" in err
    config.write_text(json.dumps({"model": {"hidden_size": 8, "embedding_size": 8}, "training": {"epochs": 1}}))
    code, _, err = run(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(tmp_path / "y"),
                        "--steps", "3", "--quiet"], capsys)
    assert code == 0 and "warning: steps 3 conflict with epochs 1" in err


def test_finetuning_names_the_characters_a_char_model_never_saw(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hidden_size": 8, "embedding_size": 8, "num_layers": 1}}))
    pretrained = tmp_path / "pre"
    assert run(["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(pretrained), "--steps",
                "1", "--quiet"], capsys)[0] == 0
    french = tmp_path / "french.txt"
    french.write_text("Élégant été. " * 10 + "\n" + CORPUS)
    code, _, err = run(["finetune", "lm", "--lm", str(pretrained), "--text", str(french), "--out", str(tmp_path / "ft"),
                        "--steps", "1", "--quiet"], capsys)
    assert code == 0 and "warning: 3 distinct characters of your text" in err
    assert "3.86% of its 1,295 characters" in err and "'é' (30), 'É' (10), 'l' (10)" in err


def test_a_finetuned_lm_classifier_predicts_label_names(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"hidden_size": 8, "embedding_size": 8, "num_layers": 1}}))
    data = tmp_path / "reviews.csv"
    rows = [f"a fine film number {i},pos" for i in range(8)] + [f"a dull film number {i},neg" for i in range(8)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "clf"
    assert run(["finetune", "classify", "--scratch", str(config), "--data", str(data), "--epochs", "1", "--quiet",
                "--out", str(out)], capsys)[0] == 0
    texts = tmp_path / "texts.csv"
    texts.write_text("id,text\n1,a fine film\n2,a dull film\n")
    code, out_text, _ = run(["predict", str(out), str(texts)], capsys)  # a CSV: its 'text' column
    lines = out_text.splitlines()
    assert code == 0 and [line.split("\t")[1] for line in lines] == ["a fine film", "a dull film"]
    assert {line.split("\t")[0] for line in lines} <= {"pos", "neg"}
    code, _, err = run(["predict", str(out), str(texts), "--horizon", "3"], capsys)
    assert code == 2 and "--horizon is for a forecaster" in err
