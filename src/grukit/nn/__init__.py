"""``torch.nn`` modules: recurrent layers and cells with torch's parameter layout, and weight interop."""

from grukit.nn.cell import GRUCell, LSTMCell
from grukit.nn.dropconnect import drop_connect
from grukit.nn.recurrent import GRU, LSTM, MinGRU

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "MinGRU", "drop_connect"]
