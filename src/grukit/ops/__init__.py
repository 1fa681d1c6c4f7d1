"""The math: reference cells written from their equations (the oracle) and, beside them, fast kernels."""

from grukit.ops.reference import gru_cell, lstm_cell, mingru_cell, reverse_padded, scan

__all__ = ["gru_cell", "lstm_cell", "mingru_cell", "reverse_padded", "scan"]
