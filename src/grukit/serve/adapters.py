"""One interface over every kind of saved grukit model, for the server: what one input item looks like (for
request validation and the OpenAPI page), how a batch of items is predicted, which requests may share a model
call, and, where the model carries a recurrent state, how a session steps through time.

Every method here runs in the server's single model thread (see :mod:`grukit.serve.batching`), never two at
once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from grukit.lm.classifier import GRUClassifier
from grukit.lm.classifier import predict as classify_ids
from grukit.lm.model import GRULanguageModel
from grukit.models.sequential import Sequential
from grukit.tasks import (
    Forecaster,
    SequenceClassifier,
    SequenceTagger,
    TextClassifier,
    Translator,
    VideoClassifier,
)


class Unsupported(ValueError):
    """The model cannot do what the request asks (sessions on a stateless estimator, predict on a language
    model); answered with status 400."""


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: arrays and numpy scalars become lists and numbers."""
    if isinstance(value, (np.ndarray, Tensor)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def numeric_array(value: Any, where: str) -> np.ndarray:
    """``value`` (nested lists of numbers) as an int64 or float32 array; refuses ragged nesting, strings and
    non-finite numbers, naming ``where``."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(f"{where} must be a rectangular array of numbers; its rows differ in length") from None
    if array.dtype == object:
        raise ValueError(f"{where} must be a rectangular array of numbers; its rows differ in length")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{where} must hold numbers, got values of dtype {array.dtype}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{where} holds NaN or infinite values; expected finite numbers")
        return array.astype(np.float32)
    return array.astype(np.int64)


class Served:
    """The model behind the server. Subclasses set :attr:`item_type` and override what the model can do."""

    item_type: Any = Any
    item_doc = "one input, as the model's predict takes it"
    can_generate = False

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def architecture(self) -> str:
        return f"grukit.{type(self.model).__name__}"

    def batch_key(self, inputs: list) -> Hashable | None:
        """Requests with equal keys may run as one model call; ``None``: run this request alone."""
        return "all"

    def predict(self, inputs: list) -> list:
        """One JSON-ready output per item of ``inputs``."""
        raise Unsupported(f"a {type(self.model).__name__} has no predict; use POST /v1/generate or /v1/sessions")

    # Sessions ----------------------------------------------------------------------------------------------
    def start_state(self) -> Any:
        """The state a new session begins from."""
        raise Unsupported(f"this model ({type(self.model).__name__}) does not support sessions")

    def step(self, state: Any, inputs: Any) -> tuple[list, Any]:
        """Run the steps ``inputs`` from ``state``: ``(one output per step, the new state)``."""
        raise Unsupported(f"this model ({type(self.model).__name__}) does not support sessions")


class EstimatorServed(Served):
    """A grukit estimator: ``predict(X)`` over a list of items, each answered independently of the others."""

    def predict(self, inputs: list) -> list:
        return plain(self.model.predict(inputs))


class TextServed(EstimatorServed):
    item_type = str
    item_doc = "a text"


class TaggerServed(EstimatorServed):
    item_type = Annotated[list[str], Field(min_length=1)]
    item_doc = "a sentence as a list of tokens; the answer is one tag per token"


class SeriesServed(EstimatorServed):
    item_type = list[float] | list[list[float]]
    item_doc = "a series: a list of values (one channel) or of [value per channel] per time step"

    def predict(self, inputs: list) -> list:
        return plain(self.model.predict([np.asarray(item, dtype=np.float32) for item in inputs]))


class VideoServed(EstimatorServed):
    item_type = list[list[list[list[float]]]]
    item_doc = "a clip: frames × channels × height × width numbers"

    def batch_key(self, inputs: list) -> Hashable | None:
        shapes = {np.shape(item) for item in inputs}
        return shapes.pop() if len(shapes) == 1 else None

    def predict(self, inputs: list) -> list:
        return plain(self.model.predict(numeric_array(inputs, "inputs")))


class ForecastServed(Served):
    item_type = Annotated[int, Field(ge=1)] | None
    item_doc = "a horizon (steps to forecast after the fitted series), or null for the fitted horizon"

    def predict(self, inputs: list) -> list:
        return [plain(self.model.predict(horizon)) for horizon in inputs]


class ClassifierServed(Served):
    """A fine-tuned :class:`GRUClassifier`: texts in, label names (or class ids when unnamed) out."""

    item_type = str
    item_doc = "a text"

    def predict(self, inputs: list) -> list:
        tokenizer = self.model.encoder.tokenizer
        if tokenizer is None:
            raise Unsupported("this GRUClassifier was saved without a tokenizer, so it cannot read text")
        rows = [tokenizer.encode(text) for text in inputs]
        empty = next((index for index, row in enumerate(rows) if not row), None)
        if empty is not None:
            raise ValueError(f"inputs[{empty}] holds no tokens; expected a text with at least one symbol")
        classes = classify_ids(self.model, rows).tolist()
        return [self.model.labels[c] for c in classes] if self.model.labels else classes


class SequentialServed(Served):
    """A :class:`Sequential`: each item is one sample (nested lists of numbers). Requests whose samples all have
    one shape share a call; others run alone, so their zero-padding is what ``predict`` alone would give."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        model.eval()

    def batch_key(self, inputs: list) -> Hashable | None:
        try:
            array = numeric_array(inputs, "inputs")
        except ValueError:
            return None
        return (array.dtype.str, array.shape[1:])

    def predict(self, inputs: list) -> list:
        try:
            batch: Any = numeric_array(inputs, "inputs")
        except ValueError:
            batch = [numeric_array(item, f"inputs[{index}]") for index, item in enumerate(inputs)]
        outputs = self.model.predict(batch)
        if isinstance(outputs, list):  # a model with several outputs: one list of them per sample
            return [[plain(output[index]) for output in outputs] for index in range(len(inputs))]
        return plain(outputs)

    def start_state(self) -> Any:
        if not (hasattr(self.model, "initial_state") and hasattr(self.model, "step")):
            raise Unsupported("this model does not support sessions: it has no initial_state / step methods")
        return self.model.initial_state(1)

    def step(self, state: Any, inputs: Any) -> tuple[list, Any]:
        if isinstance(inputs, str):
            raise ValueError("inputs must be a list of time steps for this model, got a string")
        outputs = []
        for index, item in enumerate(inputs):
            x_t = torch.from_numpy(numeric_array(item, f"inputs[{index}]")).unsqueeze(0)  # (1, ...) one step
            output, state = self.model.step(x_t, state)
            outputs.append(plain(output[0]))
        return outputs, state


class LanguageModelServed(Served):
    r"""A :class:`GRULanguageModel`: token streams (``/v1/generate``) and sessions whose state is the stack's
    hidden state ``(s¹ … sᴸ)``, each ``(1, 1, H_l)``. A session step feeds tokens ``x_1 … x_T`` and answers, after
    each, the next-token distribution ``softmax(logits_t)`` ``(V,)``."""

    can_generate = True

    def __init__(self, model: GRULanguageModel) -> None:
        super().__init__(model)
        model.eval()

    def token_ids(self, inputs: Any, what: str) -> list[int]:
        """``inputs`` (a text, or a list of token ids) as ids, checked against the vocabulary."""
        if isinstance(inputs, str):
            if self.model.tokenizer is None:
                raise Unsupported(f"{what} is text but this model has no tokenizer; send token ids")
            ids = self.model.tokenizer.encode(inputs)
        else:
            ids = list(inputs)
            bad = next((i for i, t in enumerate(ids) if isinstance(t, bool) or not isinstance(t, int)), None)
            if bad is not None:
                raise ValueError(f"{what}[{bad}] must be a token id (an integer), got {ids[bad]!r}")
        if not ids:
            raise ValueError(f"{what} holds no tokens; expected at least one")
        vocab = self.model.config.vocab_size
        bad = next((i for i, t in enumerate(ids) if not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"{what}[{bad}] is token id {ids[bad]}; expected an id in [0, {vocab})")
        return ids

    def tokens(self, prompt: Any, max_new_tokens: int, **sampling: Any) -> Iterator[tuple[int, str]]:
        """``(token id, its text)`` of the continuation of one prompt, one at a time (text is ``""`` without a
        tokenizer, or while a multi-byte symbol is incomplete)."""
        ids = self.token_ids(prompt, "prompt")
        decode = self.model.tokenizer.stream_decoder() if self.model.tokenizer is not None else None
        for token in self.model.stream([ids], max_new_tokens, **sampling):
            token_id = int(token[0])
            yield token_id, decode(token_id) if decode is not None else ""

    def start_state(self) -> Any:
        return self.model.initial_state(1)

    def step(self, state: Any, inputs: Any) -> tuple[list, Any]:
        ids = torch.tensor([self.token_ids(inputs, "inputs")])  # (1, T)
        logits, state = self.model(ids, state)  # (1, T, V)
        return plain(torch.softmax(logits[0], dim=-1)), state


KINDS: dict[type, type[Served]] = {
    TextClassifier: TextServed,
    Translator: TextServed,
    SequenceTagger: TaggerServed,
    SequenceClassifier: SeriesServed,
    VideoClassifier: VideoServed,
    Forecaster: ForecastServed,
    GRUClassifier: ClassifierServed,
    Sequential: SequentialServed,
    GRULanguageModel: LanguageModelServed,
}


def serve_model(model: Any) -> Served:
    """The :class:`Served` wrapper for ``model`` (anything :func:`grukit.load` returns)."""
    for cls, served in KINDS.items():
        if isinstance(model, cls):
            return served(model)
    kinds = [cls.__name__ for cls in KINDS]
    raise TypeError(f"grukit serve cannot serve a {type(model).__name__}; expected one of {kinds}")
