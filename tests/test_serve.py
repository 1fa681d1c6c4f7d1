"""``grukit serve`` as a client sees it: a live server in a subprocess on a loopback port, a tiny saved
SequenceTagger and a tiny GRULanguageModel; every answer is checked against the model run in this process."""

import asyncio
import json
import re
import signal

import httpx
import numpy as np
import pytest
import torch
from benchmarks.serve_load import _load, live_server, server_log
from tests.tasks_tiny import SENTENCES, TAGS

import grukit
from grukit.lm import GRULanguageModel, LMConfig
from grukit.tasks import SequenceTagger
from grukit.text.tokenizer import CharTokenizer

TEXT = "the cat sat on the mat, the dog ran far"
WORDS = ["the", "cat", "sat", "a", "dog", "ran", "far", "cats", "unknown", "mat"]


@pytest.fixture(scope="module")
def tagger_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve") / "tagger"
    SequenceTagger(embedding_size=4, hidden_size=8, min_count=1, epochs=1).fit(SENTENCES, TAGS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train([TEXT])
    folder = tmp_path_factory.mktemp("serve") / "lm"
    model = GRULanguageModel(LMConfig(tokenizer.vocab_size, embedding_size=6, hidden_size=10), tokenizer)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagger_server(tagger_folder):
    flags = ("--max-batch-size", "32", "--max-wait-ms", "5", "--max-items", "16", "--max-body-bytes", "4096")
    with live_server(tagger_folder, *flags) as (process, url):
        yield url


@pytest.fixture(scope="module")
def lm_server(lm_folder):
    with live_server(lm_folder, "--max-sessions", "2", "--max-new-tokens", "100000") as (process, url):
        yield url


def sentences(seed: int) -> list[list[str]]:
    """1 to 3 sentences of 1 to 6 words, different for each seed."""
    rng = np.random.default_rng(seed)
    return [list(rng.choice(WORDS, size=rng.integers(1, 7))) for _ in range(rng.integers(1, 4))]


def metric(text: str, name: str) -> float:
    """The value of the unlabelled metric ``name`` in Prometheus text."""
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


# Predictions ------------------------------------------------------------------------------------------------
def test_64_concurrent_clients_get_exactly_the_in_process_predictions(tagger_server, tagger_folder):
    model = grukit.load(tagger_folder)
    requests = [sentences(seed) for seed in range(64)]

    async def ask_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tagger_server, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json={"inputs": r}) for r in requests))

    answers = asyncio.run(ask_all())
    assert [answer.status_code for answer in answers] == [200] * 64
    for inputs, answer in zip(requests, answers):
        assert answer.json() == {"outputs": model.predict(inputs)}
    text = httpx.get(f"{tagger_server}/metrics").text
    assert re.search(r'grukit_requests_total\{method="POST",route="/v1/predict",status="200"\} (\d+)', text)
    served = sum(len(r) for r in requests)
    assert float(re.search(r"^grukit_batch_size_sum (\S+)$", text, re.MULTILINE).group(1)) >= served


def test_the_load_benchmark_client_gets_the_in_process_answers(tagger_server, tagger_folder):
    model = grukit.load(tagger_folder)
    requests = [sentences(seed)[0] for seed in range(16)]
    run = asyncio.run(_load(tagger_server, requests, clients=4, per_client=4))
    assert (run["errors"], len(run["latencies"])) == (0, 16)
    assert run["answers"] == dict(enumerate(model.predict(requests)))
    assert 1 <= run["calls"] <= 16


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"inputs": [["the", "cat"]', 400, "the request body is not valid JSON"),
        (b'{"inputs": [["the", 1]]}', 422, "inputs[0][1]: Input should be a valid string"),
        (b'{"inputs": "the cat"}', 422, "inputs: Input should be a valid list"),
        (b'{"inputs": [[]]}', 422, "inputs[0]: List should have at least 1 item"),
        (b'{"inputs": [["a"]], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
        (b'{"sentences": [["a"]]}', 422, "inputs: Field required"),
        (json.dumps({"inputs": [["a"]] * 17}).encode(), 413, "inputs: List should have at most 16 items"),
        (json.dumps({"inputs": [["word"] * 600]}).encode(), 413, "this server takes at most 4096"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(tagger_server, body, status, message):
    answer = httpx.post(f"{tagger_server}/v1/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert httpx.post(f"{tagger_server}/v1/predict", json={"inputs": [["the", "cat"]]}).status_code == 200


def test_a_body_that_is_not_json_gets_415(tagger_server):
    answer = httpx.post(f"{tagger_server}/v1/predict", data={"inputs": "the"})
    assert answer.status_code == 415
    assert "application/x-www-form-urlencoded" in answer.json()["error"]


def test_a_tagger_refuses_sessions_and_generation_with_400(tagger_server):
    answer = httpx.post(f"{tagger_server}/v1/sessions")
    assert answer.status_code == 400
    assert answer.json() == {"error": "this model (SequenceTagger) does not support sessions"}
    answer = httpx.post(f"{tagger_server}/v1/generate", json={"prompt": "the"})
    assert answer.status_code == 400 and "does not generate text" in answer.json()["error"]


def test_health_openapi_docs_and_metrics_pages(tagger_server):
    assert httpx.get(f"{tagger_server}/healthz").json()["architecture"] == "grukit.SequenceTagger"
    assert "swagger" in httpx.get(f"{tagger_server}/docs").text.lower()
    spec = httpx.get(f"{tagger_server}/openapi.json").json()
    assert {"/v1/predict", "/v1/generate", "/v1/sessions", "/v1/sessions/{session_id}/step"} <= set(spec["paths"])
    inputs = spec["components"]["schemas"]["PredictRequest"]["properties"]["inputs"]
    assert (inputs["maxItems"], inputs["items"]["items"]["type"]) == (16, "string")
    text = httpx.get(f"{tagger_server}/metrics").text
    assert "# TYPE grukit_request_seconds histogram" in text
    assert re.search(r'grukit_request_seconds_bucket\{route="/healthz",le="\+Inf"\} [1-9]', text)


# Token streams ----------------------------------------------------------------------------------------------
def events(text: str) -> list[tuple[str, dict]]:
    """``(event, data)`` of each Server-Sent Event in ``text``."""
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_generate_streams_the_tokens_the_model_samples_in_process(lm_server, lm_folder):
    model = grukit.load(lm_folder)
    answer = httpx.post(f"{lm_server}/v1/generate", json={"prompt": "the ca", "max_new_tokens": 12, "seed": 3})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    streamed = events(answer.text)
    assert streamed[-1] == ("done", {"tokens": 12, "finish_reason": "length"})
    expected = model.generate(torch.tensor([model.tokenizer.encode("the ca")]), 12, seed=3)[0].tolist()
    assert [data["token"] for kind, data in streamed[:-1]] == expected
    assert "".join(data["text"] for _, data in streamed[:-1]) == model.generate("the ca", 12, seed=3)


def test_generate_refuses_unknown_token_ids_and_too_many_tokens(lm_server):
    answer = httpx.post(f"{lm_server}/v1/generate", json={"prompt": [1, 999]})
    assert answer.status_code == 400 and "prompt[1] is token id 999" in answer.json()["error"]
    answer = httpx.post(f"{lm_server}/v1/generate", json={"prompt": "the", "max_new_tokens": 100001})
    assert answer.status_code == 422 and "max_new_tokens" in answer.json()["error"]
    answer = httpx.post(f"{lm_server}/v1/generate", json={"prompt": "the", "seed": 2**70})
    assert answer.status_code == 422 and "seed" in answer.json()["error"]


def test_a_client_leaving_mid_stream_frees_the_stream_and_the_server_keeps_serving(lm_server):
    with httpx.stream("POST", f"{lm_server}/v1/generate", json={"prompt": "the", "max_new_tokens": 90000}) as answer:
        lines = answer.iter_lines()
        received = [line for line, _ in zip(lines, range(6))]  # three events, then hang up
    assert received[0] == "event: token"
    for _ in range(100):
        text = httpx.get(f"{lm_server}/metrics").text
        if metric(text, "grukit_streams_open") == 0:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert metric(text, "grukit_streams_open") == 0
    assert metric(text, "grukit_generated_tokens_total") < 90000  # it stopped early
    answer = httpx.post(f"{lm_server}/v1/generate", json={"prompt": "the", "max_new_tokens": 2})
    assert events(answer.text)[-1][1]["tokens"] == 2


# Sessions ---------------------------------------------------------------------------------------------------
def test_a_session_carries_the_state_between_steps(lm_server, lm_folder):
    model = grukit.load(lm_folder).eval()
    session = httpx.post(f"{lm_server}/v1/sessions")
    assert session.status_code == 201
    session_id = session.json()["session_id"]
    first = httpx.post(f"{lm_server}/v1/sessions/{session_id}/step", json={"inputs": "the c"}).json()
    ids = model.tokenizer.encode("at sat")
    second = httpx.post(f"{lm_server}/v1/sessions/{session_id}/step", json={"inputs": ids}).json()
    assert (len(first["outputs"]), second["steps"]) == (5, 11)
    with torch.no_grad():
        logits, _ = model(torch.tensor([model.tokenizer.encode("the cat sat")]))  # (1, 11, V) in one go
    expected = torch.softmax(logits[0], -1)
    np.testing.assert_allclose(first["outputs"] + second["outputs"], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert httpx.delete(f"{lm_server}/v1/sessions/{session_id}").status_code == 204
    answer = httpx.post(f"{lm_server}/v1/sessions/{session_id}/step", json={"inputs": [1]})
    assert answer.status_code == 404 and "no open session" in answer.json()["error"]
    assert httpx.delete(f"{lm_server}/v1/sessions/{session_id}").status_code == 404


def test_unknown_sessions_get_404_and_bad_steps_400(lm_server):
    assert httpx.post(f"{lm_server}/v1/sessions/no-such-id/step", json={"inputs": [1]}).status_code == 404
    session_id = httpx.post(f"{lm_server}/v1/sessions").json()["session_id"]
    try:
        answer = httpx.post(f"{lm_server}/v1/sessions/{session_id}/step", json={"inputs": [1, 2.5]})
        assert answer.status_code == 400 and "inputs[1] must be a token id" in answer.json()["error"]
        answer = httpx.post(f"{lm_server}/v1/sessions/{session_id}/step", json={"inputs": [1]})
        assert answer.json()["steps"] == 1  # the refused step left the state as it was
    finally:
        httpx.delete(f"{lm_server}/v1/sessions/{session_id}")


def test_opening_more_sessions_than_the_cap_gets_429_until_one_closes(lm_server):
    opened = [httpx.post(f"{lm_server}/v1/sessions").json()["session_id"] for _ in range(2)]
    full = httpx.post(f"{lm_server}/v1/sessions")
    assert full.status_code == 429 and "--max-sessions 2" in full.json()["error"]
    assert int(full.headers["retry-after"]) >= 1
    httpx.delete(f"{lm_server}/v1/sessions/{opened[0]}")
    again = httpx.post(f"{lm_server}/v1/sessions")
    assert again.status_code == 201
    for session_id in (opened[1], again.json()["session_id"]):
        assert httpx.delete(f"{lm_server}/v1/sessions/{session_id}").status_code == 204


# Shutdown ---------------------------------------------------------------------------------------------------
def test_sigterm_lets_requests_in_flight_finish(tagger_folder):
    model = grukit.load(tagger_folder)
    requests = [sentences(seed) for seed in range(8)]
    # every request waits up to 3 s in the batcher, so all 8 are in flight when SIGTERM comes
    with live_server(tagger_folder, "--max-wait-ms", "3000", "--max-batch-size", "1000") as (process, url):

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                sent = [asyncio.create_task(client.post("/v1/predict", json={"inputs": r})) for r in requests]
                for _ in range(300):
                    in_progress = metric((await client.get("/metrics")).text, "grukit_requests_in_progress")
                    if in_progress >= 9:  # the 8 predictions and this /metrics request
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*sent)

        answers = asyncio.run(run())
        assert process.wait(30) == 0
        assert "grukit serve: stopped" in server_log(process)
    assert [answer.status_code for answer in answers] == [200] * 8
    assert [answer.json()["outputs"] for answer in answers] == [model.predict(r) for r in requests]


def test_a_body_that_is_not_utf8_and_an_unknown_route_answer_in_the_same_error_format(tagger_server):
    json_type = {"content-type": "application/json"}
    answer = httpx.post(f"{tagger_server}/v1/predict", content=b"\xff\xfe(", headers=json_type)
    assert answer.status_code == 400 and answer.json()["error"]
    answer = httpx.get(f"{tagger_server}/v2/nothing")
    assert (answer.status_code, answer.json()) == (404, {"error": "Not Found"})
