"""grukit: develop, train, fine-tune and run GRU models from scratch.

The estimators and the Keras-style ``Sequential`` are reachable from the top (``from grukit import
TextClassifier``); they are imported on first use, so ``import grukit`` stays light.
"""

from __future__ import annotations

import importlib

from grukit.saved import load
from grukit.train.checkpoint import seed_everything

__version__ = "0.1.0"

_LAZY = {
    "Sequential": "grukit.models",
    "GRULanguageModel": "grukit.lm",
    "Forecaster": "grukit.tasks",
    "SequenceClassifier": "grukit.tasks",
    "SequenceTagger": "grukit.tasks",
    "TextClassifier": "grukit.tasks",
    "Translator": "grukit.tasks",
    "VideoClassifier": "grukit.tasks",
}

__all__ = ["__version__", "load", "seed_everything", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grukit' has no attribute {name!r}")
