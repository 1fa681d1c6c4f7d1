"""Exported Sequential models, the language model's two graphs, the estimators' networks and the
``grukit export`` command give in onnxruntime what they give in grukit."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from grukit import layers
from grukit.cli import main
from grukit.datasets import load_people_daily, load_rotten_tomatoes, load_series, load_ucr
from grukit.export import build_model, to_onnx
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.models.sequential import Sequential
from grukit.nn import GRU
from grukit.tasks import Forecaster, SequenceClassifier, SequenceTagger, TextClassifier, Translator
from grukit.tasks.sequence import as_series_list
from grukit.tasks.text import encode_texts
from grukit.text import pad_sequences

TOLERANCE = 1e-5


def session(model, graph: str = "prefill") -> ort.InferenceSession:
    return ort.InferenceSession(build_model(model, graph).SerializeToString(), providers=["CPUExecutionProvider"])


def padded_ids(batch: int, steps: int, vocabulary: int, seed: int, empty: bool = False):
    """Right-padded ids ``(B, T)`` (0 pads) and their lengths: the first row full, the last all padding when
    ``empty`` (and ``B > 2``)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    if empty and batch > 2:
        lengths[-1] = 0
    ids = torch.randint(1, vocabulary, (batch, steps), generator=generator)
    ids[torch.arange(steps)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


SEQUENTIALS = {
    "bigru_tagger": lambda: [layers.Embedding(30, 6, mask_zero=True),
                             layers.Bidirectional(layers.GRU(5, return_sequences=True)),
                             layers.TimeDistributed(layers.Dense(4, activation="softmax"))],
    "stack_backwards_lstm": lambda: [layers.Embedding(30, 6, mask_zero=True),
                                     layers.GRU(5, reset_after=False, return_sequences=True),
                                     layers.LSTM(4, return_sequences=True, go_backwards=True),
                                     layers.Dense(3, activation="tanh")],
    "last_state_classifier": lambda: [layers.Embedding(30, 6, mask_zero=True), layers.Dropout(0.3),
                                      layers.Bidirectional(layers.LSTM(4), merge_mode="sum"),
                                      layers.Dense(2, activation="sigmoid")],
    "mingru_pooled": lambda: [layers.Embedding(30, 6, mask_zero=True), layers.MinGRU(5, return_sequences=True),
                              layers.GlobalAveragePooling1D(), layers.Dense(3, activation="gelu")],
    "zero_output_for_mask": lambda: [layers.Embedding(30, 6, mask_zero=True),
                                     layers.GRU(5, return_sequences=True, zero_output_for_mask=True),
                                     layers.GRU(4, go_backwards=True, return_sequences=True),
                                     layers.LSTM(3, zero_output_for_mask=True), layers.Dense(2)],
    "last_outputs": lambda: [layers.Embedding(30, 6, mask_zero=True), layers.GRU(5, return_sequences=True),
                             layers.MinGRU(4, go_backwards=True), layers.Dense(2)],
    "bigru_max_pool_ave": lambda: [layers.Embedding(30, 6, mask_zero=True),
                                   layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="ave"),
                                   layers.GlobalMaxPooling1D(), layers.Dense(2, activation="swish")],
}


@pytest.mark.parametrize("name", sorted(SEQUENTIALS))
def test_sequential_on_padded_token_ids(name):
    torch.manual_seed(0)
    model = Sequential(SEQUENTIALS[name]())
    model.build((None, None))
    model.eval()
    runner = session(model)
    for batch, steps, seed in ((4, 7, 0), (1, 3, 1), (6, 1, 2), (5, 4, 3)):
        ids, _ = padded_ids(batch, steps, 30, seed, empty=True)
        with torch.no_grad():
            expected = model(ids).numpy()
        got = runner.run(None, {"x": ids.numpy(), "lengths": np.full(batch, steps)})[0]
        assert got.shape == expected.shape
        # a max pool over a sequence with no real step is -inf, then NaN after the Dense, in both
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert np.nanmax(np.abs(got - expected)) <= TOLERANCE


def test_sequential_on_features_with_lengths():
    torch.manual_seed(1)
    model = Sequential([layers.GRU(5, return_sequences=True), layers.Bidirectional(layers.GRU(3)), layers.Dense(2)])
    model.build((None, None, 4))
    model.eval()
    x, lengths = torch.randn(5, 6, 4), torch.tensor([6, 1, 3, 6, 2])
    with torch.no_grad():
        expected = model(x, lengths).numpy()
    got = session(model).run(None, {"x": x.numpy(), "lengths": lengths.numpy()})[0]
    assert np.abs(got - expected).max() <= TOLERANCE


def test_sequential_refuses_what_the_graph_cannot_express():
    model = Sequential([layers.GRU(3, stateful=True), layers.Dense(2)])
    model.build((2, None, 4))
    with pytest.raises(ValueError, match="stateful"):
        build_model(model)
    with pytest.raises(ValueError, match="built"):
        build_model(Sequential([layers.Dense(2)]))


def test_language_model_prefill_and_step_graphs_generate_what_grukit_does():
    torch.manual_seed(2)
    model = GRULanguageModel(LMConfig(vocab_size=40, embedding_size=8, hidden_size=12, num_layers=2,
                                      tie_weights=True)).eval()
    prefill, step = session(model), session(model, "step")
    ids, lengths = padded_ids(3, 6, 40, 3)
    with torch.no_grad():
        logits, state = model(ids, None, lengths)
    feeds = {"ids": ids.numpy(), "lengths": lengths.numpy()}
    feeds.update({f"state_{k}": s.numpy() for k, s in enumerate(model.initial_state(3))})
    got_logits, *got_state = prefill.run(None, feeds)
    valid = (torch.arange(6)[None, :] < lengths[:, None]).numpy()
    assert np.abs(got_logits[valid] - logits.numpy()[valid]).max() <= TOLERANCE
    assert max(np.abs(g - s.numpy()).max() for g, s in zip(got_state, state)) <= TOLERANCE
    # greedy decoding for 8 tokens: the step graph picks grukit's tokens
    expected_tokens = model.generate(ids[:, :1], 8, temperature=0)
    first_logits, *onnx_state = prefill.run(None, {
        "ids": ids[:, :1].numpy(), "lengths": np.ones(3, np.int64),
        **{f"state_{k}": s.numpy() for k, s in enumerate(model.initial_state(3))}})
    token, tokens = first_logits[:, -1].argmax(-1), []
    for _ in range(8):
        tokens.append(token)
        next_logits, *onnx_state = step.run(None, {"ids": token, **{f"state_{k}": s for k, s in
                                                                   enumerate(onnx_state)}})
        token = next_logits.argmax(-1)
    assert np.array_equal(np.stack(tokens, 1), expected_tokens.numpy())


def test_graphs_use_onnx_recurrent_operators_not_unrolled_loops():
    ops = [node.op_type for node in build_model(GRU(3, 4, num_layers=2, bidirectional=True)).graph.node]
    assert ops.count("GRU") == 2 and "Loop" not in ops and "Scan" not in ops


@pytest.fixture(scope="module")
def rotten_tomatoes():
    texts, labels = load_rotten_tomatoes()
    order = np.random.default_rng(0).permutation(len(texts))[:400]
    return [texts[i] for i in order], labels[order]


def test_text_classifier_predicts_the_same_labels(rotten_tomatoes):
    texts, labels = rotten_tomatoes
    estimator = TextClassifier(tokens="char", vocab_size=60, max_length=60, embedding_size=8, hidden_size=8,
                               epochs=1).fit(texts[:300], labels[:300])
    assert estimator.module_.channels == 1  # the naive-Bayes evidence is part of the exported graph
    held_out = texts[300:] + ["a"]  # one step: no token pair
    ids, lengths = pad_sequences(encode_texts(estimator.encoder_, held_out, estimator.max_length), torch.int64)
    logits = session(estimator).run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]
    assert np.array_equal(estimator.classes_[logits.argmax(1)], estimator.predict(held_out))
    with torch.no_grad():
        assert np.abs(logits - estimator.module_(ids, lengths).numpy()).max() <= TOLERANCE


def test_tagger_predicts_the_same_tags():
    sentences = load_people_daily()[:160]
    words = [[w for w, _ in s][:30] for s in sentences]
    tags = [[t for _, t in s][:30] for s in sentences]
    estimator = SequenceTagger(embedding_size=4, hidden_size=8, epochs=1, num_layers=2).fit(words[:120], tags[:120])
    held_out = words[120:]
    batch = estimator._batch([estimator._encode(sentence) for sentence in held_out])
    names = ("words", "chars", "dictionary", "lengths")
    logits = session(estimator).run(None, {n: t.numpy() for n, t in zip(names, batch)})[0]
    predicted = [[estimator.tags_[t] for t in row[: len(s)]] for row, s in zip(logits.argmax(-1), held_out)]
    assert predicted == estimator.predict(held_out)


def test_sequence_classifier_predicts_the_same_labels():
    x, y = load_ucr("GunPoint", "train")
    estimator = SequenceClassifier(hidden_size=4, filters=(4, 4, 4), epochs=1, min_steps=0, batch_size=16).fit(
        x, y
    )
    test_x, _ = load_ucr("GunPoint", "test")
    series = estimator._standardise(as_series_list(test_x[:40]))
    batch, lengths = pad_sequences(series, torch.float32)
    logits = session(estimator).run(None, {"x": batch.numpy(), "lengths": lengths.numpy()})[0]
    assert np.array_equal(estimator.classes_[logits.argmax(1)], estimator.predict(test_x[:40]))


def test_forecaster_gives_the_same_quantiles():
    series = load_series("airline").to_numpy(dtype=float)
    estimator = Forecaster(horizon=6, lookback=12, season=12, hidden_size=4, epochs=1, log=True).fit(series)
    window = torch.randn(3, 12, estimator.module_.rnn.input_size)
    got = session(estimator).run(None, {"x": window.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - estimator.module_(window).numpy()).max() <= TOLERANCE


def test_unsupported_models_are_named():
    estimator = Translator(tokens="word", embedding_size=4, hidden_size=4, epochs=1)
    with pytest.raises(TypeError, match="cannot export a Translator; it exports"):
        build_model(estimator)
    with pytest.raises(ValueError, match="graph='step' applies to a GRULanguageModel only"):
        build_model(GRU(2, 3), "step")


def test_cli_exports_a_saved_language_model_and_its_int8_copy(tmp_path, capsys):
    torch.manual_seed(3)
    model = GRULanguageModel(LMConfig(vocab_size=20, embedding_size=4, hidden_size=6, num_layers=1))
    model.save_pretrained(tmp_path / "lm")
    status = main(["export", str(tmp_path / "lm"), str(tmp_path / "lm.onnx"), "--int8", str(tmp_path / "lm8.onnx")])
    printed = capsys.readouterr().out
    assert status == 0
    for name in ("lm.onnx", "lm.step.onnx", "lm8.onnx", "lm8.step.onnx"):
        assert f"{name} (" in printed
        onnx.checker.check_model(str(tmp_path / name))
    assert main(["export", str(tmp_path / "lm"), str(tmp_path / "lm.txt")]) == 2
    assert "should be an .onnx file" in capsys.readouterr().err


def test_to_onnx_writes_the_file(tmp_path):
    path = to_onnx(GRU(2, 3), tmp_path / "deep" / "gru.onnx")
    assert path.is_file() and [i.name for i in onnx.load(str(path)).graph.input] == ["x", "h0", "lengths"]
