"""``grukit lm train --nproc 2`` re-launches itself under torch.distributed.run: two processes train the same
model as one process with the same global batch, rank 0 alone prints and writes the run folder, and a run
started in two processes resumes in one; the scale-out flags are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from grukit.cli import main

TEXT = "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n" * 12
CONFIG = {
    "tokenizer": {"type": "char"},
    "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1},
    "training": {"batch_size": 4, "seq_len": 8, "warmup_steps": 1, "checkpoint_every": 3},
}


def grukit(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "grukit.cli", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def files(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    return corpus, config


def test_lm_train_in_two_processes_equals_one_and_resumes_in_one(tmp_path, files):
    corpus, config = files
    common = ["lm", "train", "--text", str(corpus), "--config", str(config), "--steps", "9"]
    two = grukit(*common, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert two.stdout.count(" steps, last train loss ") == 1  # rank 1 prints nothing
    assert two.stdout.count("memory estimate: ") == 1
    names = {p.name for p in (tmp_path / "two").iterdir()}
    assert {"checkpoint", "data", "model", "train_log.csv", "valid_log.csv"} <= names
    assert not names - {"checkpoint", "data", "model", "train_log.csv", "valid_log.csv", "tensorboard"}
    rows = (tmp_path / "two" / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(step) for step in range(1, 10)]  # rank 0's rows only

    grukit(*common, "--out", str(tmp_path / "one"), "--no-progress")
    two_weights = load_file(tmp_path / "two" / "model" / "model.safetensors")
    one_weights = load_file(tmp_path / "one" / "model" / "model.safetensors")
    for name, tensor in one_weights.items():
        torch.testing.assert_close(two_weights[name], tensor, rtol=0, atol=1e-5, msg=name)

    grukit(*common[:-1], "12", "--out", str(tmp_path / "two"), "--resume", "--no-progress")  # in one process
    rows = (tmp_path / "two" / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(step) for step in range(1, 13)]


def test_scale_out_flags_are_checked(tmp_path, files, capsys):
    corpus, config = files
    common = ["lm", "train", "--text", str(corpus), "--config", str(config), "--out", str(tmp_path / "run")]
    assert main([*common, "--nnodes", "2"]) == 2
    assert "--nnodes 2 needs --rdzv-endpoint HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tag", "--nproc", "0"])
    assert "--nproc: expected a positive integer, got '0'" in capsys.readouterr().err
