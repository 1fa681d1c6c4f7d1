"""Checkpoint folders: atomic writes, verified loads, no pickle, exact optimizer and RNG state."""

import json
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from grukit.nn import GRU
from grukit.train import CheckpointError, load_checkpoint, save_checkpoint, seed_everything
from grukit.train import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[1] / "src" / "grukit"


def _trained_model_and_optimizer():
    torch.manual_seed(0)
    model = GRU(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 5, 3))[0].pow(2).sum().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_and_state(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ck", {"architecture": "GRU", "hidden_size": 4}, model.state_dict(),
                           optimizer, {"epoch": 3, "step": 17}, {"notes.txt": b"hello"})
    assert sorted(os.listdir(path)) == sorted(["config.json", "model.safetensors", "optimizer.safetensors",
                                               "training_state.json", "manifest.json", "notes.txt"])
    loaded = load_checkpoint(path, architecture="GRU")
    assert loaded.config == {"architecture": "GRU", "hidden_size": 4}
    assert loaded.training_state["epoch"] == 3 and loaded.training_state["step"] == 17
    assert loaded.extra_files == {"notes.txt": b"hello"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.weights[name], tensor)
    # The restored optimizer takes exactly the same next step as the original one.
    twin = GRU(3, 4)
    twin.load_state_dict(loaded.weights)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2)
    twin_optimizer.load_state_dict(loaded.optimizer_state)
    x = torch.randn(2, 5, 3)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        m(x)[0].pow(2).sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_rng_state_round_trips_python_numpy_and_torch(tmp_path):
    seed_everything(5)
    save_checkpoint(tmp_path / "ck", {"architecture": "x"}, {"w": torch.zeros(1)}, training_state={"step": 0})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(99)
    ckpt.set_rng_state(load_checkpoint(tmp_path / "ck").training_state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_seed_everything_repeats_and_rejects_bad_seeds():
    seed_everything(7)
    first = torch.randn(3)
    seed_everything(7)
    assert torch.equal(first, torch.randn(3))
    with pytest.raises(ValueError, match=r"non-negative integer seed, got -1"):
        seed_everything(-1)
    with pytest.raises(ValueError, match=r"got 1.5"):
        seed_everything(1.5)


def test_overwrite_is_atomic_when_the_final_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(path, {"architecture": "GRU", "version": 1}, {"w": torch.ones(2)})
    real_replace = os.replace

    def crash_on_swap(src, dst):
        if Path(dst) == path and Path(src).name.endswith(".tmp"):  # the new folder moving into place
            raise OSError("simulated crash while swapping the checkpoint in")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_swap)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"architecture": "GRU", "version": 2}, {"w": torch.zeros(2)})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"], "staging or retired folders were left behind"
    config = json.loads((path / "config.json").read_text())
    assert config["version"] == 1


def test_crash_between_the_two_renames_is_recovered_on_load(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"architecture": "GRU", "version": 1}, {"w": torch.ones(2)})
    aside = tmp_path / ".ck.abc.old"
    aside.mkdir()
    os.replace(path, aside / "ck")  # the state a SIGKILL between the renames leaves
    with pytest.warns(UserWarning, match="restored checkpoint"):
        loaded = load_checkpoint(path)
    assert loaded.config["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_truncated_file_is_refused_with_sizes(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"architecture": "GRU"}, {"w": torch.ones(64)})
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model.safetensors.*corrupted or truncated: expected \d+ bytes"):
        load_checkpoint(path)


def test_flipped_byte_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"architecture": "GRU"}, {"w": torch.ones(64)})
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_missing_manifest_config_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")
    path = save_checkpoint(tmp_path / "ck", {"architecture": "GRU"}, {"w": torch.ones(1)})
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing 'config.json'"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="has no manifest.json"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"architecture": "LSTM"}, {"w": torch.ones(1)})
    with pytest.raises(CheckpointError, match="holds a 'LSTM' model, expected 'GRU'"):
        load_checkpoint(path, architecture="GRU")


def test_config_must_name_its_architecture(tmp_path):
    with pytest.raises(ValueError, match="must name its 'architecture'"):
        save_checkpoint(tmp_path / "ck", {"hidden_size": 3}, {"w": torch.ones(1)})
    assert not (tmp_path / "ck").exists()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_crafted_pickle_offered_as_weights_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    # A folder whose manifest matches, so only the weights format stands between the file and the loader.
    ckpt.write_folder(tmp_path / "evil", {"config.json": b'{"architecture": "GRU"}', "model.safetensors": payload})
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(tmp_path / "evil")
    assert not marker.exists()


def test_no_pickle_and_no_unsafe_torch_load_in_the_package():
    offenders = []
    for file in SRC.rglob("*.py"):
        text = file.read_text("utf-8")
        if re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M):
            offenders.append(f"{file}: imports a pickler")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{file}: {call}")
    assert offenders == []
