r"""Build ONNX graphs node by node, and the recurrent layers as ONNX's own ``GRU`` / ``LSTM`` operators.

Weight layout. grukit keeps torch's gate order, ONNX its own, so every matrix is regrouped on the way out:

=========  ================  ==============  ===========================================================
operator   grukit (torch)    ONNX            ONNX inputs
=========  ================  ==============  ===========================================================
GRU        r, z, n           z, r, h         ``W (D, 3H, I)``, ``R (D, 3H, H)``, ``B (D, 6H) = [Wb; Rb]``
LSTM       i, f, g, o        i, o, f, c      ``W (D, 4H, I)``, ``R (D, 4H, H)``, ``B (D, 8H) = [Wb; Rb]``
=========  ================  ==============  ===========================================================

The GRU's candidate form maps onto ``linear_before_reset``: ``1`` computes
``n = tanh(W_n x + b_in + r ⊙ (R_n h + b_hn))`` (grukit's ``reset_after=True``), ``0`` computes
``n = tanh(W_n x + b_in + R_n (r ⊙ h) + b_hn)`` (``reset_after=False``). minGRU has no ONNX operator: its
projections are one ``MatMul`` over every step and its recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` is a ``Scan``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

from grukit.nn import GRU, LSTM, MinGRU

OPSET = 17
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64

# Rows of torch's stacked gate matrices, in the order ONNX stacks them.
_GRU_ORDER = (1, 0, 2)  # r, z, n -> z, r, h
_LSTM_ORDER = (0, 3, 1, 2)  # i, f, g, o -> i, o, f, c


def _regroup(weight: Tensor, order: tuple[int, ...]) -> np.ndarray:
    """``(G*H, ...)`` rows in torch's gate order → ONNX's, as float32 numpy."""
    chunks = weight.detach().to(device="cpu", dtype=torch.float32).chunk(len(order), dim=0)
    return torch.cat([chunks[i] for i in order], dim=0).numpy()


class Graph:
    """An ONNX graph under construction: ``op`` appends a node and returns its output name(s), ``const`` and
    ``weight`` add initializers, ``input`` / ``output`` declare the interface, ``model`` finishes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: Counter[str] = Counter()

    def fresh(self, hint: str) -> str:
        self._used[hint] += 1
        return f"{hint}_{self._used[hint]}"

    def const(self, value: np.ndarray | list | float | int, hint: str = "const") -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, tensor: Tensor, hint: str) -> str:
        return self.const(tensor.detach().to(device="cpu", dtype=torch.float32).numpy(), hint)

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, hint: str | None = None, **attributes):
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attributes))
        return names[0] if outputs == 1 else names

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, source: str, elem_type: int, shape: list) -> None:
        self.nodes.append(helper.make_node("Identity", [source], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="grukit")
        model.ir_version = 8  # readable by onnxruntime >= 1.14
        onnx.checker.check_model(model)
        return model

    # Small compositions ---------------------------------------------------------------------------------------
    def dim(self, x: str, axis: int) -> str:
        """``x.shape[axis]`` as a ``(1,)`` int64 tensor."""
        return self.op("Shape", [x], start=axis, end=axis + 1)

    def linear(self, x: str, weight: Tensor, bias: Tensor | None, hint: str) -> str:
        """``x Wᵀ + b`` on the last axis, ``weight`` in torch's ``(out, in)`` layout."""
        y = self.op("MatMul", [x, self.weight(weight.T, f"{hint}_weight")])
        return y if bias is None else self.op("Add", [y, self.weight(bias, f"{hint}_bias")])

    def step_mask(self, lengths: str, steps: str, time_major: bool) -> str:
        """Bool ``(T, B)`` (or ``(B, T)``): true where step ``t < lengths[b]``."""
        t = self.op("Range", [self.const(np.array(0, np.int64)), self.op("Squeeze", [steps]),
                              self.const(np.array(1, np.int64))])  # (T,)
        if time_major:
            return self.op("Less", [self.op("Unsqueeze", [t, self.const([1])]), lengths])  # (T, B)
        return self.op("Less", [t, self.op("Unsqueeze", [lengths, self.const([1])])])  # (B, T)


def recurrent_stack(
    g: Graph, module: GRU | LSTM | MinGRU, x: str, states: list[str] | None, lengths: str | None
) -> tuple[str, list[str]]:
    """Emit ``module`` over time-major ``x`` ``(T, B, I)``.

    ``states``: ``h0`` (and ``c0``) ``(D*L, B, H)`` names or ``None`` for zeros; ``lengths``: int64 ``(B,)`` or
    ``None`` (every sequence full). Returns ``output (T, B, D*H)`` and the final states ``(D*L, B, H)`` each;
    steps at ``t >= lengths[b]`` give zero output and leave the state alone, as :mod:`grukit.nn` does.
    """
    directions = module.num_directions
    finals: list[list[str]] = [[] for _ in range(module.state_count)]
    sequence_lens = "" if lengths is None else g.op("Cast", [lengths], to=TensorProto.INT32)
    for layer in range(module.num_layers):
        initial = [""] * module.state_count
        if states is not None:
            starts, ends = g.const([layer * directions]), g.const([(layer + 1) * directions])
            initial = [g.op("Slice", [s, starts, ends, g.const([0])]) for s in states]  # (D, B, H)
        if isinstance(module, MinGRU):
            x, final = _mingru_layer(g, module, layer, x, initial[0], lengths)
            finals[0].append(final)
            continue
        order = _GRU_ORDER if isinstance(module, GRU) else _LSTM_ORDER
        w, r, b = [], [], []
        for direction in range(directions):
            w_ih, w_hh, b_ih, b_hh = module.layer_weights(layer, direction)
            w.append(_regroup(w_ih, order))
            r.append(_regroup(w_hh, order))
            zeros = np.zeros(w_ih.shape[0], np.float32)
            b.append(np.concatenate([
                zeros if b_ih is None else _regroup(b_ih, order), zeros if b_hh is None else _regroup(b_hh, order)
            ]))
        inputs = [x, g.const(np.stack(w), "W"), g.const(np.stack(r), "R"), g.const(np.stack(b), "B"), sequence_lens]
        attributes = {"hidden_size": module.hidden_size, "direction": "bidirectional" if directions == 2 else "forward"}
        if isinstance(module, GRU):
            attributes["linear_before_reset"] = int(module.reset_after)
            y, *layer_finals = g.op("GRU", [*inputs, initial[0]], outputs=2, **attributes)
        else:
            y, *layer_finals = g.op("LSTM", [*inputs, initial[0], initial[1]], outputs=3, **attributes)
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
        x = g.op("Reshape", [y, g.const(np.array([0, 0, -1], np.int64))])  # (T, B, D*H)
        for slot, final in zip(finals, layer_finals):
            slot.append(final)  # (D, B, H)
    return x, [slot[0] if len(slot) == 1 else g.op("Concat", slot, axis=0) for slot in finals]


def _mingru_layer(
    g: Graph, module: MinGRU, layer: int, x: str, h0: str, lengths: str | None
) -> tuple[str, str]:
    r"""One minGRU layer: ``z, h̃ = split(x Wᵀ + b)``; ``a = 1 − σ(z)``, ``b = σ(z) ⊙ h̃`` for all steps at once
    (``a = 1, b = 0`` past each length), then ``Scan`` runs ``h_t = a_t ⊙ h_{t-1} + b_t``."""
    w, _, bias, _ = module.layer_weights(layer, 0)
    hidden = module.hidden_size
    projected = g.linear(x, w, bias, f"mingru_l{layer}")  # (T, B, 2H)
    gate, candidate = g.op("Split", [projected, g.const(np.array([hidden, hidden], np.int64))], outputs=2, axis=2)
    z = g.op("Sigmoid", [gate])  # (T, B, H)
    keep = g.op("Sub", [g.const(np.float32(1.0)), z])  # (T, B, H)
    add = g.op("Mul", [z, candidate])  # (T, B, H)
    valid = None
    if lengths is not None:
        valid = g.op("Unsqueeze", [g.step_mask(lengths, g.dim(x, 0), time_major=True), g.const([2])])  # (T, B, 1)
        keep = g.op("Where", [valid, keep, g.const(np.float32(1.0))])
        add = g.op("Where", [valid, add, g.const(np.float32(0.0))])
    if not h0:
        h0 = g.op("Expand", [g.const(np.zeros((1, 1, hidden), np.float32)),
                             g.op("Concat", [g.const([1]), g.dim(x, 1), g.const([hidden])], axis=0)])
    h_prev = g.op("Squeeze", [h0, g.const([0])])  # (B, H)
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["keep_t", "h_prev"], ["kept"]),
            helper.make_node("Add", ["kept", "add_t"], ["h_next"]),
            helper.make_node("Identity", ["h_next"], ["h_out"]),
        ],
        "mingru_step",
        [helper.make_tensor_value_info(n, FLOAT, None) for n in ("h_prev", "keep_t", "add_t")],
        [helper.make_tensor_value_info(n, FLOAT, None) for n in ("h_next", "h_out")],
    )
    final, output = g.op("Scan", [h_prev, keep, add], outputs=2, body=body, num_scan_inputs=2)  # (B, H), (T, B, H)
    if valid is not None:
        output = g.op("Where", [valid, output, g.const(np.float32(0.0))])
    return output, g.op("Unsqueeze", [final, g.const([0])])  # (1, B, H)
