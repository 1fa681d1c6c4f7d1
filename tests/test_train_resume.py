"""Nothing lost: a training process killed with SIGKILL mid-run resumes from its last checkpoint and ends with
exactly the weights of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grukit.nn import GRU
from grukit.train import Trainer, load_checkpoint

EPOCHS = 6
BATCHES_PER_EPOCH = 8
KILL_AT_STEP = 2 * BATCHES_PER_EPOCH + 3  # in the middle of the third epoch

# A small GRU classifier trained by the shared Trainer with a checkpoint every epoch. Everything random in it
# draws from the global generators that a checkpoint saves: the initial weights, the per-epoch shuffle of the
# batches and the dropout masks.
TRAINING_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    from safetensors.torch import save_file

    import grukit
    from grukit.models.data import Batches, Samples
    from grukit.nn import GRU
    from grukit.train import Callback, Trainer, get_loss

    checkpoint_dir, epochs, weights_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    grukit.seed_everything(1234)
    data = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, 3, generator=data)  # (N, T, F)
    y = (x[:, :, 0].sum(1) > 0).long()  # (N,)


    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # The readable engine: a child process never waits on a C++ kernel build; test_determinism covers the rest.
            self.gru = GRU(3, 16, engine="reference")
            self.dropout = torch.nn.Dropout(0.2)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, x):
            _, h_n = self.gru(x)  # (1, B, H)
            return self.head(self.dropout(h_n[-1]))  # (B, 2)


    class ReportSteps(Callback):
        def on_batch_end(self, step, logs):
            print(f"step {step}", flush=True)


    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = get_loss("sparse_categorical_crossentropy")
    trainer = Trainer(model, lambda out, t, m: loss(out, t, m, from_logits=True), optimizer,
                      callbacks=[ReportSteps()], checkpoint_dir=checkpoint_dir)
    trainer.fit(Batches(Samples(x, y), 8, shuffle=True), epochs=epochs, verbose=0, resume=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights_out)
    print("done", flush=True)
    """
)


def _command(script: Path, checkpoint_dir: Path, weights_out: Path) -> list[str]:
    return [sys.executable, str(script), str(checkpoint_dir), str(EPOCHS), str(weights_out)]


def _environment() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_to_the_end(script: Path, checkpoint_dir: Path, weights_out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(script, checkpoint_dir, weights_out), env=_environment(), stdout=subprocess.PIPE, text=True
    )


def test_training_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    # The reference run goes alongside the one that will be killed.
    reference = _run_to_the_end(script, tmp_path / "reference_ck", tmp_path / "reference.safetensors")

    victim = _run_to_the_end(script, tmp_path / "ck", tmp_path / "resumed.safetensors")
    for line in victim.stdout:
        if line.strip() == f"step {KILL_AT_STEP}":
            victim.send_signal(signal.SIGKILL)
            break
    victim.wait(timeout=60)
    victim.stdout.close()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed.safetensors").exists()
    interrupted = load_checkpoint(tmp_path / "ck").training_state
    assert 2 <= interrupted["epoch"] < EPOCHS, "the kill must land after two checkpoints and before the end"

    resumed = _run_to_the_end(script, tmp_path / "ck", tmp_path / "resumed.safetensors")
    steps_after_resume = [line.strip() for line in resumed.stdout]
    assert resumed.wait(timeout=120) == 0
    assert steps_after_resume[0] == f"step {interrupted['epoch'] * BATCHES_PER_EPOCH + 1}", "resumed at epoch start"
    assert steps_after_resume[-2:] == [f"step {EPOCHS * BATCHES_PER_EPOCH}", "done"]
    assert reference.wait(timeout=120) == 0
    reference.stdout.close()

    expected = load_file(tmp_path / "reference.safetensors")
    got = load_file(tmp_path / "resumed.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name} differs after resuming"
    # And the run did learn something, so equal weights are not two untouched initialisations.
    assert not torch.equal(got["head.weight"], torch.zeros_like(got["head.weight"]))
    assert load_checkpoint(tmp_path / "ck").training_state["epoch"] == EPOCHS


def _trainer(checkpoint_dir: Path) -> Trainer:
    model = GRU(2, 3)
    return Trainer(
        model,
        lambda out, target, mask: (out[0] - target).square().mean(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        checkpoint_dir=checkpoint_dir,
    )


def test_resume_recovers_a_checkpoint_that_a_crash_left_between_its_two_renames(tmp_path):
    torch.manual_seed(0)
    batches = [(torch.randn(4, 5, 2), torch.randn(4, 5, 3))]
    trainer = _trainer(tmp_path / "ck")
    trainer.fit(batches, epochs=2, verbose=0)
    # The state a crash inside write_folder leaves: the old folder moved aside, the new one not yet in place.
    aside = tmp_path / ".ck.crash.old"
    aside.mkdir()
    os.replace(tmp_path / "ck", aside / "ck")

    resumed = _trainer(tmp_path / "ck")
    with pytest.warns(UserWarning, match="restored checkpoint"):
        resumed.resume()
    assert resumed.epoch == 2 and resumed.step == 2
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
