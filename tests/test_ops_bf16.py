"""bfloat16 through the ``onednn`` and ``native`` engines: a bf16 module and CPU autocast both run bf16 GEMMs
(bf16 weights and activations, float32 accumulation: oneDNN's bf16 GRU primitives, or the native kernel's
GEMMs through ATen) and agree with the float64 reference cells to bf16 precision, forward and backward; the
errors are bf16-sized (so bf16 really ran) and oneDNN's run counters show which engine ran. Without bf16
instructions the onednn engine warns once and computes in float32."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from grukit.nn import GRU
from grukit.ops import engines, onednn
from grukit.train import Trainer
from grukit.train.losses import get_loss

pytestmark = pytest.mark.skipif(
    not onednn.available() or not onednn.has_bf16_hardware(),
    reason="needs oneDNN on a CPU with AMX or AVX-512 BF16",
)

# Relative errors (max |a - b| / max |b|) bf16 must stay under, and float32 would stay far below.
OUTPUT_BOUND, GRAD_BOUND, FLOAT32_SIZED = 2e-2, 4e-2, 2e-4

CASES = {  # name: (GRU configuration, with lengths)
    "one-layer-lengths": (dict(num_layers=1, bidirectional=False), True),
    "bidirectional": (dict(num_layers=1, bidirectional=True), False),
    "bidirectional-lengths": (dict(num_layers=1, bidirectional=True), True),
    "two-layers": (dict(num_layers=2, bidirectional=False), False),
    "two-layers-bidirectional-lengths": (dict(num_layers=2, bidirectional=True), True),
}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.detach().double() - expected.detach()).abs().max() / expected.detach().abs().max())


def forward_backward(model, x, h0, lengths, upstream, autocast: bool):
    """Output, h_n and the gradients of ``sum(u_y · y) + sum(u_h · h_n)`` for the input, h0 and every parameter."""
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        output, h_n = model(x, h0, lengths=lengths)
    ((output.double() * upstream[0]).sum() + (h_n.double() * upstream[1]).sum()).backward()
    return output, h_n, {"input": x.grad, "h0": h0.grad} | {name: p.grad for name, p in model.named_parameters()}


def bf16_against_reference(engine: str, mode: str, reset_after: bool, case: str, seed: int = 0, batch: int = 6):
    """Run ``case`` on ``engine`` in ``mode`` (``"module"``: the GRU in bf16; ``"autocast"``: float32 GRU and
    input under bf16 autocast) and the float64 reference on the same numbers; returns (results, reference, runs,
    errors), ``runs`` the oneDNN (forward primitive, backward primitive, bf16 matmul loop) runs of the bf16
    call."""
    config, with_lengths = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    steps, features, hidden = 9, 8, 16
    model = GRU(features, hidden, reset_after=reset_after, engine=engine, **config)
    if mode == "module":
        model = model.to(torch.bfloat16)
    reference = GRU(features, hidden, reset_after=reset_after, engine="reference", **config).double()
    reference.load_state_dict(model.state_dict())  # the same (bf16 or float32) values in float64
    directions = 2 if config["bidirectional"] else 1
    dtype = torch.bfloat16 if mode == "module" else torch.float32
    x = torch.randn(batch, steps, features, generator=generator).to(dtype)
    h0 = torch.randn(directions * config["num_layers"], batch, hidden, generator=generator).to(dtype)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator) if with_lengths else None
    upstream = (torch.randn(batch, steps, directions * hidden, generator=generator, dtype=torch.float64),
                torch.randn(h0.shape, generator=generator, dtype=torch.float64))
    before = (*onednn.load().runs(), onednn.load().bf16_loop_runs())
    results = forward_backward(model, x, h0, lengths, upstream, autocast=mode == "autocast")
    runs = tuple(b - a for a, b in zip(before, (*onednn.load().runs(), onednn.load().bf16_loop_runs())))
    expected = forward_backward(reference, x.double(), h0.double(), lengths, upstream, autocast=False)
    errors = {"output": relative_error(results[0], expected[0]), "h_n": relative_error(results[1], expected[1])}
    errors |= {f"d{name}": relative_error(results[2][name], grad) for name, grad in expected[2].items()}
    return results, expected, runs, errors


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("mode", ["module", "autocast"])
@pytest.mark.parametrize("engine", ["onednn", "native"])
def test_bf16_equals_the_float64_reference_to_bf16_precision(engine, mode, reset_after, case):
    (output, h_n, grads), _, runs, errors = bf16_against_reference(engine, mode, reset_after, case)
    config, with_lengths = CASES[case]
    assert output.dtype == h_n.dtype == torch.bfloat16  # as autocast's own matmuls give
    grad_dtype = torch.bfloat16 if mode == "module" else torch.float32  # gradients in the parameters' dtype
    assert {g.dtype for g in grads.values()} == {grad_dtype}
    if engine == "onednn":  # oneDNN's primitives ran, forward and backward
        assert runs[0] >= config["num_layers"] and runs[1] >= config["num_layers"] and runs[2] == 0
    else:  # no primitive: the forward ran oneDNN's bf16 matmul loop, the backward the native kernel
        assert runs[:2] == (0, 0) and runs[2] >= config["num_layers"]
    for name, error in errors.items():
        assert error < (OUTPUT_BOUND if name in ("output", "h_n") else GRAD_BOUND), (name, errors)
    # bf16 really ran: a float32 kernel lands near 1e-7 here
    assert errors["output"] > FLOAT32_SIZED and errors["dweight_hh_l0"] > FLOAT32_SIZED, errors


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("case", ["one-layer-lengths", "two-layers-bidirectional-lengths"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("mode", ["module", "autocast"])
def test_native_bf16_training_forward_runs_the_matmul_loop_from_batch_two(mode, reset_after, case, batch):
    """bf16 training on ``native`` at batch >= 2 runs its forward as oneDNN's bf16 matmul loop, which saves the
    per-step gate values the native backward reads (one call per layer, direction and time segment); at batch 1
    the native kernel runs both. Either way output and every gradient match the float64 reference cells."""
    (output, h_n, grads), _, runs, errors = bf16_against_reference("native", mode, reset_after, case, batch=batch)
    config, _ = CASES[case]
    calls = config["num_layers"] * (2 if config["bidirectional"] else 1)
    assert runs[:2] == (0, 0) and (runs[2] >= calls if batch > 1 else runs[2] == 0)
    assert output.dtype == h_n.dtype == torch.bfloat16
    assert {g.dtype for g in grads.values()} == {torch.bfloat16 if mode == "module" else torch.float32}
    for name, error in errors.items():
        assert error < (OUTPUT_BOUND if name in ("output", "h_n") else GRAD_BOUND), (name, errors)
    assert errors["output"] > FLOAT32_SIZED and errors["dweight_hh_l0"] > FLOAT32_SIZED, errors


def test_bf16_inputs_and_autocast_choose_between_onednn_and_native():
    assert GRU(3, 4).resolved_engine(torch.bfloat16) == "onednn"  # no shape known: the first fast engine
    for engine in ("onednn", "native"):
        assert engines.resolve_gru(engine, torch.bfloat16, torch.device("cpu")) == engine
    with pytest.raises(ValueError, match="engine='onednn' runs float32 and bfloat16, got torch.float16"):
        GRU(3, 4, engine="onednn").half()(torch.randn(2, 5, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="engine='native' runs float32, float64 and bfloat16, got torch.float16"):
        GRU(3, 4, engine="native").half()(torch.randn(2, 5, 3, dtype=torch.float16))
    # With a shape, auto chooses among both for bf16 (the suite runs the cost model: GRUKIT_AUTOTUNE=0):
    # native for training at batch 32 (c1), onednn (its AMX matmul loop) for inference there, onednn at batch 1
    # (c3); float32 under bf16 autocast chooses as bf16 does.
    bf16 = GRU(128, 256).to(torch.bfloat16)
    assert engines._auto_candidates(torch.bfloat16) == ["onednn", "native"]
    assert bf16.resolved_engine(input_shape=(32, 128, 128), training=True) == "native"
    assert bf16.resolved_engine(input_shape=(32, 128, 128), training=False) == "onednn"
    assert bf16.resolved_engine(input_shape=(1, 512, 128), training=True) == "onednn"
    float32 = GRU(128, 256)
    assert float32.resolved_engine(input_shape=(32, 128, 128), training=False) == "onednn"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float32.resolved_engine(input_shape=(32, 128, 128), training=True) == "native"
        assert float32.resolved_engine(input_shape=(32, 128, 128), training=False) == "onednn"
    x = torch.randn(2, 5, 3)
    assert not onednn.wants_bf16(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert onednn.wants_bf16(x) and onednn.compute_dtype(x) == torch.bfloat16
    assert onednn.cpu_isa() in onednn.BF16_ISAS


@pytest.mark.parametrize("batch", [1, 3])
def test_bf16_inference_runs_one_forward_and_no_backward(batch):
    """At batch 1 one RNN primitive runs; at batch >= 2 one call of the bf16 matmul loop and no primitive."""
    model = GRU(8, 16, engine="onednn").to(torch.bfloat16)
    before, loops = onednn.load().runs(), onednn.load().bf16_loop_runs()
    with torch.no_grad():
        output, h_n = model(torch.randn(batch, 5, 8, dtype=torch.bfloat16))
    primitive = batch == 1
    assert onednn.load().runs() == (before[0] + primitive, before[1])
    assert onednn.load().bf16_loop_runs() == loops + (not primitive)
    assert output.dtype == torch.bfloat16 and output.shape == (batch, 5, 16)
    torch.testing.assert_close(h_n[0], output[:, -1])


LOOP_CASES = {  # name: (GRU configuration, with lengths, loop calls per forward)
    "one-layer": (dict(num_layers=1, bidirectional=False), False, 1),
    "one-layer-lengths": (dict(num_layers=1, bidirectional=False), True, None),  # one call per time segment
    "bidirectional": (dict(num_layers=1, bidirectional=True), False, 2),
    "two-layers-bidirectional": (dict(num_layers=2, bidirectional=True), False, 4),
    "two-layers-square": (dict(num_layers=2, bidirectional=False), False, 2),
}


def loop_against_reference(mode: str, reset_after: bool, case: str, batch: int, seed: int = 0):
    """Inference of ``case`` on ``onednn`` in bf16 (``mode`` as in :func:`bf16_against_reference`) and on the
    float64 reference cells with the same values; returns (output, h_n, expected output, expected h_n, primitive
    runs, loop runs) of the bf16 call."""
    config, with_lengths, _ = LOOP_CASES[case]
    generator = torch.Generator().manual_seed(seed)
    steps, hidden = 11, 16
    features = hidden if case == "two-layers-square" else 8
    model = GRU(features, hidden, reset_after=reset_after, engine="onednn", **config)
    if mode == "module":
        model = model.to(torch.bfloat16)
    reference = GRU(features, hidden, reset_after=reset_after, engine="reference", **config).double()
    reference.load_state_dict(model.state_dict())
    dtype = torch.bfloat16 if mode == "module" else torch.float32
    x = torch.randn(batch, steps, features, generator=generator).to(dtype)
    layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
    h0 = torch.randn(layers, batch, hidden, generator=generator).to(dtype)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator) if with_lengths else None
    before, loops = onednn.load().runs(), onednn.load().bf16_loop_runs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        output, h_n = model(x, h0, lengths=lengths)
    primitive_runs = onednn.load().runs()[0] - before[0]
    loop_runs = onednn.load().bf16_loop_runs() - loops
    with torch.no_grad():
        expected, expected_h_n = reference(x.double(), h0.double(), lengths=lengths)
    return output, h_n, expected, expected_h_n, primitive_runs, loop_runs


@pytest.mark.parametrize("batch", [2, 32])
@pytest.mark.parametrize("case", list(LOOP_CASES))
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("mode", ["module", "autocast"])
def test_bf16_inference_loop_equals_the_float64_reference(mode, reset_after, case, batch):
    """bf16 inference at batch >= 2 runs the matmul loop (never an RNN primitive), both GRU forms, with h0,
    lengths (a call per time segment), bidirectional and stacked layers, bf16 module and autocast."""
    output, h_n, expected, expected_h_n, primitive_runs, loop_runs = loop_against_reference(
        mode, reset_after, case, batch
    )
    calls = LOOP_CASES[case][2]
    assert primitive_runs == 0 and (loop_runs == calls if calls is not None else loop_runs >= 1)
    assert output.dtype == h_n.dtype == torch.bfloat16
    for actual, reference_value in ((output, expected), (h_n, expected_h_n)):
        assert FLOAT32_SIZED < relative_error(actual, reference_value) < OUTPUT_BOUND


def test_bf16_inference_loop_from_two_threads_at_once_gives_each_its_own_answer():
    """Two Python threads running the loop at the same time (a server's request threads) each get exactly what
    a call alone gives, and that agrees with the float64 reference."""
    import threading

    generator = torch.Generator().manual_seed(1)
    model = GRU(8, 32, engine="onednn").to(torch.bfloat16)
    reference = GRU(8, 32, engine="reference").double()
    reference.load_state_dict(model.state_dict())
    inputs = [torch.randn(batch, 40, 8, generator=generator).to(torch.bfloat16) for batch in (32, 5)]
    with torch.no_grad():
        alone = [model(x)[0] for x in inputs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    loops = onednn.load().bf16_loop_runs()

    def serve(index: int) -> None:
        with torch.no_grad():
            for _ in range(10):
                results[index].append(model(inputs[index])[0])

    threads = [threading.Thread(target=serve, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert onednn.load().bf16_loop_runs() == loops + 20
    for index, x in enumerate(inputs):
        assert len(results[index]) == 10 and all(torch.equal(y, alone[index]) for y in results[index])
        with torch.no_grad():
            assert relative_error(alone[index], reference(x.double())[0]) < OUTPUT_BOUND


def test_without_bf16_hardware_one_warning_then_float32_compute(monkeypatch):
    monkeypatch.setattr(onednn, "has_bf16_hardware", lambda: False)
    monkeypatch.setattr(onednn, "_bf16_fallback_warned", False)
    torch.manual_seed(0)
    model = GRU(8, 16, engine="onednn").to(torch.bfloat16)
    x = torch.randn(3, 5, 8, dtype=torch.bfloat16)
    float32_model = GRU(8, 16, engine="onednn")
    float32_model.load_state_dict(model.state_dict())  # the bf16 values, exactly, in float32
    before = onednn.load().runs()
    with pytest.warns(RuntimeWarning, match="neither AMX nor AVX-512 BF16.*float32") as caught:
        output, _ = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call stays silent: one warning per process
        again, _ = model(x)
    assert len([w for w in caught if "AVX-512 BF16" in str(w.message)]) == 1
    assert onednn.load().runs()[0] == before[0] + 2
    assert output.dtype == torch.bfloat16
    with torch.no_grad():
        expected = float32_model(x.float())[0].to(torch.bfloat16)  # float32 compute, bf16 result
    assert torch.equal(output.detach(), expected) and torch.equal(again.detach(), expected)
    output.float().sum().backward()
    assert model.weight_ih_l0.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
@pytest.mark.parametrize("engine", ["onednn", "native"])
def test_second_derivatives_under_autocast_recompute_through_the_cells_in_bf16(engine, bidirectional):
    torch.manual_seed(0)
    model = GRU(3, 4, num_layers=2, bidirectional=bidirectional, engine=engine)
    reference = GRU(3, 4, num_layers=2, bidirectional=bidirectional, engine="reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 3)

    def second(module):
        inputs = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = module(inputs)
            (grad_x,) = torch.autograd.grad(output.float().pow(2).sum(), inputs, create_graph=True)
        return [grad_x, *torch.autograd.grad(grad_x.pow(2).sum(), [inputs, *module.parameters()])]

    actual, expected = second(model), second(reference)
    assert all(a.dtype == torch.float32 for a in actual)
    for a, b in zip(actual, expected):
        assert relative_error(a, b.double()) < 5e-2


class _Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = GRU(4, 32)
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.gru(x)  # (B, T, 32)
        return self.head(output[:, -1])  # (B, 1)


def test_trainer_bf16_fit_reaches_the_float32_loss(monkeypatch):
    monkeypatch.setenv("GRUKIT_AUTOTUNE", "0")  # float32 picks its engine from the cost model, no timing runs
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 12, 4, generator=generator)
    y = x[:, :, :2].sum(dim=(1, 2)).unsqueeze(1) / 4  # a running sum the GRU must carry through time
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    losses, runs = {}, {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        model = _Regressor()
        trainer = Trainer(model, get_loss("mse"), torch.optim.Adam(model.parameters(), lr=1e-2), precision=precision)
        before = onednn.load().runs()
        history = trainer.fit(batches, epochs=6, verbose=0)
        runs[precision] = onednn.load().runs()[1] - before[1]
        losses[precision] = history.history["loss"][-1]
        assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # auto runs bf16 training at batch 32 on native
        assert model.gru.resolved_engine(input_shape=x[:32].shape, training=True) == "native"
    assert runs["bf16"] == 0  # so oneDNN ran no backward
    assert losses["32"] < 0.1 * float(y.var())  # it learned
    assert losses["bf16"] == pytest.approx(losses["32"], rel=0.1)
    assert losses["bf16"] != losses["32"]  # and it ran in bf16


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_native_under_autocast_runs_bf16_and_matches_a_bf16_module(reset_after):
    """engine="native" under bf16 autocast used to crash ("expected scalar type Float but found BFloat16"):
    autocast turned the kernel's float32 GEMMs to bf16. It now casts to bf16 itself, computing as a bf16 module
    holding the same (rounded) weights does (but for b_hh, which it adds in float32), and returns float32
    gradients to float32 parameters."""
    torch.manual_seed(0)
    model = GRU(8, 16, reset_after=reset_after, engine="native")
    bf16 = GRU(8, 16, reset_after=reset_after, engine="native").to(torch.bfloat16)
    bf16.load_state_dict(model.state_dict())  # the float32 weights rounded to bf16, as autocast casts them
    x = torch.randn(4, 7, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, h_n = model(x)
    expected, expected_h_n = bf16(x.to(torch.bfloat16))
    assert output.dtype == h_n.dtype == torch.bfloat16
    assert relative_error(output, expected.double()) < 1e-2 and relative_error(h_n, expected_h_n.double()) < 1e-2
    output.float().sum().backward()
    expected.float().sum().backward()
    for (name, p), q in zip(model.named_parameters(), bf16.parameters()):
        assert p.grad.dtype == torch.float32, name
        assert relative_error(p.grad, q.grad.double()) < 2e-2, name


@pytest.mark.parametrize("batch", [1, 12])
def test_single_steps_under_autocast_compute_in_bf16_as_sequences_do(batch):
    """Under bf16 autocast a length-1 forward and ``step`` give bf16, as a longer sequence does (single steps
    used to stay float32 there), and at batch > 8 the native kernel's GEMMs no longer crash ("expected scalar
    type Float but found BFloat16")."""
    torch.manual_seed(0)
    model = GRU(8, 16, num_layers=2, engine="native").eval()
    x = torch.randn(batch, 1, 8)  # (B, T = 1, I)
    with torch.no_grad():
        exact, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, h_n = model(x)
            stepped, stepped_h = model.step(x[:, 0])
            longer, _ = model(x.repeat(1, 2, 1))
    assert output.dtype == h_n.dtype == stepped.dtype == stepped_h.dtype == longer.dtype == torch.bfloat16
    torch.testing.assert_close(stepped, output[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(stepped_h, h_n, rtol=0, atol=0)
    torch.testing.assert_close(longer[:, 0], output[:, 0], rtol=0, atol=0)
    assert 0 < relative_error(output, exact.double()) < 2e-2  # bf16-sized, not float32's


@pytest.mark.parametrize("engine", ["onednn", "native"])
def test_under_autocast_the_bf16_state_of_one_call_starts_the_next(engine):
    """Under autocast ``h_n`` is bf16 while the input stays float32: feeding it back (truncated backprop,
    chunked streams) must run and equal one call over the whole sequence (it raised a dtype error)."""
    torch.manual_seed(0)
    model = GRU(4, 8, num_layers=2, engine=engine)
    x = torch.randn(3, 6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole, whole_h_n = model(x)
        first, h = model(x[:, :3])
        assert h.dtype == torch.bfloat16
        second, h_n = model(x[:, 3:], h)
        with torch.no_grad():
            _, stepped_h = model.step(x[:, 3], h)  # a single step from a bf16 state
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=0)
    torch.testing.assert_close(h_n, whole_h_n, rtol=0, atol=0)
    assert stepped_h.shape == (2, 3, 8)
    with pytest.raises(TypeError, match="h0 of dtype torch.float32"):  # outside autocast it stays an error
        model(x, h.detach())
