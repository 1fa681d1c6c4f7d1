"""One saved-model format: ``save_pretrained`` / ``from_pretrained`` / ``grukit.load`` for Sequential and the GRU
language model (with its tokenizer and LoRA adapters), edited configs refused before allocation, and a save read
back in a fresh process giving identical outputs."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import grukit
from grukit import layers
from grukit.lm import GRULanguageModel, LMConfig, add_lora, load_lora, lora_config, save_lora
from grukit.models import Sequential, load_model
from grukit.saved import ARCHITECTURES, OLD_ARCHITECTURES
from grukit.text import CharTokenizer
from grukit.train import CheckpointError
from grukit.train.checkpoint import read_folder, write_folder

TEXT = "the quick brown fox jumps over the lazy dog. " * 4


def _sequential() -> Sequential:
    torch.manual_seed(0)
    model = Sequential([layers.Embedding(20, 6, mask_zero=True), layers.GRU(5), layers.Dense(3)])
    model.build((None, None))
    return model


def _lm(hidden_size: int = 10, lora: bool = True) -> GRULanguageModel:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train([TEXT])
    model = GRULanguageModel(LMConfig(tokenizer.vocab_size, embedding_size=6, hidden_size=hidden_size), tokenizer)
    if lora:
        add_lora(model, rank=2, alpha=4.0)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_()
    return model.eval()


def _edit(folder: Path, name: str, edit) -> None:
    """Change one file of a saved folder and write it back with a matching manifest (as a person editing the
    folder and re-saving it would)."""
    files = read_folder(folder)
    files.pop("manifest.json", None)
    files[name] = edit(files[name])
    write_folder(folder, files)


def _edit_config(folder: Path, change) -> None:
    def edit(data: bytes) -> bytes:
        config = json.loads(data)
        change(config)
        return json.dumps(config).encode()

    _edit(folder, "config.json", edit)


# Round trips --------------------------------------------------------------------------------------------------
def test_sequential_save_and_save_pretrained_write_one_format_that_every_loader_reads(tmp_path):
    model = _sequential().eval()
    x = torch.tensor([[3, 4, 5, 0], [7, 1, 0, 0]])
    model.save(tmp_path / "keras")
    model.save_pretrained(tmp_path / "pretrained")
    read = [
        load_model(tmp_path / "pretrained"),
        Sequential.from_pretrained(tmp_path / "keras"),
        grukit.load(tmp_path / "keras"),
    ]
    for loaded in read:
        assert type(loaded) is Sequential
        assert torch.equal(loaded.eval()(x), model(x))
    assert json.loads((tmp_path / "keras" / "config.json").read_text())["architecture"] == "grukit.Sequential"


@pytest.mark.parametrize(
    "stack",
    [
        [layers.Bidirectional(layers.LSTM(4, return_sequences=True)), layers.TimeDistributed(layers.Dense(2))],
        [layers.MinGRU(4, return_sequences=True), layers.Dropout(0.5), layers.GlobalMaxPooling1D(), layers.Dense(2)],
        [layers.GRU(4, return_sequences=True, reset_after=False), layers.GlobalAveragePooling1D()],
    ],
)
def test_every_layer_kind_round_trips_through_the_weight_shape_check(tmp_path, stack):
    torch.manual_seed(0)
    model = Sequential(stack)
    model.build((None, None, 3))
    model.eval().save_pretrained(tmp_path / "model")
    x = torch.randn(2, 5, 3)
    assert torch.equal(Sequential.from_pretrained(tmp_path / "model").eval()(x), model(x))


def test_language_model_saves_its_tokenizer_and_lora_adapters_in_one_folder(tmp_path):
    model = _lm()
    model.save_pretrained(tmp_path / "lm")
    assert {p.name for p in (tmp_path / "lm").iterdir()} == {
        "config.json",
        "model.safetensors",
        "char_tokenizer.json",
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    }
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["architecture"] == "grukit.GRULanguageModel"
    loaded = grukit.load(tmp_path / "lm")
    assert type(loaded) is GRULanguageModel
    assert lora_config(loaded) == {"rank": 2, "alpha": 4.0, "targets": ["weight_hh", "weight_ih"]}
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded.eval()(ids)[0], model(ids)[0])
    assert loaded.generate("the", 8, temperature=0) == model.generate("the", 8, temperature=0)


def test_a_language_model_saved_under_the_old_id_still_opens(tmp_path):
    model = _lm(lora=False)
    model.save_pretrained(tmp_path / "lm")
    _edit_config(tmp_path / "lm", lambda config: config.update(architecture="grukit-gru-lm"))
    ids = torch.tensor([[1, 2, 3]])
    for loaded in (GRULanguageModel.from_pretrained(tmp_path / "lm"), grukit.load(tmp_path / "lm")):
        assert torch.equal(loaded.eval()(ids)[0], model(ids)[0])


FRESH_PROCESS = """
import sys
import torch
from safetensors.torch import load_file, save_file
import grukit

folder = sys.argv[1]
inputs = load_file(folder + "/inputs.safetensors")
sequential = grukit.load(folder + "/sequential").eval()
lm = grukit.load(folder + "/lm").eval()
with torch.no_grad():
    save_file({"sequential": sequential(inputs["x"]), "lm": lm(inputs["ids"])[0]}, folder + "/outputs.safetensors")
"""


def test_a_save_read_back_in_a_fresh_process_predicts_identically(tmp_path):
    sequential, lm = _sequential().eval(), _lm()
    x, ids = torch.tensor([[3, 4, 5, 0], [7, 1, 0, 0]]), torch.tensor([[1, 2, 3, 4, 5]])
    sequential.save_pretrained(tmp_path / "sequential")
    lm.save_pretrained(tmp_path / "lm")
    save_file({"x": x, "ids": ids}, tmp_path / "inputs.safetensors")
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path)], check=True, timeout=120)
    outputs = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        assert torch.equal(outputs["sequential"], sequential(x))
        assert torch.equal(outputs["lm"], lm(ids)[0])


# grukit.load ----------------------------------------------------------------------------------------------------
def test_load_says_what_is_wrong_with_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint folder at '.*nowhere'"):
        grukit.load(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text('{"architecture": "grukit.Sequential"}')
    with pytest.raises(CheckpointError, match=r"'.*plain' has no manifest.json: it is not a grukit checkpoint"):
        grukit.load(tmp_path / "plain")
    write_folder(tmp_path / "alien", {"config.json": b'{"architecture": "keras.Model"}'})
    with pytest.raises(
        CheckpointError, match=r"holds a 'keras.Model' model, which grukit cannot open; expected one of"
    ):
        grukit.load(tmp_path / "alien")
    write_folder(tmp_path / "nameless", {"config.json": b'{"layers": []}'})
    with pytest.raises(CheckpointError, match=r"holds a None model, which grukit cannot open"):
        grukit.load(tmp_path / "nameless")
    write_folder(tmp_path / "listed", {"config.json": b'["grukit.Sequential"]'})
    with pytest.raises(CheckpointError, match=r"config.json must hold a JSON object, got \[\"grukit.Sequential\"\]"):
        grukit.load(tmp_path / "listed")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_known_id_names_a_class_that_saves_and_loads(architecture):
    module_name, class_name = ARCHITECTURES[architecture].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert architecture == f"grukit.{cls.__name__}"
    assert callable(cls.from_pretrained) and callable(cls.save_pretrained)


def test_old_ids_are_aliases_of_known_ones():
    assert set(OLD_ARCHITECTURES.values()) <= set(ARCHITECTURES)


# Edited configs are refused before the model is allocated ------------------------------------------------------
def test_a_config_asking_for_a_huge_sequential_fails_fast_naming_the_layer(tmp_path):
    _sequential().save_pretrained(tmp_path / "model")
    # 10**9 x 6 floats would be 24 GB, 10**6 units of GRU another 36 TB: refused before anything is allocated.
    _edit_config(tmp_path / "model", lambda config: config["layers"][0]["config"].update(input_dim=10**9))
    with pytest.raises(
        CheckpointError,
        match=r"config.json does not fit model.safetensors: weight 'layers.0.embeddings' of layer 'embedding' "
        r"\(Embedding, input_dim=1000000000\) would have shape \(1000000000, 6\) by the config, but the saved "
        r"weight has shape \(20, 6\)",
    ):
        Sequential.from_pretrained(tmp_path / "model")
    _edit_config(tmp_path / "model", lambda config: config["layers"][0]["config"].update(input_dim=20))
    _edit_config(tmp_path / "model", lambda config: config["layers"][1]["config"].update(units=10**6))
    with pytest.raises(
        CheckpointError,
        match=r"weight 'layers.1.module.weight_ih_l0' of layer 'gru' \(GRU, units=1000000\) would have shape "
        r"\(3000000, 6\) by the config, but the saved weight has shape \(15, 6\)",
    ):
        grukit.load(tmp_path / "model")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["layers"][1].update(class_name="Conv9D"), r"layer 1 \('Conv9D'\) cannot be built: unknown layer"),
        (lambda c: c["layers"][2]["config"].update(colour="red"), r"layer 2 \('Dense'\) cannot be built: .*colour"),
        (lambda c: c["layers"][2].pop("config"), r"layer 2 \('Dense'\) cannot be built: expected a \"config\""),
        (lambda c: c.update(layers={"0": "GRU"}), r"config.json must list the model's layers as \"layers\": \["),
        (lambda c: c.update(layers=[]), r"config.json must list the model's layers"),
        (lambda c: c.update(input_shape="(None, None)"), r"must give \"input_shape\" as null or a list"),
        (lambda c: c.update(input_shape=None), r"holds weights the config does not build \('layers.0.embeddings'"),
        (lambda c: c["layers"].pop(), r"holds weights the config does not build \('layers.2.bias', 'layers.2.kernel'"),
        (lambda c: c.update(compile={"optimizer": "os.system"}), r"compile settings .* cannot be restored \(KeyError"),
        (
            lambda c: c.update(compile={"optimizer": "Pickler", "loss": "mse", "metrics": []}),
            r"compile settings .* cannot be restored \(ValueError: unknown optimizer 'Pickler'\)",
        ),
    ],
)
def test_a_sequential_config_of_the_wrong_structure_is_a_clear_error(tmp_path, change, message):
    _sequential().save_pretrained(tmp_path / "model")
    _edit_config(tmp_path / "model", change)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "model")


def test_a_language_model_config_of_other_sizes_fails_fast_naming_the_setting(tmp_path):
    model = _lm(lora=False)
    model.save_pretrained(tmp_path / "lm")
    _edit_config(tmp_path / "lm", lambda config: config.update(vocab_size=10**9))
    with pytest.raises(
        CheckpointError,
        match=rf"weight 'embedding.weight' of the GRULanguageModel with vocab_size=1000000000 would have shape "
        rf"\(1000000000, 6\) by the config, but the saved weight has shape \({model.config.vocab_size}, 6\)",
    ):
        GRULanguageModel.from_pretrained(tmp_path / "lm")
    _edit_config(tmp_path / "lm", lambda config: config.update(vocab_size=model.config.vocab_size, colour="red"))
    with pytest.raises(CheckpointError, match=r"config.json does not describe a GRULanguageModel: .*unknown keys"):
        GRULanguageModel.from_pretrained(tmp_path / "lm")
    _edit_config(tmp_path / "lm", lambda config: config.pop("colour"))
    _edit_config(tmp_path / "lm", lambda config: config.update(hidden_size=-3))
    with pytest.raises(CheckpointError, match=r"hidden_size to be a positive integer, got -3"):
        GRULanguageModel.from_pretrained(tmp_path / "lm")


def test_lora_adapters_of_another_base_model_are_refused_naming_both_shapes(tmp_path):
    save_lora(_lm(hidden_size=10), tmp_path / "adapter")
    other = _lm(hidden_size=7, lora=False)
    with pytest.raises(
        CheckpointError,
        match=r"'.*adapter': the adapters were made for another base model: layers.0.parametrizations."
        r"weight_ih_l0.0.lora_B has shape \(30, 2\) in the adapter file, but this GRULanguageModel needs \(21, 2\)",
    ):
        load_lora(other, tmp_path / "adapter")
    assert lora_config(other) is None, "a refused adapter must leave the model as it was"
    _lm(lora=False).save_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match=r"'.*base' holds no adapter_config.json: it is not a LoRA adapter"):
        load_lora(other, tmp_path / "base")
    _lm(hidden_size=10).save_pretrained(tmp_path / "lm")
    _edit(tmp_path / "lm", "adapter_config.json", lambda data: b'{"rank": 0, "alpha": 1, "targets": []}')
    with pytest.raises(CheckpointError, match=r"adapter_config.json is not a LoRA config like"):
        GRULanguageModel.from_pretrained(tmp_path / "lm")


# Generation arguments ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [float("nan"), -0.5, float("inf"), "1"])
def test_generate_refuses_a_temperature_that_is_not_a_finite_non_negative_number(temperature):
    with pytest.raises(ValueError, match=r"temperature to be a finite number >= 0, got"):
        _lm(lora=False).generate([1, 2], 3, temperature=temperature)


@pytest.mark.parametrize(
    "prompt, message",
    [
        (torch.tensor([1.7]), r"integer token ids of shape \(T,\) or \(B, T\), got \(1,\) torch.float32"),
        (torch.tensor([[1.0, 2.0]], dtype=torch.float64), r"got \(1, 2\) torch.float64; ids are never rounded"),
        (torch.tensor(3), r"integer token ids of shape \(T,\) or \(B, T\), got \(\) torch.int64"),
        ([1, 1.7], r"expected integer token ids, got 1.7; ids are never rounded"),
        ([[1, 2], [3.5]], r"expected integer token ids, got 3.5"),
        ([True, 2], r"expected integer token ids, got True"),
    ],
)
def test_generate_refuses_prompt_ids_that_are_not_integers(prompt, message):
    with pytest.raises(ValueError, match=message):
        _lm(lora=False).generate(prompt, 2, temperature=0)


def test_the_estimators_and_models_are_reachable_from_the_top_level():
    import grukit
    from grukit.models import Sequential
    from grukit.tasks import TextClassifier

    assert grukit.TextClassifier is TextClassifier and grukit.Sequential is Sequential
    with pytest.raises(AttributeError, match="module 'grukit' has no attribute 'TextClasifier'"):
        grukit.TextClasifier  # noqa: B018
