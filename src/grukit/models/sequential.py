"""``Sequential``: Keras' model API (compile / fit / evaluate / predict / summary / save) over grukit layers,
trained by the shared :class:`grukit.train.Trainer`.

The padding mask flows with the data: it starts from the lengths of variable-length input and from
``Embedding(mask_zero=True)``, reaches the recurrent layers as lengths, and what is left of it at the output
(``model.output_mask``) weights the loss and the metrics, so padded positions count for nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

from grukit.layers.base import Layer, Shape, layer_from_config, layer_to_config
from grukit.layers.core import Embedding, GlobalAveragePooling1D, GlobalMaxPooling1D
from grukit.layers.recurrent import Bidirectional, RecurrentLayer
from grukit.models.data import Batches, Samples, make_batches
from grukit.nn.recurrent import reset_rows
from grukit.train import Callback, History, Metric, Trainer, get_loss, get_metric
from grukit.train.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    check_weights_fit,
    config_values_behind,
    load_checkpoint,
    save_checkpoint,
)
from grukit.train.distributed import PRECISIONS

ARCHITECTURE = "grukit.Sequential"
KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")

# Keras 3's defaults for the optimizers named by string.
# Keras' defaults. Adam and AdamW run fused: one kernel over all parameters, ~10x faster per step than the
# default for-each path on a 3.8 M-parameter embedding here, which made the optimizer most of a tagger's step.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, fused=True),
    "adamw": lambda params: torch.optim.AdamW(
        params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.004, fused=True
    ),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01),
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7),
}


class _OutputMasked(Metric):
    """A metric updated with the model's output mask merged into the batch's."""

    def __init__(self, metric: Metric, model: Sequential) -> None:
        self.metric, self.model, self.name = metric, model, metric.name
        super().__init__()

    def update(self, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> None:
        self.metric.update(outputs, targets, self.model.merge_mask(mask))

    def result(self) -> float:
        return self.metric.result()

    def reset(self) -> None:
        self.metric.reset()

    # The running sums live in the wrapped metric; the Trainer reads and sets them to checkpoint a mid-epoch
    # state and to add them up across processes.
    @property
    def total(self) -> float:
        return self.metric.total

    @total.setter
    def total(self, value: float) -> None:
        self.metric.total = value

    @property
    def count(self) -> int:
        return self.metric.count

    @count.setter
    def count(self, value: int) -> None:
        self.metric.count = value


def _shape_text(shape: Shape | list) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


class Sequential(nn.Module):
    """A stack of layers, each feeding the next, with Keras' training API.

    ``model(x, lengths=None)`` runs the stack on a batch: ``x`` token ids ``(B, T)`` or features
    ``(B, T, F)`` / ``(B, F)``; ``lengths`` ``(B,)`` the real length of each padded sequence.
    """

    def __init__(self, layers: Iterable[Layer] | None = None, name: str = "sequential") -> None:
        super().__init__()
        self.name = name
        self.layers = nn.ModuleList()
        self.input_shape: Shape | None = None
        self.output_mask: Tensor | None = None
        self.compile_config: dict | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.trainer: Trainer | None = None
        self.history: History | None = None
        self.loss_name: str | None = None
        for layer in layers or []:
            self.add(layer)

    # Structure ---------------------------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes grukit layers (grukit.layers), got {type(layer).__name__}")
        if self.built:
            raise RuntimeError("cannot add a layer to a Sequential that is already built")
        self.layers.append(layer)

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape: Shape) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (``None`` for unknown sizes, e.g.
        ``(None, None)`` for token ids of any batch size and length)."""
        if not self.layers:
            raise ValueError("Sequential has no layers to build")
        shape = tuple(input_shape)
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.input_shape = tuple(input_shape)

    def output_shapes(self) -> list[Shape]:
        if not self.built:
            raise RuntimeError("the model is not built yet: call build(input_shape), or fit / predict first")
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
            shapes.append(shape)
        return shapes

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Run the layers; sets ``self.output_mask`` (``(B, T)`` or ``None``) for the loss and metrics."""
        if not self.built:
            # Sequences (token ids into an Embedding, or (B, T, F) features) may come in any length.
            sequence = x.dim() == 3 or (x.dim() == 2 and isinstance(self.layers[0], Embedding))
            self.build((None, *([None] if sequence else x.shape[1:2]), *x.shape[2:]))
        mask = None
        if lengths is not None:
            mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
        for layer in self.layers:
            x, mask = layer(x, mask)
        self.output_mask = mask
        return x

    def merge_mask(self, mask: Tensor | None) -> Tensor | None:
        """The batch's mask combined with the model's output mask from the last forward."""
        if self.output_mask is None:
            return mask
        return self.output_mask if mask is None else mask & self.output_mask

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Print the layers, their output shapes and parameter counts (the same counts as Keras 3)."""
        shapes = self.output_shapes()
        rows = [
            (
                f"{layer.name} ({type(layer).__name__})",
                _shape_text(list(shape) if isinstance(shape[0], tuple) else shape),
                f"{layer.count_params():,}",
            )
            for layer, shape in zip(self.layers, shapes)
        ]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))
        ]
        rule = "-" * (sum(widths) + 6)
        lines = [f'Model: "{self.name}"', rule]
        lines.append("   ".join(h.ljust(w) for h, w in zip(("Layer (type)", "Output Shape", "Param #"), widths)))
        lines.append(rule)
        lines += ["   ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        lines += [
            rule,
            f"Total params: {self.count_params():,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {self.count_params() - trainable:,}",
            rule,
        ]
        print_fn("\n".join(lines))

    # Streaming ---------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> dict[str, Tensor]:
        """Zeros to start :meth:`step` from: ``{"layers.{i}.h": (B, units)}`` for each recurrent layer ``i``
        (LSTM layers also ``"layers.{i}.c"``), plain tensors that save with safetensors."""
        if not self.built:
            raise RuntimeError("the model is not built yet: call build(input_shape), or fit / predict first")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"Sequential.initial_state expected batch_size to be a positive integer, got {batch_size!r}"
            )
        state = {}
        for index, layer in enumerate(self.layers):
            if isinstance(layer, RecurrentLayer):
                for slot in ("h", "c")[: layer.state_count]:
                    state[f"layers.{index}.{slot}"] = layer.module.weight_ih_l0.new_zeros(batch_size, layer.units)
        return state

    def step(
        self, x_t: Tensor, state: dict[str, Tensor] | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Advance every stream by one step: ``x_t`` (token ids ``(B,)`` or features ``(B, F)``) → ``(output,
        new state)``. The output is what ``forward`` gives at this step: ``(B, ...)`` per step for a model whose
        recurrent layers return sequences, the running final output otherwise. Every step counts as real (no
        padding mask); ``reset`` ``(B,)`` bool restarts the streams where it is true before this step. Layers that
        need the whole sequence (``go_backwards``, ``Bidirectional``, global pooling) cannot stream."""
        if state is None:
            state = self.initial_state(int(x_t.shape[0]))
        if reset is not None:
            state = self.reset_state(state, reset)
        x, timed, new_state = x_t.unsqueeze(1), True, {}  # (B, 1, ...): one step
        for index, layer in enumerate(self.layers):
            if isinstance(layer, RecurrentLayer):
                if layer.go_backwards or layer.return_state:
                    reason = "go_backwards needs the whole sequence" if layer.go_backwards else "it has return_state"
                    raise ValueError(f"Sequential.step cannot stream layer {layer.name!r}: {reason}")
                keys = [f"layers.{index}.{slot}" for slot in ("h", "c")[: layer.state_count]]
                if any(key not in state for key in keys):
                    raise ValueError(f"Sequential.step expected a state holding {keys}, got keys {sorted(state)}")
                initial = tuple(state[key].unsqueeze(0) for key in keys)  # (1, B, units) each
                output, final = layer.module(x, initial[0] if layer.state_count == 1 else initial)  # (B, 1, units)
                final = (final,) if layer.state_count == 1 else tuple(final)
                new_state.update({key: s[0] for key, s in zip(keys, final)})
                x, timed = (output, True) if layer.return_sequences else (output[:, 0], False)
            elif isinstance(layer, (Bidirectional, GlobalAveragePooling1D, GlobalMaxPooling1D)):
                raise ValueError(f"Sequential.step cannot stream layer {layer.name!r} ({type(layer).__name__}): it "
                                 "needs the whole sequence")
            else:
                x, _ = layer(x)
        return (x[:, 0] if timed else x), new_state

    def reset_state(self, state: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """``state`` with the streams where ``mask`` ``(B,)`` (bool) is true set back to zeros."""
        return reset_rows("Sequential", state, mask, batch_dim=0)

    # Training ----------------------------------------------------------------------------------------------
    def compile(
        self,
        optimizer: str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] = "rmsprop",
        loss: str | Callable = "sparse_categorical_crossentropy",
        metrics: Iterable[str | Metric] | None = None,
        clipnorm: float | str | None = "auto",
        precision: str | None = None,
    ) -> None:
        """Choose the optimizer (``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` with Keras' defaults, a
        ``torch.optim`` optimizer over this model's parameters, or a callable ``params -> optimizer``), the
        loss (a Keras name, ``loss(outputs, targets, mask)``, or a Keras custom ``loss(y_true, y_pred)``),
        metrics (``"accuracy"``, ``"mae"``, …) and gradient clipping by global norm: ``"auto"`` (the default)
        clips at 1.0 when the model holds a recurrent layer, whose gradients can explode, and not otherwise;
        ``None`` turns it off, as Keras' default. ``precision``: ``"32"`` or ``"bf16"`` (the forward pass under
        bfloat16 autocast, weights and optimizer in float32, as Keras' ``"mixed_bfloat16"`` policy); ``None``
        reads ``GRUKIT_PRECISION`` (default ``"32"``)."""
        if isinstance(optimizer, str) and optimizer.lower() not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {optimizer!r}; expected a torch optimizer or one of {sorted(OPTIMIZERS)}"
            )
        if not isinstance(optimizer, (str, torch.optim.Optimizer)) and not callable(optimizer):
            raise TypeError(f"compile expected an optimizer name, a torch optimizer or a factory, got {optimizer!r}")
        if isinstance(optimizer, torch.optim.Optimizer) and not self.built:
            raise RuntimeError(
                "a torch optimizer needs the model's parameters: build the model first (model.build(input_shape)), "
                "or pass a name such as 'adam' or a factory like lambda params: torch.optim.Adam(params, lr=1e-3)"
            )
        if clipnorm not in (None, "auto") and not (
            isinstance(clipnorm, (int, float)) and not isinstance(clipnorm, bool) and clipnorm > 0
        ):
            raise ValueError(f"compile expected clipnorm to be a positive number, 'auto' or None, got {clipnorm!r}")
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"compile expected precision in {PRECISIONS} or None, got {precision!r}")
        loss_fn = get_loss(loss)
        metric_objects = [get_metric(m, loss) for m in (metrics or [])]
        self.loss_name = loss if isinstance(loss, str) else None
        self.loss_fn = loss_fn
        self.metric_objects = metric_objects
        self.optimizer_spec = optimizer.lower() if isinstance(optimizer, str) else optimizer
        self.optimizer = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
        self.clipnorm = clipnorm
        self.precision = precision
        self.trainer = None
        self.compile_config = {
            "optimizer": optimizer.lower()
            if isinstance(optimizer, str)
            else (type(optimizer).__name__ if isinstance(optimizer, torch.optim.Optimizer) else None),
            "loss": self.loss_name,
            "metrics": [m if isinstance(m, str) else None for m in (metrics or [])],
            "clipnorm": clipnorm,
            "precision": precision,
        }

    def _masked_loss(self, outputs: Tensor, targets: Tensor, mask: Tensor | None) -> Tensor:
        penalties = sum(penalty for layer in self.layers for penalty in layer.losses)  # regularizers, as Keras
        return self.loss_fn(outputs, targets, self.merge_mask(mask)) + penalties

    def _ensure_trainer(self) -> Trainer:
        if self.compile_config is None:
            raise RuntimeError("the model must be compiled before training or evaluation: call model.compile(...)")
        if self.trainer is None:
            if self.optimizer is None:
                spec = self.optimizer_spec
                self.optimizer = (
                    OPTIMIZERS[spec](self.parameters()) if isinstance(spec, str) else spec(self.parameters())
                )
            metrics = [_OutputMasked(m, self) for m in self.metric_objects]
            clipnorm = self.clipnorm
            if clipnorm == "auto":
                clipnorm = 1.0 if any(isinstance(m, RecurrentLayer) for m in self.modules()) else None
            self.trainer = Trainer(
                self, self._masked_loss, self.optimizer, metrics, clipnorm=clipnorm, precision=self.precision
            )
        return self.trainer

    def _build_from(self, batches: Iterable) -> None:
        if self.built:
            return
        first = next(iter(batches))
        inputs = first[0] if isinstance(first[0], (tuple, list)) else (first[0],)
        with torch.no_grad():
            self(*inputs)

    def _check_classes(self, samples: Samples | None) -> None:
        """Refuse integer labels beyond the output layer's classes before any training happens."""
        if samples is None or self.loss_name != "sparse_categorical_crossentropy":
            return
        classes = self.output_shapes()[-1][-1]
        largest = samples.targets_max()
        if largest is not None and classes is not None and largest >= classes:
            raise ValueError(
                f"labels go up to {largest} but the model's last layer outputs {classes} classes; "
                f"sparse_categorical_crossentropy needs labels in [0, {classes - 1}] (give the last layer "
                f"at least {largest + 1} units)"
            )

    def fit(
        self,
        x: object,
        y: object = None,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data: tuple | object = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        callbacks: Iterable[Callback] | None = None,
        verbose: int = 1,
    ) -> History:
        """Train for ``epochs`` epochs and return the :class:`~grukit.train.History` (``history.history``:
        ``loss``, each metric, and ``val_*`` with validation data), as Keras' ``fit``.

        ``validation_split`` holds out the last fraction of ``x`` / ``y`` (before shuffling, as Keras);
        ``validation_data`` is ``(x_val, y_val)`` or a ``Dataset`` / ``DataLoader``.
        """
        if self.compile_config is None:
            raise RuntimeError("the model must be compiled before fit: call model.compile(optimizer, loss, metrics)")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit expected validation_split in [0, 1), got {validation_split!r}")
        train = make_batches(x, y, batch_size, shuffle, "fit")
        samples = getattr(train, "samples", None)
        val = None
        if validation_split:
            if samples is None:
                raise ValueError("validation_split needs arrays or lists, not a Dataset or DataLoader")
            cut = int(len(samples) * (1.0 - validation_split))
            if cut == 0 or cut == len(samples):
                raise ValueError(
                    f"validation_split={validation_split} leaves no training or no validation samples "
                    f"out of {len(samples)}"
                )
            val = Batches(samples.subset(slice(cut, None)), batch_size, False)
            samples = samples.subset(slice(0, cut))
            train = Batches(samples, batch_size, shuffle)
        if validation_data is not None:
            if isinstance(validation_data, (tuple, list)):
                if len(validation_data) != 2:
                    raise ValueError(f"validation_data must be (x_val, y_val), got {len(validation_data)} items")
                val = make_batches(*validation_data, batch_size, False, "fit (validation_data)")
            else:
                val = make_batches(validation_data, None, batch_size, False, "fit (validation_data)")
        self._build_from(train)
        self._check_classes(samples)
        trainer = self._ensure_trainer()
        trainer.callbacks = list(callbacks or [])
        trainer.epoch = 0
        trainer.history = History()
        self.history = trainer.fit(train, epochs=epochs, val_batches=val, verbose=verbose)
        return self.history

    def evaluate(self, x: object, y: object = None, batch_size: int = 32, verbose: int = 1) -> float | list[float]:
        """``[loss, *metrics]`` over ``x`` / ``y`` (just the loss when there are no metrics), as Keras; with
        ``verbose`` it also prints them."""
        if self.compile_config is None:
            raise RuntimeError(
                "the model must be compiled before evaluate: call model.compile(optimizer, loss, metrics)"
            )
        batches = make_batches(x, y, batch_size, False, "evaluate")
        self._build_from(batches)
        self._check_classes(getattr(batches, "samples", None))
        logs = self._ensure_trainer().evaluate(batches)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x: object, batch_size: int = 32) -> np.ndarray:
        """The model's outputs as a numpy array, in the order of ``x`` (variable-length outputs zero-padded
        to the longest)."""
        batches = make_batches(x, None, batch_size, False, "predict")
        self._build_from(batches)
        trainer = self.trainer or Trainer(self, self._masked_loss, None)
        outputs = trainer.predict(batches)
        if isinstance(outputs, tuple):
            return [o.numpy() for o in outputs]
        return outputs.numpy()

    def _one_batch(self, x: object, y: object, caller: str) -> tuple:
        """``x`` / ``y`` as a single batch, the model built for it."""
        samples = Samples.from_user(x, y, caller)
        batch = next(iter(Batches(samples, len(samples), False)))
        self._build_from([batch])
        return batch

    def _batch_result(self, logs: dict[str, float], return_dict: bool) -> float | list[float] | dict[str, float]:
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def train_on_batch(
        self, x: object, y: object, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """One optimizer step on ``x`` / ``y`` as a single batch; returns the loss, or ``[loss, *metrics]`` when
        compiled with metrics, or ``{"loss": ..., <metric>: ...}`` with ``return_dict``, as Keras."""
        if self.compile_config is None:
            raise RuntimeError("the model must be compiled before train_on_batch: call model.compile(...)")
        batch = self._one_batch(x, y, "train_on_batch")
        trainer = self._ensure_trainer()
        for metric in trainer.metrics:
            metric.reset()
        self.train()
        loss, _ = trainer.train_step([batch])
        return self._batch_result({"loss": loss, **{m.name: m.result() for m in trainer.metrics}}, return_dict)

    def test_on_batch(self, x: object, y: object, return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Loss (and metrics) on ``x`` / ``y`` as a single batch, without training; returns as
        :meth:`train_on_batch`."""
        if self.compile_config is None:
            raise RuntimeError("the model must be compiled before test_on_batch: call model.compile(...)")
        batch = self._one_batch(x, y, "test_on_batch")
        return self._batch_result(self._ensure_trainer().evaluate([batch]), return_dict)

    def predict_on_batch(self, x: object) -> np.ndarray:
        """The model's outputs for ``x`` as one batch, as a numpy array."""
        return self.predict(x, batch_size=len(Samples.from_user(x, None, "predict_on_batch")))

    # Saving ------------------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "architecture": ARCHITECTURE,
            "name": self.name,
            "layers": [layer_to_config(layer) for layer in self.layers],
            "input_shape": list(self.input_shape) if self.built else None,
            "compile": self.compile_config,
        }

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model as a checkpoint folder: ``config.json`` (layers, input shape, compile settings),
        ``model.safetensors`` and, once trained, the optimizer state. :meth:`from_pretrained` (or
        :func:`grukit.load`) reads it back."""
        if not self.built:
            raise RuntimeError("cannot save a model that is not built: call build(input_shape), or fit first")
        return save_checkpoint(path, self.get_config(), self.state_dict(), self.optimizer)

    def save(self, path: str | os.PathLike) -> Path:
        """Keras' name for :meth:`save_pretrained`; :func:`load_model` reads the folder back. A name ending in
        ``.keras``, ``.h5`` or ``.hdf5`` is refused: grukit writes a folder, not a Keras file."""
        path = Path(path)
        if path.suffix.lower() in KERAS_FILE_SUFFIXES:
            raise ValueError(
                f"Sequential.save got {os.fspath(path)!r}, whose {path.suffix} suffix promises a Keras file, but "
                f"grukit saves a model as a folder (config.json + model.safetensors); give a folder name such as "
                f"{os.fspath(path.with_suffix(''))!r}"
            )
        return self.save_pretrained(path)

    def get_weights(self) -> list[np.ndarray]:
        """Every layer's :meth:`~grukit.layers.Layer.get_weights`, in layer order: numpy arrays in Keras' layout,
        so a Keras model of the same layers takes them with ``set_weights``."""
        return [weight for layer in self.layers for weight in layer.get_weights()]

    def set_weights(self, weights: list) -> None:
        """Load weights given as :meth:`get_weights` returns them (a Keras model's ``get_weights()`` fits); the
        count and each layer's shapes are checked before anything is written."""
        if not self.built:
            raise RuntimeError("the model is not built yet: call build(input_shape) before set_weights")
        weights = list(weights)
        counts = [len(layer.get_weights()) for layer in self.layers]
        if len(weights) != sum(counts):
            per_layer = ", ".join(f"{layer.name} {count}" for layer, count in zip(self.layers, counts))
            raise ValueError(f"Sequential.set_weights expected {sum(counts)} arrays ({per_layer}), got {len(weights)}")
        start = 0
        for layer, count in zip(self.layers, counts):
            given = [tuple(np.shape(w)) for w in weights[start : start + count]]
            expected = [tuple(w.shape) for w in layer.get_weights()]
            if given != expected:
                raise ValueError(
                    f"Sequential.set_weights: layer {layer.name!r} ({type(layer).__name__}) expected arrays of shapes "
                    f"{expected}, got {given}"
                )
            start += count
        start = 0
        for layer, count in zip(self.layers, counts):
            layer.set_weights(weights[start : start + count])
            start += count

    def save_weights(self, path: str | os.PathLike) -> Path:
        """Write the weights alone (no config, no optimizer) as one safetensors file ``path`` (``*.safetensors``);
        :meth:`load_weights` reads it back into a model of the same layers."""
        path = _weights_file(path, "save_weights")
        if not self.built:
            raise RuntimeError("cannot save the weights of a model that is not built: call build(input_shape)")
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        return atomic_write_bytes(path, save_safetensors_bytes(weights))

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a safetensors file written by :meth:`save_weights`; names and shapes must match this model's."""
        path = _weights_file(path, "load_weights")
        if not self.built:
            raise RuntimeError("the model is not built yet: call build(input_shape) before load_weights")
        weights = load_file(path)
        expected = self.state_dict()
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"Sequential.load_weights: {os.fspath(path)!r} does not fit this model: it lacks {missing or 'none'} "
                f"and holds weights the model does not have: {unexpected or 'none'}"
            )
        for name, tensor in expected.items():
            if tuple(weights[name].shape) != tuple(tensor.shape):
                layer = self.layers[int(name.split(".")[1])]
                raise ValueError(
                    f"Sequential.load_weights: {os.fspath(path)!r} holds {name!r} of shape "
                    f"{tuple(weights[name].shape)}, but layer {layer.name!r} ({type(layer).__name__}) needs "
                    f"{tuple(tensor.shape)}"
                )
        self.load_state_dict(weights)

    @classmethod
    def from_config(cls, config: dict, where: str = "config") -> Sequential:
        """The model :meth:`get_config` describes (built when it names an input shape), with fresh weights; any
        fault in a config read from ``where`` is a :class:`CheckpointError` that says what is wrong."""
        entries, input_shape = config.get("layers"), config.get("input_shape")
        if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
            raise CheckpointError(
                f'{where!r}: config.json must list the model\'s layers as "layers": [{{"class_name": ..., '
                f'"config": {{...}}}}, ...], got {json.dumps(entries)[:120]}'
            )
        if input_shape is not None and not (
            isinstance(input_shape, list)
            and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in input_shape)
        ):
            raise CheckpointError(
                f'{where!r}: config.json must give "input_shape" as null or a list of positive sizes and nulls, '
                f"got {json.dumps(input_shape)[:120]}"
            )
        layers = []
        for index, entry in enumerate(entries):
            try:
                if not isinstance(entry.get("config"), dict):
                    raise ValueError(f'expected a "config" object, got {json.dumps(entry.get("config"))[:80]}')
                layers.append(layer_from_config(entry))
            except (ValueError, TypeError, KeyError) as error:
                raise CheckpointError(
                    f"{where!r}: config.json layer {index} ({entry.get('class_name')!r}) cannot be built: {error}"
                ) from error
        try:
            model = cls(layers, name=str(config.get("name", "sequential")))
            if input_shape is not None:
                model.build(tuple(input_shape))
        except (ValueError, TypeError, RuntimeError) as error:
            raise CheckpointError(f"{where!r}: the layers in config.json do not fit together: {error}") from error
        return model

    @classmethod
    def _check_weights(cls, config: dict, weights: dict[str, Tensor], where: str) -> None:
        """Build the config on the meta device (no memory) and refuse weights of other names or shapes."""
        with torch.device("meta"):
            skeleton = cls.from_config(config, where)
        expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}

        def describe(name: str) -> str:
            layer = skeleton.layers[int(name.split(".")[1])]
            actual = tuple(weights[name].shape)
            values = config_values_behind(layer.get_config(), expected[name], actual)
            settings = ", ".join(values) if values else f"input shape {_shape_text(layer.input_shape)}"
            return f"layer {layer.name!r} ({type(layer).__name__}, {settings})"

        check_weights_fit(where, expected, weights, describe)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Sequential:
        """Rebuild a :class:`Sequential` saved with :meth:`save_pretrained`: same layers, weights and, when it was
        compiled with named loss / metrics, the same compile settings and optimizer state. The weights' shapes
        are checked against the config before the model is allocated."""
        where = os.fspath(path)
        checkpoint = load_checkpoint(path, architecture=ARCHITECTURE)
        cls._check_weights(checkpoint.config, checkpoint.weights, where)
        model = cls.from_config(checkpoint.config, where)
        model.load_state_dict(checkpoint.weights)
        compile_config = checkpoint.config.get("compile")
        if compile_config is not None:
            model._restore_compile(compile_config, checkpoint.optimizer_state, where)
        return model

    def _restore_compile(self, compile_config: dict, optimizer_state: dict | None, where: str) -> None:
        """Compile as saved, when the loss, optimizer and metrics were named (a custom callable is not saved)."""
        try:
            optimizer, loss, metrics = (compile_config[key] for key in ("optimizer", "loss", "metrics"))
            clipnorm = compile_config.get("clipnorm", "auto")
            if None in (loss, optimizer, *metrics):
                return
            if optimizer not in OPTIMIZERS:
                optimizer_class = getattr(torch.optim, optimizer, None)
                if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
                    raise ValueError(f"unknown optimizer {optimizer!r}")
                optimizer = optimizer_class(self.parameters())
            self.compile(optimizer, loss, metrics, clipnorm, compile_config.get("precision"))
            if optimizer_state is not None:
                self._ensure_trainer()
                self.optimizer.load_state_dict(optimizer_state)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{where!r}: the compile settings or optimizer state in the checkpoint cannot be restored "
                f"({type(error).__name__}: {error}); got compile {json.dumps(compile_config)[:160]}"
            ) from error


def _weights_file(path: str | os.PathLike, caller: str) -> Path:
    """``path`` as a safetensors file name; Keras' ``.weights.h5`` and other suffixes are refused."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        keras = " (grukit stores weights with safetensors, not HDF5)" if path.suffix.lower() in (".h5", ".hdf5") else ""
        raise ValueError(
            f"Sequential.{caller} expected a file name ending in .safetensors, got {os.fspath(path)!r}{keras}; "
            f"e.g. {path.name.split('.')[0] or 'model'}.weights.safetensors"
        )
    return path


def load_model(path: str | os.PathLike) -> Sequential:
    """Keras' name for :meth:`Sequential.from_pretrained`."""
    return Sequential.from_pretrained(path)
