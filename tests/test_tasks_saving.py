"""Saving grukit's estimators: each one, fitted on tiny data, is saved as a folder (JSON + safetensors, no
pickle), loaded in a fresh Python process, and predicts exactly what it predicted before, labels' types too."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import grukit
from grukit.tasks import Forecaster, TextClassifier, Translator
from grukit.train import CheckpointError, save_checkpoint
from tasks_tiny import CASES, fitted, predictions


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each case fitted, its predictions, and its folder; then one fresh process loads every folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("saved")
    before = {}
    for name in CASES:
        model = fitted(name)
        before[name] = predictions(model, CASES[name][3]())
        assert model.save_pretrained(root / name) == root / name
    script = textwrap.dedent(
        """
        import json, sys
        import torch
        torch.set_num_threads(1)
        sys.path.insert(0, sys.argv[1])
        import grukit
        import tasks_tiny as cases
        root, result = sys.argv[2], {}
        for name, (make, _, _, x_new) in cases.CASES.items():
            model = grukit.load(f"{root}/{name}")
            same = type(model).from_pretrained(f"{root}/{name}")
            result[name] = {
                "class": type(model).__name__,
                "params": {k: repr(v) for k, v in model.get_params().items()},
                "loaded": cases.predictions(model, x_new()),
                "from_pretrained": cases.predictions(same, x_new()),
            }
        print(json.dumps(result))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    torch.set_num_threads(threads)
    assert child.returncode == 0, child.stderr[-3000:]
    return root, before, json.loads(child.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_a_loaded_estimator_predicts_exactly_what_it_did_before_saving(saved, name):
    _, before, after = saved
    make = CASES[name][0]
    assert after[name]["class"] == type(make()).__name__
    assert after[name]["params"] == {k: repr(v) for k, v in make().get_params().items()}
    assert after[name]["loaded"] == before[name]
    assert after[name]["from_pretrained"] == before[name]


def test_labels_keep_their_type_through_saving(saved):
    _, before, _ = saved
    assert before["text_bpe_str_labels"]["predict"]["dtype"].startswith("<U")
    assert before["text_char_int_labels"]["predict"]["dtype"] == np.dtype(np.int64).str
    assert before["sequence_classifier"]["predict"]["dtype"] == np.dtype(np.int64).str
    assert set(before["sequence_classifier"]["predict"]["values"]) <= {3, 5, 7}
    assert before["tagger"]["predict"]["types"] == ["str"]
    assert before["tagger_int_tags"]["predict"]["types"] == ["int"]
    assert before["video_str_labels"]["predict"]["dtype"].startswith("<U")


@pytest.mark.parametrize("name", list(CASES))
def test_a_saved_folder_is_json_and_safetensors_only(saved, name):
    root, _, _ = saved
    folder = root / name
    names = {path.name for path in folder.iterdir()}
    core = {"config.json", "model.safetensors", "manifest.json"}
    assert core <= names
    for extra in names - core:  # vocabularies, tokenizers, training state: readable JSON
        assert extra.endswith(".json") and json.loads((folder / extra).read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == f"grukit.{type(CASES[name][0]()).__name__}"
    assert set(config) == {"architecture", "params", "fitted"}
    for path in folder.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"


def test_loading_a_folder_as_another_estimator_says_what_it_holds(saved):
    root, _, _ = saved
    with pytest.raises(CheckpointError, match="holds a 'grukit.Forecaster' model, expected 'grukit.TextClassifier'"):
        TextClassifier.from_pretrained(root / "forecaster")
    assert isinstance(grukit.load(root / "forecaster"), Forecaster)


def test_saving_before_fit_says_to_fit_first(tmp_path):
    with pytest.raises(NotFittedError, match="This Translator is not fitted yet: call fit"):
        Translator().save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_folder_without_the_fitted_state_is_refused_clearly(tmp_path):
    save_checkpoint(tmp_path / "model", {"architecture": "grukit.Forecaster", "params": {}}, {})
    with pytest.raises(CheckpointError, match="does not hold a complete Forecaster: KeyError: 'fitted'"):
        grukit.load(tmp_path / "model")
