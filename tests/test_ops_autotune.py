"""``engine="auto"`` choosing per shape: calibration with a fake timer, the per-machine cache file, the cost
model, bucketing, and that calibration leaves the caller's random and autograd state alone."""

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from grukit.nn import GRU
from grukit.ops import autotune, native, onednn

SHAPE = (4, 8, 3, 5)  # (batch, time, input, hidden): bucket b4-t8-i4-h8
CANDIDATES = ("onednn", "native")
THREADS = torch.get_num_threads()  # the suite runs one intra-op thread (conftest)


@pytest.fixture
def tuned(monkeypatch, tmp_path):
    """Calibration on, a fresh cache folder and a fresh process memory of choices. The kernels load first
    from the real cache, so pointing ``GRUKIT_CACHE`` elsewhere does not rebuild them."""
    assert onednn.available() and native.available()
    monkeypatch.setenv("GRUKIT_CACHE", str(tmp_path))
    monkeypatch.setenv(autotune.ENV_SWITCH, "1")
    monkeypatch.setattr(autotune, "_choices", {})
    return tmp_path


@pytest.fixture
def fake_timer(monkeypatch):
    """``set(seconds)``: each engine's every timed run takes ``seconds[engine]`` (the run still happens);
    ``calls``: the engines timed, in order."""
    timings: dict[str, float] = {}
    calls: list[str] = []

    def measure(engine, run):
        run()
        calls.append(engine)
        return timings[engine]

    monkeypatch.setattr(autotune, "measure", measure)
    return timings, calls


def forget_choices(monkeypatch):
    """What a new process knows: nothing but the cache file."""
    monkeypatch.setattr(autotune, "_choices", {})


def test_auto_follows_the_timings_and_computes_what_the_chosen_engine_computes(tuned, fake_timer):
    timings, calls = fake_timer
    timings.update(onednn=2.0, native=1.0)
    torch.manual_seed(0)
    model, native_model = GRU(3, 5), GRU(3, 5, engine="native")
    native_model.load_state_dict(model.state_dict())
    x = torch.randn(4, 8, 3)
    with torch.no_grad():
        model(x)  # calibrates
        assert calls and set(calls) == set(CANDIDATES)
        before = onednn.load().runs()
        output, h_n = model(x)
        assert onednn.load().runs() == before  # the native kernel ran, oneDNN did not
        expected, expected_h = native_model(x)
    assert torch.equal(output, expected) and torch.equal(h_n, expected_h)
    assert model.resolved_engine(input_shape=x.shape, training=False) == "native"
    # A new shape measured the other way round
    timings.update(onednn=1.0, native=3.0)
    assert model.resolved_engine(input_shape=(64, 8, 3), training=False) == "onednn"


def test_the_choice_is_kept_in_a_readable_json_file_per_machine_and_outlives_the_process(
    tuned, fake_timer, monkeypatch
):
    timings, calls = fake_timer
    timings.update(onednn=0.004, native=0.008)
    assert autotune.choose(CANDIDATES, SHAPE, torch.float32, True, True) == "onednn"
    path = autotune.cache_file()
    assert path.parent == tuned / "engines"
    described = autotune.machine()
    assert described["cpu"] and described["isa"] == torch.backends.cpu.get_cpu_capability() + (
        "+AMX" if "amx_tile" in Path("/proc/cpuinfo").read_text() else ""
    )
    content = json.loads(path.read_text())
    assert content["machine"] == described
    (name, entry), = content["choices"].items()
    assert name == f"b4-t8-i4-h8-float32-training-reset_after-threads{THREADS}-onednn+native"
    assert entry["engine"] == entry["cost_model"] == "onednn" and entry["timed_steps"] == [8]
    assert entry["seconds_per_step"] == pytest.approx({"onednn": 0.004 / 8, "native": 0.008 / 8})
    assert not list(path.parent.glob("*.tmp"))  # written through a temporary file, then replaced

    # A new process with different timings reads the file and does not measure again.
    forget_choices(monkeypatch)
    timings.update(onednn=0.008, native=0.004)
    calls.clear()
    assert autotune.choose(CANDIDATES, SHAPE, torch.float32, True, True) == "onednn"
    assert calls == []
    assert autotune.choose(CANDIDATES, SHAPE, torch.float32, False, True) == "native"  # a new key measures
    assert len(json.loads(path.read_text())["choices"]) == 2


def test_two_processes_calibrating_the_same_key_at_once_agree_on_the_first_writers_choice(tuned):
    # Each process's fake timer favours a different engine; both start calibrating together (a file barrier).
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        import torch
        from grukit.ops import autotune

        favoured, folder = sys.argv[1], Path(sys.argv[2])
        (folder / f"ready-{favoured}").touch()
        while len(list(folder.glob("ready-*"))) < 2:
            time.sleep(0.01)

        def measure(engine, run):
            time.sleep(0.05)
            return 1.0 if engine == favoured else 2.0

        autotune.measure = measure
        print(autotune.choose(("onednn", "native"), (4, 8, 3, 5), torch.float32, False, True))
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, favoured, str(tuned)], stdout=subprocess.PIPE, text=True)
        for favoured in CANDIDATES
    ]
    try:
        answers = [process.communicate(timeout=120)[0].strip() for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0]
    choices = json.loads(autotune.cache_file().read_text())["choices"]
    assert len(choices) == 1
    (entry,) = choices.values()
    assert answers[0] == answers[1] == entry["engine"]


def test_threads_share_one_calibration(tuned, fake_timer):
    timings, calls = fake_timer
    timings.update(onednn=1.0, native=2.0)
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(autotune.choose(CANDIDATES, SHAPE, torch.float32, False, True)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["onednn"] * 4
    assert len(calls) == len(CANDIDATES) * (2 + autotune.REPEATS)  # warm-up, probe, repeats: once


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"format": autotune.FORMAT, "version": autotune.VERSION,
                    "machine": {"cpu": "another CPU", "isa": "AVX2"},
                    "choices": {f"b4-t8-i4-h8-float32-inference-reset_after-threads{THREADS}-onednn+native": {
                        "engine": "native"}}}),
        "MACHINE",  # this machine's file, with an entry naming an engine that is not a candidate
        "[" * 100_000 + "]" * 100_000,  # nested deeper than json's recursion limit
    ],
    ids=["corrupt", "not-an-object", "another-machine", "unknown-engine", "too-deep"],
)
def test_a_corrupt_or_foreign_cache_file_is_ignored_and_rewritten(tuned, fake_timer, content):
    timings, _ = fake_timer
    timings.update(onednn=1.0, native=2.0)
    path = autotune.cache_file()
    path.parent.mkdir(parents=True)
    if content == "MACHINE":
        content = json.dumps({"format": autotune.FORMAT, "version": autotune.VERSION,
                              "machine": autotune.machine(),
                              "choices": {f"b4-t8-i4-h8-float32-inference-reset_after-threads{THREADS}-onednn+native": {
                                  "engine": "cudnn"}}})
    path.write_text(content)
    assert autotune.choose(CANDIDATES, SHAPE, torch.float32, False, True) == "onednn"
    rewritten = json.loads(path.read_text())
    assert rewritten["machine"] == autotune.machine()
    assert [entry["engine"] for entry in rewritten["choices"].values()] == ["onednn"]


def test_an_unwritable_cache_folder_warns_once_and_still_chooses(tuned, fake_timer, monkeypatch):
    timings, _ = fake_timer
    timings.update(onednn=2.0, native=1.0)
    blocker = tuned / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GRUKIT_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="cannot keep its engine choices"):
        assert autotune.choose(CANDIDATES, SHAPE, torch.float32, False, True) == "native"
    assert autotune.choose(CANDIDATES, (64, 8, 3, 5), torch.float32, False, True) == "native"


def test_calibration_leaves_the_random_state_and_grad_mode_alone(tuned):
    # Real timings here: whichever engine wins, the caller's state must be as it was.
    torch.manual_seed(7)
    model = GRU(3, 5)
    x = torch.randn(2, 8, 3)
    state = torch.get_rng_state()
    with torch.no_grad():
        model(x)  # inference calibration
        assert not torch.is_grad_enabled()
    output, _ = model(x)  # training calibration
    assert torch.is_grad_enabled() and output.requires_grad
    assert torch.equal(torch.get_rng_state(), state)
    with torch.inference_mode():
        model(torch.randn(16, 8, 3))
        assert torch.is_inference_mode_enabled()
    entries = json.loads(autotune.cache_file().read_text())["choices"]
    assert len(entries) == 3
    for entry in entries.values():
        assert entry["engine"] in CANDIDATES and all(seconds > 0 for seconds in entry["seconds_per_step"].values())


def test_no_calibration_inside_torch_func_transforms(tuned, fake_timer):
    seen = []

    def body(v):
        assert not autotune.can_calibrate()
        seen.append(autotune.choose(CANDIDATES, (1, 8, 3, 5), torch.float32, True, True))
        return v * 2

    torch.func.vmap(body)(torch.ones(2, 3))
    assert seen == ["native"]  # the cost model's choice, without measuring or writing
    assert fake_timer[1] == [] and not autotune.cache_file().exists()
    assert autotune.can_calibrate()


def test_calibration_off_uses_the_cost_model_without_measuring_or_writing(tuned, fake_timer, monkeypatch):
    monkeypatch.setenv(autotune.ENV_SWITCH, "0")
    assert autotune.choose(CANDIDATES, (1, 512, 64, 256), torch.float32, True, True) == "native"
    assert autotune.choose(CANDIDATES, (1, 512, 64, 256), torch.float32, False, True) == "onednn"
    for training in (False, True):
        assert autotune.choose(CANDIDATES, (32, 128, 128, 256), torch.float32, training, True) == "onednn"
    assert autotune.choose(("onednn", "reference"), (1, 8, 3, 5), torch.bfloat16, False, True) == "onednn"
    assert autotune.choose(("reference",), (1, 8, 3, 5), torch.float16, False, True) == "reference"
    assert fake_timer[1] == [] and not (tuned / "engines").exists()
    model = GRU(3, 5)
    assert model.resolved_engine(input_shape=(1, 8, 3)) == "native"  # training: grad on, weights need grad
    assert model.resolved_engine(input_shape=(8, 3)) == "native"  # unbatched
    assert model.resolved_engine(input_shape=(8, 3), training=False) == "onednn"
    with torch.no_grad():
        assert model.resolved_engine(input_shape=(1, 8, 3)) == "onednn"
    assert model.resolved_engine(input_shape=(2, 8, 3)) == "onednn"
    assert model.resolved_engine() == "onednn" and "engine='auto' (using 'onednn')" in repr(model)
    monkeypatch.setenv(autotune.ENV_SWITCH, "yes")
    with pytest.raises(ValueError, match="GRUKIT_AUTOTUNE expected 0 .* or 1 .*, got 'yes'"):
        autotune.choose(CANDIDATES, SHAPE, torch.float32, False, True)


def test_shapes_share_a_choice_within_a_power_of_two_bucket(tuned, fake_timer):
    assert [autotune.bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 200, 256, 257)] == [1, 2, 4, 4, 8, 8, 16, 256, 256, 512]
    timings, calls = fake_timer
    timings.update(onednn=2.0, native=1.0)
    model = GRU(30, 100)
    with torch.no_grad():
        model(torch.randn(256, 64, 30))
        measured = len(calls)
        model(torch.randn(200, 50, 30))  # the last batch of an epoch, shorter sequences: same bucket
        model(torch.randn(129, 33, 30), lengths=torch.full((129,), 20))
        assert len(calls) == measured
        model(torch.randn(257, 64, 30))  # the next bucket
        assert len(calls) == 2 * measured
    names = sorted(json.loads(autotune.cache_file().read_text())["choices"])
    assert names == [f"b256-t64-i32-h128-float32-inference-reset_after-threads{THREADS}-onednn+native",
                     f"b512-t64-i32-h128-float32-inference-reset_after-threads{THREADS}-onednn+native"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert autotune.Key.of(SHAPE, torch.float32, False, True, CANDIDATES).threads == threads + 1
    finally:
        torch.set_num_threads(threads)


def test_the_shape_of_each_layer_is_read_as_forward_reads_it(tuned, fake_timer):
    timings, _ = fake_timer
    timings.update(onednn=1.0, native=2.0)
    model = GRU(3, 5, num_layers=2, bidirectional=True, batch_first=False, reset_after=False)
    assert model.resolved_engine(input_shape=(20, 2, 3), training=True, layer=1) == "onednn"
    (name,) = json.loads(autotune.cache_file().read_text())["choices"]
    # layer 1 reads both directions' states: 2H = 10 features
    assert name == f"b2-t32-i16-h8-float32-training-reset_before-threads{THREADS}-onednn+native"
    with pytest.raises(ValueError, match=r"input_shape \(batch, time, 3\) or \(time, 3\), got \(2, 20, 4\)"):
        model.resolved_engine(input_shape=(2, 20, 4))
    with pytest.raises(ValueError, match=r"layer in \[0, 2\), got 2"):
        model.resolved_engine(input_shape=(20, 2, 3), layer=2)


def test_an_explicit_engine_is_used_whatever_auto_would_choose(tuned, fake_timer):
    timings, calls = fake_timer
    timings.update(onednn=2.0, native=1.0)
    model = GRU(3, 5, engine="onednn")
    before = onednn.load().runs()
    with torch.no_grad():
        model(torch.randn(4, 8, 3))
    assert onednn.load().runs()[0] == before[0] + 1
    assert calls == [] and model.resolved_engine(input_shape=(4, 8, 3)) == "onednn"


@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [({"onednn": 1.02, "native": 1.0}, "onednn"), ({"onednn": 1.05, "native": 1.0}, "native")],
)
def test_a_near_tie_keeps_the_cost_models_choice(seconds, chosen):
    key = autotune.Key.of((32, 128, 128, 256), torch.float32, False, True, CANDIDATES)
    assert autotune.cost_model(CANDIDATES, key) == "onednn"
    assert autotune.pick(CANDIDATES, key, seconds) == chosen


def test_calibration_predicts_a_long_sequence_from_two_shorter_ones(tuned, monkeypatch):
    # onednn: 30 ms per call + 1 ms per step; native: 2 ms per step. At 8 steps native wins (16 against 38 ms),
    # at the bucket's 512 steps onednn does (542 against 1024 ms).
    steps_of = {}
    real_runner = autotune._runner

    def runner(engine, key, steps, generator):
        run = real_runner(engine, key, 1, generator)  # cheap: one real step
        steps_of[run] = steps
        return run

    def measure(engine, run):
        steps = steps_of[run]
        return 0.030 + 0.001 * steps if engine == "onednn" else 0.002 * steps

    monkeypatch.setattr(autotune, "_runner", runner)
    monkeypatch.setattr(autotune, "measure", measure)
    key = autotune.Key.of((4, 512, 3, 5), torch.float32, False, True, CANDIDATES)
    timing = autotune.calibrate(CANDIDATES, key)
    short, long = timing["timed_steps"]
    assert short == autotune.PROBE_STEPS and short < long <= 512
    assert timing["seconds"] == pytest.approx({"onednn": 0.542, "native": 1.024})
    assert autotune.choose(CANDIDATES, (4, 300, 3, 5), torch.float32, False, True) == "onednn"
