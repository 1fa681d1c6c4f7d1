"""Data-parallel training on the Trainer: two gloo processes on this machine agree with one process taking the
same global batch, checkpoints move between one and two processes, a worker killed mid-run restarts from the
last checkpoint under torchrun and ends where an uninterrupted run does; bf16 autocast; the memory estimate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import distributed_worker as worker
from grukit.text.batching import TBPTTBatches
from grukit.train import Trainer, get_loss
from grukit.train.distributed import World, rank_share, resolve_precision, shard_token_stream
from grukit.train.memory import estimate_memory

WORKER = Path(worker.__file__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(spec: dict, *options: str) -> None:
    """Run the worker in two processes (gloo on 127.0.0.1, one thread each)."""
    # the c10d rendezvous, as `grukit ... --nproc` uses: the static one (--master_addr/--master_port) keeps the
    # first round's addresses in its store, so the processes of a restart can try to connect to dead ones
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", *options, str(WORKER), json.dumps(spec),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def single(spec: dict) -> None:
    worker.run(spec)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "weights.safetensors")


def _record(folder: Path) -> dict:
    return json.loads((folder / "history.json").read_text())


def assert_same_run(ddp: Path, one: Path, tolerance: float) -> None:
    a, b = _weights(ddp), _weights(one)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=tolerance, msg=name)
    first, second = _record(ddp), _record(one)
    assert first["step"] == second["step"]
    for name, values in second["history"].items():
        assert first["history"][name] == pytest.approx(values, rel=tolerance, abs=tolerance), name


def test_two_processes_equal_one_with_the_same_global_batch_float64(tmp_path):
    # 9 batches of 4 (the last of 2) in a seeded shuffle: steps of 2 batches, so the last step has one batch
    # and rank 1 passes with zero weight
    spec = {"kind": "batches", "dtype": "float64", "epochs": 2}
    torchrun({**spec, "accumulate": 1, "out": str(tmp_path / "ddp")})
    single({**spec, "accumulate": 2, "out": str(tmp_path / "one")})
    assert _record(tmp_path / "ddp")["world_size"] == 2 and _record(tmp_path / "one")["world_size"] == 1
    assert _record(tmp_path / "one")["step"] == 10
    assert_same_run(tmp_path / "ddp", tmp_path / "one", 1e-10)
    untrained = worker.Tagger().double().state_dict()
    assert not torch.allclose(_weights(tmp_path / "one")["head.weight"], untrained["head.weight"])


def test_tbptt_streams_split_by_rank_equal_one_process_float32(tmp_path):
    spec = {"kind": "tbptt", "dtype": "float32", "epochs": 2, "accumulate": 1}
    torchrun({**spec, "out": str(tmp_path / "ddp")})
    single({**spec, "out": str(tmp_path / "one")})
    assert _record(tmp_path / "one")["step"] == 58
    assert_same_run(tmp_path / "ddp", tmp_path / "one", 1e-5)


def test_a_ddp_checkpoint_resumes_in_one_process_and_back(tmp_path):
    # TBPTT: the checkpoint holds the carried state of all 4 streams, gathered from both ranks
    spec = {"kind": "tbptt", "dtype": "float64", "epochs": 2, "accumulate": 1, "checkpoint_every": 4}
    run = str(tmp_path / "run")
    torchrun({**spec, "out": run, "max_steps": 9})  # stops mid-epoch 1
    single({**spec, "out": run, "resume": True, "max_steps": 40})  # one process on, into epoch 2
    torchrun({**spec, "out": run, "resume": True})  # two processes to the end
    single({**spec, "out": str(tmp_path / "straight")})
    assert_same_run(tmp_path / "run", tmp_path / "straight", 1e-10)


def test_a_single_process_checkpoint_resumes_under_ddp(tmp_path):
    spec = {"kind": "batches", "dtype": "float64", "epochs": 2, "checkpoint_every": 3}
    run = str(tmp_path / "run")
    single({**spec, "accumulate": 2, "out": run, "max_steps": 7})  # mid-epoch 2: position in the shuffled order
    torchrun({**spec, "accumulate": 1, "out": run, "resume": True})
    single({**spec, "accumulate": 2, "out": str(tmp_path / "straight")})
    assert_same_run(tmp_path / "run", tmp_path / "straight", 1e-10)


def test_a_worker_killed_mid_run_restarts_from_the_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path):
    spec = {"kind": "batches", "dtype": "float64", "epochs": 2, "checkpoint_every": 3, "resume": True}
    torchrun({**spec, "accumulate": 1, "out": str(tmp_path / "killed"), "kill_at": 7}, "--max-restarts", "1")
    assert (tmp_path / "killed" / "killed").exists()  # rank 1 did die (SIGKILL) after step 7
    single({**spec, "accumulate": 2, "out": str(tmp_path / "straight")})
    assert_same_run(tmp_path / "killed", tmp_path / "straight", 1e-10)


# Without processes -----------------------------------------------------------------------------------------
def test_each_rank_takes_every_world_size_th_batch_of_a_step_and_stands_in_when_short():
    window = ["b0", "b1", "b2", "b3", "b4"]
    assert rank_share(window, World(0, 2)) == (["b0", "b2", "b4"], False)
    assert rank_share(window, World(1, 2)) == (["b1", "b3"], False)
    assert rank_share(["b0"], World(1, 2)) == (["b0"], True)  # no batch of its own: the first, weight 0


def test_rank_streams_are_the_single_process_layouts_rows():
    tokens = np.arange(101)
    whole = TBPTTBatches(tokens, 4, 6)
    halves = [shard_token_stream(whole, World(rank, 2)) for rank in range(2)]
    assert [len(h) for h in halves] == [len(whole)] * 2
    for index in range(len(whole)):
        x, y = whole[index]
        torch.testing.assert_close(torch.cat([halves[0][index][0], halves[1][index][0]]), x)
        torch.testing.assert_close(torch.cat([halves[0][index][1], halves[1][index][1]]), y)
    with pytest.raises(ValueError, match="batches of 4 streams cannot be shared by 3 processes"):
        shard_token_stream(whole, World(0, 3))


def test_stateful_training_of_plain_batches_under_ddp_is_refused():
    model = nn.Linear(2, 2)
    trainer = Trainer(model, get_loss("mse"), torch.optim.SGD(model.parameters(), lr=0.1), stateful=True)
    trainer.world = World(0, 2)
    with pytest.raises(ValueError, match="needs TBPTTBatches .* got list"):
        trainer._shard([(torch.ones(1, 2), torch.ones(1, 2))])


def test_precision_is_checked_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match=r"precision must be one of \('32', 'bf16'\), got 'fp16'"):
        resolve_precision("fp16")
    monkeypatch.setenv("GRUKIT_PRECISION", "bf16")
    model = nn.Linear(2, 2)
    assert Trainer(model, get_loss("mse"), None).precision == "bf16"
    monkeypatch.setenv("GRUKIT_PRECISION", "half")
    with pytest.raises(ValueError, match="GRUKIT_PRECISION must be one of"):
        Trainer(model, get_loss("mse"), None)


def test_bf16_autocast_keeps_weights_optimizer_state_and_carried_state_in_float32(tmp_path):
    losses = {}
    for precision in ("32", "bf16"):
        trainer = worker.run(
            {"kind": "tbptt", "dtype": "float32", "epochs": 1, "accumulate": 1, "precision": precision,
             "out": str(tmp_path / precision)}
        )
        assert trainer.precision == precision
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert all(v.dtype == torch.float32 for s in trainer.optimizer.state.values() for v in s.values() if v.dim())
        assert all(h.dtype == torch.float32 for h in (trainer._carried,))
        losses[precision] = trainer.history.history["loss"][0]
    assert losses["bf16"] == pytest.approx(losses["32"], abs=0.02)  # bf16 keeps ~3 significant digits
    assert losses["bf16"] != losses["32"]  # and it did run in bf16


def test_memory_estimate_counts_parameters_optimizer_state_and_scales_activations_with_the_batch(capsys):
    model = worker.TinyLM()  # embedding 11·8, GRU 3·8·(8 + 8) + 2·3·8, head 8·11 + 11
    parameters = 88 + 384 + 48 + 99
    optimizer = torch.optim.Adam(model.parameters())
    ids = torch.randint(0, 11, (8, 20))
    state_before = torch.get_rng_state()
    small = estimate_memory(model, optimizer, (ids[:4],), stateful=True)
    large = estimate_memory(model, optimizer, (ids,), stateful=True)
    assert torch.equal(torch.get_rng_state(), state_before)
    assert small.parameters == parameters and small.parameter_bytes == 4 * parameters
    assert small.gradient_bytes == 4 * parameters and small.optimizer_bytes == 8 * parameters  # Adam: 2 moments
    assert small.activation_bytes > 4 * 20 * 8 * 4  # at least the GRU's outputs, float32
    assert large.activation_bytes == 2 * small.activation_bytes
    assert (small.batch_size, small.seq_len) == (4, 20)
    assert "memory estimate: 0.000619M parameters 2.48 KB" in small.line()

    trainer = Trainer(model, worker._loss, optimizer, stateful=True)
    trainer.fit(TBPTTBatches(np.arange(200) % 11, 4, 10), verbose=2)
    assert capsys.readouterr().out.startswith("memory estimate: ")
