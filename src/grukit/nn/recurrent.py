r"""Multi-layer, optionally bidirectional recurrent modules with ``torch.nn.GRU``'s interface and parameter
layout, plus variable-length batches through ``lengths``.

The math itself lives in :mod:`grukit.ops`; these modules own the parameters, check what they are given,
and stack layers and directions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from grukit.ops import engines, mingru_scan, native, onednn, recompute, reference

INITS = ("torch", "keras")


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape, length or device. Both a ``ValueError`` and the ``RuntimeError`` that
    ``torch.nn.GRU`` raises for the same mistake, so ``except RuntimeError`` code written for torch still works."""


class DTypeError(TypeError, ValueError, RuntimeError):
    """A tensor whose dtype does not match the module's weights or the input. A ``TypeError``, and also the
    ``ValueError`` (input vs weights) and ``RuntimeError`` (input vs state) that torch raises for it."""


def _check_positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} expected {name} to be a positive integer, got {value!r}")
    return value


def check_bool(owner: str, name: str, value: object) -> bool:
    """``value`` as a bool, refusing anything else: ``bias="False"`` is truthy and would silently mean ``True``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner} expected {name} to be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def factory(device: torch.device | str | None, dtype: torch.dtype | None) -> dict:
    """``torch.nn``'s factory arguments for new parameters, ``{}`` where not given."""
    return {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}


def check_lengths(owner: str, lengths: Tensor | list | tuple, batch: int, steps: int) -> Tensor:
    """Validate ``lengths`` for a ``(batch, steps)`` input and return it as an int64 CPU tensor."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{owner} expected integer lengths, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ShapeError(f"{owner} expected lengths of shape ({batch},), one per sequence, got {tuple(lengths.shape)}")
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ShapeError(
            f"{owner} expected every length in [1, {steps}] (the time dimension), "
            f"got min {int(lengths.min())} and max {int(lengths.max())}"
        )
    return lengths


_CASTS = {torch.float32: "float", torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}


def _cast(dtype: torch.dtype) -> str:
    return f".{_CASTS[dtype]}()" if dtype in _CASTS else f".to({dtype})"


def check_matches_weights(owner: str, x: Tensor, weight: Tensor) -> None:
    """Raise when ``x`` is not of the dtype (outside autocast) and on the device of the module's ``weight``,
    naming both and the call that fixes it."""
    if x.device != weight.device:
        raise ShapeError(
            f"{owner} got input on {x.device} but its weights are on {weight.device}; "
            f"call .to('{x.device}') on the module or .to('{weight.device}') on the input"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        given, own = str(x.dtype).removeprefix("torch."), str(weight.dtype).removeprefix("torch.")
        raise DTypeError(
            f"{owner} got {given} input but its weights are {own}; "
            f"call {_cast(x.dtype)} on the module or {_cast(weight.dtype)} on the input"
        )


def reset_rows(owner: str, state: Tensor | tuple | dict, mask: Tensor, batch_dim: int) -> Tensor | tuple | dict:
    """``state`` (a tensor, or a tuple or dict of them) with the rows of axis ``batch_dim`` where the bool ``mask``
    ``(B,)`` is true set to zero: those streams start over. Returns new tensors."""

    def reset(tensor: Tensor) -> Tensor:
        batch = tensor.shape[batch_dim]
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (batch,):
            got = f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{owner}.reset_state expected a bool mask of shape ({batch},), one per stream, got {got}")
        shape = [1] * tensor.dim()
        shape[batch_dim] = batch
        return tensor.masked_fill(mask.to(tensor.device).view(shape), 0.0)

    if isinstance(state, dict):
        return {key: reset(value) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return tuple(reset(value) for value in state)
    return reset(state)


class RecurrentBase(nn.Module):
    """Parameters, validation and the layer / direction loop shared by :class:`GRU`, :class:`LSTM` and
    :class:`MinGRU`. Subclasses set ``gates`` and ``recurrent`` and implement ``_run_direction``."""

    gates: int
    recurrent: bool = True  # minGRU has no recurrent weights
    state_count: int = 1  # LSTM carries (h, c)
    proj_size: int = 0  # LSTM's projection of h, torch's proj_size

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        init: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = _check_positive_int(name, "input_size", input_size)
        self.hidden_size = _check_positive_int(name, "hidden_size", hidden_size)
        self.num_layers = _check_positive_int(name, "num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name} expected dropout in [0, 1), got {dropout!r}")
        if init not in INITS:
            raise ValueError(f"{name} expected init in {INITS}, got {init!r}")
        self.bias = check_bool(name, "bias", bias)
        self.batch_first = check_bool(name, "batch_first", batch_first)
        self.dropout = float(dropout)
        self.bidirectional = check_bool(name, "bidirectional", bidirectional)
        self.init = init
        options = factory(device, dtype)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size * self.num_directions
            for suffix in self._suffixes(layer):
                gh = self.gates * hidden_size
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(gh, layer_input, **options)))
                if self.recurrent:
                    self.register_parameter(
                        f"weight_hh{suffix}", nn.Parameter(torch.empty(gh, self.output_size, **options))
                    )
                if self.bias:
                    self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(gh, **options)))
                    if self.recurrent:
                        self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(gh, **options)))
                if self.proj_size:
                    self.register_parameter(
                        f"weight_hr{suffix}", nn.Parameter(torch.empty(self.proj_size, hidden_size, **options))
                    )
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of ``h`` and of the output per direction: ``proj_size`` when projecting, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def flatten_parameters(self) -> None:
        """Nothing to do: torch's cuDNN path wants one contiguous weight buffer, grukit's engines do not.
        Kept so code written for ``torch.nn.GRU`` runs unchanged."""

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def layer_weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """``(w_ih, w_hh, b_ih, b_hh)`` of one layer and direction (``None`` where absent)."""
        suffix = self._suffixes(layer)[direction]
        return (
            getattr(self, f"weight_ih{suffix}"),
            getattr(self, f"weight_hh{suffix}", None),
            getattr(self, f"bias_ih{suffix}", None),
            getattr(self, f"bias_hh{suffix}", None),
        )

    def reset_parameters(self) -> None:
        """``init="torch"``: every weight and bias uniform in ±1/√H, as ``torch.nn.GRU``.
        ``init="keras"``: glorot-uniform input kernel, orthogonal recurrent kernel, zero biases, as Keras
        (each initialised on Keras' ``(in, gates*H)`` matrix, then laid out as torch's)."""
        if self.init == "torch":
            bound = 1.0 / math.sqrt(self.hidden_size)
            for weight in self.parameters():
                nn.init.uniform_(weight, -bound, bound)
            return
        with torch.no_grad():
            for name, weight in self.named_parameters():
                if name.startswith("bias"):
                    weight.zero_()
                elif name.startswith("weight_ih"):
                    weight.copy_(nn.init.xavier_uniform_(torch.empty(weight.shape[1], weight.shape[0])).T)
                else:
                    weight.copy_(nn.init.orthogonal_(torch.empty(weight.shape[1], weight.shape[0])).T)
        self._keras_bias_init()

    def _keras_bias_init(self) -> None:
        """Hook for Keras-specific bias defaults (LSTM's unit forget bias)."""

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if not self.bias:
            parts.append("bias=False")
        if not self.batch_first:
            parts.append("batch_first=False")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        return ", ".join(parts)

    # Streaming ---------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]:
        """Zeros to start :meth:`step` from: ``(D*L, B, H)`` on the weights' device and dtype (LSTM: the pair
        ``(h, c)``, ``h`` of ``proj_size`` features when projecting), the state ``forward`` starts from when
        given none."""
        _check_positive_int(type(self).__name__, "batch_size", batch_size)
        layers = self.num_layers * self.num_directions
        zeros = self.weight_ih_l0.new_zeros(layers, batch_size, self.output_size)
        if self.state_count == 2:
            return zeros, self.weight_ih_l0.new_zeros(layers, batch_size, self.hidden_size)
        return zeros

    def step(
        self, x_t: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        r"""Advance a stream by one time step: ``x_t`` ``(B, I)`` and ``state`` (:meth:`initial_state`'s shapes,
        zeros when omitted) → ``(output_t (B, H), new state)``. Stepping through a sequence gives ``forward``'s
        outputs and final state. ``reset`` ``(B,)`` bool restarts the streams where it is true from zeros before
        this step (see :meth:`reset_state`). Forward-only: a bidirectional module needs the whole sequence."""
        name = type(self).__name__
        if self.bidirectional:
            raise ValueError(f"{name}.step runs forwards in time; a bidirectional {name} needs the whole sequence")
        if not isinstance(x_t, Tensor) or x_t.dim() != 2:
            got = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ShapeError(f"{name}.step expected one step of shape (batch, {self.input_size}), got {got}")
        if state is None:
            state = self.initial_state(x_t.shape[0])
        if reset is not None:
            state = self.reset_state(state, reset)
        fast = self._single_step(x_t, state)
        if fast is not None:
            return fast
        time_axis = 1 if self.batch_first else 0
        output, state = self(x_t.unsqueeze(time_axis), state)  # (B, 1, H) or (1, B, H)
        return output.squeeze(time_axis), state

    def _single_step(self, x_t: Tensor, state: object) -> tuple[Tensor, Tensor] | None:
        """A fused kernel for one step of the whole stack, ``x_t`` ``(B, I)``, ``state`` ``(L, B, H)`` ->
        ``(output_t (B, H), new state)``, or ``None`` where there is none for these inputs: then the step runs
        through :meth:`forward` and its checks."""
        return None

    def reset_state(self, state: Tensor | tuple[Tensor, Tensor], mask: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``state`` with the streams where ``mask`` ``(B,)`` (bool) is true set back to zeros, the others kept;
        a new state, ``state`` itself is left alone."""
        return reset_rows(type(self).__name__, state, mask, batch_dim=1)

    # ----------------------------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> tuple[Tensor, bool]:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expected a torch.Tensor input, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"{name} expected a floating-point input, got dtype {x.dtype} "
                "(token ids go through an Embedding first)"
            )
        layout = "(batch, time, {})" if self.batch_first else "(time, batch, {})"
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name} expected input of shape {layout.format(self.input_size)} or unbatched "
                f"(time, {self.input_size}), got {tuple(x.shape)}"
            )
        if x.shape[-2 if x.dim() == 2 else (1 if self.batch_first else 0)] == 0:
            raise ShapeError(f"{name} expected at least one time step, got input of shape {tuple(x.shape)}")
        check_matches_weights(name, x, self.weight_ih_l0)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)  # (T, 1, I)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        return x, unbatched

    def _check_state(self, state: Tensor, batch: int, unbatched: bool, x: Tensor, what: str = "h0") -> Tensor:
        name = type(self).__name__
        layers = self.num_layers * self.num_directions
        size = self.hidden_size if what == "c0" else self.output_size
        expected = (layers, size) if unbatched else (layers, batch, size)
        if not isinstance(state, Tensor) or tuple(state.shape) != expected:
            got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            described = "proj_size" if size != self.hidden_size else "hidden_size"
            raise ShapeError(
                f"{name} expected {what} of shape {expected} (num_layers * num_directions, "
                f"{'' if unbatched else 'batch, '}{described}), got {got}"
            )
        if state.dtype != x.dtype and onednn.autocast_bf16(x.dtype) and state.dtype == torch.bfloat16:
            state = state.to(x.dtype)  # h_n of an earlier call under the same autocast: it computes in bf16 anyway
        if state.dtype != x.dtype:
            raise DTypeError(f"{name} expected {what} of dtype {x.dtype} (the input's), got {state.dtype}")
        if state.device != x.device:
            raise ShapeError(f"{name} expected {what} on {x.device} (the input's), got {state.device}")
        return state.unsqueeze(1) if unbatched else state

    def _use_reference(self, x: Tensor, state: tuple[Tensor, ...], weights: tuple[Tensor | None, ...]) -> bool:
        """Whether this layer must run on the reference cells whatever the engine: an empty batch (nothing for a
        kernel to do), or tensors wrapped by ``torch.func`` (``vmap``, ``grad``, ``jacrev``), which have no
        storage for a fused kernel to read."""
        return x.shape[1] == 0 or recompute.is_transformed(x, *state, *weights)

    def _run_direction(
        self, x: Tensor, state: tuple[Tensor, ...], layer: int, direction: int, lengths: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        raise NotImplementedError

    def _run_layers(
        self, x: Tensor, states: tuple[Tensor, ...], lengths: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Every layer and direction, one :meth:`_run_direction` each: time-major ``x`` ``(T, B, I)`` and
        ``states`` ``(D*L, B, H)`` each -> ``(output (T, B, D*H), final states (D*L, B, H) each)``."""
        finals: list[list[Tensor]] = [[] for _ in range(self.state_count)]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                out, final = self._run_direction(
                    layer_input, tuple(s[index] for s in states), layer, direction, lengths
                )
                outputs.append(out)
                for slot, tensor in zip(finals, final):
                    slot.append(tensor)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, tuple(torch.stack(slot, 0) for slot in finals)  # (D*L, B, H) each

    def _forward(
        self, x: Tensor | PackedSequence, states: tuple[Tensor, ...] | None, lengths: Tensor | list | None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, ...]]:
        """Shared forward: ``states`` are the ``h0`` (and ``c0``) tensors, validated here. A ``PackedSequence``
        ``x`` runs as its padded form with its lengths and gives a ``PackedSequence`` output laid out as ``x``."""
        name = type(self).__name__
        packed = x if isinstance(x, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError(f"{name} takes lengths or a PackedSequence input, not both")
            x, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)
        x, unbatched = self._check_input(x)
        steps, batch = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = check_lengths(name, lengths, batch, steps)
            if unbatched:
                raise ShapeError(f"{name} takes lengths only with batched input")
        layers = self.num_layers * self.num_directions
        if states is None:
            sizes = (self.output_size, self.hidden_size)[: self.state_count]
            states = tuple(x.new_zeros(layers, batch, size) for size in sizes)
        else:
            states = tuple(self._check_state(s, batch, unbatched, x, w) for s, w in zip(states, ("h0", "c0")))
        output, final_states = self._run_layers(x, states, lengths)
        if packed is not None:
            return pack_like(output, packed), final_states
        if unbatched:
            return output.squeeze(1), tuple(s.squeeze(1) for s in final_states)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, final_states


def pack_like(output: Tensor, packed: PackedSequence) -> PackedSequence:
    """Time-major ``output`` ``(T, B, F)`` as a ``PackedSequence`` with ``packed``'s layout (batch sizes and
    sort order), the ``PackedSequence`` torch's recurrent modules return for ``packed``::

        data = [output[t, order[i]] for t in range(T) for i in range(batch_sizes[t])]
    """
    batch_sizes = packed.batch_sizes  # (T,) int64 on the CPU
    order = packed.sorted_indices
    if order is None:
        order = torch.arange(output.shape[1])
    order = order.cpu()
    steps = torch.repeat_interleave(torch.arange(batch_sizes.numel()), batch_sizes)  # (N,)
    rows = torch.cat([order[:size] for size in batch_sizes.tolist()])  # (N,)
    data = output[steps.to(output.device), rows.to(output.device)]  # (N, F)
    return PackedSequence(data, batch_sizes, packed.sorted_indices, packed.unsorted_indices)


@functools.cache
def _step_weight_names(num_layers: int) -> tuple[str, ...]:
    """``weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l1, ...``: a forward stack's weights in
    the order :func:`grukit.ops.native.gru_step` takes them."""
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return tuple(f"{kind}_l{layer}" for layer in range(num_layers) for kind in kinds)


def _engine_repr(module: RecurrentBase) -> str:
    if module.engine == "auto":
        return f", engine='auto' (using {module.resolved_engine()!r})"
    return f", engine={module.engine!r}"


class GRU(RecurrentBase):
    r"""Multi-layer gated recurrent unit, a drop-in for ``torch.nn.GRU`` (same parameter names and layout,
    gate order r, z, n) with both candidate forms and variable-length batches.

    For each layer, direction and step (reset-after, the default)::

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    With ``reset_after=False`` (Cho et al. 2014) the candidate is
    ``n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)``. Layer ``l > 0`` reads layer ``l − 1``'s
    output (both directions concatenated), with dropout between layers in training.

    Args:
        input_size: features per step ``I``.
        hidden_size: ``H``.
        num_layers: stacked layers ``L``.
        bias: learn ``b_ih`` and ``b_hh``.
        batch_first: input and output are ``(B, T, ·)`` (the default here, unlike torch) instead of ``(T, B, ·)``.
        dropout: dropout on each layer's output except the last, in training.
        bidirectional: add a reverse direction per layer (``D = 2``).
        reset_after: candidate form (see above).
        init: ``"torch"`` (uniform ±1/√H) or ``"keras"`` (glorot-uniform / orthogonal / zeros).
        engine: ``"auto"`` (default: the fastest installed engine for the input's dtype and device, named in
            ``repr``), ``"onednn"`` (oneDNN's fused GRU, float32 and bfloat16 CPU), ``"native"`` (grukit's fused kernel,
            float32/float64/bfloat16 CPU) or ``"reference"`` (the readable cells); see :mod:`grukit.ops.engines`.
            All give the same results and gradients of every order (the fast engines recompute second
            derivatives through the cells, :mod:`grukit.ops.recompute`); every engine runs from any thread.
            Empty batches and tensors under ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``,
            batched gradients) run on the reference cells.
        device, dtype: where and in which dtype to create the parameters, as ``torch.nn.GRU``'s.

    ``bias``, ``batch_first``, ``bidirectional`` and ``reset_after`` must be bools (``bias="False"`` is refused,
    not read as true). Shape and device mistakes raise :class:`ShapeError` and dtype mistakes
    :class:`DTypeError`, which are also the ``RuntimeError`` / ``ValueError`` torch raises for them.

    Shapes (``batch_first=True``):
        - input ``x``: ``(B, T, I)``, or unbatched ``(T, I)``;
        - ``h0``: ``(D*L, B, H)`` (or ``(D*L, H)`` unbatched), zeros when omitted;
        - ``lengths``: ``(B,)`` integers in ``[1, T]``; steps at ``t >= lengths[b]`` keep the state and
          output zeros, the reverse direction starts at each sequence's last valid step — the result of a
          packed sequence, without packing;
        - output: ``(B, T, D*H)``; ``h_n``: ``(D*L, B, H)``, each sequence's state at its last valid step;
        - a ``PackedSequence`` input instead of ``lengths`` gives a ``PackedSequence`` output, as torch's.
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reset_after: bool = True,
        init: str = "torch",
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.reset_after = check_bool("GRU", "reset_after", reset_after)
        self.engine = engines.check_engine("GRU", engine, engines.GRU_ENGINES)
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, init, device, dtype
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False") + _engine_repr(self)

    def resolved_engine(
        self,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        input_shape: Sequence[int] | None = None,
        training: bool | None = None,
        layer: int = 0,
    ) -> str:
        """The engine that runs this GRU for inputs of ``dtype`` and ``device`` (default: its parameters').

        ``engine="auto"`` chooses per shape on the CPU (:mod:`grukit.ops.autotune`): give ``input_shape``, the
        shape of ``x`` as :meth:`forward` takes it (``(B, T, I)`` with ``batch_first``, ``(T, B, I)`` without,
        ``(T, I)`` unbatched), to see the choice for ``layer``; ``training`` (default: grad mode is on and the
        parameters need gradients) is whether a backward will follow. Without ``input_shape``: the engine
        ``auto`` uses when nothing is known of the shape, the one ``repr`` names."""
        weight = self.weight_ih_l0
        dtype, device = dtype or weight.dtype, device or weight.device
        if input_shape is None:
            return engines.resolve_gru(self.engine, dtype, device, self.reset_after)
        if len(input_shape) not in (2, 3) or input_shape[-1] != self.input_size:
            raise ShapeError(f"GRU expected an input_shape (batch, time, {self.input_size}) or "
                             f"(time, {self.input_size}), got {tuple(input_shape)}")
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"GRU expected layer in [0, {self.num_layers}), got {layer}")
        if len(input_shape) == 2:
            steps, batch = input_shape[0], 1
        elif self.batch_first:
            batch, steps = input_shape[0], input_shape[1]
        else:
            steps, batch = input_shape[0], input_shape[1]
        if training is None:
            training = torch.is_grad_enabled() and weight.requires_grad
        features = self.input_size if layer == 0 else self.num_directions * self.hidden_size
        shape = (int(batch), int(steps), features, self.hidden_size)
        return engines.resolve_gru(self.engine, dtype, device, self.reset_after, shape, training)

    def _run_direction(self, x, state, layer, direction, lengths):
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer, direction)
        tensors = (x, state[0], w_ih, w_hh, b_ih, b_hh)
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        engine = "reference"
        if not self._use_reference(x, state, (w_ih, w_hh, b_ih, b_hh)):
            shape = (x.shape[1], x.shape[0], x.shape[2], self.hidden_size)  # (B, T, I, H) of time-major x
            engine = engines.resolve_gru(self.engine, x.dtype, x.device, self.reset_after, shape, training)
        if engine != "reference":
            out, h_n = engines.gru_direction(
                engine, x, state[0], (w_ih, w_hh, b_ih, b_hh), self.reset_after, lengths, direction == 1
            )
            return out, (h_n,)

        def cell(x_t: Tensor, h: Tensor) -> Tensor:
            return reference.gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, self.reset_after)

        out, h_n = reference.scan(cell, x, state[0], lengths, reverse=direction == 1)
        return out, (h_n,)

    def _run_layers(self, x, states, lengths):
        """The whole stack in as few oneDNN primitives as it allows (:func:`grukit.ops.onednn.gru_layers`: both
        directions of a layer in one, stackable layers in one) where the ``onednn`` engine runs it without
        ``lengths``, inter-layer dropout or ``torch.func`` transforms; else one call per layer and direction."""
        if self.bidirectional or self.num_layers > 1:
            directions = range(self.num_directions)
            weights = [[self.layer_weights(layer, d) for d in directions] for layer in range(self.num_layers)]
            flat = [w for layer in weights for direction in layer for w in direction]
            training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *states, *flat))
            dropout = self.dropout and self.training and self.num_layers > 1
            if lengths is None and not dropout and not self._use_reference(x, states, tuple(flat)):
                shape = (x.shape[1], x.shape[0], x.shape[2], self.hidden_size)  # (B, T, I, H) of time-major x
                if engines.resolve_gru(self.engine, x.dtype, x.device, self.reset_after, shape, training) == "onednn":
                    output, h_n = onednn.gru_layers(x, states[0], weights, self.reset_after)
                    return output, (h_n,)
        return super()._run_layers(x, states, lengths)

    def forward(
        self, x: Tensor | PackedSequence, h0: Tensor | None = None, lengths: Tensor | list | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Returns ``(output, h_n)``; see the class docstring for shapes. A ``PackedSequence`` ``x`` gives a
        ``PackedSequence`` output, as ``torch.nn.GRU``."""
        if lengths is None and isinstance(x, Tensor) and x.dim() == 3 and x.shape[1 if self.batch_first else 0] == 1:
            time_axis, batch = (1, x.shape[0]) if self.batch_first else (0, x.shape[1])  # a single step: serving
            h = x.new_zeros(self.num_layers, batch, self.hidden_size) if h0 is None else h0
            fast = self._single_step(x.select(time_axis, 0), h)
            if fast is not None:
                return fast[0].unsqueeze(time_axis), fast[1]
        output, (h_n,) = self._forward(x, None if h0 is None else (h0,), lengths)
        return output, h_n

    def _single_step(self, x_t: Tensor, state: object) -> tuple[Tensor, Tensor] | None:
        """One step of the whole stack on the native step kernel (:func:`grukit.ops.native.gru_step`: each weight
        read once, in torch's layout, no conversion): ``x_t`` ``(B, I)``, ``state`` ``(L, B, H)`` -> ``(output_t
        (B, H), h_n (L, B, H))``. Taken only for inputs that :meth:`forward` would accept (anything else goes
        there, for its checks and errors), on the CPU in float32 or float64, when no autograd graph is needed
        (grad mode off, or nothing requires grad), no ``torch.func`` transform wraps a tensor and no dropout
        falls between layers; ``engine="reference"`` keeps the cells. Every other engine gives the same step."""
        weight = self.weight_ih_l0
        if (
            self.engine == "reference"
            or self.bidirectional
            or not isinstance(h := state, Tensor)
            or x_t.dtype not in (torch.float32, torch.float64)
            or onednn.wants_bf16(x_t)  # under bf16 autocast a step computes in bf16, as sequences do
            or not x_t.dtype == h.dtype == weight.dtype
            or (self.engine == "onednn" and x_t.dtype != torch.float32)
            or not (x_t.is_cpu and h.is_cpu and weight.is_cpu)
            or x_t.dim() != 2
            or x_t.shape[0] == 0
            or x_t.shape[1] != self.input_size
            or h.shape != (self.num_layers, x_t.shape[0], self.hidden_size)
            or (self.training and self.dropout and self.num_layers > 1)
        ):
            return None
        weights = [getattr(self, name, None) for name in _step_weight_names(self.num_layers)]
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x_t, h, *weights)):
            return None
        if recompute.is_transformed(x_t, h, *weights) or not native.available():
            return None
        return native.gru_step(x_t, h, weights, self.reset_after)

    # Interop -----------------------------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.GRU) -> GRU:
        """A grukit GRU with the configuration and a copy of the weights of a ``torch.nn.GRU``."""
        from grukit.nn import interop

        return interop.from_torch(cls, module, nn.GRU)

    def to_torch(self) -> nn.GRU:
        """A ``torch.nn.GRU`` with this module's weights. Only the reset-after form exists in torch."""
        from grukit.nn import interop

        if not self.reset_after:
            raise ValueError("torch.nn.GRU implements only reset_after=True; this GRU has reset_after=False")
        return interop.to_torch(self, nn.GRU)

    @classmethod
    def from_keras_weights(
        cls, weights: list, reset_after: bool = True, bidirectional: bool = False, **kwargs
    ) -> GRU:
        """Build a GRU from Keras weights: ``[kernel (I, 3H), recurrent_kernel (H, 3H), bias]`` per layer and
        direction (gates z, r, h; bias ``(2, 3H)`` with ``reset_after`` else ``(3H,)``), concatenated in the
        order of ``model.get_weights()`` for stacked ``GRU`` / ``Bidirectional(GRU)`` layers."""
        from grukit.nn import interop

        return interop.from_keras(cls, weights, bidirectional=bidirectional, reset_after=reset_after, **kwargs)

    def to_keras_weights(self) -> list:
        """Keras weights (numpy arrays) in the order :meth:`from_keras_weights` reads."""
        from grukit.nn import interop

        return interop.to_keras(self)


class LSTM(RecurrentBase):
    r"""Multi-layer long short-term memory with ``torch.nn.LSTM``'s parameter layout (gates i, f, g, o)::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    With ``proj_size = P > 0`` (torch's LSTM with projections) ``h_t = W_hr (o_t ⊙ tanh(c_t))`` with
    ``weight_hr_l{k}`` ``(P, H)``: ``h``, the output and ``weight_hh`` ``(4H, P)`` have ``P`` features, ``c``
    keeps ``H``.

    Arguments and shapes as :class:`GRU` (no ``reset_after``); ``init="keras"`` also sets Keras'
    unit forget bias (``b_if = 1``). ``engine``: ``"auto"``/``"torch"`` run torch's own fused LSTM (oneDNN on the
    CPU, cuDNN on CUDA) with these weights, ``"reference"`` the readable cell.
    ``forward(x, state=None, lengths=None)`` with ``state = (h0, c0)``, ``h0`` ``(D*L, B, P or H)``, ``c0``
    ``(D*L, B, H)``, returns ``(output, (h_n, c_n))``.
    """

    gates = 4
    state_count = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        init: str = "torch",
        engine: str = "auto",
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.engine = engines.check_engine("LSTM", engine, engines.LSTM_ENGINES)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"LSTM expected proj_size to be a non-negative integer, got {proj_size!r}")
        if proj_size and isinstance(hidden_size, int) and proj_size >= hidden_size:
            raise ValueError(f"LSTM expected proj_size smaller than hidden_size ({hidden_size}), got {proj_size}")
        self.proj_size = proj_size
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, init, device, dtype
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", proj_size={self.proj_size}" if self.proj_size else "") + _engine_repr(self)

    def resolved_engine(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> str:
        """``"torch"`` (torch's fused LSTM: oneDNN on the CPU, cuDNN on CUDA) unless ``engine="reference"``."""
        return "reference" if self.engine == "reference" else "torch"

    def _keras_bias_init(self) -> None:
        if self.bias:
            with torch.no_grad():
                for name, weight in self.named_parameters():
                    if name.startswith("bias_ih"):
                        weight[self.hidden_size : 2 * self.hidden_size] = 1.0

    def _run_direction(self, x, state, layer, direction, lengths):
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer, direction)
        w_hr = getattr(self, f"weight_hr{self._suffixes(layer)[direction]}", None)
        weights = (w_ih, w_hh, b_ih, b_hh)
        if self.resolved_engine() == "torch" and not self._use_reference(x, state, (*weights, w_hr)):
            return engines.torch_direction("lstm", x, tuple(state), weights, lengths, direction == 1, w_hr)

        def cell(x_t: Tensor, hc: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            h, c = reference.lstm_cell(x_t, hc, w_ih, w_hh, b_ih, b_hh)  # (B, H) each
            return (h if w_hr is None else nn.functional.linear(h, w_hr)), c  # h: (B, P) when projecting

        return reference.scan(cell, x, tuple(state), lengths, reverse=direction == 1)

    def forward(
        self, x: Tensor | PackedSequence, state: tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | list | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise ShapeError(f"LSTM expected state as a pair (h0, c0), got {type(state).__name__}")
        output, (h_n, c_n) = self._forward(x, None if state is None else tuple(state), lengths)
        return output, (h_n, c_n)

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> LSTM:
        """A grukit LSTM with the configuration and weights of a ``torch.nn.LSTM`` (``proj_size`` included)."""
        from grukit.nn import interop

        return interop.from_torch(cls, module, nn.LSTM)

    def to_torch(self) -> nn.LSTM:
        from grukit.nn import interop

        return interop.to_torch(self, nn.LSTM)

    @classmethod
    def from_keras_weights(cls, weights: list, bidirectional: bool = False, **kwargs) -> LSTM:
        """From Keras ``[kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` per layer and direction,
        gates i, f, c, o (the same order as torch's i, f, g, o)."""
        from grukit.nn import interop

        return interop.from_keras(cls, weights, bidirectional=bidirectional, **kwargs)

    def to_keras_weights(self) -> list:
        from grukit.nn import interop

        return interop.to_keras(self)


class MinGRU(RecurrentBase):
    r"""Stacked minGRU (Feng et al. 2024): the gates see only the input, so training can run as a parallel
    scan over time while generation stays a cheap recurrence::

        z_t = σ(W_z x_t + b_z)
        h̃_t = W_h x_t + b_h
        h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    Parameters ``weight_ih_l{k}`` ``(2H, I)`` (z then h̃) and ``bias_ih_l{k}`` ``(2H,)``; no recurrent weights.
    ``forward(x, h0=None, lengths=None) -> (output, h_n)`` with :class:`GRU`'s shapes. ``engine``
    (:mod:`grukit.ops.mingru_scan`): ``"log_space"`` projects every step at once and solves the recurrence
    with the log-space parallel scan; ``"scan"`` projects every step at once and runs the recurrence as one
    fused lerp per step (faster on CPUs); ``"reference"`` is the step-by-step cell; ``"auto"`` picks
    ``"scan"`` on the CPU and ``"log_space"`` elsewhere for sequences, the cell for single steps (generation).
    """

    gates = 2
    recurrent = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        init: str = "torch",
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.engine = engines.check_engine("MinGRU", engine, engines.MINGRU_ENGINES)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, 0.0, False, init, device, dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + _engine_repr(self)

    def resolved_engine(self, steps: int = 2, device: torch.device | None = None) -> str:
        """The engine that runs a sequence of ``steps`` steps on ``device`` (default: the parameters')."""
        if self.engine != "auto":
            return self.engine
        if steps == 1:
            return "reference"
        return "scan" if torch.device(device or self.weight_ih_l0.device).type == "cpu" else "log_space"

    def _run_direction(self, x, state, layer, direction, lengths):
        w, _, b, _ = self.layer_weights(layer, direction)
        engine = self.resolved_engine(x.shape[0], x.device)
        if engine != "reference" and not self._use_reference(x, state, (w, b)):
            out, h_n = mingru_scan.mingru_sequence(x, state[0], w, b, lengths, log_space=engine == "log_space")
            return out, (h_n,)
        cell: Callable[[Tensor, Tensor], Tensor] = lambda x_t, h: reference.mingru_cell(x_t, h, w, b)  # noqa: E731
        out, h_n = reference.scan(cell, x, state[0], lengths)
        return out, (h_n,)

    def forward(
        self, x: Tensor | PackedSequence, h0: Tensor | None = None, lengths: Tensor | list | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        output, (h_n,) = self._forward(x, None if h0 is None else (h0,), lengths)
        return output, h_n
