"""The bad-input catalogue: each wrong thing a user can hand grukit's public API, the exception it raises and a
message that names the bad value and what was expected (never a bare traceback from inside torch)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from grukit import datasets, layers, nn
from grukit.lm import GRULanguageModel, LMConfig
from grukit.models import Sequential, load_model
from grukit.nn import GRU, LSTM, GRUCell, LSTMCell, MinGRU
from grukit.tasks import Forecaster, SequenceClassifier, TextClassifier
from grukit.text import CharTokenizer, TBPTTBatches
from grukit.train import CheckpointError, Trainer, get_loss, load_checkpoint, save_checkpoint
from grukit.train.checkpoint import write_folder

CASES = []


def case(exception: type[BaseException], match: str):
    """Register ``make_error(tmp_path)`` as a catalogue entry that must raise ``exception`` matching ``match``."""

    def register(make_error):
        CASES.append(pytest.param(make_error, exception, match, id=make_error.__name__))
        return make_error

    return register


def _classifier(classes: int = 3) -> Sequential:
    model = Sequential([layers.GRU(4), layers.Dense(classes, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


def _saved_model(tmp_path: Path) -> Path:
    model = Sequential([layers.GRU(2), layers.Dense(2)])
    model.build((None, None, 3))
    return model.save(tmp_path / "model")


# grukit.nn: shapes, states, lengths, dtypes, configuration ----------------------------------------------------
@case(ValueError, r"GRU expected input of shape \(batch, time, 4\).*got \(2, 3, 4, 1\)")
def gru_input_of_rank_4(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4, 1))


@case(ValueError, r"GRU expected input of shape \(batch, time, 4\).*got \(2, 3, 5\)")
def gru_input_with_wrong_feature_size(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 5))


@case(ValueError, r"GRU expected input of shape \(time, batch, 4\).*got \(3, 2, 6\)")
def gru_time_major_input_with_wrong_feature_size(tmp_path):
    nn.GRU(4, 8, batch_first=False)(torch.zeros(3, 2, 6))


@case(ValueError, r"GRU expected at least one time step, got input of shape \(2, 0, 4\)")
def gru_input_with_no_time_steps(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 0, 4))


@case(ValueError, r"GRU expected input of shape \(batch, time, 4\) or unbatched \(time, 4\), got \(0, 3\)")
def gru_unbatched_input_of_the_wrong_width(tmp_path):
    nn.GRU(4, 8, engine="onednn")(torch.zeros(0, 3))


@case(TypeError, r"GRU expected a floating-point input, got dtype torch.int64")
def gru_integer_input(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4, dtype=torch.long))


@case(TypeError, r"GRU expected a torch.Tensor input, got ndarray")
def gru_numpy_input(tmp_path):
    nn.GRU(4, 8)(np.zeros((2, 3, 4), dtype=np.float32))


@case(ValueError, r"GRU expected h0 of shape \(2, 2, 8\).*got \(1, 2, 8\)")
def gru_h0_with_wrong_layer_count(tmp_path):
    nn.GRU(4, 8, num_layers=2)(torch.zeros(2, 3, 4), torch.zeros(1, 2, 8))


@case(ValueError, r"GRU expected h0 of shape \(1, 2, 8\).*got \(1, 3, 8\)")
def gru_h0_with_wrong_batch(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4), torch.zeros(1, 3, 8))


@case(TypeError, r"GRU expected h0 of dtype torch.float32 \(the input's\), got torch.float64")
def gru_h0_of_another_dtype(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4), torch.zeros(1, 2, 8, dtype=torch.float64))


@case(ValueError, r"LSTM expected state as a pair \(h0, c0\), got Tensor")
def lstm_state_that_is_not_a_pair(tmp_path):
    nn.LSTM(4, 8)(torch.zeros(2, 3, 4), torch.zeros(1, 2, 8))


@case(ValueError, r"LSTM expected c0 of shape \(1, 2, 8\).*got \(1, 2, 7\)")
def lstm_c0_with_wrong_hidden_size(tmp_path):
    nn.LSTM(4, 8)(torch.zeros(2, 3, 4), (torch.zeros(1, 2, 8), torch.zeros(1, 2, 7)))


@case(ValueError, r"MinGRU expected input of shape \(batch, time, 4\).*got \(2, 3, 3\)")
def mingru_input_with_wrong_feature_size(tmp_path):
    nn.MinGRU(4, 8)(torch.zeros(2, 3, 3))


@case(ValueError, r"GRU expected every length in \[1, 3\].*got min 0 and max 3")
def lengths_of_zero(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4), lengths=torch.tensor([0, 3]))


@case(ValueError, r"GRU expected every length in \[1, 3\].*got min 2 and max 5")
def lengths_beyond_the_time_dimension(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4), lengths=torch.tensor([5, 2]))


@case(TypeError, r"GRU expected integer lengths, got dtype torch.float32")
def lengths_of_a_float_dtype(tmp_path):
    nn.GRU(4, 8)(torch.zeros(2, 3, 4), lengths=torch.tensor([3.0, 2.0]))


@case(ValueError, r"MinGRU expected lengths of shape \(2,\), one per sequence, got \(3,\)")
def lengths_not_one_per_sequence(tmp_path):
    nn.MinGRU(4, 8)(torch.zeros(2, 3, 4), lengths=torch.tensor([3, 2, 1]))


@case(ValueError, r"GRU expected hidden_size to be a positive integer, got 0")
def gru_hidden_size_of_zero(tmp_path):
    nn.GRU(4, 0)


@case(ValueError, r"LSTM expected dropout in \[0, 1\), got 1.5")
def lstm_dropout_above_one(tmp_path):
    nn.LSTM(4, 8, num_layers=2, dropout=1.5)


@case(ValueError, r"GRU expected engine in \('auto', 'onednn', 'native', 'reference'\), got 'cudnn'")
def gru_unknown_engine(tmp_path):
    nn.GRU(4, 8, engine="cudnn")


@case(ValueError, r"GRU engine='onednn' runs float32 and bfloat16, got torch.float64")
def gru_engine_that_cannot_run_the_dtype(tmp_path):
    nn.GRU(4, 8, engine="onednn").double()(torch.zeros(2, 3, 4, dtype=torch.float64))


# grukit.layers --------------------------------------------------------------------------------------------------
@case(ValueError, r"Embedding\(input_dim=10\) got token ids in \[1, 12\]; ids must lie in \[0, 9\]")
def token_ids_beyond_the_vocabulary(tmp_path):
    layers.Embedding(10, 4)(torch.tensor([[1, 12]]))


@case(ValueError, r"Embedding\(input_dim=10\) got token ids in \[-1, 3\]; ids must lie in \[0, 9\]")
def negative_token_ids(tmp_path):
    layers.Embedding(10, 4)(torch.tensor([[-1, 3]]))


@case(ValueError, r"GRU expected units to be a positive integer, got 0")
def layer_with_zero_units(tmp_path):
    layers.GRU(0)


@case(ValueError, r"GRU expected input of shape \(batch, time, features\), got \(None, 5\)")
def recurrent_layer_given_a_matrix(tmp_path):
    layers.GRU(4)(torch.zeros(2, 5))


@case(ValueError, r"Dense got unknown activation 'relu6'; expected None or one of \[.*'relu'")
def unknown_activation(tmp_path):
    layers.Dense(3, activation="relu6")


@case(ValueError, r"Bidirectional expected merge_mode in .*'concat'.*got 'max'")
def unknown_merge_mode(tmp_path):
    layers.Bidirectional(layers.GRU(3), merge_mode="max")


# grukit.models.Sequential: compile, fit, evaluate, data ---------------------------------------------------------
@case(RuntimeError, r"must be compiled before fit: call model.compile")
def fit_before_compile(tmp_path):
    Sequential([layers.GRU(4), layers.Dense(2)]).fit(np.zeros((4, 3, 2), np.float32), np.zeros(4), verbose=0)


@case(RuntimeError, r"must be compiled before evaluate")
def evaluate_before_compile(tmp_path):
    Sequential([layers.GRU(4), layers.Dense(2)]).evaluate(np.zeros((4, 3, 2), np.float32), np.zeros(4), verbose=0)


@case(ValueError, r"unknown optimizer 'adamx'; expected a torch optimizer or one of \['adam', 'adamw'")
def unknown_optimizer_name(tmp_path):
    Sequential([layers.Dense(2)]).compile("adamx", "mse")


@case(ValueError, r"unknown loss 'crossentropy'; expected a callable or one of \[.*'binary_crossentropy'")
def unknown_loss_name(tmp_path):
    Sequential([layers.Dense(2)]).compile("adam", "crossentropy")


@case(ValueError, r"unknown metric 'f1'; expected a Metric or one of \[.*'accuracy'")
def unknown_metric_name(tmp_path):
    Sequential([layers.Dense(2)]).compile("adam", "mse", ["f1"])


@case(ValueError, r"fit got 10 samples in x but 9 in y; they must have the same length")
def x_and_y_of_different_lengths(tmp_path):
    _classifier().fit(np.zeros((10, 3, 2), np.float32), np.zeros(9, np.int64), verbose=0)


@case(ValueError, r"fit got no samples: x is empty")
def empty_dataset(tmp_path):
    _classifier().fit(np.zeros((0, 3, 2), np.float32), np.zeros(0, np.int64), verbose=0)


@case(ValueError, r"fit got an empty DataLoader")
def empty_data_loader(tmp_path):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 2), torch.zeros(0)))
    _classifier().fit(loader, verbose=0)


@case(ValueError, r"fit got an empty sequence at x\[1\]; every sequence needs at least one step")
def empty_sequence_in_a_variable_length_batch(tmp_path):
    x = [np.ones((2, 2), np.float32), np.zeros((0, 2), np.float32)]
    _classifier().fit(x, [0, 1], verbose=0)


@case(ValueError, r"labels go up to 7 but the model's last layer outputs 3 classes.*labels in \[0, 2\]")
def labels_out_of_range(tmp_path):
    _classifier(3).fit(np.zeros((4, 3, 2), np.float32), np.array([0, 1, 2, 7]), verbose=0)


@case(ValueError, r"fit got non-finite values in x \(first at sample 2\)")
def nan_in_the_training_data(tmp_path):
    x = np.zeros((4, 3, 2), np.float32)
    x[2, 1, 0] = np.nan
    _classifier().fit(x, np.array([0, 1, 2, 0]), verbose=0)


@case(ValueError, r"fit got non-finite values in x \(first at sample 0\)")
def inf_in_the_training_data(tmp_path):
    x = np.zeros((4, 3, 2), np.float32)
    x[0, 0, 1] = np.inf
    _classifier().fit(x, np.array([0, 1, 2, 0]), verbose=0)


@case(ValueError, r"fit got non-finite values in y \(first at sample 3\)")
def nan_in_regression_targets(tmp_path):
    model = Sequential([layers.GRU(4), layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(np.zeros((4, 3, 2), np.float32), np.array([0.0, 1.0, 2.0, np.nan], np.float32), verbose=0)


@case(ValueError, r"fit expected batch_size to be a positive integer, got 0")
def batch_size_of_zero(tmp_path):
    _classifier().fit(np.zeros((4, 3, 2), np.float32), np.zeros(4, np.int64), batch_size=0, verbose=0)


@case(ValueError, r"fit expected validation_split in \[0, 1\), got 1.5")
def validation_split_above_one(tmp_path):
    _classifier().fit(np.zeros((4, 3, 2), np.float32), np.zeros(4, np.int64), validation_split=1.5, verbose=0)


@case(ValueError, r"fit expected epochs to be a positive integer, got 0")
def zero_epochs(tmp_path):
    _classifier().fit(np.zeros((4, 3, 2), np.float32), np.zeros(4, np.int64), epochs=0, verbose=0)


@case(ValueError, r"sparse_categorical_crossentropy got class ids in \[0, 5\] but the model outputs 3 classes")
def loss_given_labels_out_of_range(tmp_path):
    get_loss("sparse_categorical_crossentropy")(torch.full((2, 3), 1 / 3), torch.tensor([0, 5]))


@case(ValueError, r"targets of shape \(4,\) do not match outputs of shape \(4, 2\)")
def regression_targets_of_another_shape(tmp_path):
    get_loss("mse")(torch.zeros(4, 2), torch.zeros(4))


# The shared Trainer --------------------------------------------------------------------------------------------
def _trainer(**kwargs) -> Trainer:
    model = torch.nn.Sequential(torch.nn.Linear(2, 1))
    return Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


@case(FloatingPointError, r"non-finite loss at epoch 1, step 1: first bad gradient in parameter '0.weight'")
def nan_input_reaching_the_trainer(tmp_path):
    x = torch.tensor([[float("nan"), 1.0]])
    _trainer().fit([(x, torch.zeros(1, 1))], verbose=0)


@case(ValueError, r"fit got no training batches: the training data is empty")
def trainer_given_no_batches(tmp_path):
    _trainer().fit([], verbose=0)


@case(ValueError, r"a batch must be \(inputs, targets\) or \(inputs, targets, mask\), got tuple of length 4")
def trainer_given_a_malformed_batch(tmp_path):
    _trainer().fit([(torch.zeros(1, 2),) * 4], verbose=0)


@case(ValueError, r"Trainer expected nan_policy in \('raise', 'skip'\), got 'ignore'")
def unknown_nan_policy(tmp_path):
    _trainer(nan_policy="ignore")


@case(ValueError, r"Trainer expected clipnorm to be a positive number or None, got -1")
def negative_clipnorm(tmp_path):
    _trainer(clipnorm=-1)


# Checkpoints -----------------------------------------------------------------------------------------------------
@case(CheckpointError, r"model.safetensors' is corrupted or truncated: expected \d+ bytes .* got \d+ bytes")
def truncated_checkpoint(tmp_path):
    path = _saved_model(tmp_path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    load_model(path)


@case(CheckpointError, r"model.safetensors' is corrupted or truncated: expected (\d+) bytes with .* got \1 bytes")
def corrupted_checkpoint(tmp_path):
    path = _saved_model(tmp_path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    load_model(path)


@case(CheckpointError, r"holds a 'grukit.GRULanguageModel' model, expected 'grukit.Sequential'")
def checkpoint_of_another_architecture(tmp_path):
    GRULanguageModel(LMConfig(vocab_size=5, embedding_size=2, hidden_size=2, num_layers=1)).save_pretrained(
        tmp_path / "lm"
    )
    load_model(tmp_path / "lm")


@case(CheckpointError, r"is missing 'config.json', which its manifest lists")
def checkpoint_missing_its_config(tmp_path):
    path = _saved_model(tmp_path)
    (path / "config.json").unlink()
    load_model(path)


@case(CheckpointError, r"has no config.json")
def checkpoint_written_without_a_config(tmp_path):
    write_folder(tmp_path / "ck", {"model.safetensors": b"{}"})
    load_checkpoint(tmp_path / "ck")


@case(CheckpointError, r"has no manifest.json: it is not a grukit checkpoint")
def folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"architecture": "grukit.Sequential"}))
    load_model(tmp_path / "plain")


@case(CheckpointError, r"no checkpoint folder at '.*nowhere'")
def checkpoint_that_does_not_exist(tmp_path):
    load_model(tmp_path / "nowhere")


def _gru_trainer(hidden_size: int, checkpoint_dir: Path) -> Trainer:
    model = nn.GRU(2, hidden_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, lambda out, target, mask: out[0].sum(), optimizer, checkpoint_dir=checkpoint_dir)


@case(CheckpointError, r"(?s)checkpoint '.*ck' does not fit this GRU: .*size mismatch for weight_ih_l0")
def resume_into_a_model_of_another_size(tmp_path):
    _gru_trainer(3, tmp_path / "ck").fit([(torch.zeros(1, 2, 2), None)], verbose=0)
    _gru_trainer(5, tmp_path / "ck").resume()


@case(CheckpointError, r"holds no training state \(epoch, step\) to resume from: it was saved as a model")
def resume_from_a_saved_model(tmp_path):
    model = Sequential([layers.GRU(2), layers.Dense(2)])
    model.build((None, None, 3))
    model.save(tmp_path / "model")
    Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1)).resume(tmp_path / "model")


@case(ValueError, r"'.*model' holds a 'grukit.Sequential' model, expected 'grukit.GRULanguageModel'")
def language_model_loaded_from_another_architecture(tmp_path):
    GRULanguageModel.from_pretrained(_saved_model(tmp_path))


@case(ValueError, r"a checkpoint config must name its 'architecture', got keys \['hidden_size'\]")
def checkpoint_config_without_architecture(tmp_path):
    save_checkpoint(tmp_path / "ck", {"hidden_size": 3}, {"w": torch.zeros(1)})


# Language models and text ----------------------------------------------------------------------------------------
def _lm() -> GRULanguageModel:
    return GRULanguageModel(LMConfig(vocab_size=10, embedding_size=4, hidden_size=4, num_layers=1))


@case(ValueError, r"GRULanguageModel expected ids in \[0, 10\), got min 0 and max 12")
def lm_token_ids_beyond_the_vocabulary(tmp_path):
    _lm()(torch.tensor([[0, 12]]))


@case(ValueError, r"GRULanguageModel expected ids in \[0, 10\), got min -3 and max 4")
def lm_negative_token_ids(tmp_path):
    _lm()(torch.tensor([[-3, 4]]))


@case(ValueError, r"GRULanguageModel expected integer ids of shape \(batch, time\), got \(2, 3\) torch.float32")
def lm_float_ids(tmp_path):
    _lm()(torch.zeros(2, 3))


@case(ValueError, r"the tokenizer has 4 symbols, the config says vocab_size=10")
def tokenizer_that_does_not_match_the_model(tmp_path):
    GRULanguageModel(LMConfig(vocab_size=10), CharTokenizer.train(["abc"]))


@case(ValueError, r"LMConfig expected hidden_size to be a positive integer, got -4")
def lm_config_with_negative_size(tmp_path):
    LMConfig(vocab_size=10, hidden_size=-4)


@case(ValueError, r"LMConfig got unknown keys \['hiden_size'\]")
def lm_config_with_misspelt_key(tmp_path):
    LMConfig.from_dict({"vocab_size": 10, "hiden_size": 3})


@case(ValueError, r"CharTokenizer.decode got id 9, outside \[0, 4\)")
def decoding_an_id_beyond_the_vocabulary(tmp_path):
    CharTokenizer.train(["abc"]).decode([1, 9])


@case(ValueError, r"CharTokenizer.decode got id -1, outside \[0, 4\)")
def decoding_a_negative_id(tmp_path):
    CharTokenizer.train(["abc"]).decode([2, -1])


@case(ValueError, r"CharTokenizer.train got no text: the corpus is empty")
def tokenizer_trained_on_nothing(tmp_path):
    CharTokenizer.train([])


@case(ValueError, r"TBPTTBatches needs at least 2 tokens per stream: 1 tokens cannot fill 4 streams")
def token_stream_too_short(tmp_path):
    TBPTTBatches(np.array([3]), batch_size=4, seq_len=8)


# Task estimators ------------------------------------------------------------------------------------------------
@case(NotFittedError, r"This SequenceClassifier is not fitted yet: call fit\(...\) before predict\(\)")
def predict_before_fit(tmp_path):
    SequenceClassifier().predict(np.zeros((2, 1, 5)))


@case(ValueError, r"SequenceClassifier got 3 series but 2 labels")
def estimator_x_and_y_of_different_lengths(tmp_path):
    SequenceClassifier(epochs=1).fit(np.zeros((3, 1, 5)), [0, 1])


@case(ValueError, r"SequenceClassifier got no series: X is empty")
def estimator_given_no_series(tmp_path):
    SequenceClassifier(epochs=1).fit([], [])


@case(ValueError, r"SequenceClassifier got NaN values")
def estimator_given_nan(tmp_path):
    SequenceClassifier(epochs=1).fit(np.full((2, 1, 5), np.nan), [0, 1])


@case(NotFittedError, r"This Forecaster is not fitted yet: call fit\(...\) before predict\(\)")
def forecast_before_fit(tmp_path):
    Forecaster().predict(3)


@case(ValueError, r"TextClassifier got 3 texts but 2 labels")
def texts_and_labels_of_different_lengths(tmp_path):
    TextClassifier(epochs=1).fit(["a", "b", "c"], [0, 1])


@case(ValueError, r"Forecaster got NaN or infinite values; fill or drop them first")
def forecaster_given_inf(tmp_path):
    Forecaster(epochs=1, season=12).fit([1.0, np.inf, 2.0] * 30)


@case(ValueError, r"Forecaster needs at least 26 points \(differencing lag 12 \+ lookback 1 .*shrinks.*\), got 2")
def series_too_short_to_forecast(tmp_path):
    Forecaster(epochs=1, season=12).fit([1.0, 2.0])


# Dataset loaders -------------------------------------------------------------------------------------------------
@case(ValueError, r"load_series expected a name in \(.*'sunspots'.*\), got 'sunspot'")
def unknown_series_name(tmp_path):
    datasets.load_series("sunspot")


@case(ValueError, r"load_ucr expected split in \('train', 'test'\), got 'validation'")
def unknown_ucr_split(tmp_path):
    datasets.load_ucr("GunPoint", split="validation")


@case(ValueError, r"load_ucr: 'NoSuchSet' is not shipped with sktime; the sets available offline are \[.*'GunPoint'")
def unknown_ucr_set(tmp_path):
    datasets.load_ucr("NoSuchSet")


@pytest.mark.parametrize(("make_error", "exception", "match"), CASES)
def test_bad_input_gets_a_clear_error(make_error, exception, match, tmp_path):
    with pytest.raises(exception, match=match) as info:
        make_error(tmp_path)
    raised_in = str(info.traceback[-1].path)
    assert "/torch/" not in raised_in, f"a bare torch error, raised in {raised_in}"


# Training guards: a non-finite step is stopped or skipped, and recurrent training clips by default -----------------
def _gru_regressor() -> tuple[torch.nn.Module, Trainer, list]:
    torch.manual_seed(0)
    model = nn.GRU(2, 3)
    trainer = Trainer(
        model,
        lambda out, target, mask: (out[0] - target).square().mean(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        nan_policy="skip",
    )
    good = (torch.randn(2, 4, 2), torch.randn(2, 4, 3))
    poisoned = (torch.full((2, 4, 2), float("inf")), torch.randn(2, 4, 3))
    return model, trainer, [good, poisoned, good]


def test_nan_guard_raises_naming_the_step_and_the_layer():
    model, _, batches = _gru_regressor()
    trainer = Trainer(
        model, lambda out, target, mask: (out[0] - target).square().mean(), torch.optim.SGD(model.parameters(), lr=0.1)
    )
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss at epoch 1, step 2: first bad gradient in "
        r"parameter 'weight_ih_l0'",
    ):
        trainer.fit(batches, verbose=0)
    # Only the first (finite) step was applied: the poisoned one never reached the weights.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before[0], model.weight_ih_l0)


def test_nan_guard_skip_policy_skips_the_poisoned_step_and_trains_on():
    model, trainer, batches = _gru_regressor()
    with pytest.warns(RuntimeWarning, match=r"non-finite loss at epoch 1, step 2: .*'weight_ih_l0'; update skipped"):
        history = trainer.fit(batches, epochs=1, verbose=0)
    assert trainer.step == 3 and trainer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert np.isfinite(history.history["loss"][0])  # the epoch's loss counts the good batches only
    # Skipping equals training on the good batches alone.
    twin, twin_trainer, _ = _gru_regressor()
    twin_trainer.fit([batches[0], batches[2]], epochs=1, verbose=0)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_trainer_clips_the_gradient_norm_to_one_by_default():
    torch.manual_seed(0)
    model = nn.GRU(2, 3)
    trainer = Trainer(model, lambda out, target, mask: 1e6 * out[0].sum(), torch.optim.SGD(model.parameters(), lr=1.0))
    assert trainer.clipnorm == 1.0
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    trainer.fit([(torch.randn(2, 5, 2), None)], verbose=0)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before) == pytest.approx(1.0, rel=1e-4)  # lr 1 × clipped norm 1


# grukit.nn modules and cells, one mistake per test -------------------------------------------------------------
def raises(error: type[Exception], message: str):
    """``pytest.raises`` matching ``message`` literally."""
    return pytest.raises(error, match=re.escape(message))


X = torch.randn(2, 5, 3)  # (B, T, I) for a GRU(3, 4)


@pytest.mark.parametrize(
    "shape", [(2, 5, 7), (2, 2, 5, 3), (3,)], ids=["feature size", "rank 4", "rank 1"]
)
def test_wrong_input_shape_names_the_expected_shape(shape):
    with raises(ValueError, f"GRU expected input of shape (batch, time, 3) or unbatched (time, 3), got {shape}"):
        GRU(3, 4)(torch.randn(shape))


def test_time_major_model_says_time_major_shape():
    with raises(ValueError, "MinGRU expected input of shape (time, batch, 3) or unbatched (time, 3), got (5, 2, 4)"):
        MinGRU(3, 4, batch_first=False)(torch.randn(5, 2, 4))


def test_integer_input_is_a_type_error_pointing_to_embeddings():
    with raises(TypeError, "GRU expected a floating-point input, got dtype torch.int64 (token ids go through an"):
        GRU(3, 4)(torch.ones(2, 5, 3, dtype=torch.long))
    with raises(TypeError, "LSTM expected a torch.Tensor input, got list"):
        LSTM(3, 4)([[0.0, 1.0, 2.0]])


def test_empty_sequence_is_rejected():
    with raises(ValueError, "GRU expected at least one time step, got input of shape (2, 0, 3)"):
        GRU(3, 4)(torch.randn(2, 0, 3))


def test_wrong_h0_shape_and_dtype():
    with raises(ValueError, "GRU expected h0 of shape (2, 2, 4) (num_layers * num_directions, batch, hidden_size), "
                            "got (1, 2, 4)"):
        GRU(3, 4, bidirectional=True)(X, torch.zeros(1, 2, 4))
    unbatched = "GRU expected h0 of shape (1, 4) (num_layers * num_directions, hidden_size), got (1, 1, 4)"
    with raises(ValueError, unbatched):
        GRU(3, 4)(X[0], torch.zeros(1, 1, 4))
    with raises(TypeError, "GRU expected h0 of dtype torch.float32 (the input's), got torch.float64"):
        GRU(3, 4)(X, torch.zeros(1, 2, 4, dtype=torch.float64))


def test_wrong_lstm_state():
    with raises(ValueError, "LSTM expected state as a pair (h0, c0), got Tensor"):
        LSTM(3, 4)(X, torch.zeros(1, 2, 4))
    with raises(ValueError, "LSTM expected c0 of shape (1, 2, 4) (num_layers * num_directions, batch, hidden_size), "
                            "got (1, 3, 4)"):
        LSTM(3, 4)(X, (torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)))


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([0, 5], "GRU expected every length in [1, 5] (the time dimension), got min 0 and max 5"),
        ([6, 5], "GRU expected every length in [1, 5] (the time dimension), got min 5 and max 6"),
        ([2, 5, 1], "GRU expected lengths of shape (2,), one per sequence, got (3,)"),
    ],
    ids=["zero", "longer than T", "one too many"],
)
def test_bad_lengths_values(lengths, message):
    with raises(ValueError, message):
        GRU(3, 4)(X, lengths=lengths)


def test_float_lengths_are_a_type_error():
    with raises(TypeError, "GRU expected integer lengths, got dtype torch.float32"):
        GRU(3, 4)(X, lengths=torch.tensor([2.0, 5.0]))


def test_lengths_with_unbatched_input():
    with raises(ValueError, "GRU takes lengths only with batched input"):
        GRU(3, 4)(X[0], lengths=[5])


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_outside_zero_one(dropout):
    with raises(ValueError, f"GRU expected dropout in [0, 1), got {dropout!r}"):
        GRU(3, 4, dropout=dropout)


@pytest.mark.parametrize(
    "cls, args, kwargs, message",
    [
        (GRU, (0, 4), {}, "GRU expected input_size to be a positive integer, got 0"),
        (GRU, (3, -1), {}, "GRU expected hidden_size to be a positive integer, got -1"),
        (LSTM, (3, 4), dict(num_layers=1.5), "LSTM expected num_layers to be a positive integer, got 1.5"),
        (MinGRU, (True, 4), {}, "MinGRU expected input_size to be a positive integer, got True"),
        (GRU, (3, 4), dict(init="xavier"), "GRU expected init in ('torch', 'keras'), got 'xavier'"),
        (GRUCell, (3, -1), {}, "GRUCell expected hidden_size to be a non-negative integer, got -1"),
        (LSTMCell, ("3", 4), {}, "LSTMCell expected input_size to be a non-negative integer, got '3'"),
        (LSTM, (3, 4), dict(proj_size=4), "LSTM expected proj_size smaller than hidden_size (4), got 4"),
        (LSTM, (3, 4), dict(proj_size=-1), "LSTM expected proj_size to be a non-negative integer, got -1"),
    ],
)
def test_bad_constructor_arguments(cls, args, kwargs, message):
    with raises(ValueError, message):
        cls(*args, **kwargs)


def test_cell_errors():
    with raises(ValueError, "GRUCell expected input of shape (batch, 3) or (3,), got (2, 5)"):
        GRUCell(3, 4)(torch.randn(2, 5))
    with raises(ValueError, "GRUCell expected h of shape (2, 4), got (3, 4)"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4))
    with raises(TypeError, "GRUCell expected h as a tensor of dtype torch.float32 (the input's), got torch.float64"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4, dtype=torch.float64))
    with raises(TypeError, "GRUCell expected a floating-point tensor input, got torch.int64"):
        GRUCell(3, 4)(torch.ones(2, 3, dtype=torch.long))
    with raises(ValueError, "LSTMCell expected state as a pair (h, c), got Tensor"):
        LSTMCell(3, 4)(torch.randn(5, 3), torch.randn(5, 4))
    with raises(ValueError, "LSTMCell expected c of shape (2, 4), got (2, 5)"):
        LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5)))


def test_torch_interop_errors():
    with raises(ValueError, "torch.nn.GRU implements only reset_after=True; this GRU has reset_after=False"):
        GRU(3, 4, reset_after=False).to_torch()
    with raises(TypeError, "GRU.from_torch expected a torch.nn.modules.rnn.GRU, got LSTM"):
        GRU.from_torch(torch.nn.LSTM(3, 4))
    with raises(ValueError, "Keras' LSTM has no projection; this LSTM has proj_size=2"):
        LSTM(3, 4, proj_size=2).to_keras_weights()


KERAS_GRU = GRU(3, 4).to_keras_weights()  # kernel (3, 12), recurrent_kernel (4, 12), bias (2, 12)


@pytest.mark.parametrize(
    "weights, kwargs, message",
    [
        (KERAS_GRU[:2], {}, "GRU.from_keras_weights expected a list of [kernel, recurrent_kernel, bias] per layer "
                            "and direction (a multiple of 3 arrays), got 2"),
        (KERAS_GRU, dict(bidirectional=True), "(a multiple of 6 arrays), got 3"),
        (np.zeros(3), {}, "(a multiple of 3 arrays), got ndarray"),
        (KERAS_GRU, dict(reset_after=False),
         "GRU.from_keras_weights: layer 0 direction 0 expected bias of shape (12,) (reset_after=False), got (2, 12)"),
        ([KERAS_GRU[0][:, :11], *KERAS_GRU[1:]], {},
         "GRU.from_keras_weights: layer 0 direction 0 expected kernel of shape (3, 12), got (3, 11)"),
        ([KERAS_GRU[0], KERAS_GRU[1][:3], KERAS_GRU[2]], {},
         "GRU.from_keras_weights expected kernel (I, 3H) and recurrent_kernel (H, 3H), got (3, 12) and (3, 12)"),
        (KERAS_GRU + [np.zeros((5, 12)), *KERAS_GRU[1:]], {},
         "GRU.from_keras_weights: layer 1 direction 0 expected kernel of shape (4, 12), got (5, 12)"),
    ],
    ids=["too few", "bidirectional needs 6", "not a list", "reset_after mismatch", "kernel", "recurrent",
         "second layer"],
)
def test_bad_keras_weights(weights, kwargs, message):
    with raises(ValueError, message):
        GRU.from_keras_weights(weights, **kwargs)


def test_gru_weights_are_not_lstm_weights():
    with raises(ValueError, "LSTM.from_keras_weights expected kernel (I, 4H) and recurrent_kernel (H, 4H), "
                            "got (3, 12) and (4, 12)"):
        LSTM.from_keras_weights(KERAS_GRU)


@pytest.mark.parametrize(
    "module, x, message",
    [
        (GRU(3, 4), torch.randn(2, 5, 3, dtype=torch.float64),
         "GRU got float64 input but its weights are float32; call .double() on the module or .float() on the input"),
        (GRU(3, 4).double(), torch.randn(2, 5, 3),
         "GRU got float32 input but its weights are float64; call .float() on the module or .double() on the input"),
        (MinGRU(3, 4), torch.randn(5, 3, dtype=torch.float16),
         "MinGRU got float16 input but its weights are float32; call .half() on the module or .float() on the input"),
        (LSTM(3, 4), torch.randn(2, 5, 3, dtype=torch.bfloat16),
         "LSTM got bfloat16 input but its weights are float32; call .bfloat16() on the module or .float() on the "
         "input"),
        (GRUCell(3, 4), torch.randn(2, 3, dtype=torch.float64),
         "GRUCell got float64 input but its weights are float32; call .double() on the module or .float() on the "
         "input"),
        (LSTMCell(3, 4).double(), torch.randn(3),
         "LSTMCell got float32 input but its weights are float64; call .float() on the module or .double() on the "
         "input"),
    ],
    ids=["GRU f64 input", "GRU f64 weights", "MinGRU f16", "LSTM bf16", "GRUCell", "LSTMCell"],
)
def test_input_dtype_other_than_the_weights_names_both(module, x, message):
    # Before, the fast engines failed deep inside a kernel ("mat1 and mat2 must have the same dtype",
    # "onednn_gru: w_layer must be a contiguous float32 CPU tensor").
    with raises(TypeError, message):
        module(x)


def test_input_device_other_than_the_weights_names_both():
    x = torch.empty(2, 5, 3, device="meta")  # a second device that every build has
    with raises(ValueError, "GRU got input on meta but its weights are on cpu; call .to('meta') on the module or "
                            ".to('cpu') on the input"):
        GRU(3, 4)(x)
    with raises(ValueError, "GRUCell got input on meta but its weights are on cpu"):
        GRUCell(3, 4)(x[:, 0])
    with raises(ValueError, "GRU expected h0 on cpu (the input's), got meta"):
        GRU(3, 4)(X, torch.empty(1, 2, 4, device="meta"))
    with raises(ValueError, "GRUCell expected h on cpu (the input's), got meta"):
        GRUCell(3, 4)(X[:, 0], torch.empty(2, 4, device="meta"))


def test_unbatched_input_without_steps_is_rejected():
    with raises(ValueError, "MinGRU expected at least one time step, got input of shape (0, 3)"):
        MinGRU(3, 4)(torch.randn(0, 3))


@pytest.mark.parametrize(
    "flag", ["bias", "batch_first", "bidirectional", "reset_after"]
)
@pytest.mark.parametrize("value", ["False", "no", 0, None], ids=["'False'", "'no'", "0", "None"])
def test_non_bool_flags_are_refused_by_name(flag, value):
    # torch reads any truthy value as True, so bias="False" would silently keep the biases.
    with raises(TypeError, f"GRU expected {flag} to be True or False, got {value!r} ({type(value).__name__})"):
        GRU(3, 4, **{flag: value})


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell, LSTM, MinGRU])
def test_non_bool_bias_is_refused_by_every_module(cls):
    with raises(TypeError, f"{cls.__name__} expected bias to be True or False, got 'False' (str)"):
        cls(3, 4, bias="False")


@pytest.mark.parametrize("lengths", [[-1, 5], [5, -3]], ids=["first", "second"])
def test_negative_lengths_are_rejected(lengths):
    with raises(ValueError, "GRU expected every length in [1, 5] (the time dimension), got min "):
        GRU(3, 4)(X, lengths=lengths)
