"""``torch.nn`` modules: recurrent layers and cells with torch's parameter layout, and weight interop."""

from grukit.nn.cell import GRUCell, LSTMCell
from grukit.nn.dropconnect import drop_connect
from grukit.nn.quantized import QuantizedGRU, QuantizedLinear, quantize_int8
from grukit.nn.recurrent import GRU, LSTM, DTypeError, MinGRU, ShapeError

__all__ = ["DTypeError", "GRU", "GRUCell", "LSTM", "LSTMCell", "MinGRU", "QuantizedGRU", "QuantizedLinear",
           "ShapeError", "drop_connect", "quantize_int8"]
