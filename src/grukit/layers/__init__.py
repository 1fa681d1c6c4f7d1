"""Keras-style layers: configuration up front, weights built from the input shape on first call, padding
masks carried from ``Embedding(mask_zero=True)`` to the recurrent layers, the loss and the metrics.
Weight options take Keras' names and objects: :mod:`~grukit.layers.initializers`,
:mod:`~grukit.layers.regularizers`, :mod:`~grukit.layers.constraints`."""

from grukit.layers import constraints, initializers, regularizers
from grukit.layers.base import Layer
from grukit.layers.core import (
    Dense,
    Dropout,
    Embedding,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    TimeDistributed,
)
from grukit.layers.recurrent import GRU, LSTM, Bidirectional, MinGRU, SimpleRNN

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
    "SimpleRNN",
    "TimeDistributed",
    "constraints",
    "initializers",
    "regularizers",
]
