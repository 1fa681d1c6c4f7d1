"""TextClassifier's naive-Bayes evidence: the log-count ratios, their hashing, the out-of-fold values a
training text sees, and the tables a fitted model predicts with."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grukit.tasks import TextClassifier
from grukit.tasks.text import NGRAM_BUCKETS, PAD, bucket_count, log_count_ratios, ngram_buckets, token_evidence

ROWS = [np.array([2, 3]), np.array([2, 4]), np.array([3, 3, 5])]
TARGETS = np.array([1, 0, 1])


def test_log_count_ratios_match_the_nbsvm_formula_by_hand():
    unigram, bigram = log_count_ratios(ROWS, TARGETS, vocabulary=6, classes=2, order=2)
    assert unigram.shape == (6, 1) and bigram.shape == (NGRAM_BUCKETS, 1)
    # texts holding each id, class 1 then class 0 (a text counts a token once): 2 → 1, 1; 3 → 2, 0; 4 → 0, 1; 5 → 1, 0
    p = 1 + np.array([0, 0, 1, 2, 0, 1.0])
    q = 1 + np.array([0, 0, 1, 0, 1, 0.0])
    expected = np.log(p / p.sum()) - np.log(q / q.sum())
    expected[PAD] = 0.0
    np.testing.assert_allclose(unigram[:, 0], expected, rtol=1e-6)
    # the pair (3, 3) sits in one class-1 text; an unseen bucket has only the smoothing
    p2 = 1 + np.zeros(NGRAM_BUCKETS)
    q2 = 1 + np.zeros(NGRAM_BUCKETS)
    for ids, target in zip(ROWS, TARGETS):
        for bucket in set(ngram_buckets(ids, 2).tolist()):
            (p2 if target == 1 else q2)[bucket] += 1
    seen = (3 * 1_000_003 + 3) % NGRAM_BUCKETS
    assert bigram[seen, 0] == pytest.approx(math.log(p2[seen] / p2.sum()) - math.log(q2[seen] / q2.sum()), rel=1e-5)


def test_more_than_two_classes_get_one_vs_rest_channels():
    tables = log_count_ratios(ROWS, np.array([0, 1, 2]), vocabulary=6, classes=3, order=1)
    assert len(tables) == 1 and tables[0].shape == (6, 3)
    # id 4 is only in the class-1 text: evidence for class 1, against classes 0 and 2
    assert tables[0][4, 1] > 0 and tables[0][4, 0] < 0 and tables[0][4, 2] < 0


def test_hashing_is_the_same_for_arrays_and_tensors_and_evidence_is_zero_before_the_text_starts():
    ids = np.array([[7, 8, 9, 10]])
    for n in (2, 3):
        assert np.array_equal(ngram_buckets(ids, n), ngram_buckets(torch.from_numpy(ids), n).numpy())
    assert ngram_buckets(ids, 3)[0, 0] == ((7 * 1_000_003 + 8) * 1_000_003 + 9) % NGRAM_BUCKETS
    tables = [torch.arange(12.0)[:, None], torch.ones(NGRAM_BUCKETS, 1), 2 * torch.ones(NGRAM_BUCKETS, 1)]
    evidence = token_evidence(torch.from_numpy(ids), tables)  # (1, 4, 3)
    assert evidence.shape == (1, 4, 3)
    assert evidence[0, :, 0].tolist() == [7, 8, 9, 10]
    assert evidence[0, :, 1].tolist() == [0, 1, 1, 1]
    assert evidence[0, :, 2].tolist() == [0, 0, 2, 2]
    short = token_evidence(torch.tensor([[7]]), tables)  # one token: no pair, no triple
    assert short.tolist() == [[[7.0, 0.0, 0.0]]]


TEXTS = ["good fun", "bad plot", "good acting", "bad acting", "fun film", "dull film", "zesty", "grim"] * 3
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"] * 3


def small(**kwargs) -> TextClassifier:
    return TextClassifier(vocab_size=80, embedding_size=4, hidden_size=4, epochs=1, **kwargs)


def test_training_sees_out_of_fold_evidence_and_prediction_the_whole_training_set(monkeypatch):
    seen = {}
    fit = TextClassifier._out_of_fold_evidence

    def spy(self, rows, targets):
        evidence = fit(self, rows, targets)
        seen.update(rows=rows, evidence=evidence)
        return evidence

    monkeypatch.setattr(TextClassifier, "_out_of_fold_evidence", spy)
    model = small().fit(TEXTS, LABELS)
    network = model.module_
    tables = network.ratio_tables()
    assert [tuple(t.shape) for t in tables] == [(model.encoder_.vocab_size, 1), (NGRAM_BUCKETS, 1), (NGRAM_BUCKETS, 1)]
    # the fitted tables are the ratios of every training text
    targets = model.label_encoder_.transform(LABELS)
    full = log_count_ratios(seen["rows"], targets, model.encoder_.vocab_size, 2, 3)
    for table, expected in zip(tables, full):
        assert torch.equal(table, torch.from_numpy(expected))
    # a training text's evidence comes from the other folds: it differs from the in-sample ratios
    in_sample = [token_evidence(torch.from_numpy(ids)[None], [torch.from_numpy(t) for t in full])[0]
                 for ids in seen["rows"]]
    assert all(e.shape == (len(ids), 3) for e, ids in zip(seen["evidence"], seen["rows"]))
    assert any(not torch.allclose(e, s) for e, s in zip(seen["evidence"], in_sample))
    # predicting reads the tables: the same logits as passing the in-sample evidence by hand
    ids = torch.from_numpy(seen["rows"][0])[None]
    lengths = torch.tensor([ids.shape[1]])
    with torch.no_grad():
        assert torch.equal(network(ids, lengths), network(ids, lengths, in_sample[0][None]))


def test_nb_order_zero_is_the_plain_bigru_and_order_three_adds_a_channel():
    plain = small(nb_order=0).fit(TEXTS, LABELS)
    assert plain.module_.rnn.input_size == 4 and not plain.module_.ratio_tables()
    assert not any("ratios" in name for name in plain.module_.state_dict())
    three = small(nb_order=3).fit(TEXTS, LABELS)
    assert three.module_.rnn.input_size == 4 + 3 and len(three.module_.ratio_tables()) == 3


@pytest.mark.parametrize("order", [-1, 4, 1.5, True, "2"])
def test_a_bad_nb_order_is_refused_with_what_was_given(order):
    with pytest.raises(ValueError, match=rf"expected nb_order to be an integer from 0 .* to 3, got {order!r}"):
        small(nb_order=order).fit(TEXTS, LABELS)


def test_a_saved_model_keeps_its_tables_and_predicts_the_same(tmp_path):
    model = small(nb_order=3).fit(TEXTS, [0, 1, 2] * 8)  # three classes: three channels per n-gram length
    path = model.save_pretrained(tmp_path / "text")
    loaded = TextClassifier.from_pretrained(path)
    assert loaded.nb_order == 3 and loaded.module_.rnn.input_size == 4 + 9
    for a, b in zip(model.module_.ratio_tables(), loaded.module_.ratio_tables()):
        assert torch.equal(a, b)
    probe = ["good grim film", "", "zesty acting and more"]
    np.testing.assert_array_equal(model.predict_proba(probe), loaded.predict_proba(probe))


def test_evidence_carries_a_word_the_embedding_never_learned():
    """One epoch at a tiny learning rate leaves the embeddings near random; the evidence alone already splits
    words seen only with one label."""
    positives = [f"lovely {word}" for word in ("day", "song", "cake", "walk")] * 6
    negatives = [f"awful {word}" for word in ("day", "song", "cake", "walk")] * 6
    model = TextClassifier(vocab_size=60, embedding_size=4, hidden_size=8, epochs=30, learning_rate=3e-3)
    model.fit(positives + negatives, [1] * 24 + [0] * 24)
    assert model.score(["lovely walk", "awful cake", "lovely", "awful"], [1, 0, 1, 0]) == 1.0


def test_one_class_is_refused_with_the_label_given():
    with pytest.raises(ValueError, match="needs texts of at least 2 classes to learn from, got only the label 'pos'"):
        small().fit(["good", "fine", "ok"], ["pos"] * 3)


def test_many_classes_get_fewer_buckets_so_the_model_stays_small():
    assert [bucket_count(k) for k in (1, 4, 5, 20, 60, 500)] == [2**20, 2**20, 2**19, 2**17, 2**16, 2**16]
    texts = [f"word{c} filler" for c in range(20)] * 2
    model = small().fit(texts, list(range(20)) * 2)
    assert [tuple(t.shape) for t in model.module_.ratio_tables()] == [
        (model.encoder_.vocab_size, 20), (2**17, 20), (2**17, 20)
    ]
    assert model.predict_proba(["word7 filler"]).shape == (1, 20)


def test_predict_proba_under_bf16_autocast_gives_float_probabilities():
    model = small().fit(TEXTS, LABELS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probabilities = model.predict_proba(["good fun", "grim"])
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(1), 1.0, atol=1e-2)


def test_the_linear_nbsvm_baseline_uses_the_same_log_count_ratios():
    from grukit.tasks.baselines import nb_logistic_regression

    train = ["good fun", "good plot", "fun acting", "bad plot", "bad acting", "dull film"] * 4
    labels = np.array([1, 1, 1, 0, 0, 0] * 4)
    predicted = nb_logistic_regression(train, labels, ["good fun film", "bad film", "dull"], "word", (1, 2))
    assert predicted.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="expected two classes, got 3"):
        nb_logistic_regression(train, np.arange(24) % 3, ["x"])
