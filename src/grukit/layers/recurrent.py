r"""Keras-style recurrent layers (GRU, LSTM, MinGRU, SimpleRNN, Bidirectional) running on the :mod:`grukit.nn`
modules, so the cell math is :mod:`grukit.ops.reference`'s and any fast engine behind ``grukit.nn`` applies.

Masks follow Keras: a ``(B, T)`` mask (from ``Embedding(mask_zero=True)``, variable-length input, or passed as
``mask=``) marks the real steps; at a masked step the state is kept and the output repeats the previous
step's output (zeros before the first real step), or is zero with ``zero_output_for_mask=True``. Masked steps
may sit anywhere (right or left padding, gaps): the real steps of each sequence are gathered to the front and
run in one call of the module with ``lengths``, which gives exactly the state Keras' step-by-step masking
gives, on the fast engines. ``go_backwards`` reverses the whole padded time axis, mask included, and returns
the outputs in that reversed order, as Keras does.

Weights are laid out as ``torch.nn.GRU``'s; ``get_weights()`` / ``set_weights()`` speak Keras' layout and order
(``kernel (I, G·H)``, ``recurrent_kernel (H, G·H)``, ``bias``), so a Keras layer's weights load directly.
Initializers, regularizers and constraints take Keras' names and objects (:mod:`grukit.layers.initializers`,
:mod:`~grukit.layers.regularizers`, :mod:`~grukit.layers.constraints`) and act on the weights in Keras'
layout, with the gate blocks in torch's order (penalties and Keras' constraints do not depend on that order).
Regularization penalties appear in ``layer.losses`` and in a ``Sequential``'s training loss; constraints are
applied after every optimizer step that updates the layer, as Keras applies them. Where Keras has a single
bias (GRU with ``reset_after=False``, LSTM) the module's ``bias_hh`` is a fixed zero buffer instead of a
parameter: it would only add to ``bias_ih``, and without it the parameter counts equal Keras'.

Dropout, as in Keras (Gal & Ghahramani 2016): ``dropout`` drops input features with one mask per sequence,
shared by all its steps. ``recurrent_dropout`` drops hidden units inside the recurrent product
``W_hh (m ⊙ h_{t-1}) / (1 − p)``; grukit implements it as DropConnect on the columns of ``W_hh``: each
training batch draws ``m`` once and runs the unchanged module with ``W_hh diag(m) / (1 − p)``. That is
exactly the variational mask on ``h`` in the recurrent product, with one mask per batch instead of per
sequence. Its cost is one weight multiply per batch, so nothing falls back to a slow per-step path (Keras'
tensorflow#38236), and in evaluation the weights are untouched, so results equal the no-dropout layer.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim.optimizer import register_optimizer_step_post_hook

from grukit import nn as gnn
from grukit.layers import constraints, initializers, regularizers
from grukit.layers.base import Layer, Shape, as_tensor, check_last_dim, layer_from_config, layer_to_config
from grukit.ops import reference

KERAS_DEFAULTS = {"kernel": "glorot_uniform", "recurrent_kernel": "orthogonal", "bias": "zeros"}  # initializers
_CONSTRAINED: weakref.WeakSet = weakref.WeakSet()
_STEP_HOOK: list = []


def _check_rate(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner} expected {name} in [0, 1), got {value!r}")
    return float(value)


def _constrain_after_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """Optimizer step post-hook: project the weights of every constrained layer this optimizer updates."""
    if not _CONSTRAINED:
        return
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in list(_CONSTRAINED):
        if any(id(p) in stepped for p in layer.parameters()):
            layer.apply_constraints()


def _mask_tensor(owner: str, mask: object, x: Tensor) -> Tensor:
    mask = as_tensor(mask).to(device=x.device, dtype=torch.bool)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        expected = tuple(x.shape[:2])
        raise ValueError(f"{owner} expected a mask of shape (batch, time) {expected}, got {tuple(mask.shape)}")
    return mask


class RecurrentLayer(Layer):
    """Shared by :class:`GRU`, :class:`LSTM` and :class:`MinGRU` (see the module docstring).

    Call: ``layer(x, mask=None, initial_state=None, training=None) -> (output, output_mask)``; ``x`` a tensor,
    numpy array or nested list, cast to the weights' dtype as Keras casts (integers included); ``mask``
    ``(B, T)`` bools; ``initial_state`` one ``(B, units)`` state, or a list of them (LSTM: ``[h, c]``);
    ``training`` overrides the module's mode for dropout.

    Shapes: input ``(B, T, I)`` → output ``(B, T, units)`` with ``return_sequences`` else ``(B, units)`` (the
    output at the last step, as Keras); with ``return_state`` the output is ``(output, h_n)`` (LSTM:
    ``(output, h_n, c_n)``), each state ``(B, units)``. ``stateful`` starts each batch from the previous batch's
    final state (same batch size needed; ``reset_states()`` clears it). ``unroll`` is accepted for Keras
    configs and changes nothing: the results are the same either way.

    Args (Keras' names and defaults):
        units: ``H``, the state size.
        activation, recurrent_activation: ``"tanh"`` and ``"sigmoid"`` only (the fused engines' cell).
        use_bias: learn the biases (``False``: ``[kernel, recurrent_kernel]`` only).
        kernel_initializer, recurrent_initializer, bias_initializer: a name, an initializer object (grukit's
            or Keras') or a callable ``init(shape)``, in Keras' layout.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: ``None``, ``"l1"``, ``"l2"``,
            ``"l1_l2"``, or a regularizer object or callable; penalties in ``layer.losses``.
        kernel_constraint, recurrent_constraint, bias_constraint: ``None``, ``"max_norm"``, ``"non_neg"``,
            ``"unit_norm"``, ``"min_max_norm"``, or a constraint object or callable.
        dropout, recurrent_dropout: rates in ``[0, 1)`` (see the module docstring).
        return_sequences, return_state, go_backwards, stateful, unroll: as described above.
        zero_output_for_mask: output zeros at masked steps instead of repeating the previous output.
        name: the layer's name in ``summary()`` and configs.
    """

    state_count = 1
    gates = 3
    has_recurrent_weights = True

    def __init__(
        self,
        units: int,
        *,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: object = "glorot_uniform",
        recurrent_initializer: object = "orthogonal",
        bias_initializer: object = "zeros",
        kernel_regularizer: object = None,
        recurrent_regularizer: object = None,
        bias_regularizer: object = None,
        kernel_constraint: object = None,
        recurrent_constraint: object = None,
        bias_constraint: object = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        owner = type(self).__name__
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"{owner} expected units to be a positive integer, got {units!r}")
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(
                f"{owner} runs on fused kernels with activation='tanh' and recurrent_activation='sigmoid' "
                f"(Keras' defaults); got activation={activation!r}, recurrent_activation={recurrent_activation!r}"
            )
        self.units = units
        self.use_bias = bool(use_bias)
        self.initializers = {
            "kernel": initializers.get(kernel_initializer),
            "recurrent_kernel": initializers.get(recurrent_initializer),
            "bias": initializers.get(bias_initializer),
        }
        self.regularizers = {
            "kernel": regularizers.get(kernel_regularizer),
            "recurrent_kernel": regularizers.get(recurrent_regularizer),
            "bias": regularizers.get(bias_regularizer),
        }
        self.constraints = {
            "kernel": constraints.get(kernel_constraint),
            "recurrent_kernel": constraints.get(recurrent_constraint),
            "bias": constraints.get(bias_constraint),
        }
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.dropout = _check_rate(owner, "dropout", dropout)
        self.recurrent_dropout = _check_rate(owner, "recurrent_dropout", recurrent_dropout)
        if not self.has_recurrent_weights:
            given = [
                name
                for name, value in (
                    ("recurrent_dropout", recurrent_dropout),
                    ("recurrent_regularizer", recurrent_regularizer),
                    ("recurrent_constraint", recurrent_constraint),
                )
                if value
            ]
            if given:
                raise ValueError(f"{owner} has no recurrent weights, so {given[0]} must be left unset, got {given}")
        self.states: tuple[Tensor, ...] | None = None

    # Weights -----------------------------------------------------------------------------------------------
    def make_module(self, input_size: int) -> nn.Module:
        raise NotImplementedError

    def bias_shape(self) -> tuple[int, ...]:
        """Keras' bias shape: ``(G·H,)``; a reset-after GRU's is ``(2, 3H)`` (input and recurrent biases)."""
        return (self.gates * self.units,)

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """The shapes ``get_weights()`` returns, in Keras' order."""
        gh = self.gates * self.units
        shapes = [(self.input_shape[-1], gh)]
        if self.has_recurrent_weights:
            shapes.append((self.units, gh))
        if self.use_bias:
            shapes.append(self.bias_shape())
        return shapes

    def initial_bias(self) -> Tensor:
        return self.initializers["bias"](self.bias_shape())

    def build(self, input_shape: Shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expected input of shape (batch, time, features), got {tuple(input_shape)}"
            )
        self.module = self.make_module(input_shape[-1])
        super().build(input_shape)
        defaults = all(initializers.is_named(self.initializers[key], name) for key, name in KERAS_DEFAULTS.items())
        # The module already starts as Keras' defaults; anything else is drawn in Keras' layout (except on the
        # meta device, where a model is built only to check shapes).
        if not (defaults and self.keras_bias_default()) and not self.module.weight_ih_l0.is_meta:
            values = [self.initializers["kernel"](self.weight_shapes()[0])]
            if self.has_recurrent_weights:
                values.append(self.initializers["recurrent_kernel"]((self.units, self.gates * self.units)))
            if self.use_bias:
                values.append(self.initial_bias())
            self.set_weights([v.numpy() for v in values])
        if any(self.constraints.values()):
            _CONSTRAINED.add(self)
            if not _STEP_HOOK:
                _STEP_HOOK.append(register_optimizer_step_post_hook(_constrain_after_step))

    def keras_bias_default(self) -> bool:
        """Whether the module's own Keras initialisation already gives the bias Keras would (LSTM: unit forget
        bias)."""
        return True

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise RuntimeError(f"{type(self).__name__} {self.name!r} has no weights yet: {what} needs it built first")

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays in Keras' layout and order (see :meth:`weight_shapes`)."""
        self._require_built("get_weights")
        return self.module.to_keras_weights()

    def torch_weights(self, weights: list[np.ndarray]) -> dict[str, Tensor]:
        """Keras-layout ``weights`` as the module's parameters, by name."""
        return type(self.module).from_keras_weights(list(weights), bias=self.use_bias).state_dict()

    def set_weights(self, weights: list) -> None:
        """Load weights given in Keras' layout and order, e.g. a Keras layer's ``get_weights()``."""
        self._require_built("set_weights")
        expected = self.weight_shapes()
        got = [tuple(np.shape(w)) for w in weights]
        if got != expected:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} expected weights of shapes {expected} (Keras' kernel, "
                f"recurrent kernel, bias), got {got}"
            )
        values = self.torch_weights([np.asarray(w) for w in weights])
        with torch.no_grad():
            for name, parameter in self.module.named_parameters():
                parameter.copy_(values[name])

    def keras_views(self) -> dict[str, Tensor]:
        """The weights in Keras' layout (gate blocks in torch's order), as differentiable views."""
        w_ih, w_hh, b_ih, b_hh = self.module.layer_weights(0, 0)
        views = {"kernel": w_ih.T}
        if w_hh is not None:
            views["recurrent_kernel"] = w_hh.T
        if self.use_bias:
            views["bias"] = torch.stack([b_ih, b_hh]) if len(self.bias_shape()) == 2 else b_ih
        return views

    @property
    def losses(self) -> list[Tensor]:
        """The regularization penalties of the weights, as Keras' ``layer.losses``."""
        if not self.built or not any(self.regularizers.values()):
            return []
        views = self.keras_views()
        return [penalty(views[key]) for key, penalty in self.regularizers.items() if penalty and key in views]

    def apply_constraints(self) -> None:
        """Project the weights with the layer's constraints (called after each optimizer step)."""
        w_ih, w_hh, b_ih, b_hh = self.module.layer_weights(0, 0)
        with torch.no_grad():
            views = self.keras_views()
            for key, constraint in self.constraints.items():
                if constraint is None or key not in views:
                    continue
                value = constraint(views[key])
                if key == "kernel":
                    w_ih.copy_(value.T)
                elif key == "recurrent_kernel":
                    w_hh.copy_(value.T)
                elif value.dim() == 2:
                    b_ih.copy_(value[0])
                    b_hh.copy_(value[1])
                else:
                    b_ih.copy_(value)

    # Running -----------------------------------------------------------------------------------------------
    def reset_states(self) -> None:
        """Forget the carried state of a ``stateful`` layer (the next batch starts from zeros)."""
        self.states = None

    reset_state = reset_states

    def _run(self, x: Tensor, initial: tuple[Tensor, ...] | None, lengths: Tensor | None, training: bool):
        """The module on ``x`` with ``W_hh`` DropConnect in training (see the module docstring); returns the
        ``(B, T, H)`` output and the final states, ``(B, H)`` each."""
        state = None
        if initial is not None:
            state = initial[0].unsqueeze(0) if self.state_count == 1 else tuple(s.unsqueeze(0) for s in initial)
        args = (x, state, lengths)
        if self.recurrent_dropout and training:
            w_hh = gnn.drop_connect(self.module.weight_hh_l0, self.recurrent_dropout, columns=True)  # (G*H, H)
            output, final = functional_call(self.module, {"weight_hh_l0": w_hh}, args, strict=False)
        else:
            output, final = self.module(*args)  # (B, T, H); (1, B, H) or a pair of them
        final = (final,) if self.state_count == 1 else tuple(final)
        return output, tuple(s[0] for s in final)

    def _run_masked(self, x: Tensor, mask: Tensor, initial: tuple[Tensor, ...] | None, training: bool):
        """Keras' masked recurrence (see the module docstring) on ``x`` already in processing order."""
        batch, steps = mask.shape
        lengths = mask.sum(1)  # (B,)
        right_padded = bool((mask == (torch.arange(steps, device=mask.device) < lengths.unsqueeze(1))).all())
        if not right_padded:
            order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # (B, T) real steps first, in order
            x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        compact, final = self._run(x, initial, lengths.clamp_min(1), training)  # (B, T, H): k-th real step's output
        empty = lengths == 0
        if bool(empty.any()):
            start = initial or tuple(x.new_zeros(batch, self.units) for _ in final)
            final = tuple(torch.where(empty.unsqueeze(1), s0, s) for s0, s in zip(start, final))
            compact = compact.masked_fill(empty.view(batch, 1, 1), 0.0)
        if right_padded:
            # Real steps are already in place; padding repeats the last output (zeros for an empty sequence).
            if self.zero_output_for_mask:
                return compact, final  # the module outputs zeros past each length
            last = compact.gather(1, (lengths - 1).clamp_min(0).view(batch, 1, 1).expand(-1, 1, compact.shape[-1]))
            return torch.where(mask.unsqueeze(-1), compact, last), final  # (B, T, H)
        seen = mask.cumsum(1)  # (B, T) real steps so far
        index = (seen - 1).clamp_min(0).unsqueeze(-1).expand(-1, -1, compact.shape[-1])
        output = compact.gather(1, index)  # the latest real step's output at every step
        keep = mask if self.zero_output_for_mask else seen > 0
        return output.masked_fill(~keep.unsqueeze(-1), 0.0), final

    def _initial_state(self, initial_state: object, x: Tensor) -> tuple[Tensor, ...] | None:
        owner = type(self).__name__
        if initial_state is None:
            if self.stateful and self.states is not None:
                if self.states[0].shape[0] != x.shape[0]:
                    raise ValueError(
                        f"stateful {owner} holds states for batches of {self.states[0].shape[0]}, "
                        f"got a batch of {x.shape[0]}; keep the batch size fixed or call reset_states()"
                    )
                return self.states
            return None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        states = [as_tensor(s).to(device=x.device, dtype=x.dtype) for s in states]
        expected = (x.shape[0], self.units)
        if len(states) != self.state_count or any(tuple(s.shape) != expected for s in states):
            raise ValueError(
                f"{owner} expected initial_state as {self.state_count} tensor(s) of shape {expected} "
                f"(batch, units), got {[tuple(s.shape) for s in states]}"
            )
        return tuple(states)

    def forward(self, x: object, mask: object = None, initial_state: object = None, training: bool | None = None):
        """Build on first call, cast ``x`` as Keras does, then :meth:`call`."""
        x = as_tensor(x)
        if not self.built:
            self.build((None, *x.shape[1:]))
        weight = self.module.weight_ih_l0
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(weight.device.type):
            x = x.to(weight.dtype)
        return self.call(x.to(weight.device), mask, initial_state, training)

    def call(self, x: Tensor, mask: Tensor | None = None, initial_state: object = None, training: bool | None = None):
        check_last_dim(self, x)
        training = self.training if training is None else bool(training)
        if mask is not None:
            mask = _mask_tensor(type(self).__name__, mask, x)
        if self.dropout and training:
            keep = 1.0 - self.dropout
            x = x * torch.bernoulli(x.new_full((x.shape[0], 1, x.shape[-1]), keep)) / keep  # one mask per sequence
        initial = self._initial_state(initial_state, x)
        steps_mask = None if mask is None or bool(mask.all()) else mask
        if self.go_backwards:
            x = x.flip(1)  # Keras reverses the whole padded axis
            steps_mask = None if steps_mask is None else steps_mask.flip(1)
        if steps_mask is None:
            output, final = self._run(x, initial, None, training)
            last = final[0]
        else:
            output, final = self._run_masked(x, steps_mask, initial, training)
            last = output[:, -1]  # Keras' last output: zeros when it is masked and zero_output_for_mask
        if self.stateful:
            self.states = tuple(s.detach() for s in final)
        result = output if self.return_sequences else last
        out_mask = mask if self.return_sequences else None
        if self.return_state:
            return (result, *final), out_mask
        return result, out_mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.return_sequences:
            output = (input_shape[0], input_shape[1], self.units)
        else:
            output = (input_shape[0], self.units)
        if self.return_state:
            return (output, *[(input_shape[0], self.units)] * self.state_count)
        return output

    def get_config(self) -> dict:
        config = {
            **super().get_config(),
            "units": self.units,
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
            "use_bias": self.use_bias,
            **{f"{key}_initializer": initializers.serialize(v) for key, v in self.initializers.items()},
            **{f"{key}_regularizer": regularizers.serialize(v) for key, v in self.regularizers.items()},
            **{f"{key}_constraint": constraints.serialize(v) for key, v in self.constraints.items()},
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        }
        config = {key.replace("recurrent_kernel_", "recurrent_"): value for key, value in config.items()}
        if not self.has_recurrent_weights:
            config = {k: v for k, v in config.items() if "activation" not in k and not k.startswith("recurrent_")}
        return config

    @classmethod
    def from_config(cls, config: dict) -> RecurrentLayer:
        """The layer a config describes; Keras' legacy ``implementation`` key is dropped, as Keras drops it."""
        config = {key: value for key, value in config.items() if key != "implementation"}
        return cls(**config)

    def extra_repr(self) -> str:
        defaults = type(self)(self.units).get_config()
        shown = {k: v for k, v in self.get_config().items() if k != "name" and (k == "units" or defaults.get(k) != v)}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def _drop_recurrent_bias(module: nn.Module) -> nn.Module:
    """Where Keras has one bias per gate, turn ``bias_hh_l0`` (which only adds to ``bias_ih_l0``) into a fixed
    zero buffer: no longer a parameter, while every engine still finds the tensor it expects."""
    if not module.bias:
        return module
    zeros = torch.zeros_like(module.bias_hh_l0)
    del module.bias_hh_l0
    module.register_buffer("bias_hh_l0", zeros, persistent=False)
    return module


class GRU(RecurrentLayer):
    r"""Keras' ``GRU`` on :class:`grukit.nn.GRU`. Reset-after (default, as Keras and cuDNN)::

        z_t = σ(W_z x_t + U_z h_{t-1} + b_z),  r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
        n_t = tanh(W_n x_t + b_n + r_t ⊙ (U_n h_{t-1} + b'_n)),  h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    ``reset_after=False``: ``n_t = tanh(W_n x_t + U_n (r_t ⊙ h_{t-1}) + b_n)`` with a single bias.
    Parameters: ``3 (I H + H H + 2H)`` with reset-after, ``3 (I H + H H + H)`` without, ``3 (I H + H H)`` with
    ``use_bias=False`` (Keras' counts). Keras weights: ``kernel (I, 3H)``, ``recurrent_kernel (H, 3H)`` (gates
    z, r, h) and ``bias`` ``(2, 3H)`` with reset-after else ``(3H,)``.
    See :class:`RecurrentLayer` for the other arguments, the call and the shapes.
    """

    def __init__(self, units: int, *, reset_after: bool = True, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def make_module(self, input_size: int) -> nn.Module:
        module = gnn.GRU(input_size, self.units, bias=self.use_bias, reset_after=self.reset_after, init="keras")
        return module if self.reset_after else _drop_recurrent_bias(module)

    def torch_weights(self, weights: list[np.ndarray]) -> dict[str, Tensor]:
        converted = gnn.GRU.from_keras_weights(weights, reset_after=self.reset_after, bias=self.use_bias)
        return converted.state_dict()

    def get_config(self) -> dict:
        return {**super().get_config(), "reset_after": self.reset_after}


class LSTM(RecurrentLayer):
    r"""Keras' ``LSTM`` on :class:`grukit.nn.LSTM` (gates i, f, c, o)::

        c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_c x_t + U_c h_{t-1} + b_c),  h_t = o_t ⊙ tanh(c_t)

    One bias per gate: ``4 (I H + H H + H)`` parameters, as Keras. ``unit_forget_bias`` (default, as Keras) starts
    the forget bias at 1 whatever ``bias_initializer`` says. ``return_state`` gives ``(output, h_n, c_n)``;
    ``initial_state`` is ``[h_0, c_0]``.
    """

    state_count = 2
    gates = 4

    def __init__(self, units: int, *, unit_forget_bias: bool = True, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def make_module(self, input_size: int) -> nn.Module:
        return _drop_recurrent_bias(gnn.LSTM(input_size, self.units, bias=self.use_bias, init="keras"))

    def keras_bias_default(self) -> bool:
        return self.unit_forget_bias

    def initial_bias(self) -> Tensor:
        bias = self.initializers["bias"]
        if not self.unit_forget_bias:
            return bias((4 * self.units,))
        units = self.units
        return torch.cat([bias((units,)), torch.ones(units), bias((2 * units,))])  # i, f = 1, c and o

    def get_config(self) -> dict:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class MinGRU(RecurrentLayer):
    r"""minGRU (Feng et al. 2024) on :class:`grukit.nn.MinGRU`: the gates read only the input::

        z_t = σ(W_z x_t + b_z),  h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ (W_h x_t + b_h)

    ``2 (I H + H)`` parameters; no recurrent weights, hence no ``recurrent_*`` arguments. Weights (no Keras
    counterpart, same conventions): ``kernel (I, 2H)`` (z then h̃) and ``bias (2H,)``.
    """

    gates = 2
    has_recurrent_weights = False

    def make_module(self, input_size: int) -> nn.Module:
        return gnn.MinGRU(input_size, self.units, bias=self.use_bias, init="keras")

    def get_weights(self) -> list[np.ndarray]:
        self._require_built("get_weights")
        return [view.detach().cpu().numpy().copy() for view in self.keras_views().values()]

    def torch_weights(self, weights: list[np.ndarray]) -> dict[str, Tensor]:
        values = {"weight_ih_l0": torch.as_tensor(weights[0]).T}
        if self.use_bias:
            values["bias_ih_l0"] = torch.as_tensor(weights[1])
        return values


class SimpleRNNModule(nn.Module):
    r"""The Elman recurrence ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1})`` with :class:`grukit.nn.GRU`'s call:
    ``forward(x (B, T, I), h0 (1, B, H) = None, lengths (B,) = None) -> (output (B, T, H), h_n (1, B, H))``, steps
    past ``lengths[b]`` keeping the state and outputting zeros. Runs :func:`grukit.ops.reference.scan`.
    Initialised as Keras: glorot-uniform ``W_ih``, orthogonal ``W_hh``, zero bias."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.hidden_size, self.bias = hidden_size, bias
        self.weight_ih_l0 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(input_size, hidden_size)).T.contiguous())
        self.weight_hh_l0 = nn.Parameter(nn.init.orthogonal_(torch.empty(hidden_size, hidden_size)).T.contiguous())
        self.bias_ih_l0 = nn.Parameter(torch.zeros(hidden_size)) if bias else None

    def layer_weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor | None, None]:
        return self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, None

    def forward(self, x: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        state = x.new_zeros(x.shape[0], self.hidden_size) if h0 is None else h0[0]  # (B, H)

        def cell(x_t: Tensor, h: Tensor) -> Tensor:
            return torch.tanh(nn.functional.linear(x_t, self.weight_ih_l0, self.bias_ih_l0) + h @ self.weight_hh_l0.T)

        lengths = None if lengths is None else lengths.to(x.device)
        output, h_n = reference.scan(cell, x.transpose(0, 1), state, lengths)  # (T, B, H), (B, H)
        return output.transpose(0, 1), h_n.unsqueeze(0)


class SimpleRNN(RecurrentLayer):
    r"""Keras' ``SimpleRNN``: ``h_t = tanh(W x_t + U h_{t-1} + b)``, ``I H + H H + H`` parameters, Keras weights
    ``kernel (I, H)``, ``recurrent_kernel (H, H)``, ``bias (H,)``. A step-by-step reference recurrence (no
    fused engine): for Keras models that use it, and as Keras' baseline. See :class:`RecurrentLayer`."""

    gates = 1

    def make_module(self, input_size: int) -> nn.Module:
        return SimpleRNNModule(input_size, self.units, bias=self.use_bias)

    def get_weights(self) -> list[np.ndarray]:
        self._require_built("get_weights")
        return [view.detach().cpu().numpy().copy() for view in self.keras_views().values()]

    def torch_weights(self, weights: list[np.ndarray]) -> dict[str, Tensor]:
        values = {"weight_ih_l0": torch.as_tensor(weights[0]).T, "weight_hh_l0": torch.as_tensor(weights[1]).T}
        if self.use_bias:
            values["bias_ih_l0"] = torch.as_tensor(weights[2])
        return values


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    r"""Run ``layer`` forwards and a copy of it backwards, then merge: ``concat`` (``2·units`` features), ``sum``,
    ``mul``, ``ave``, or ``None`` (the pair), as Keras' ``Bidirectional``.

    ``backward_layer`` replaces the copy (it must read the other way, with the same ``return_sequences``,
    ``return_state`` and ``stateful``). With ``return_sequences`` the backward outputs are flipped back into
    time order before merging, and both halves output zeros at masked steps (Keras sets
    ``zero_output_for_mask`` on both). ``return_state`` appends the forward then the backward final states;
    ``initial_state`` takes them in that order. ``get_weights()`` is the forward then the backward weights.
    """

    def __init__(
        self,
        layer: RecurrentLayer,
        merge_mode: str | None = "concat",
        backward_layer: RecurrentLayer | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(layer, RecurrentLayer):
            raise TypeError(
                f"Bidirectional expected a GRU, LSTM, MinGRU or SimpleRNN layer, got {type(layer).__name__}"
            )
        if backward_layer is not None and not isinstance(backward_layer, RecurrentLayer):
            raise TypeError(
                f"Bidirectional expected backward_layer to be a GRU, LSTM, MinGRU or SimpleRNN layer, got "
                f"{type(backward_layer).__name__}"
            )
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Bidirectional expected merge_mode in {MERGE_MODES}, got {merge_mode!r}")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        self.custom_backward = backward_layer is not None
        if backward_layer is None:
            config = layer.get_config()
            config.update(go_backwards=not layer.go_backwards, name=f"backward_{layer.name}")
            backward_layer = type(layer).from_config(config)
        if backward_layer.go_backwards == layer.go_backwards:
            raise ValueError(
                f"Bidirectional expected the forward and backward layers to read opposite ways, got go_backwards="
                f"{layer.go_backwards} for both"
            )
        for attribute in ("stateful", "return_sequences", "return_state"):
            ours, theirs = getattr(layer, attribute), getattr(backward_layer, attribute)
            if ours != theirs:
                raise ValueError(
                    f"Bidirectional expected the forward and backward layers to have the same {attribute}, got "
                    f"{ours} and {theirs}"
                )
        self.backward_layer = backward_layer
        for half in (self.forward_layer, self.backward_layer):
            half.zero_output_for_mask = half.return_sequences

    @property
    def return_sequences(self) -> bool:
        return self.forward_layer.return_sequences

    @property
    def return_state(self) -> bool:
        return self.forward_layer.return_state

    @property
    def stateful(self) -> bool:
        return self.forward_layer.stateful

    def build(self, input_shape: Shape) -> None:
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)
        super().build(input_shape)

    def reset_states(self) -> None:
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    reset_state = reset_states

    def get_weights(self) -> list[np.ndarray]:
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: list) -> None:
        half = len(self.forward_layer.weight_shapes()) if self.built else len(weights) // 2
        self.forward_layer.set_weights(weights[:half])
        self.backward_layer.set_weights(weights[half:])

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

    def forward(self, x: object, mask: object = None, initial_state: object = None, training: bool | None = None):
        x = as_tensor(x)
        if not self.built:
            self.build((None, *x.shape[1:]))
        weight = self.forward_layer.module.weight_ih_l0
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(weight.device.type):
            x = x.to(weight.dtype)
        return self.call(x.to(weight.device), mask, initial_state, training)

    def call(self, x: Tensor, mask: Tensor | None = None, initial_state: object = None, training: bool | None = None):
        forward_state = backward_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = list(initial_state[:half]), list(initial_state[half:])
        forward, out_mask = self.forward_layer.call(x, mask, forward_state, training)
        backward, _ = self.backward_layer.call(x, mask, backward_state, training)
        states: tuple = ()
        if self.return_state:
            forward, *forward_states = forward
            backward, *backward_states = backward
            states = (*forward_states, *backward_states)
        if self.return_sequences:
            backward = backward.flip(1)  # back to time order
        merged = self._merge(forward, backward)
        if states:
            merged = (*merged, *states) if self.merge_mode is None else (merged, *states)
        return merged, out_mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = self.forward_layer.compute_output_shape(input_shape)
        states: tuple = ()
        if self.return_state:
            shape, *states = shape
        if self.merge_mode == "concat":
            shape = (*shape[:-1], 2 * shape[-1])
        outputs = (shape, shape) if self.merge_mode is None else (shape,)
        if self.merge_mode is None or states:
            return (*outputs, *states, *states)
        return shape

    def get_config(self) -> dict:
        config = {**super().get_config(), "layer": layer_to_config(self.forward_layer), "merge_mode": self.merge_mode}
        if self.custom_backward:
            config["backward_layer"] = layer_to_config(self.backward_layer)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Bidirectional:
        config["layer"] = layer_from_config(config["layer"])
        if config.get("backward_layer") is not None:
            config["backward_layer"] = layer_from_config(config["backward_layer"])
        return cls(**config)
