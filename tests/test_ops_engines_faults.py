"""Ctrl-C during training on the oneDNN engine is a clean KeyboardInterrupt: no heap corruption, no crash at
exit, no lost process. A child process trains a Sequential (default engine, which is oneDNN here); the test
interrupts it at random moments many times (the child catches each one and trains on) and finally lets an
interrupt end it, then reads its exit status and stderr."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time

from grukit.ops import onednn

CHILD = """
import sys
import numpy as np
from grukit.layers import GRU, Bidirectional, Dense
from grukit.models import Sequential
from grukit.nn import GRU as TorchStyleGRU

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 12, 8)).astype("float32")
y = (x[:, :, 0].sum(1) > 0).astype("float32")
model = Sequential([Bidirectional(GRU(16, return_sequences=True)), GRU(16), Dense(1, "sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # imports and builds everything before the first interrupt
engines = {m.resolved_engine() for m in model.modules() if isinstance(m, TorchStyleGRU)}
assert engines == {"onednn"}, engines
for _ in range(int(sys.argv[1])):
    try:  # the announcement is inside: an interrupt right after it must be caught here too
        print("training", flush=True)
        model.fit(x, y, epochs=10**6, batch_size=16, verbose=0)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
print("training", flush=True)
model.fit(x, y, epochs=10**6, batch_size=16, verbose=0)  # the last interrupt ends the process
"""
CAUGHT = 12  # interrupts the child survives, per child
CHILDREN = 2  # each also ends with one interrupt: 2 * (12 + 1) = 26 SIGINTs, 2 exits
RESENDS = 3  # a SIGINT that lands in a weakref callback or __del__ is printed and dropped by Python


def lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in process.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def interrupt_until(process: subprocess.Popen, lines: queue.Queue, expected: str | None) -> None:
    """Send SIGINT until the child prints ``expected`` (or exits, when ``expected`` is None)."""
    for _ in range(RESENDS):
        process.send_signal(signal.SIGINT)
        try:
            if expected is None:
                process.wait(timeout=60)
                return
            assert lines.get(timeout=60) == expected
            return
        except (queue.Empty, subprocess.TimeoutExpired):
            continue
    if process.poll() is not None:
        raise AssertionError(f"the child ended early with exit {process.returncode}:\n{process.stderr.read()[-3000:]}")
    raise AssertionError(f"the child ignored {RESENDS} interrupts in a row")


def test_random_interrupts_during_onednn_training_end_cleanly(tmp_path):
    assert onednn.available()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(0)
    for _ in range(CHILDREN):
        process = subprocess.Popen(
            [sys.executable, str(script), str(CAUGHT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines = lines_of(process)
        try:
            for round_ in range(CAUGHT + 1):
                assert lines.get(timeout=300) == "training"
                time.sleep(rng.uniform(0.0, 0.3))  # land anywhere: forward, backward, optimizer
                interrupt_until(process, lines, "interrupted" if round_ < CAUGHT else None)
            stderr = process.stderr.read()
        finally:
            process.kill()
            process.wait()
        assert process.returncode not in (-signal.SIGABRT, -signal.SIGSEGV), stderr[-3000:]
        assert process.returncode in (1, -signal.SIGINT), f"exit {process.returncode}:\n{stderr[-3000:]}"
        assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr[-3000:]
        for sign in ("corrupted", "free()", "double free", "Segmentation", "Aborted"):
            assert sign not in stderr, stderr[-3000:]
        for dropped in stderr.split("Exception ignored in")[1:]:  # an interrupt Python printed and dropped
            assert "grukit" not in dropped.split("KeyboardInterrupt")[0], dropped  # never in grukit's callbacks
