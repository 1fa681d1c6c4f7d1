"""What a Keras user reaches for first: History.plot, save names, get/set/save/load weights, *_on_batch and a
monitor naming a quantity the logs lack."""

import os
import stat

import numpy as np
import pytest
from matplotlib.figure import Figure

from grukit.layers import GRU, Dense
from grukit.models import Sequential
from grukit.train import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, seed_everything

X = np.random.default_rng(0).normal(size=(16, 5, 3)).astype("float32")  # (B, T, F)
Y = (X[:, :, 0].sum(axis=1) > 0).astype("int64")  # (B,)


def _model(metrics=("accuracy",)):
    seed_everything(0)
    model = Sequential([GRU(units=4), Dense(units=2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=list(metrics))
    model.build((None, None, 3))
    return model


def test_history_plot_returns_a_figure_and_writes_a_png_only_when_given_a_path(tmp_path):
    history = _model().fit(X, Y, epochs=2, batch_size=8, validation_data=(X, Y), verbose=0)
    figure = history.plot()
    assert isinstance(figure, Figure)
    assert [axis.get_title() for axis in figure.axes] == ["loss", "accuracy"]
    assert [line.get_label() for line in figure.axes[0].lines] == ["training loss", "validation loss"]
    assert list(tmp_path.iterdir()) == []
    assert isinstance(history.plot(tmp_path / "curves.png"), Figure)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "m.HDF5"])
def test_save_refuses_a_keras_file_name_and_writes_nothing(tmp_path, name):
    with pytest.raises(ValueError, match=r"grukit saves a model as a folder .*such as '.*[/\\]m'"):
        _model().save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_get_weights_round_trips_through_set_weights_in_layer_order():
    model, other = _model(), Sequential([GRU(units=4), Dense(units=2, activation="softmax")])
    other.build((None, None, 3))
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(3, 12), (4, 12), (2, 12), (4, 2), (2,)]  # GRU (reset_after), Dense
    other.set_weights(weights)
    assert np.allclose(other.predict(X), model.predict(X))


def test_set_weights_names_the_count_and_the_layer_whose_shapes_differ():
    model = _model()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"expected 5 arrays \(gru 3, dense 2\), got 4"):
        model.set_weights(weights[:4])
    weights[3] = np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match=r"layer 'dense' \(Dense\) expected arrays of shapes \[\(4, 2\), \(2,\)\]"):
        model.set_weights(weights)
    assert np.array_equal(model.get_weights()[0], weights[0])  # nothing was written


def test_save_weights_and_load_weights_use_one_safetensors_file(tmp_path):
    model, other = _model(), _model()
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    path = model.save_weights(tmp_path / "m.weights.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.safetensors"]
    other.load_weights(path)
    assert np.allclose(other.predict(X), model.predict(X))
    with pytest.raises(ValueError, match=r"ending in \.safetensors.*stores weights with safetensors, not HDF5"):
        model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match=r"ending in \.safetensors, got '.*m\.bin'"):
        model.load_weights(tmp_path / "m.bin")
    wider = Sequential([GRU(units=5), Dense(units=2)])
    wider.build((None, None, 3))
    with pytest.raises(ValueError, match=r"layer 'gru' \(GRU\) needs"):
        wider.load_weights(path)


def test_train_on_batch_returns_loss_and_metrics_as_keras_and_takes_a_step():
    model = _model()
    before = model.get_weights()
    loss, accuracy = model.train_on_batch(X, Y)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert not np.array_equal(model.get_weights()[0], before[0])
    logs = model.train_on_batch(X, Y, return_dict=True)
    assert list(logs) == ["loss", "accuracy"]
    plain = _model(metrics=())
    assert isinstance(plain.train_on_batch(X, Y), float)


def test_test_and_predict_on_batch_agree_with_evaluate_and_predict():
    model = _model()
    after = model.get_weights()
    assert model.test_on_batch(X, Y) == pytest.approx(model.evaluate(X, Y, verbose=0))
    assert np.allclose(model.predict_on_batch(X), model.predict(X))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), after))  # no training
    assert model.predict_on_batch(X).shape == (16, 2)


@pytest.mark.parametrize(
    "callback, owner",
    [
        (lambda: EarlyStopping(monitor="val_mae"), "EarlyStopping"),
        (lambda: ReduceLROnPlateau(monitor="val_mae"), "ReduceLROnPlateau"),
        (lambda: ModelCheckpoint("ckpt", monitor="val_mae", save_best_only=True), "ModelCheckpoint"),
    ],
)
def test_a_monitor_the_logs_lack_names_it_and_the_quantities_there(callback, owner):
    with pytest.raises(ValueError) as caught:
        _model().fit(X, Y, epochs=1, batch_size=8, validation_data=(X, Y), callbacks=[callback()], verbose=0)
    assert str(caught.value) == (
        f"{owner} monitors 'val_mae', but the logs hold ['loss', 'accuracy', 'val_loss', 'val_accuracy']: "
        "compile with metrics=['mae'] or monitor one of those"
    )


def test_a_val_monitor_without_validation_data_says_to_pass_it():
    with pytest.raises(ValueError, match=r"pass validation data to fit .* or monitor 'accuracy'"):
        _model().fit(X, Y, epochs=1, batch_size=8, callbacks=[EarlyStopping(monitor="val_accuracy")], verbose=0)


def test_save_weights_replaces_the_file_atomically_with_the_umasks_permissions(tmp_path):
    model = Sequential([Dense(2)])
    model.build((None, 3))
    path = model.save_weights(tmp_path / "w.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left
    model.save_weights(path)  # replaces its own earlier file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
