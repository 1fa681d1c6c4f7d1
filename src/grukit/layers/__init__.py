"""Keras-style layers: configuration up front, weights built from the input shape on first call, padding
masks carried from ``Embedding(mask_zero=True)`` to the recurrent layers, the loss and the metrics."""

from grukit.layers.base import Layer
from grukit.layers.core import (
    Dense,
    Dropout,
    Embedding,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    TimeDistributed,
)
from grukit.layers.recurrent import GRU, LSTM, Bidirectional, MinGRU

__all__ = [
    "GRU",
    "LSTM",
    "Bidirectional",
    "Dense",
    "Dropout",
    "Embedding",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "Layer",
    "MinGRU",
    "TimeDistributed",
]
