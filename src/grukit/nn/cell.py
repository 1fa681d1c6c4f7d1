"""Single-step cells with ``torch.nn.GRUCell`` / ``torch.nn.LSTMCell``'s parameter names and layout."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from grukit.nn.recurrent import DTypeError, ShapeError, check_bool, check_matches_weights, factory
from grukit.ops import reference


def _check_size(owner: str, name: str, value: object) -> int:
    # Zero is allowed, as torch's cells allow it: a zero-width hidden state or input is an empty matrix.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner} expected {name} to be a non-negative integer, got {value!r}")
    return value


class _CellBase(nn.Module):
    gates: int

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = _check_size(name, "input_size", input_size)
        self.hidden_size = _check_size(name, "hidden_size", hidden_size)
        self.bias = check_bool(name, "bias", bias)
        options = factory(device, dtype)
        gh = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size, **options))
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size, **options))
        self.bias_ih = nn.Parameter(torch.empty(gh, **options)) if self.bias else None
        self.bias_hh = nn.Parameter(torch.empty(gh, **options)) if self.bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/√H, as torch's cells (no weights to draw when ``H = 0``)."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _check(self, x: Tensor, state: Tensor | None, what: str) -> tuple[Tensor, Tensor | None, bool]:
        name = type(self).__name__
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{name} expected a floating-point tensor input, got {got}")
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name} expected input of shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(x.shape)}"
            )
        check_matches_weights(name, x, self.weight_ih)
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        if state is not None:
            if not isinstance(state, Tensor) or state.dtype != x.dtype:
                got = state.dtype if isinstance(state, Tensor) else type(state).__name__
                raise DTypeError(f"{name} expected {what} as a tensor of dtype {x.dtype} (the input's), got {got}")
            if state.device != x.device:
                raise ShapeError(f"{name} expected {what} on {x.device} (the input's), got {state.device}")
            expected = (x.shape[0], self.hidden_size)
            if tuple(state.shape) != (expected[1:] if unbatched else expected):
                raise ShapeError(
                    f"{name} expected {what} of shape {expected[1:] if unbatched else expected}, "
                    f"got {tuple(state.shape)}"
                )
            if unbatched:
                state = state.unsqueeze(0)
        return x, state, unbatched


class GRUCell(_CellBase):
    r"""One GRU step; see :func:`grukit.ops.reference.gru_cell` for the equations.

    Args:
        input_size: ``I``; hidden_size: ``H``; bias: learn ``b_ih`` / ``b_hh``;
        reset_after: ``True`` for PyTorch / cuDNN / Keras-default form, ``False`` for Cho et al. (2014);
        device, dtype: where and in which dtype to create the parameters, as ``torch.nn.GRUCell``'s.
    Sizes may be zero and batches empty, as torch's cells allow; shape mistakes raise
    :class:`grukit.nn.ShapeError` (also a ``RuntimeError``, as torch's), dtype mistakes
    :class:`grukit.nn.DTypeError`.

    Shapes: ``x`` ``(B, I)`` or ``(I,)``; ``h`` ``(B, H)`` or ``(H,)``, zeros when omitted;
    returns ``h'`` of ``h``'s shape.
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.reset_after = check_bool("GRUCell", "reset_after", reset_after)
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        x, h, unbatched = self._check(x, h, "h")
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        h_new = reference.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.reset_after)
        return h_new.squeeze(0) if unbatched else h_new


class LSTMCell(_CellBase):
    r"""One LSTM step (gates i, f, g, o); see :func:`grukit.ops.reference.lstm_cell`.

    Shapes: ``x`` ``(B, I)``; ``state = (h, c)``, each ``(B, H)``; returns ``(h', c')``.
    """

    gates = 4

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise ShapeError(f"LSTMCell expected state as a pair (h, c), got {type(state).__name__}")
        h, c = (None, None) if state is None else state
        x, h, unbatched = self._check(x, h, "h")
        _, c, _ = self._check(x.squeeze(0) if unbatched else x, c, "c")
        if h is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        h_new, c_new = reference.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h_new.squeeze(0), c_new.squeeze(0)) if unbatched else (h_new, c_new)
