r"""Keras-style recurrent layers (GRU, LSTM, MinGRU, Bidirectional) running on the :mod:`grukit.nn` modules,
so the cell math is :mod:`grukit.ops.reference`'s and any fast engine behind ``grukit.nn`` applies.

Masks: a ``(B, T)`` mask (from ``Embedding(mask_zero=True)`` or variable-length input) becomes
``lengths = mask.sum(1)`` for the module; grukit supports right-padded masks (real steps first), which is
what padding produces. Outputs at padded steps are zeros and the final state is each sequence's state at
its last real step, as Keras gives.

Weights are laid out as ``torch.nn.GRU``'s and initialised as Keras' (glorot-uniform input kernel,
orthogonal recurrent kernel, zero bias; LSTM forget bias 1). Where Keras has a single bias (GRU with
``reset_after=False``, LSTM) the module's ``bias_hh`` is a fixed zero buffer instead of a parameter: it
would only add to ``bias_ih``, and without it the parameter counts equal Keras'.

Dropout, as in Keras (Gal & Ghahramani 2016): ``dropout`` drops input features with one mask per sequence,
shared by all its steps. ``recurrent_dropout`` drops hidden units inside the recurrent product
``W_hh (m ⊙ h_{t-1}) / (1 − p)``; grukit implements it as DropConnect on the columns of ``W_hh``: each
training batch draws ``m`` once and runs the unchanged module with ``W_hh diag(m) / (1 − p)``. That is
exactly the variational mask on ``h`` in the recurrent product, with one mask per batch instead of per
sequence. Its cost is one weight multiply per batch, so nothing falls back to a slow per-step path (Keras'
tensorflow#38236), and in evaluation the weights are untouched, so results equal the no-dropout layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from grukit import nn as gnn
from grukit.layers.base import Layer, Shape, check_last_dim, layer_from_config, layer_to_config
from grukit.ops.reference import reverse_padded
from grukit.text import sequences


def _lengths_or_none(owner: str, mask: Tensor | None) -> Tensor | None:
    """``(B, T)`` right-padded mask → ``(B,)`` lengths (``None`` when nothing is padded). An all-padding
    sequence gets length 1; its outputs stay masked out downstream."""
    if mask is None or bool(mask.all()):
        return None
    return sequences.mask_to_lengths(mask, owner).clamp_min(1)


def _check_rate(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner} expected {name} in [0, 1), got {value!r}")
    return float(value)


class RecurrentLayer(Layer):
    """Shared by :class:`GRU`, :class:`LSTM` and :class:`MinGRU` (see the module docstring).

    Shapes: input ``(B, T, I)`` → output ``(B, T, units)`` with ``return_sequences`` else ``(B, units)``;
    with ``return_state`` the output is ``(output, h_n)`` (LSTM: ``(output, h_n, c_n)``), each state
    ``(B, units)``. ``go_backwards`` reads each sequence from its last real step to its first and returns
    the outputs in that reversed order, as Keras does. ``stateful`` starts each batch from the previous
    batch's final state (same batch size needed; ``reset_states()`` clears it).
    """

    state_count = 1
    has_recurrent_weights = True

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        owner = type(self).__name__
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"{owner} expected units to be a positive integer, got {units!r}")
        self.units = units
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.dropout = _check_rate(owner, "dropout", dropout)
        self.recurrent_dropout = _check_rate(owner, "recurrent_dropout", recurrent_dropout)
        if self.recurrent_dropout and not self.has_recurrent_weights:
            raise ValueError(
                f"{owner} has no recurrent weights, so recurrent_dropout must be 0, got {recurrent_dropout}"
            )
        self.states: tuple[Tensor, ...] | None = None

    def make_module(self, input_size: int) -> nn.Module:
        raise NotImplementedError

    def build(self, input_shape: Shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expected input of shape (batch, time, features), got {tuple(input_shape)}"
            )
        self.module = self.make_module(input_shape[-1])
        super().build(input_shape)

    def reset_states(self) -> None:
        self.states = None

    def _run(self, x: Tensor, initial: tuple[Tensor, ...] | None, lengths: Tensor | None):
        """The module on ``x`` with ``W_hh`` DropConnect in training (see the module docstring)."""
        state = None
        if initial is not None:
            state = initial[0] if self.state_count == 1 else initial
        args = (x, state, lengths)
        if not (self.recurrent_dropout and self.training):
            return self.module(*args)
        w_hh = gnn.drop_connect(self.module.weight_hh_l0, self.recurrent_dropout, columns=True)  # (G*H, H)
        return functional_call(self.module, {"weight_hh_l0": w_hh}, args, strict=False)

    def call(self, x: Tensor, mask: Tensor | None = None):
        check_last_dim(self, x)
        batch = x.shape[0]
        lengths = _lengths_or_none(type(self).__name__, mask)
        if self.dropout and self.training:
            keep = 1.0 - self.dropout
            x = x * torch.bernoulli(x.new_full((batch, 1, x.shape[-1]), keep)) / keep  # one mask per sequence
        if self.go_backwards:
            x = reverse_padded(x.transpose(0, 1), lengths).transpose(0, 1)  # (B, T, I), each sequence reversed
        initial = None
        if self.stateful and self.states is not None:
            if self.states[0].shape[0] != batch:
                raise ValueError(
                    f"stateful {type(self).__name__} holds states for batches of {self.states[0].shape[0]}, "
                    f"got a batch of {batch}; keep the batch size fixed or call reset_states()"
                )
            initial = tuple(s.unsqueeze(0) for s in self.states)
        output, final = self._run(x, initial, lengths)  # (B, T, H); (1, B, H) or a pair of them
        final = (final,) if self.state_count == 1 else tuple(final)
        final = tuple(s[0] for s in final)  # (B, H) each
        if self.stateful:
            self.states = tuple(s.detach() for s in final)
        result = output if self.return_sequences else final[0]
        out_mask = mask if self.return_sequences else None
        if self.return_state:
            return (result, *final), out_mask
        return result, out_mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
        }


def _drop_recurrent_bias(module: nn.Module) -> nn.Module:
    """Where Keras has one bias per gate, turn ``bias_hh_l0`` (which only adds to ``bias_ih_l0``) into a fixed
    zero buffer: no longer a parameter, while every engine still finds the tensor it expects."""
    zeros = torch.zeros_like(module.bias_hh_l0)
    del module.bias_hh_l0
    module.register_buffer("bias_hh_l0", zeros, persistent=False)
    return module


class GRU(RecurrentLayer):
    r"""Keras' ``GRU`` on :class:`grukit.nn.GRU`. Reset-after (default, as Keras and cuDNN)::

        z_t = σ(W_z x_t + U_z h_{t-1} + b_z),  r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
        n_t = tanh(W_n x_t + b_n + r_t ⊙ (U_n h_{t-1} + b'_n)),  h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    ``reset_after=False``: ``n_t = tanh(W_n x_t + U_n (r_t ⊙ h_{t-1}) + b_n)`` with a single bias.
    Parameters: ``3 (I H + H H + 2H)`` with reset-after, ``3 (I H + H H + H)`` without (Keras' counts).
    See :class:`RecurrentLayer` for the other arguments and shapes.
    """

    def __init__(self, units: int, *args, reset_after: bool = True, **kwargs) -> None:
        super().__init__(units, *args, **kwargs)
        self.reset_after = bool(reset_after)

    def make_module(self, input_size: int) -> nn.Module:
        module = gnn.GRU(input_size, self.units, reset_after=self.reset_after, init="keras")
        return module if self.reset_after else _drop_recurrent_bias(module)

    def get_config(self) -> dict:
        return {**super().get_config(), "reset_after": self.reset_after}


class LSTM(RecurrentLayer):
    r"""Keras' ``LSTM`` on :class:`grukit.nn.LSTM` (gates i, f, c, o)::

        c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_c x_t + U_c h_{t-1} + b_c),  h_t = o_t ⊙ tanh(c_t)

    One bias per gate (forget bias initialised to 1): ``4 (I H + H H + H)`` parameters, as Keras.
    ``return_state`` gives ``(output, h_n, c_n)``.
    """

    state_count = 2

    def make_module(self, input_size: int) -> nn.Module:
        return _drop_recurrent_bias(gnn.LSTM(input_size, self.units, init="keras"))


class MinGRU(RecurrentLayer):
    r"""minGRU (Feng et al. 2024) on :class:`grukit.nn.MinGRU`: the gates read only the input::

        z_t = σ(W_z x_t + b_z),  h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ (W_h x_t + b_h)

    ``2 (I H + H)`` parameters; no recurrent weights, hence no ``recurrent_dropout``.
    """

    has_recurrent_weights = False

    def make_module(self, input_size: int) -> nn.Module:
        return gnn.MinGRU(input_size, self.units, init="keras")


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    r"""Run ``layer`` forwards and a copy of it backwards (each sequence from its last real step), then
    merge: ``concat`` (``2·units`` features), ``sum``, ``mul``, ``ave``, or ``None`` (the pair).

    With ``return_sequences`` the backward outputs are put back in time order before merging, so step
    ``t`` sees the future of ``t`` through the backward half and its past through the forward half.
    ``return_state`` appends the forward then the backward final states to the output.
    """

    def __init__(self, layer: RecurrentLayer, merge_mode: str | None = "concat", name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(layer, RecurrentLayer):
            raise TypeError(f"Bidirectional expected a GRU, LSTM or MinGRU layer, got {type(layer).__name__}")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Bidirectional expected merge_mode in {MERGE_MODES}, got {merge_mode!r}")
        if layer.stateful:
            raise ValueError("Bidirectional does not support stateful layers")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        config = layer.get_config()
        config.update(go_backwards=not layer.go_backwards, name=f"backward_{layer.name}")
        self.backward_layer = type(layer).from_config(config)

    def build(self, input_shape: Shape) -> None:
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)
        super().build(input_shape)

    def _merge(self, forward: Tensor, backward: Tensor):
        if self.merge_mode == "concat":
            return torch.cat([forward, backward], dim=-1)
        if self.merge_mode == "sum":
            return forward + backward
        if self.merge_mode == "mul":
            return forward * backward
        if self.merge_mode == "ave":
            return (forward + backward) / 2
        return forward, backward

    def call(self, x: Tensor, mask: Tensor | None = None):
        forward, out_mask = self.forward_layer.call(x, mask)
        backward, _ = self.backward_layer.call(x, mask)
        states: tuple = ()
        if self.forward_layer.return_state:
            forward, *forward_states = forward
            backward, *backward_states = backward
            states = (*forward_states, *backward_states)
        if self.forward_layer.return_sequences:
            lengths = _lengths_or_none("Bidirectional", mask)
            backward = reverse_padded(backward.transpose(0, 1), lengths).transpose(0, 1)  # back to time order
        merged = self._merge(forward, backward)
        if states:
            merged = (*merged, *states) if self.merge_mode is None else (merged, *states)
        return merged, out_mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return (*shape[:-1], 2 * shape[-1])
        return shape

    def get_config(self) -> dict:
        return {**super().get_config(), "layer": layer_to_config(self.forward_layer), "merge_mode": self.merge_mode}

    @classmethod
    def from_config(cls, config: dict) -> Bidirectional:
        config["layer"] = layer_from_config(config["layer"])
        return cls(**config)
