"""Open any saved grukit model folder: ``grukit.load(folder)``.

Every model and estimator saves through :func:`grukit.train.checkpoint.save_checkpoint` into one folder format
(``config.json``, ``model.safetensors``, ``manifest.json`` and any tokenizer or vocabulary files), and names its
class in ``config.json`` as ``"architecture": "grukit.<ClassName>"``. :func:`load` reads that name and hands the
folder to the class's ``from_pretrained``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from grukit.train.checkpoint import CheckpointError, read_config

# architecture id -> "module:Class"; each class has ``from_pretrained(path)``.
ARCHITECTURES = {
    "grukit.Sequential": "grukit.models.sequential:Sequential",
    "grukit.GRULanguageModel": "grukit.lm.model:GRULanguageModel",
    "grukit.GRUClassifier": "grukit.lm.classifier:GRUClassifier",
    "grukit.TextClassifier": "grukit.tasks.text:TextClassifier",
    "grukit.SequenceTagger": "grukit.tasks.tagging:SequenceTagger",
    "grukit.Translator": "grukit.tasks.translation:Translator",
    "grukit.Forecaster": "grukit.tasks.forecasting:Forecaster",
    "grukit.SequenceClassifier": "grukit.tasks.sequence:SequenceClassifier",
    "grukit.VideoClassifier": "grukit.tasks.video:VideoClassifier",
}
# Ids that earlier versions wrote, still read.
OLD_ARCHITECTURES = {
    "grukit-gru-lm": "grukit.GRULanguageModel",
    "grukit-gru-classifier": "grukit.GRUClassifier",
}


def load(path: str | os.PathLike) -> Any:
    """The model or estimator saved in the folder ``path``, whatever its kind (read from its ``config.json``).

    Raises :class:`CheckpointError` when ``path`` is missing, is not a grukit checkpoint folder, or holds a kind
    of model grukit does not know, and :class:`TypeError` when ``path`` is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"grukit.load expected the path of a saved model folder (a str or Path), got {type(path).__name__}"
        )
    architecture = read_config(path).get("architecture")
    known = OLD_ARCHITECTURES.get(architecture, architecture) if isinstance(architecture, str) else None
    if known not in ARCHITECTURES:
        raise CheckpointError(
            f"{os.fspath(path)!r} holds a {architecture!r} model, which grukit cannot open; "
            f"expected one of {sorted(ARCHITECTURES)}"
        )
    module_name, class_name = ARCHITECTURES[known].split(":")
    return getattr(importlib.import_module(module_name), class_name).from_pretrained(path)
