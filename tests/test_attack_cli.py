"""Attacks on the ``grukit`` command line, the language model and ONNX export: each user mistake ends in one
``grukit: error:`` line and exit status 2, and no command writes over a file or folder the user owns."""

import hashlib
import json
import math

import pytest
import torch

from grukit.cli import main
from grukit.datasets import read_csv
from grukit.lm import add_lora
from grukit.lm.corpus import text_file_sources
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.lm.training import LMTrainingConfig
from grukit.text.tokenizer import train_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog\n" * 20


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("grukit: error: "), (code, err)
    return lines[0]


def tree(folder) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes: what must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def lm_folder(tmp_path):
    torch.manual_seed(0)
    tokenizer = train_tokenizer("char", [TEXT])
    config = LMConfig(vocab_size=tokenizer.vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    return GRULanguageModel(config, tokenizer).save_pretrained(tmp_path / "lm")


def edit_config(folder, **changes) -> None:
    """Change ``config.json`` and re-sign the manifest, as a determined user editing a folder would."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "config.json").read_bytes()
    manifest["files"]["config.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


# Export ------------------------------------------------------------------------------------------------------
def test_export_never_writes_over_a_users_file(lm_folder, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    foreign = tmp_path / "theirs.onnx"
    foreign.write_text("not a graph grukit wrote\n")
    (tmp_path / "folder.onnx").mkdir()
    before = tree(tmp_path)
    cases = [
        (["--int8", notes], "should be an .onnx file, got"),
        ([], "theirs.onnx exists and is not an ONNX graph grukit wrote"),
        (["--int8", tmp_path / "g.step.onnx"], "would be written twice"),
        (["--int8", tmp_path / "folder.onnx"], "is a folder"),
    ]
    for extra, message in cases:
        target = foreign if not extra else tmp_path / "g.onnx"
        code, _, err = run(["export", lm_folder, target, *extra], capsys)
        assert message in error_line(code, err)
    code, _, err = run(["export", lm_folder, lm_folder / "inside.onnx"], capsys)
    assert "is inside lm/, a model or run folder grukit wrote" in error_line(code, err)
    assert tree(tmp_path) == before  # nothing written, nothing replaced


def test_export_replaces_its_own_earlier_output(lm_folder, tmp_path, capsys):
    target = tmp_path / "lm.onnx"
    for _ in range(2):
        code, out, err = run(["export", lm_folder, target, "--int8", tmp_path / "lm8.onnx"], capsys)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["lm.onnx", "lm.step.onnx", "lm8.onnx", "lm8.step.onnx"]


# Output folders of another kind ------------------------------------------------------------------------------
def test_finetune_classify_will_not_write_over_the_language_model(lm_folder, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(4)))
    before = tree(lm_folder)
    code, _, err = run(["finetune", "classify", "--lm", lm_folder, "--data", data, "--out", lm_folder, "--quiet"],
                       capsys)
    line = error_line(code, err)
    assert "holds a grukit.GRULanguageModel, not a grukit.GRUClassifier" in line
    assert tree(lm_folder) == before


def test_a_task_will_not_write_over_a_model_of_another_kind(lm_folder, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(4)))
    before = tree(lm_folder)
    code, _, err = run(["classify-text", "--csv", data, "--out", lm_folder, "--quiet"], capsys)
    assert "not a grukit.TextClassifier" in error_line(code, err)
    assert tree(lm_folder) == before


# Absurd sizes fail before allocating --------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 10**9}, "would have shape (3000000000, 8) by the config"),
    ({"hidden_size": 10**9, "num_layers": 10**6}, "the config says num_layers=1000000, the weights hold 1 layer"),
    ({"embedding_size": 10**6, "vocab_size": 10**6}, "would have shape (1000000, 1000000) by the config"),
])
def test_edited_config_sizes_fail_fast_with_one_line(lm_folder, capsys, changes, message):
    edit_config(lm_folder, **changes)
    code, out, err = run(["lm", "generate", lm_folder, "--prompt", "the", "--max-new-tokens", "2"], capsys)
    assert message in error_line(code, err) and out == ""


def test_lm_train_refuses_a_model_larger_than_memory_before_writing(tmp_path, capsys):
    corpus, config = tmp_path / "c.txt", tmp_path / "c.json"
    corpus.write_text(TEXT)
    config.write_text(json.dumps({"model": {"embedding_size": 10**8, "hidden_size": 10**8, "num_layers": 1}}))
    code, _, err = run(["lm", "train", "--text", corpus, "--config", config, "--out", tmp_path / "run"], capsys)
    assert "more than this machine's" in error_line(code, err) and "section 'model'" in err
    assert not (tmp_path / "run").exists()


def test_parameter_count_and_weight_shapes_match_the_built_model():
    for layers in (1, 2, 3):
        for tied in (False, True):
            config = LMConfig(vocab_size=11, embedding_size=5, hidden_size=7, num_layers=layers, tie_weights=tied)
            model = GRULanguageModel(config)
            assert config.parameter_count() == sum(p.numel() for p in model.parameters())
            assert config.weight_shapes() == {k: tuple(v.shape) for k, v in model.base_state_dict().items()}


# Training settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"lr": "0.1"}, "expected lr to be a finite number, got '0.1'"),
    ({"lr": math.inf}, "expected lr to be a finite number, got inf"),
    ({"clip": math.nan}, "expected clip to be a finite number, got nan"),
    ({"warmup_steps": math.inf}, "expected warmup_steps to be an integer >= 0, got inf"),
    ({"seed": -1}, "expected seed to be an integer >= 0"),
])
def test_training_settings_refuse_values_that_are_not_finite_numbers(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LMTrainingConfig.from_dict(values)


def test_lm_train_config_with_a_string_learning_rate_is_one_line(tmp_path, capsys):
    corpus, config = tmp_path / "c.txt", tmp_path / "c.json"
    corpus.write_text(TEXT)
    config.write_text(json.dumps({"training": {"lr": "fast"}}))
    code, _, err = run(["lm", "train", "--text", corpus, "--config", config, "--out", tmp_path / "run"], capsys)
    assert "section 'training'" in error_line(code, err) and "got 'fast'" in err


# Generation ----------------------------------------------------------------------------------------------------
def test_a_seed_too_large_for_torch_is_refused_by_the_parser(lm_folder, capsys):
    code, out, err = run(["lm", "generate", lm_folder, "--prompt", "the", "--seed", str(2**70)], capsys)
    assert "argument --seed: expected an integer in [0, 2**63)" in error_line(code, err) and out == ""


def test_generate_names_prompt_characters_the_model_never_saw(lm_folder, capsys):
    code, out, err = run(["lm", "generate", lm_folder, "--prompt", "the Ä日", "--max-new-tokens", "3", "--seed", "0"],
                         capsys)
    assert code == 0 and out.startswith("the Ä日")
    assert "'Ä' (1)" in err and "'日' (1)" in err and "unknown token" in err


# Files ------------------------------------------------------------------------------------------------------------
def test_a_byte_order_mark_is_not_part_of_the_training_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_text("ab\ncd\n", encoding="utf-8-sig")
    train, _ = text_file_sources([path], 0.0)
    assert "".join(train()) == "ab\ncd\n"


def test_csv_with_a_repeated_column_name_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,label\na,x,y\n")
    with pytest.raises(ValueError, match="more than one column named 'label'"):
        read_csv(path, ["text", "label"])


def test_csv_with_an_unclosed_quote_says_where_it_runs(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"never closed,pos\nb,neg\nc,pos\n')
    with pytest.raises(ValueError, match="a quoted cell runs from line 2 to line 4: is a closing quote missing"):
        read_csv(path, ["text", "label"])


# LoRA ---------------------------------------------------------------------------------------------------------------
def test_lora_rank_larger_than_the_matrices_is_refused():
    model = GRULanguageModel(LMConfig(vocab_size=5, embedding_size=4, hidden_size=6, num_layers=1))
    with pytest.raises(ValueError, match="expected rank <= 4"):
        add_lora(model, rank=5)
    with pytest.raises(ValueError, match="positive finite alpha"):
        add_lora(model, rank=2, alpha=math.nan)
    trainable = sum(p.numel() for p in add_lora(model, rank=4).parameters() if p.requires_grad)
    assert trainable == 4 * (18 + 4) + 4 * (18 + 6)  # B (18, 4) and A (4, 4) on W_ih, A (4, 6) on W_hh


# Outputs of the task commands ---------------------------------------------------------------------------------------
def test_predict_output_never_replaces_a_users_file(tmp_path, capsys):
    from grukit.tasks.forecasting import Forecaster

    series = [10 + (i % 7) for i in range(60)]
    forecaster = Forecaster(horizon=2, lookback=8, epochs=1, hidden_size=4, random_state=0).fit(series)
    forecaster.save_pretrained(tmp_path / "model")
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own\n1,2\n")
    code, _, err = run(["predict", tmp_path / "model", "--output", mine], capsys)
    assert "exists and is not a CSV of predictions grukit wrote" in error_line(code, err)
    assert mine.read_text() == "my,own\n1,2\n"
    code, _, err = run(["predict", tmp_path / "model", "--output", tmp_path], capsys)
    assert "is a folder" in error_line(code, err)
    ours = tmp_path / "next.csv"
    for _ in range(2):  # an earlier output is replaced
        code, out, err = run(["predict", tmp_path / "model", "--output", ours], capsys)
        assert code == 0 and ours.read_text().startswith("step,forecast")


def test_a_series_of_only_missing_values_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.csv"
    path.write_text("sales\n" + "nan\n" * 30)
    code, _, err = run(["forecast", "--csv", path, "--column", "sales", "--horizon", "2", "--quiet"], capsys)
    assert "holds no numbers in the series, only missing values" in error_line(code, err)


def test_warnings_during_a_command_are_one_line_without_source_paths():
    import warnings

    from grukit.cli import one_line_warning

    text = one_line_warning(UserWarning("too few\nwindows"), UserWarning, "/some/file.py", 3, "model.fit(x)")
    assert text == "warning: too few windows\n"
    assert warnings.formatwarning is not one_line_warning  # main() puts the default back


def test_generate_on_a_run_that_saved_no_model_yet_says_so(tmp_path, capsys):
    run_folder = tmp_path / "run"
    (run_folder / "data").mkdir(parents=True)
    (run_folder / "train_log.csv").write_text("step,epoch,loss,lr\n")
    code, _, err = run(["lm", "generate", run_folder, "--prompt", "a"], capsys)
    assert "is a training run that has not saved model/ yet" in error_line(code, err) and "--resume" in err


# Sampling and weights that are not numbers --------------------------------------------------------------------------
def test_a_tiny_temperature_is_greedy_rather_than_a_crash():
    from grukit.lm.sampling import sample_next

    logits = torch.tensor([[0.5, 2.0, -1.0], [3.0, 1.0, float("-inf")]])
    for temperature in (1e-30, 1e-300, 5e-324):
        assert sample_next(logits, temperature).tolist() == [1, 0]


def test_logits_that_are_not_numbers_are_refused():
    from grukit.lm.sampling import sample_next

    for row in ([float("nan"), 1.0], [float("inf"), 1.0], [float("-inf"), float("-inf")]):
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            sample_next(torch.tensor([row]), 1.0)


def test_a_model_whose_weights_hold_nan_is_one_line(lm_folder, capsys):
    model = GRULanguageModel.from_pretrained(lm_folder)
    with torch.no_grad():
        model.decoder.bias[0] = float("nan")
    model.save_pretrained(lm_folder)
    code, out, err = run(["lm", "generate", lm_folder, "--prompt", "the", "--temperature", "0"], capsys)
    assert "['decoder.bias'] hold NaN or inf" in error_line(code, err) and out == ""


def test_generate_refuses_a_seed_torch_cannot_take(lm_folder):
    model = GRULanguageModel.from_pretrained(lm_folder)
    for seed in (2**70, "a", -1):
        with pytest.raises(ValueError, match="expected seed to be an integer in"):
            model.generate("the", 2, seed=seed)


# Training runs ------------------------------------------------------------------------------------------------------
def tiny_run_config(tmp_path, **training) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({
        "model": {"embedding_size": 4, "hidden_size": 4, "num_layers": 1},
        "training": {"batch_size": 2, "seq_len": 8, "warmup_steps": 1, **training},
    }))
    return str(path)


def test_ctrl_c_during_training_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    from grukit.lm import training

    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    argv = ["lm", "train", "--text", corpus, "--config", tiny_run_config(tmp_path, checkpoint_every=2),
            "--out", tmp_path / "run", "--steps", "6", "--quiet"]
    original = training._Throughput.on_batch_end

    def interrupt_at_step_3(self, step, logs):
        original(self, step, logs)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training._Throughput, "on_batch_end", interrupt_at_step_3)
    code, _, err = run(argv, capsys)
    assert code == 130 and err.strip() == "grukit: interrupted"
    monkeypatch.setattr(training._Throughput, "on_batch_end", original)
    code, out, err = run([*argv, "--resume"], capsys)
    assert code == 0, err
    steps = [line.split(",")[0] for line in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 7)]  # every step once, none lost or repeated


def test_a_held_out_fraction_that_holds_nothing_is_said(tmp_path, capsys):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text("ab " * 200)
    code, out, err = run(["lm", "train", "--text", corpus, "--config", tiny_run_config(tmp_path), "--out",
                          tmp_path / "run", "--steps", "1", "--quiet"], capsys)
    assert code == 0 and "--valid-fraction 0.05 held out no text" in err


def test_out_inside_a_model_or_run_folder_is_refused(lm_folder, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    before = tree(lm_folder)
    code, _, err = run(["finetune", "lm", "--lm", lm_folder, "--text", corpus, "--out", lm_folder / "ft"], capsys)
    assert "is inside lm/, a model or run folder grukit wrote" in error_line(code, err)
    assert tree(lm_folder) == before and not (lm_folder / "ft").exists()


def test_resuming_a_run_that_had_reached_its_last_step_writes_its_model(tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    argv = ["lm", "train", "--text", corpus, "--config", tiny_run_config(tmp_path), "--out", tmp_path / "run",
            "--steps", "2", "--quiet"]
    assert run(argv, capsys)[0] == 0
    shutil.rmtree(tmp_path / "run" / "model")  # as when saving model/ failed after the last checkpoint
    code, _, err = run([*argv, "--resume"], capsys)
    assert code == 0, err
    model = load_file(tmp_path / "run" / "model" / "model.safetensors")
    checkpoint = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    assert model.keys() == checkpoint.keys() and all(torch.equal(model[k], checkpoint[k]) for k in model)


# Task commands: what the user asks for makes sense --------------------------------------------------------------------
def test_a_blank_text_to_translate_or_classify_afterwards_is_refused_before_training(capsys):
    for argv in (["translate", "--pairs", "p.tsv", "--translate", " "], ["classify-text", "--csv", "x.csv",
                                                                          "--predict", ""]):
        code, _, err = run(argv, capsys)
        assert "expected a text that is not blank" in error_line(code, err)


def test_texts_and_labels_from_one_column_are_refused(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(4)))
    code, _, err = run(["classify-text", "--csv", data, "--text-column", "label", "--label-column", "label"], capsys)
    assert "the texts and the labels are both column 'label'" in error_line(code, err)
