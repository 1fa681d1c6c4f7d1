"""Saved estimator folders edited by hand or by an attacker, and estimators used from several threads: every
edit a person can make to ``config.json`` must end in a CheckpointError naming the folder and the bad entry,
before any network is allocated, never in a crash, a hang or predictions that name the wrong classes."""

import hashlib
import json
import shutil
import threading

import numpy as np
import pytest

import grukit
from grukit.tasks import SequenceClassifier, SequenceTagger, TextClassifier, Translator, VideoClassifier
from grukit.train.checkpoint import CheckpointError
from tasks_tiny import CASES


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder of the saved tiny estimator, the estimator, X to predict)."""
    root = tmp_path_factory.mktemp("saved")
    result = {}
    for name in ("text_char_int_labels", "tagger", "translator", "sequence_classifier", "video_two_label_columns"):
        make, train_x, train_y, predict_x = CASES[name]
        estimator = make().fit(train_x(), train_y())
        result[name] = (estimator.save_pretrained(root / name), estimator, predict_x())
    return result


def _edited(saved, tmp_path, name: str, edit) -> str:
    """A copy of the saved ``name`` with ``edit(config)`` applied and the manifest made to match, as an attacker
    (or a person with a script) would."""
    folder = tmp_path / name
    shutil.copytree(saved[name][0], folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "config.json").read_bytes()
    manifest["files"]["config.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _set(section: str, key: str, value):
    return lambda config: config[section].__setitem__(key, value)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        # a size far too large is refused by shape, before the network is allocated (this one is petabytes)
        # inputs: embedding 8 + naive-Bayes evidence of 3 n-gram lengths for each of 3 classes
        ("text_char_int_labels", _set("params", "hidden_size", 10**7), r"would have shape \(30000000, 17\)"),
        ("text_char_int_labels", _set("fitted", "nb_order", 10**6), '"fitted" nb_order must be an integer from 0 to 3'),
        ("video_two_label_columns", _set("fitted", "frame_shape", [1, 10**6, 10**6]), "would have shape"),
        ("text_char_int_labels", _set("params", "hidden_size", "8"), '"params" hidden_size must be an integer'),
        ("text_char_int_labels", _set("params", "dropout", "x"), '"params" dropout must be an integer or a number'),
        ("text_char_int_labels", _set("params", "extra", 1), r"names \['extra'\], which TextClassifier does not take"),
        ("text_char_int_labels", lambda config: config.__setitem__("params", "x"), '"params" must be a JSON object'),
        ("text_char_int_labels", _set("params", "cell", "rnn"), "expected cell in"),
        ("text_char_int_labels", _set("fitted", "classes", ["a"]), r'"fitted" classes must be \{"values"'),
        ("text_char_int_labels", _set("fitted", "classes", {"values": [1, "x"], "dtype": "<i8"}), "not of their dtype"),
        ("tagger", _set("fitted", "tags", "DNRV"), '"fitted" tags must be a sorted list'),
        ("tagger", _set("fitted", "dictionary", [999] * 3), '"fitted" dictionary must list one tag id'),
        ("translator", _set("fitted", "max_output_length", 10**12), "max_output_length must be an integer from 1"),
        ("translator", _set("fitted", "max_output_length", -5), "max_output_length must be an integer from 1"),
        ("sequence_classifier", _set("fitted", "mean", [0.0]), '"fitted" mean must be a list of 2 finite numbers'),
        ("sequence_classifier", _set("fitted", "scale", [0.0, 1.0]), "scale must be a list of 2 positive"),
        ("sequence_classifier", _set("fitted", "epochs", "x"), '"fitted" epochs must be an integer'),
        ("video_two_label_columns", _set("fitted", "frame_shape", [1, 8]), "frame_shape must be"),
        ("video_two_label_columns", _set("fitted", "multi_output", False), "multi_output must be true or false"),
    ],
)
def test_an_edited_config_is_refused_with_the_folder_and_the_entry(saved, tmp_path, name, edit, message):
    folder = _edited(saved, tmp_path, name, edit)
    with pytest.raises(CheckpointError, match=message) as caught:
        grukit.load(folder)
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize("key", ["classes"])
def test_reordered_class_labels_are_refused_not_silently_swapped(saved, tmp_path, key):
    def reverse(config):
        config["fitted"][key]["values"] = config["fitted"][key]["values"][::-1]

    folder = _edited(saved, tmp_path, "text_char_int_labels", reverse)
    with pytest.raises(CheckpointError, match="must be sorted and distinct, as fit"):
        TextClassifier.from_pretrained(folder)


def test_reordered_tags_are_refused(saved, tmp_path):
    folder = _edited(saved, tmp_path, "tagger", lambda config: config["fitted"]["tags"].reverse())
    with pytest.raises(CheckpointError, match="tags must be a sorted list of distinct"):
        SequenceTagger.from_pretrained(folder)


def test_an_unedited_folder_still_loads_and_predicts_as_before(saved):
    folder, estimator, x = saved["sequence_classifier"]
    np.testing.assert_array_equal(SequenceClassifier.from_pretrained(folder).predict(x), estimator.predict(x))


def test_grukit_load_refuses_what_is_not_a_path():
    with pytest.raises(TypeError, match="grukit.load expected the path of a saved model folder .*got int"):
        grukit.load(5)


@pytest.mark.parametrize("name", ["text_char_int_labels", "tagger", "translator", "video_two_label_columns"])
def test_predictions_from_eight_threads_equal_the_serial_ones(saved, name):
    folder, _, x = saved[name]
    estimator = grukit.load(folder)
    serial = estimator.predict(x)
    results: list = [None] * 8

    def work(index: int) -> None:
        results[index] = estimator.predict(x)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(np.asarray(result, dtype=object), np.asarray(serial, dtype=object))


def test_beam_search_from_threads_never_changes_the_estimator_or_another_threads_beam(saved):
    translator = Translator.from_pretrained(saved["translator"][0])
    x = saved["translator"][2]
    greedy, beam = translator.predict(x), translator.predict(x, beam_size=3)
    results: dict[int, list[str]] = {}

    def work(index: int) -> None:
        results[index] = translator.predict(x, beam_size=3 if index % 2 else 1)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[index] == (beam if index % 2 else greedy) for index in range(8))
    assert translator.beam_size == 1  # predict(beam_size=...) does not set the parameter


def test_translator_takes_numpy_beam_sizes_and_refuses_a_bad_length_penalty(saved):
    translator = Translator.from_pretrained(saved["translator"][0])
    x = saved["translator"][2]
    assert translator.predict(x, beam_size=np.int64(2)) == translator.predict(x, beam_size=2)
    translator.set_params(length_penalty="x")
    with pytest.raises(ValueError, match="length_penalty to be a finite number, got 'x'"):
        translator.predict(x, beam_size=2)


def test_scores_refuse_targets_that_do_not_match_the_inputs(saved):
    _, tagger, sentences = saved["tagger"]
    with pytest.raises(ValueError, match="sentence 0 has 3 tokens but 1 tags"):
        tagger.score(sentences, [["D"], ["N", "N"]])
    with pytest.raises(ValueError, match="got 2 sentences but 3 tag lists"):
        tagger.score(sentences, [["D", "N", "V"], ["N", "N"], ["V"]])
    _, translator, sources = saved["translator"]
    with pytest.raises(ValueError, match="got 3 sources but 1 targets"):
        translator.score(sources, ["un"])
    _, video, clips = saved["video_two_label_columns"]
    with pytest.raises(ValueError, match=r"score expected y of shape \(4, 2\)"):
        video.score(clips, np.zeros(4))


def test_video_classifier_refuses_no_clips(saved):
    _, video, clips = saved["video_two_label_columns"]
    with pytest.raises(ValueError, match=r"got no clips: X has shape \(0, 3, 1, 8, 8\)"):
        video.predict(clips[:0])
    with pytest.raises(ValueError, match="got no clips"):
        VideoClassifier(epochs=1).fit(clips[:0], np.zeros(0))


def test_sequence_classifier_standardises_values_whose_squares_overflow_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 10)) * 1e30  # float32 holds these, not their squares
    model = SequenceClassifier(hidden_size=4, filters=(), epochs=1, min_steps=1).fit(x, [0, 1] * 3)
    assert np.isfinite(model.scale_).all() and np.isfinite(model.mean_).all()
    np.testing.assert_allclose(model.scale_, x.transpose(0, 2, 1).reshape(-1, 2).std(0), rtol=1e-4)
