"""The parts of ``grukit serve`` that need no live server: the micro-batcher, the session store, the metrics
text, and every kind of saved model answering ``/v1/predict`` through the app in this process."""

import asyncio

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tests.tasks_tiny import CASES, fitted

import grukit
from grukit import layers
from grukit.cli import main
from grukit.lm import GRULanguageModel, LMConfig
from grukit.lm.classifier import GRUClassifier
from grukit.lm.classifier import predict as classify_ids
from grukit.models import Sequential
from grukit.serve.adapters import plain, serve_model
from grukit.serve.app import ServeSettings, create_app
from grukit.serve.batching import MicroBatcher, ModelWorker, run_merged
from grukit.serve.metrics import Registry
from grukit.serve.sessions import SessionError, SessionStore
from grukit.text.tokenizer import CharTokenizer


# Micro-batching ---------------------------------------------------------------------------------------------
def test_concurrent_requests_are_merged_into_calls_of_at_most_max_batch_size_inputs():
    calls = []

    def predict(inputs: list) -> list:
        calls.append(list(inputs))
        return [2 * x for x in inputs]

    async def run() -> list:
        worker = ModelWorker()
        batcher = MicroBatcher(predict, worker, Registry(), max_batch_size=4, max_wait_s=30.0)
        batcher.start()
        try:  # five requests of 1 + 1 + 2 + 1 + 3 inputs: two calls of 4, each full before the wait ends
            requests = [[1], [2], [3, 4], [5], [6, 7, 8]]
            answers = await asyncio.gather(*(batcher.submit(r, "all") for r in requests))
            return answers
        finally:
            await batcher.stop()
            worker.shutdown()

    answers = asyncio.run(run())
    assert answers == [[2], [4], [6, 8], [10], [12, 14, 16]]
    assert calls == [[1, 2, 3, 4], [5, 6, 7, 8]]  # each batch filled before the 30 s wait ran out


def test_requests_with_different_batch_keys_never_share_a_call():
    calls = []

    def predict(inputs: list) -> list:
        calls.append(list(inputs))
        return inputs

    async def run() -> list:
        worker = ModelWorker()
        batcher = MicroBatcher(predict, worker, Registry(), max_batch_size=4, max_wait_s=30.0)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([x], key) for x, key in zip("abcd", ["x", "y", "x", None])))
        finally:
            await batcher.stop()
            worker.shutdown()

    assert asyncio.run(run()) == [["a"], ["b"], ["c"], ["d"]]
    assert calls == [["a", "c"], ["b"], ["d"]]


def test_a_refused_merged_call_is_retried_per_request_so_only_the_bad_one_fails():
    def predict(inputs: list) -> list:
        if "bad" in inputs:
            raise ValueError("inputs hold 'bad'")
        return [x.upper() for x in inputs]

    answers = run_merged(predict, [["a"], ["bad", "b"], ["c"]])
    assert answers[0] == ["A"] and answers[2] == ["C"]
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "inputs hold 'bad'"


# Sessions and metrics ---------------------------------------------------------------------------------------
def test_idle_sessions_expire_and_the_cap_counts_only_open_ones():
    now = [0.0]
    store = SessionStore(max_sessions=2, idle_timeout_s=10.0, clock=lambda: now[0])
    first, second = store.open("state 1"), store.open("state 2")
    with pytest.raises(SessionError, match="2 sessions are open") as full:
        store.open("state 3")
    assert full.value.status == 429
    now[0] = 5.0
    first.last_used = 5.0
    now[0] = 12.0  # the second is idle for 12 s, the first for 7 s
    assert store.get(first.id).state == "state 1"
    with pytest.raises(SessionError, match="no open session") as gone:
        store.get(second.id)
    assert gone.value.status == 404
    first.busy = True
    with pytest.raises(SessionError, match="is running a step") as busy:
        store.close(first.id)
    assert busy.value.status == 409
    now[0] = 100.0
    assert store.expire() == 0  # a session running a step never expires under it


def test_metrics_are_prometheus_text():
    registry = Registry()
    registry.requests.inc(route="/v1/predict", method="POST", status="200")
    registry.batch_size.observe(3)
    registry.batch_size.observe(40)
    text = registry.render()
    assert 'grukit_requests_total{method="POST",route="/v1/predict",status="200"} 1\n' in text
    assert 'grukit_batch_size_bucket{le="2"} 0\n' in text
    assert 'grukit_batch_size_bucket{le="4"} 1\n' in text
    assert 'grukit_batch_size_bucket{le="64"} 2\n' in text
    assert 'grukit_batch_size_bucket{le="+Inf"} 2\n' in text
    assert "grukit_batch_size_sum 43\ngrukit_batch_size_count 2\n" in text


# Every kind of model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["text_bpe_str_labels", "translator", "sequence_classifier", "video_str_labels"])
def test_each_estimator_answers_predict_as_it_does_in_process(case, tmp_path):
    fitted(case).save_pretrained(tmp_path / "model")
    model = grukit.load(tmp_path / "model")
    x = CASES[case][3]()
    inputs = plain(list(x))
    with TestClient(create_app(serve_model(grukit.load(tmp_path / "model")))) as client:
        answer = client.post("/v1/predict", json={"inputs": inputs})
    assert answer.status_code == 200
    assert answer.json()["outputs"] == plain(model.predict(x))


def test_a_forecaster_takes_horizons(tmp_path):
    fitted("forecaster").save_pretrained(tmp_path / "model")
    model = grukit.load(tmp_path / "model")
    with TestClient(create_app(serve_model(model))) as client:
        answer = client.post("/v1/predict", json={"inputs": [None, 2]})
        refused = client.post("/v1/predict", json={"inputs": [0]})
    assert answer.json()["outputs"] == [model.predict().tolist(), model.predict(2).tolist()]
    assert refused.status_code == 422 and refused.json()["error"].startswith("inputs[0]: Input should be greater")


def test_a_sequential_answers_predict_and_runs_alone_when_its_samples_differ_in_length(tmp_path):
    torch.manual_seed(0)
    model = Sequential([layers.Embedding(20, 6, mask_zero=True), layers.GRU(5), layers.Dense(3)])
    model.build((None, None))
    model.save_pretrained(tmp_path / "model")
    served = serve_model(grukit.load(tmp_path / "model"))
    dense, ragged = [[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5]]
    assert served.batch_key(dense) == ("<i8", (3,)) and served.batch_key(ragged) is None
    with TestClient(create_app(served, ServeSettings(max_wait_ms=20))) as client:
        answers = [client.post("/v1/predict", json={"inputs": inputs}) for inputs in (dense, ragged)]
        refused = client.post("/v1/predict", json={"inputs": [["a"]]})
    for inputs, answer in zip((dense, ragged), answers):
        expected = model.predict(np.array(inputs) if inputs is dense else [np.array(row) for row in inputs])
        np.testing.assert_allclose(answer.json()["outputs"], expected, rtol=1e-5, atol=1e-6)
    assert refused.status_code == 400 and "must hold numbers" in refused.json()["error"]


def test_serve_of_a_missing_folder_is_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing"), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("grukit: error:") and "nothing" in error and error.count("\n") == 1


def test_a_sequential_session_steps_through_a_sequence_as_predict_reads_its_prefixes(tmp_path):
    torch.manual_seed(0)
    model = Sequential([layers.Embedding(20, 6), layers.GRU(5), layers.Dense(3)])
    model.build((None, None))
    model.save_pretrained(tmp_path / "model")
    ids = [3, 7, 1, 12]
    with TestClient(create_app(serve_model(grukit.load(tmp_path / "model")))) as client:
        session_id = client.post("/v1/sessions").json()["session_id"]
        first = client.post(f"/v1/sessions/{session_id}/step", json={"inputs": ids[:3]}).json()
        second = client.post(f"/v1/sessions/{session_id}/step", json={"inputs": ids[3:]}).json()
    assert second["steps"] == 4
    expected = [model.predict(np.array([ids[: t + 1]]))[0] for t in range(4)]
    np.testing.assert_allclose(first["outputs"] + second["outputs"], expected, rtol=1e-5, atol=1e-6)


def test_a_gru_classifier_answers_label_names_and_refuses_an_empty_text(tmp_path):
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train(["good bad film"])
    encoder = GRULanguageModel(LMConfig(tokenizer.vocab_size, embedding_size=6, hidden_size=8), tokenizer)
    GRUClassifier(encoder, 2, head_hidden=4, labels=["neg", "pos"]).save_pretrained(tmp_path / "model")
    model = grukit.load(tmp_path / "model")
    texts = ["good film", "bad", "a good bad film"]
    expected = [model.labels[c] for c in classify_ids(model, [tokenizer.encode(t) for t in texts])]
    with TestClient(create_app(serve_model(model))) as client:
        answer = client.post("/v1/predict", json={"inputs": texts})
        empty = client.post("/v1/predict", json={"inputs": ["good", ""]})
    assert answer.json()["outputs"] == expected and set(expected) <= {"neg", "pos"}
    assert empty.status_code == 400 and empty.json()["error"].startswith("inputs[1] holds no tokens")
