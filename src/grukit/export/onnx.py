r"""``to_onnx(model, path)``: grukit models as ONNX graphs that onnxruntime runs with grukit's results.

What each kind of model becomes (inputs → outputs; ``B`` and ``T`` are dynamic axes):

- :class:`grukit.nn.GRU` / ``LSTM`` / ``MinGRU`` stacks: ``x (B, T, I)``, ``h0 (D*L, B, H)`` (LSTM also
  ``c0``), ``lengths (B,)`` int64 → ``output (B, T, D*H)``, ``h_n (D*L, B, H)`` (LSTM also ``c_n``); outputs past
  each sequence's length are zero, as in grukit.
- :class:`grukit.models.Sequential`: ``x`` (token ids ``(B, T)`` int64 or features ``(B, T, F)``) and
  ``lengths (B,)`` → ``output``.
- :class:`grukit.lm.GRULanguageModel`: ``graph="prefill"``: ``ids (B, T)``, ``lengths (B,)``, ``state_k
  (1, B, H_k)`` per layer → ``logits (B, T, V)``, ``new_state_k``; ``graph="step"``: ``ids (B,)``, ``state_k`` →
  ``logits (B, V)``, ``new_state_k``.
- Estimators (their network; tokenising and scaling stay in Python): ``TextClassifier``: ``ids (B, T)``,
  ``lengths`` → ``logits (B, classes)``; ``SequenceTagger``: ``words (B, T)``, ``chars (B, T, K)``,
  ``dictionary (B, T)``, ``lengths`` → ``logits (B, T, tags)``; ``SequenceClassifier``: ``x (B, T, C)``,
  ``lengths`` → ``logits (B, classes)``; ``Forecaster``: ``x (B, L, F)`` → ``quantiles (B, steps, Q)``.
  ``Translator``, ``VideoClassifier`` and ``GRUClassifier`` are not exported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from grukit.export.graph import FLOAT, INT64, Graph, recurrent_stack
from grukit.layers import core as layers_core
from grukit.layers import recurrent as layers_recurrent
from grukit.lm.model import GRULanguageModel
from grukit.models.sequential import Sequential
from grukit.nn import GRU, LSTM, MinGRU
from grukit.tasks.forecasting import Forecaster
from grukit.tasks.sequence import SequenceClassifier
from grukit.tasks.tagging import SequenceTagger
from grukit.tasks.text import TextClassifier

GRAPHS = ("prefill", "step")
EXPORTABLE = ("grukit.nn.GRU", "grukit.nn.LSTM", "grukit.nn.MinGRU", "Sequential", "GRULanguageModel",
              "TextClassifier", "SequenceTagger", "SequenceClassifier", "Forecaster")


def to_onnx(model: object, path: str | os.PathLike, graph: str = "prefill") -> Path:
    """Write ``model`` as the ONNX file ``path`` (float32, opset 17) and return the path.

    ``graph`` picks the language model's graph: ``"prefill"`` (a whole prompt) or ``"step"`` (one token); other
    models have one graph. See the module docstring for each graph's inputs and outputs. Raises ``TypeError``
    for a model grukit cannot export and ``ValueError`` for a setting the graph cannot express.
    """
    if graph not in GRAPHS:
        raise ValueError(f"to_onnx expected graph in {GRAPHS}, got {graph!r}")
    proto = build_model(model, graph)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, path)
    return path


def build_model(model: object, graph: str = "prefill") -> onnx.ModelProto:
    """The ONNX model :func:`to_onnx` writes, in memory."""
    if graph != "prefill" and not isinstance(model, GRULanguageModel):
        raise ValueError(f"graph={graph!r} applies to a GRULanguageModel only, got a {type(model).__name__}")
    if isinstance(model, (GRU, LSTM, MinGRU)):
        return _recurrent_model(model)
    if isinstance(model, Sequential):
        return _sequential_model(model)
    if isinstance(model, GRULanguageModel):
        return _language_model(model, graph == "step")
    builders = {TextClassifier: _text_classifier, SequenceTagger: _tagger, SequenceClassifier: _series_classifier,
                Forecaster: _forecaster}
    for kind, builder in builders.items():
        if isinstance(model, kind):
            model._check_fitted("to_onnx")
            return builder(model)
    raise TypeError(f"to_onnx cannot export a {type(model).__name__}; it exports {', '.join(EXPORTABLE)}")


# Recurrent stacks ---------------------------------------------------------------------------------------------
def _recurrent_model(module: GRU | LSTM | MinGRU) -> onnx.ModelProto:
    name = type(module).__name__
    g = Graph(f"grukit_{name}")
    layers, hidden = module.num_layers * module.num_directions, module.hidden_size
    batch_axis = "batch"
    x_shape = [batch_axis, "time", module.input_size] if module.batch_first else ["time", batch_axis,
                                                                                  module.input_size]
    x = g.input("x", FLOAT, x_shape)
    state_names = ("h0", "c0")[: module.state_count]
    states = [g.input(s, FLOAT, [layers, batch_axis, hidden]) for s in state_names]
    lengths = g.input("lengths", INT64, [batch_axis])
    time_major = g.op("Transpose", [x], perm=[1, 0, 2]) if module.batch_first else x
    output, finals = recurrent_stack(g, module, time_major, states, lengths)
    if module.batch_first:
        output = g.op("Transpose", [output], perm=[1, 0, 2])
    out_size = module.num_directions * hidden
    g.output("output", output, FLOAT, [*x_shape[:2], out_size])
    for out_name, final in zip(("h_n", "c_n"), finals):
        g.output(out_name, final, FLOAT, [layers, batch_axis, hidden])
    return g.model()


# Keras-style Sequential ---------------------------------------------------------------------------------------
ACTIVATIONS = {None: None, "linear": None, "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "Elu",
               "selu": "Selu", "softplus": "Softplus"}


def _activation(g: Graph, x: str, activation: str | None) -> str:
    if activation == "softmax":
        return g.op("Softmax", [x], axis=-1)
    if activation in ("swish", "silu"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if activation == "gelu":
        erf = g.op("Erf", [g.op("Div", [x, g.const(np.float32(np.sqrt(2.0)))])])
        return g.op("Mul", [g.op("Mul", [x, g.const(np.float32(0.5))]), g.op("Add", [erf, g.const(np.float32(1.0))])])
    if activation not in ACTIVATIONS:
        raise ValueError(f"to_onnx cannot express the activation {activation!r}")
    op = ACTIVATIONS[activation]
    return x if op is None else g.op(op, [x])


class _Masked:
    """The value flowing between Sequential's layers: batch-major tensor ``x`` and its lengths (``None`` while
    nothing is padded)."""

    def __init__(self, x: str, lengths: str | None) -> None:
        self.x, self.lengths = x, lengths


def _keras_recurrent(g: Graph, layer: layers_recurrent.RecurrentLayer, flow: _Masked) -> str:
    """A Keras-style recurrent layer on batch-major ``flow.x``: ``(B, T, units)`` or ``(B, units)``, with Keras'
    masking for right-padded sequences of ``flow.lengths`` real steps (``L``, possibly 0):

    - reading forwards, step ``t >= L`` repeats the output of step ``L − 1`` (zeros with
      ``zero_output_for_mask``);
    - ``go_backwards`` reads the whole padded axis reversed: the first ``T − L`` outputs are zeros, then the
      outputs of the real steps from the last to the first;
    - a sequence with no real step gives zeros.
    """
    if layer.return_state or layer.stateful:
        raise ValueError(
            f"to_onnx cannot export {type(layer).__name__} layer {layer.name!r} with return_state or stateful; "
            "export a model whose recurrent layers return only their output"
        )
    x = g.op("Transpose", [flow.x], perm=[1, 0, 2])  # (T, B, I)
    if flow.lengths is None:
        if layer.go_backwards:
            x = _reverse(g, x, None)
        output, finals = recurrent_stack(g, layer.module, x, None, None)  # (T, B, H), (1, B, H)
        if layer.return_sequences:
            return g.op("Transpose", [output], perm=[1, 0, 2])
        return g.op("Squeeze", [finals[0], g.const([0])])
    lengths = flow.lengths  # (B,) real steps, 0 allowed
    run_lengths = g.op("Max", [lengths, g.const(np.int64(1))])
    if layer.go_backwards:
        x = _reverse(g, x, run_lengths)  # each sequence's real steps, last first
    output, finals = recurrent_stack(g, layer.module, x, None, run_lengths)  # (T, B, H), (1, B, H)
    some = g.op("Unsqueeze", [g.op("Greater", [lengths, g.const(np.int64(0))]), g.const([1])])  # (B, 1)
    if not layer.return_sequences:
        last = g.op("Squeeze", [finals[0], g.const([0])])  # (B, H): the last real step's output
        if layer.zero_output_for_mask and not layer.go_backwards:  # Keras' output at step T - 1 is masked
            full = g.op("Equal", [lengths, g.op("Squeeze", [g.dim(x, 0)])])
            some = g.op("And", [some, g.op("Unsqueeze", [full, g.const([1])])])
        return g.op("Where", [some, last, g.const(np.float32(0.0))])
    steps = g.dim(x, 0)
    t = g.op("Unsqueeze", [g.op("Range", [g.const(np.array(0, np.int64)), g.op("Squeeze", [steps]),
                                          g.const(np.array(1, np.int64))]), g.const([1])])  # (T, 1)
    if layer.go_backwards:
        source = g.op("Sub", [t, g.op("Sub", [steps, lengths])])  # (T, B): t - (T - L)
        keep = g.op("GreaterOrEqual", [source, g.const(np.int64(0))])
    elif layer.zero_output_for_mask:
        source, keep = g.op("Expand", [t, g.op("Shape", [lengths])]), g.op("Less", [t, lengths])
    else:
        source = g.op("Min", [t, g.op("Sub", [lengths, g.const(np.int64(1))])])  # the latest real step
        keep = g.op("Expand", [g.op("Transpose", [some], perm=[1, 0]), g.op("Shape", [source])])
    source = g.op("Max", [source, g.const(np.int64(0))])
    index = g.op("Expand", [g.op("Unsqueeze", [source, g.const([2])]), g.op("Shape", [output])])  # (T, B, H)
    gathered = g.op("GatherElements", [output, index], axis=0)
    keep = g.op("And", [keep, g.op("Transpose", [some], perm=[1, 0])])  # (T, B)
    output = g.op("Where", [g.op("Unsqueeze", [keep, g.const([2])]), gathered, g.const(np.float32(0.0))])
    return g.op("Transpose", [output], perm=[1, 0, 2])  # (B, T, H)


def _reverse(g: Graph, x: str, lengths: str | None) -> str:
    """Each sequence of time-major ``x`` reversed within its first ``lengths`` steps (the rest stays in place);
    the whole time axis without ``lengths``."""
    if lengths is None:
        lengths = g.op("Expand", [g.op("Squeeze", [g.dim(x, 0)]), g.dim(x, 1)])  # (B,) all T
    return g.op("ReverseSequence", [x, lengths], batch_axis=1, time_axis=0)


def _sequential_layer(g: Graph, layer: nn.Module, flow: _Masked) -> _Masked:
    if isinstance(layer, layers_core.Embedding):
        x = g.op("Gather", [g.weight(layer.embeddings, layer.name), flow.x])  # (B, T, E)
        lengths = flow.lengths
        if layer.mask_zero:
            own = g.op("ReduceSum", [g.op("Cast", [g.op("Not", [g.op("Equal", [flow.x, g.const(np.int64(0))])])],
                                            to=INT64), g.const([1])], keepdims=0)  # (B,)
            lengths = own if lengths is None else g.op("Min", [lengths, own])
        return _Masked(x, lengths)
    if isinstance(layer, layers_core.Dense):
        y = g.op("MatMul", [flow.x, g.weight(layer.kernel, f"{layer.name}_kernel")])
        if layer.bias is not None:
            y = g.op("Add", [y, g.weight(layer.bias, f"{layer.name}_bias")])
        return _Masked(_activation(g, y, layer.activation), flow.lengths)
    if isinstance(layer, layers_core.Dropout):
        return flow
    if isinstance(layer, layers_core.TimeDistributed) and isinstance(layer.layer, (layers_core.Dense,
                                                                                    layers_core.Dropout)):
        return _Masked(_sequential_layer(g, layer.layer, _Masked(flow.x, None)).x, flow.lengths)
    if isinstance(layer, (layers_core.GlobalAveragePooling1D, layers_core.GlobalMaxPooling1D)):
        average = isinstance(layer, layers_core.GlobalAveragePooling1D)
        if flow.lengths is None:
            op = "ReduceMean" if average else "ReduceMax"
            return _Masked(g.op(op, [flow.x], axes=[1], keepdims=0), None)
        return _Masked(_masked_pool(g, flow.x, flow.lengths, average), None)
    if isinstance(layer, layers_recurrent.RecurrentLayer):
        y = _keras_recurrent(g, layer, flow)
        return _Masked(y, flow.lengths if layer.return_sequences else None)
    if isinstance(layer, layers_recurrent.Bidirectional):
        if layer.merge_mode is None or layer.forward_layer.return_state:
            raise ValueError(
                f"to_onnx cannot export Bidirectional layer {layer.name!r} with merge_mode=None or return_state"
            )
        forward = _keras_recurrent(g, layer.forward_layer, flow)
        backward = _keras_recurrent(g, layer.backward_layer, flow)
        if layer.forward_layer.return_sequences:
            backward = g.op("ReverseSequence", [backward, g.op("Expand", [
                g.op("Squeeze", [g.dim(backward, 1)]), g.dim(backward, 0)])], batch_axis=0, time_axis=1)  # time order
        merged = {
            "concat": lambda: g.op("Concat", [forward, backward], axis=-1),
            "sum": lambda: g.op("Add", [forward, backward]),
            "mul": lambda: g.op("Mul", [forward, backward]),
            "ave": lambda: g.op("Mul", [g.op("Add", [forward, backward]), g.const(np.float32(0.5))]),
        }[layer.merge_mode]()
        return _Masked(merged, flow.lengths if layer.forward_layer.return_sequences else None)
    raise TypeError(f"to_onnx cannot export a Sequential holding a {type(layer).__name__} layer ({layer.name!r})")


def _masked_pool(g: Graph, x: str, lengths: str, average: bool) -> str:
    """Mean or max over the valid steps of batch-major ``x`` ``(B, T, C)`` → ``(B, C)``."""
    valid = g.op("Unsqueeze", [g.step_mask(lengths, g.dim(x, 1), time_major=False), g.const([2])])  # (B, T, 1)
    if average:
        weights = g.op("Cast", [valid], to=FLOAT)
        total = g.op("ReduceSum", [g.op("Mul", [x, weights]), g.const([1])], keepdims=0)  # (B, C)
        count = g.op("Max", [g.op("ReduceSum", [weights, g.const([1])], keepdims=0), g.const(np.float32(1.0))])
        return g.op("Div", [total, count])
    return g.op("ReduceMax", [g.op("Where", [valid, x, g.const(np.float32(-np.inf))])], axes=[1], keepdims=0)


def _sequential_model(model: Sequential) -> onnx.ModelProto:
    if not model.built:
        raise ValueError("to_onnx needs a built Sequential: call build(input_shape), fit or predict first")
    g = Graph(f"grukit_{model.name}")
    ids = isinstance(model.layers[0], layers_core.Embedding)
    input_shape = ["batch", *("time" if d is None else d for d in model.input_shape[1:])]
    x = g.input("x", INT64 if ids else FLOAT, input_shape)
    sequence = len(input_shape) >= 2 and (ids or len(input_shape) == 3)
    flow = _Masked(x, g.input("lengths", INT64, ["batch"]) if sequence else None)
    for layer in model.layers:
        flow = _sequential_layer(g, layer, flow)
    shape = model.output_shapes()[-1]
    g.output("output", flow.x, FLOAT, ["batch", *("time" if d is None else d for d in shape[1:])])
    return g.model()


# Language model -----------------------------------------------------------------------------------------------
def _language_model(model: GRULanguageModel, step: bool) -> onnx.ModelProto:
    config = model.config
    g = Graph("grukit_lm_step" if step else "grukit_lm_prefill")
    if step:
        ids = g.op("Unsqueeze", [g.input("ids", INT64, ["batch"]), g.const([0])])  # (1, B) time-major
        lengths = None
    else:
        ids = g.op("Transpose", [g.input("ids", INT64, ["batch", "time"])], perm=[1, 0])  # (T, B)
        lengths = g.input("lengths", INT64, ["batch"])
    states = [g.input(f"state_{k}", FLOAT, [1, "batch", hidden]) for k, (_, hidden) in
              enumerate(config.layer_sizes())]
    x = g.op("Gather", [g.weight(model.embedding.weight, "embedding"), ids])  # (T, B, D)
    finals = []
    for layer, state in zip(model.layers, states):
        x, (final,) = recurrent_stack(g, layer, x, [state], lengths)  # (T, B, H_l)
        finals.append(final)
    logits = g.linear(x, model.decoder.weight, model.decoder.bias, "decoder")  # (T, B, V)
    if step:
        g.output("logits", g.op("Squeeze", [logits, g.const([0])]), FLOAT, ["batch", config.vocab_size])
    else:
        g.output("logits", g.op("Transpose", [logits], perm=[1, 0, 2]), FLOAT, ["batch", "time", config.vocab_size])
    for k, (final, (_, hidden)) in enumerate(zip(finals, config.layer_sizes())):
        g.output(f"new_state_{k}", final, FLOAT, [1, "batch", hidden])
    return g.model()


# Estimators ---------------------------------------------------------------------------------------------------
def _estimator_rnn(g: Graph, rnn: GRU | LSTM, x: str, lengths: str | None) -> tuple[str, str]:
    """Batch-major ``x`` through the estimator's recurrent layer: ``(output (B, T, D*H), h_n (D*L, B, H))``."""
    output, finals = recurrent_stack(g, rnn, g.op("Transpose", [x], perm=[1, 0, 2]), None, lengths)
    return g.op("Transpose", [output], perm=[1, 0, 2]), finals[0]


def _text_classifier(estimator: TextClassifier) -> onnx.ModelProto:
    network = estimator.module_
    g = Graph("grukit_text_classifier")
    ids = g.input("ids", INT64, ["batch", "time"])
    lengths = g.input("lengths", INT64, ["batch"])
    embedded = g.op("Gather", [g.weight(network.embedding.weight, "embedding"), ids])  # (B, T, E)
    if network.order:  # naive-Bayes evidence [r(w_t) ; r(w_{t-1} w_t) ; ...], 0 before the text starts
        tables = network.ratio_tables()
        parts = [embedded, g.op("Gather", [g.weight(tables[0], "ratios_1"), ids])]  # (B, T, K) each
        last = np.iinfo(np.int64).max
        for n, table in enumerate(tables[1:], start=2):
            hashed = g.op("Slice", [ids, g.const([0]), g.const([1 - n]), g.const([1])])  # (B, T - n + 1)
            for k in range(1, n):
                end = g.const([k + 1 - n] if k + 1 < n else [last])
                following = g.op("Slice", [ids, g.const([k]), end, g.const([1])])
                hashed = g.op("Add", [g.op("Mul", [hashed, g.const(np.int64(1_000_003))]), following])
            buckets = g.op("Mod", [hashed, g.const(np.int64(table.shape[0]))])
            runs = g.op("Gather", [g.weight(table, f"ratios_{n}"), buckets])  # (B, T - n + 1, K)
            padded = g.op("Pad", [runs, g.const([0, n - 1, 0, 0, 0, 0])])  # (B, max(T, n - 1), K)
            parts.append(g.op("Slice", [padded, g.const([0]), g.dim(ids, 1), g.const([1])]))  # (B, T, K)
        embedded = g.op("Concat", parts, axis=-1)  # (B, T, E + N K)
    outputs, _ = _estimator_rnn(g, network.rnn, embedded, lengths)  # (B, T, 2H)
    pooled = g.op("Concat", [_masked_pool(g, outputs, lengths, True), _masked_pool(g, outputs, lengths, False)],
                  axis=-1)  # (B, 4H)
    logits = g.linear(pooled, network.head.weight, network.head.bias, "head")
    g.output("logits", logits, FLOAT, ["batch", len(estimator.classes_)])
    return g.model()


def _tagger(estimator: SequenceTagger) -> onnx.ModelProto:
    network = estimator.module_
    g = Graph("grukit_sequence_tagger")
    words = g.input("words", INT64, ["batch", "time"])
    chars = g.input("chars", INT64, ["batch", "time", estimator.max_chars])
    dictionary = g.input("dictionary", INT64, ["batch", "time"])
    lengths = g.input("lengths", INT64, ["batch"])
    char_mask = g.op("Cast", [g.op("Not", [g.op("Equal", [chars, g.const(np.int64(0))])])], to=FLOAT)  # (B, T, K)
    char_vectors = g.op("Gather", [g.weight(network.char_embedding.weight, "char_embedding"), chars])  # (B,T,K,E)
    mask4 = g.op("Unsqueeze", [char_mask, g.const([3])])  # (B, T, K, 1)
    count = g.op("ReduceSum", [char_mask, g.const([2])], keepdims=0)  # (B, T)
    mean = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [char_vectors, mask4]), g.const([2])], keepdims=0),
                        g.op("Unsqueeze", [g.op("Max", [count, g.const(np.float32(1.0))]), g.const([2])])])
    last_index = g.op("Max", [g.op("Sub", [g.op("Cast", [count], to=INT64), g.const(np.int64(1))]),
                              g.const(np.int64(0))])  # (B, T)
    last = g.op("GatherElements", [char_vectors, g.op("Expand", [
        g.op("Unsqueeze", [last_index, g.const([2, 3])]),
        g.op("Concat", [g.dim(char_vectors, 0), g.dim(char_vectors, 1), g.const([1]), g.dim(char_vectors, 3)],
             axis=0)])], axis=2)  # (B, T, 1, E)
    first = g.op("Gather", [char_vectors, g.const(np.int64(0))], axis=2)  # (B, T, E)
    parts = [
        g.op("Gather", [g.weight(network.word_embedding.weight, "word_embedding"), words]),
        mean,
        first,
        g.op("Squeeze", [last, g.const([2])]),
        g.op("Gather", [g.weight(network.tag_embedding.weight, "tag_embedding"), dictionary]),
    ]
    x = g.op("Concat", parts, axis=-1)  # (B, T, 5E)
    outputs, _ = _estimator_rnn(g, network.rnn, x, lengths)  # (B, T, 2H)
    logits = g.linear(outputs, network.head.weight, network.head.bias, "head")
    g.output("logits", logits, FLOAT, ["batch", "time", len(estimator.tags_)])
    return g.model()


def _series_classifier(estimator: SequenceClassifier) -> onnx.ModelProto:
    network = estimator.module_
    g = Graph("grukit_sequence_classifier")
    channels = network.rnn.input_size
    x = g.input("x", FLOAT, ["batch", "time", channels])
    lengths = g.input("lengths", INT64, ["batch"])
    _, h_n = _estimator_rnn(g, network.rnn, x, lengths)
    recurrent = g.op("Gather", [h_n, g.const(np.int64(-1))], axis=0)  # (B, H)
    features = [recurrent]
    if len(network.conv):
        mask = g.op("Cast", [g.op("Unsqueeze", [g.step_mask(lengths, g.dim(x, 1), time_major=False),
                                                g.const([1])])], to=FLOAT)  # (B, 1, T)
        y = g.op("Transpose", [x], perm=[0, 2, 1])  # (B, C, T)
        for block in network.conv:
            conv, norm, _ = block
            kernel = conv.kernel_size[0]
            y = g.op("Conv", [g.op("Mul", [y, mask]), g.weight(conv.weight, "conv_weight"),
                              g.weight(conv.bias, "conv_bias")],
                     kernel_shape=[kernel], pads=[(kernel - 1) // 2, kernel // 2])
            y = g.op("BatchNormalization", [y, g.weight(norm.weight, "bn_scale"), g.weight(norm.bias, "bn_bias"),
                                            g.weight(norm.running_mean, "bn_mean"),
                                            g.weight(norm.running_var, "bn_var")], epsilon=norm.eps)
            y = g.op("Relu", [y])  # (B, F_k, T)
        total = g.op("ReduceSum", [g.op("Mul", [y, mask]), g.const([2])], keepdims=0)  # (B, F)
        features.append(g.op("Div", [total, g.op("Unsqueeze", [g.op("Cast", [lengths], to=FLOAT), g.const([1])])]))
    logits = g.linear(g.op("Concat", features, axis=-1), network.head.weight, network.head.bias, "head")
    g.output("logits", logits, FLOAT, ["batch", len(estimator.classes_)])
    return g.model()


def _forecaster(estimator: Forecaster) -> onnx.ModelProto:
    network = estimator.module_
    g = Graph("grukit_forecaster")
    x = g.input("x", FLOAT, ["batch", "window", network.rnn.input_size])
    _, h_n = _estimator_rnn(g, network.rnn, x, None)
    head = g.linear(g.op("Gather", [h_n, g.const(np.int64(-1))], axis=0), network.head.weight, network.head.bias,
                    "head")  # (B, steps*Q)
    quantiles = g.op("Reshape", [head, g.const(np.array([-1, network.steps, network.levels], np.int64))])
    g.output("quantiles", quantiles, FLOAT, ["batch", network.steps, network.levels])
    return g.model()
