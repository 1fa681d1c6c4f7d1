"""The fast GRU engines run from any thread and in child processes: a trained model serving predictions from a
web server's request threads, from many threads at once, from spawned workers and from workers forked after
the parent already ran the kernel. Each scenario runs in a fresh interpreter, so a crash fails the test
instead of killing pytest, and every output must equal the reference engine's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from grukit.ops import native, onednn

SETUP = """
import copy
import threading
import numpy as np
import torch
from grukit.layers import GRU, Bidirectional, Dense
from grukit.models import Sequential
from grukit.nn import GRU as TorchStyleGRU

ENGINE = {engine!r}


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 7, 5)).astype("float32")
    return x, (x[:, :, 0].sum(1) > 0).astype("float32")


def trained_model():
    torch.manual_seed(0)
    x, y = data()
    model = Sequential([Bidirectional(GRU(8, return_sequences=True)), GRU(6), Dense(1, "sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for module in model.modules():
        if isinstance(module, TorchStyleGRU):
            module.engine = ENGINE
    return model, x


def reference_of(model):
    for module in model.modules():
        if isinstance(module, TorchStyleGRU):
            module.engine = "reference"
    expected = model.predict(X)
    for module in model.modules():
        if isinstance(module, TorchStyleGRU):
            module.engine = ENGINE
    return expected


def run_in_threads(count, calls, work):
    failures = []

    def target():
        try:
            for _ in range(calls):
                work()
        except BaseException as error:  # reported back to the main thread
            failures.append(repr(error))

    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
"""

SCENARIOS = {
    "threads": """
MODEL, X = trained_model()
EXPECTED = reference_of(MODEL)
np.testing.assert_allclose(MODEL.predict(X), EXPECTED, atol=1e-5)  # a main-thread call first, then
run_in_threads(1, 5, lambda: np.testing.assert_allclose(MODEL.predict(X), EXPECTED, atol=1e-5))  # a request
run_in_threads(8, 20, lambda: np.testing.assert_allclose(MODEL.predict(X), EXPECTED, atol=1e-5))  # a crowd

torch.manual_seed(0)  # 4 threads training side by side
gru, reference = TorchStyleGRU(5, 6, bidirectional=True, engine=ENGINE), TorchStyleGRU(5, 6, bidirectional=True,
                                                                                      engine="reference")
reference.load_state_dict(gru.state_dict())
x = torch.randn(3, 9, 5)
lengths = torch.tensor([9, 4, 6])
expected = reference(x, lengths=lengths)[0]
expected.sum().backward()


local = threading.local()


def train_step():
    # each thread trains its own copy: torch itself is not safe when one thread clears gradients that another
    # thread's backward is accumulating (that crashes on the reference engine too)
    if not hasattr(local, "gru"):
        local.gru = copy.deepcopy(gru)
    local.gru.zero_grad()
    output = local.gru(x, lengths=lengths)[0]
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    output.sum().backward()
    torch.testing.assert_close(local.gru.weight_hh_l0.grad, reference.weight_hh_l0.grad, atol=1e-5, rtol=1e-5)


run_in_threads(4, 10, train_step)
""",
    "processes": """
import multiprocessing


def worker(queue, method):
    model = MODEL if method == "fork" else trained_model()[0]  # a spawned child starts from nothing
    queue.put(model.predict(X))


MODEL, X = None, data()[0]
if __name__ == "__main__":
    MODEL, X = trained_model()
    EXPECTED = reference_of(MODEL)
    np.testing.assert_allclose(MODEL.predict(X), EXPECTED, atol=1e-5)  # the parent ran the kernel first
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        processes = [context.Process(target=worker, args=(queue, method)) for _ in range(2 if method == "fork" else 1)]
        for process in processes:
            process.start()
        results = [queue.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0, (method, process.exitcode)
        for result in results:
            np.testing.assert_allclose(result, EXPECTED, atol=1e-5)
""",
}


def run_scenario(engine: str, body: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "scenario.py"  # a file, so that spawned workers can import the main module
    script.write_text(textwrap.dedent(SETUP.format(engine=engine)) + textwrap.dedent(body) + '\nprint("done")\n')
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: a hung worker is ended with it
    )
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += "\n(hung: killed after 180 s)"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("engine", ["onednn", "native"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))  # threads: 1 x 5 after main, 8 x 20, 4 x 10 training
def test_engine_is_safe_from_threads_and_processes(engine, scenario, tmp_path):
    assert (onednn if engine == "onednn" else native).available()
    result = run_scenario(engine, SCENARIOS[scenario], tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip().endswith("done")
