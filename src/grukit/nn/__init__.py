"""``torch.nn`` modules: recurrent layers and cells with torch's parameter layout, and weight interop."""

from grukit.nn.cell import GRUCell, LSTMCell
from grukit.nn.dropconnect import drop_connect
from grukit.nn.recurrent import GRU, LSTM, DTypeError, MinGRU, ShapeError

__all__ = ["DTypeError", "GRU", "GRUCell", "LSTM", "LSTMCell", "MinGRU", "ShapeError", "drop_connect"]
