"""onnxruntime runs the exported grukit.nn stacks with grukit's float32 results: 44 generated exports (cell,
candidate form, sizes, layers, directions) x 5 runs each (batch sizes other than any fixed one, lengths
including 1 and full, random initial states) = 220 cases, max abs diff <= 1e-5, outputs past each length
exactly zero in both."""

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch

from grukit.export import build_model
from grukit.nn import GRU, LSTM, MinGRU

TOLERANCE = 1e-5
RUNS = 5


def _configurations() -> list[tuple]:
    """44 ``(cell, kwargs)``: every GRU form and LSTM with 1-2 layers, both directions, three size pairs, plus
    minGRU stacks."""
    cases = []
    for (cell, extra), layers, bidirectional, (inputs, hidden) in itertools.product(
        [(GRU, {"reset_after": True}), (GRU, {"reset_after": False}), (LSTM, {})],
        (1, 2),
        (False, True),
        ((3, 4), (7, 5), (1, 2)),
    ):
        cases.append((cell, dict(input_size=inputs, hidden_size=hidden, num_layers=layers,
                                 bidirectional=bidirectional, **extra)))
    cases.append((GRU, dict(input_size=4, hidden_size=6, num_layers=3, bias=False)))
    cases.append((GRU, dict(input_size=4, hidden_size=6, reset_after=False, bias=False, bidirectional=True)))
    cases.append((LSTM, dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True)))
    cases.append((GRU, dict(input_size=2, hidden_size=9, batch_first=False, bidirectional=True)))
    for layers, (inputs, hidden) in itertools.product((1, 2), ((3, 4), (6, 5))):
        cases.append((MinGRU, dict(input_size=inputs, hidden_size=hidden, num_layers=layers)))
    return cases


CONFIGURATIONS = _configurations()


def _run_case(module, session, generator: torch.Generator, batch: int, steps: int) -> tuple[float, float]:
    """One random batch through grukit and onnxruntime: ``(max abs diff over every output, largest |output|
    that onnxruntime gives past a sequence's length)``."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    if batch > 1:
        lengths[1] = 1
    shape = (batch, steps, module.input_size) if module.batch_first else (steps, batch, module.input_size)
    x = torch.randn(*shape, generator=generator)
    layers = module.num_layers * module.num_directions
    states = [torch.randn(layers, batch, module.hidden_size, generator=generator) for _ in range(module.state_count)]
    with torch.no_grad():
        output, final = module(x, tuple(states) if module.state_count == 2 else states[0], lengths)
    expected = [output, *(final if isinstance(final, tuple) else (final,))]
    feeds = {"x": x.numpy(), "lengths": lengths.numpy()}
    feeds.update({name: state.numpy() for name, state in zip(("h0", "c0"), states)})
    got = session.run(None, feeds)
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    padded = (torch.arange(steps)[None, :] >= lengths[:, None]).numpy()  # (B, T)
    got_output = got[0] if module.batch_first else got[0].transpose(1, 0, 2)
    grukit_output = output if module.batch_first else output.transpose(0, 1)
    assert torch.count_nonzero(grukit_output[torch.as_tensor(padded)]) == 0
    return diff, float(np.abs(got_output[padded]).max()) if padded.any() else 0.0


@pytest.mark.parametrize("index", range(len(CONFIGURATIONS)))
def test_onnxruntime_matches_grukit(index):
    cell, kwargs = CONFIGURATIONS[index]
    torch.manual_seed(index)
    module = cell(**kwargs).eval()
    session = ort.InferenceSession(build_model(module).SerializeToString(), providers=["CPUExecutionProvider"])
    assert {node.op_type for node in build_model(module).graph.node} >= ({"Scan"} if cell is MinGRU else
                                                                           {cell.__name__})
    generator = torch.Generator().manual_seed(index)
    shapes = [(1, 1), (2, 5), (5, 3), (7, 8), (3, 1)]
    results = [_run_case(module, session, generator, batch, steps) for batch, steps in shapes[:RUNS]]
    assert max(diff for diff, _ in results) <= TOLERANCE
    assert max(past for _, past in results) == 0.0


def test_generated_cases_cover_the_brief():
    assert len(CONFIGURATIONS) * RUNS >= 200
    kinds = {(c.__name__, k.get("reset_after"), k.get("bidirectional", False)) for c, k in CONFIGURATIONS}
    assert {("GRU", True, True), ("GRU", False, True), ("LSTM", None, True), ("MinGRU", None, False)} <= kinds


def test_gate_order_is_onnx_order():
    """A GRU whose only nonzero weights feed torch's z gate must put them in ONNX's first block (z, r, h)."""
    module = GRU(2, 3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
        module.weight_ih_l0[3:6] = 1.0  # torch rows r=0:3, z=3:6, n=6:9
    weights = {t.name: t for t in build_model(module).graph.initializer}
    w = next(np.frombuffer(t.raw_data, np.float32).reshape(t.dims) for name, t in weights.items()
             if name.startswith("W"))
    assert w.shape == (1, 9, 2)
    assert (w[0, 0:3] == 1).all() and (w[0, 3:] == 0).all()
