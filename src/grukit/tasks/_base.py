"""What grukit's sklearn-style estimators share: length-aware pooling,
the choice of recurrent layer, checks of texts and labels, training through :class:`grukit.train.Trainer`,
and saving as a readable folder (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from grukit.nn import GRU, LSTM
from grukit.text import BucketBatches, lengths_to_mask
from grukit.train import Callback, History, LearningRateScheduler, Trainer, seed_everything
from grukit.train.checkpoint import CheckpointError, check_weights_fit, load_checkpoint, save_checkpoint
from grukit.train.losses import LossFn
from grukit.train.metrics import Metric

CELLS = {"gru": GRU, "lstm": LSTM}


def recurrent_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> GRU | LSTM:
    """A :class:`grukit.nn.GRU` (``cell="gru"``) or :class:`grukit.nn.LSTM` (``"lstm"``), batch first."""
    if cell not in CELLS:
        raise ValueError(f"expected cell in {tuple(CELLS)}, got {cell!r}")
    return CELLS[cell](input_size, hidden_size, batch_first=True, **kwargs)


def run_recurrent(layer: GRU | LSTM, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(output (B, T, D*H), h_n (D*L, B, H))`` of a GRU or LSTM (the LSTM's ``h_n``, not its cell state)."""
    output, state = layer(x, None, lengths)
    return output, state[0] if isinstance(state, tuple) else state


def masked_mean_max(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean and max over the valid steps of ``x`` ``(B, T, F)``, concatenated: ``(B, 2F)``."""
    mask = lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
    mean = (x * mask).sum(1) / lengths[:, None].to(x.dtype)  # (B, F)
    maximum = x.masked_fill(~mask, float("-inf")).amax(1)  # (B, F)
    return torch.cat([mean, maximum], dim=-1)


def cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over the last axis of ``logits``, averaged over the positions ``mask`` keeps."""
    per_element = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    if mask is None:
        return per_element.mean()
    weights = mask.reshape(-1).to(per_element.dtype)
    return (per_element * weights).sum() / weights.sum().clamp_min(1.0)


def check_texts(texts: Sequence[str], owner: str, what: str = "texts") -> list[str]:
    """``texts`` as a list of str. Takes a list, a 1-D array, a ``pandas.Series``, or one column (a one-column
    ``DataFrame`` or ``(n, 1)`` array); refuses a single string, several columns, non-strings and no texts."""
    if isinstance(texts, str):
        raise TypeError(f"{owner} expected a list of {what}, got a single string")
    shape = getattr(texts, "shape", None)
    if shape is not None and len(shape) == 2:
        if shape[1] != 1:
            names = f" {list(texts.columns)[:5]}" if hasattr(texts, "columns") else ""
            raise ValueError(
                f"{owner} expected {what} as one column of strings, got {shape[1]} columns{names} "
                f"(shape {tuple(shape)}); select the column that holds the {what}"
            )
        texts = np.asarray(texts, dtype=object)[:, 0]
    elif shape is not None and len(shape) != 1:
        raise ValueError(f"{owner} expected {what} as a list of strings, got an array of shape {tuple(shape)}")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{owner} expected each of the {what} to be a str, item {bad} is {type(texts[bad]).__name__}")
    if not texts:
        raise ValueError(f"{owner} got no {what}")
    return texts


def _label_kind(value: object) -> str:
    if isinstance(value, str):
        return "str"
    return "number" if isinstance(value, numbers.Number) else type(value).__name__


def check_labels(y: Any, owner: str, count: int, samples: str, multi_output: bool = False) -> np.ndarray:
    """Class labels ``y`` as an array ``(n,)`` (``(n, outputs)`` too with ``multi_output``), refusing what would
    be misread: no ``y``, another length than ``count``, strings mixed with numbers, fractional or non-finite
    numbers. A column ``(n, 1)`` is raveled with a ``DataConversionWarning`` when one output is expected."""
    if y is None:
        raise ValueError(
            f"{owner} requires y to be passed, but the target y is None: call fit(X, y) with one label per sample"
        )
    if isinstance(y, str):
        raise TypeError(f"{owner} expected one label per sample in y, got the single string {y!r:.40}")
    raw = y.to_numpy() if hasattr(y, "to_numpy") else y
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        labels = raw
    else:
        items = np.array(raw, dtype=object)
        kinds = sorted({_label_kind(value) for value in items.ravel()})
        if len(kinds) > 1 or kinds[0] not in ("str", "number"):
            examples = {kind: next(v for v in items.ravel() if _label_kind(v) == kind) for kind in kinds}
            raise TypeError(
                f"{owner} expected labels that are all strings or all numbers, got {' and '.join(kinds)} labels "
                f"(e.g. {', '.join(repr(v) for v in examples.values())}); convert them to one type first"
            )
        labels = np.asarray(items.tolist())
        if labels.dtype == object and kinds == ["number"]:
            raise TypeError(
                f"{owner} expected number labels that fit in 64 bits, got values such as "
                f"{max(items.ravel(), key=abs)!r:.40}; map them to smaller class ids (or strings) first"
            )
    if labels.ndim == 2 and labels.shape[1] == 1 and not multi_output:
        warnings.warn(
            DataConversionWarning(
                f"A column-vector y was passed when a 1d array was expected; {owner} reads it as y.ravel()"
            ),
            stacklevel=3,
        )
        labels = labels.ravel()
    if labels.ndim not in ((1, 2) if multi_output else (1,)):
        expected = "(n,) or (n, outputs)" if multi_output else "(n,)"
        raise ValueError(f"{owner} expected y of shape {expected}, got {labels.shape}")
    if len(labels) != count:
        raise ValueError(f"{owner} got {count} {samples} but {len(labels)} labels")
    if labels.dtype.kind not in "biufU":
        raise TypeError(f"{owner} expected labels that are strings or numbers, got an array of dtype {labels.dtype}")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError(f"{owner} got NaN or infinite labels in y; every sample needs a class")
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise ValueError(
                f"{owner} expected class labels, got fractional values such as {fractional.flat[0].item()!r} "
                "(label type 'continuous'); round them if they name classes, or use a regressor for a continuous target"
            )
    return labels


def labels_to_json(labels: np.ndarray) -> dict:
    """Class labels as ``{"values": [...], "dtype": "<i8"}``, which :func:`labels_from_json` turns back into the
    same array (type and all)."""
    return {"values": labels.tolist(), "dtype": labels.dtype.str}


def labels_from_json(entry: dict, name: str = "classes") -> np.ndarray:
    """Inverse of :func:`labels_to_json`, refusing what ``fit`` cannot have written: no labels, labels of another
    kind than strings or numbers, and labels out of order or repeated (``LabelEncoder`` sorts them; a reordered
    list would make ``predict`` name the wrong classes). ``name`` says which entry of ``config.json`` it is."""
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("values"), list)
        or not isinstance(entry.get("dtype"), str)
    ):
        raise CheckpointError(
            f'config.json "fitted" {name} must be {{"values": [labels], "dtype": "<numpy dtype>"}}, '
            f"got {json.dumps(entry)[:80]}"
        )
    try:
        labels = np.asarray(entry["values"], dtype=np.dtype(entry["dtype"]))
    except (TypeError, ValueError, OverflowError) as error:
        raise CheckpointError(
            f'config.json "fitted" {name} are not of their dtype {entry["dtype"]!r}: {error}'
        ) from error
    if labels.ndim != 1 or not len(labels) or labels.dtype.kind not in "biufU":
        raise CheckpointError(
            f'config.json "fitted" {name} must be a non-empty list of strings or numbers, got {entry["values"]!r:.80}'
        )
    if (labels[1:] <= labels[:-1]).any():
        raise CheckpointError(
            f'config.json "fitted" {name} must be sorted and distinct, as fit() writes them, got '
            f"{entry['values']!r:.80}; reordered labels would make predict() name the wrong classes"
        )
    return labels


def fitted_int(value: object, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` from ``config.json``'s ``"fitted"`` as an int in ``[minimum, maximum]``, else
    :class:`CheckpointError`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise CheckpointError(f'config.json "fitted" {name} must be an integer {bounds}, got {value!r:.80}')
    return value


def fitted_floats(value: object, name: str, size: int, positive: bool = False) -> np.ndarray:
    """``value`` from ``config.json``'s ``"fitted"`` as ``size`` finite float32 numbers (``> 0`` with
    ``positive``), shape ``(size,)``, else :class:`CheckpointError`."""
    numbers_ok = isinstance(value, list) and all(
        isinstance(item, numbers.Real) and not isinstance(item, bool) for item in value
    )
    array = np.asarray(value, dtype=np.float32) if numbers_ok else None
    if array is None or array.shape != (size,) or not np.isfinite(array).all() or (positive and (array <= 0).any()):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise CheckpointError(f'config.json "fitted" {name} must be a list of {size} {kind}, got {value!r:.80}')
    return array


class GRUEstimator(BaseEstimator):
    """Base of grukit's estimators: sklearn's parameter handling (``get_params`` / ``set_params`` /
    ``clone`` read the ``__init__`` arguments), the fitted check, one training entry point, and saving.

    A saved estimator is a folder (see :mod:`grukit.train.checkpoint`): ``config.json`` holds
    ``{"architecture": "grukit.<ClassName>", "params": get_params(), "fitted": {...}}`` (every fitted attribute
    ``predict`` needs, e.g. the classes and the scaling), ``model.safetensors`` the weights of ``module_``, and
    vocabulary or tokenizer files sit beside them. Subclasses say what is fitted with ``_fitted_config`` and
    rebuild it with ``_restore``.
    """

    def _check_fitted(self, action: str) -> None:
        check_is_fitted(self, "module_", msg=f"This %(name)s is not fitted yet: call fit(...) before {action}().")

    def _prepare_fit(self, *positive: str) -> None:
        """Refuse training settings that cannot work (``epochs``, ``batch_size`` and the parameters named in
        ``positive`` must be positive integers, ``learning_rate`` a positive number), then seed the generators."""
        for name in ("epochs", "batch_size", *positive):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{type(self).__name__} expected {name} to be a positive integer, got {value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"{type(self).__name__} expected learning_rate to be a positive number, got {rate!r}")
        seed_everything(self.random_state)

    # Saving -------------------------------------------------------------------------------------------------
    def _fitted_config(self) -> tuple[dict, dict[str, bytes]]:
        """The fitted attributes ``predict`` needs besides the weights, as JSON, and any extra files."""
        raise NotImplementedError

    def _restore(self, fitted: dict, files: dict[str, bytes]) -> None:
        """Set the fitted attributes from :meth:`_fitted_config`'s output and build ``module_`` (untrained)."""
        raise NotImplementedError

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the fitted estimator as the folder ``path`` (atomically, with checksums); returns ``path``.
        :meth:`from_pretrained` or :func:`grukit.load` reads it back, in any process."""
        self._check_fitted("save_pretrained")
        fitted, files = self._fitted_config()
        config = {
            "architecture": f"grukit.{type(self).__name__}",
            "params": params_to_json(self.get_params(deep=False), type(self).__name__),
            "fitted": fitted,
        }
        return save_checkpoint(path, config, self.module_.state_dict(), extra_files=files)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GRUEstimator:
        """The estimator :meth:`save_pretrained` wrote to ``path``, ready to predict (checksums verified)."""
        checkpoint = load_checkpoint(path, architecture=f"grukit.{cls.__name__}")
        try:
            estimator = cls(**saved_params(cls, checkpoint.config.get("params")))
            fitted = checkpoint.config["fitted"]
            if not isinstance(fitted, dict):
                raise CheckpointError(f'config.json "fitted" must be a JSON object, got {json.dumps(fitted)[:80]}')
            with torch.device("meta"):  # shapes only: an edited size fails below instead of allocating
                estimator._restore(fitted, checkpoint.extra_files)
            expected = {name: tuple(tensor.shape) for name, tensor in estimator.module_.state_dict().items()}
            check_weights_fit(path, expected, checkpoint.weights)
            estimator._restore(fitted, checkpoint.extra_files)
            estimator.module_.load_state_dict(checkpoint.weights)
        except Exception as error:
            if isinstance(error, CheckpointError) and os.fspath(path) in str(error):
                raise
            cause = str(error) if isinstance(error, CheckpointError) else f"{type(error).__name__}: {error}"
            raise CheckpointError(f"{os.fspath(path)!r} does not hold a complete {cls.__name__}: {cause}") from error
        estimator.module_.eval()
        return estimator

    def _train(
        self,
        module: nn.Module,
        batches: BucketBatches,
        loss_fn: LossFn,
        metrics: Sequence[Metric] = (),
        callbacks: Sequence[Callback] = (),
        epochs: int | None = None,
    ) -> History:
        """Adam for ``self.epochs`` epochs through the shared :class:`Trainer`, gradients clipped to norm 1, the
        learning rate on a cosine from ``self.learning_rate`` towards 0 (``lr_e = lr · ½ (1 + cos(π e / E))``,
        so the last epochs settle instead of jumping between minima); sets ``history_``. ``epochs`` overrides
        ``self.epochs``."""
        optimizer = torch.optim.Adam(module.parameters(), lr=self.learning_rate)
        epochs, peak = epochs or self.epochs, self.learning_rate
        cosine = LearningRateScheduler(lambda epoch, _lr: peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
        callbacks = [cosine, *callbacks]
        trainer = Trainer(module, loss_fn, optimizer, metrics=list(metrics), clipnorm=1.0, callbacks=callbacks)
        self.history_ = trainer.fit(batches, epochs=epochs, verbose=self.verbose)
        module.eval()
        return self.history_


def params_to_json(params: dict[str, Any], owner: str) -> dict[str, Any]:
    """``get_params()`` as JSON values (tuples become lists, numpy scalars Python ones)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        return value.item() if isinstance(value, np.generic) else value

    result = {name: plain(value) for name, value in params.items()}
    for name, value in result.items():
        try:
            json.dumps(value)
        except TypeError as error:
            raise CheckpointError(
                f"{owner} cannot be saved: parameter {name}={value!r} is not a JSON value (use numbers, strings, "
                "booleans, None or tuples of them)"
            ) from error
    return result


def params_from_json(params: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`params_to_json`: lists become tuples again (the estimators' sequence parameters)."""

    def restored(value: Any) -> Any:
        return tuple(restored(item) for item in value) if isinstance(value, list) else value

    return {name: restored(value) for name, value in params.items()}


JSON_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list"}


def _accepted_types(hint: Any) -> tuple[type, ...] | None:
    """The runtime types a parameter annotation allows (``int | None`` → ``(int, NoneType)``; a float takes ints
    too), or ``None`` when it names something this check does not judge."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    accepted: list[type] = []
    for option in options:
        origin = typing.get_origin(option) or option
        if option is None or origin is type(None):
            accepted.append(type(None))
        elif origin in JSON_NAMES:
            accepted += [int, float] if origin is float else [origin]
        else:
            return None
    return tuple(accepted)


def saved_params(cls: type, params: object) -> dict[str, Any]:
    """The ``__init__`` arguments stored in ``config.json``'s ``"params"``, checked against ``cls``'s signature:
    known names only, and each of a type its annotation allows (an int for ``int``, a number for ``float``, a
    string, a bool, a tuple, ``None`` for an optional one), so an edited value fails here and not deep inside the
    network."""
    if not isinstance(params, dict):
        raise CheckpointError(
            f'config.json "params" must be a JSON object of {cls.__name__} parameters, got {json.dumps(params)[:80]}'
        )
    names = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise CheckpointError(f'config.json "params" names {unknown}, which {cls.__name__} does not take')
    hints = typing.get_type_hints(cls.__init__)
    restored = params_from_json(params)
    for name, value in restored.items():
        accepted = _accepted_types(hints.get(name, Any))
        if accepted is None:
            continue
        fits = isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted)
        if not fits:
            expected = " or ".join(dict.fromkeys(JSON_NAMES.get(kind, "null") for kind in accepted))
            raise CheckpointError(
                f'config.json "params" {name} must be {expected}, got {json.dumps(params[name])[:80]}'
            )
    return restored
