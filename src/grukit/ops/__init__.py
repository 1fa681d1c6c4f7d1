"""The math: reference cells written from their equations (the oracle) and, beside them, fast kernels."""

from grukit.ops.engines import GRU_ENGINES, LSTM_ENGINES, MINGRU_ENGINES, resolve_gru
from grukit.ops.mingru_scan import mingru_sequence, scan_gated, scan_log_space
from grukit.ops.reference import gru_cell, lstm_cell, mingru_cell, reverse_padded, scan

__all__ = [
    "GRU_ENGINES",
    "LSTM_ENGINES",
    "MINGRU_ENGINES",
    "gru_cell",
    "lstm_cell",
    "mingru_cell",
    "mingru_sequence",
    "resolve_gru",
    "reverse_padded",
    "scan",
    "scan_gated",
    "scan_log_space",
]
