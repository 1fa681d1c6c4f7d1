r"""Low-rank adapters (LoRA, Hu et al. 2021) on recurrent weight matrices.

Each adapted matrix ``W`` (a GRU's ``W_ih`` ``(3H, I)`` or ``W_hh`` ``(3H, H)``) is replaced, through
``torch.nn.utils.parametrize``, by::

    W' = W + (α / r) · B · A        A: (r, in)  small random,  B: (out, r)  zeros

so a freshly adapted model computes exactly what the base model computes; only ``A`` and ``B`` train.
:func:`merge_lora` folds ``(α / r) · B · A`` into ``W`` and removes the adapters. Adapters are saved apart
from the base weights (``adapter_config.json`` + ``adapter_model.safetensors``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn
from torch.nn.utils import parametrize

from grukit.nn.recurrent import RecurrentBase
from grukit.train.checkpoint import CheckpointError, read_folder, write_folder

TARGETS = ("weight_ih", "weight_hh")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class LoRA(nn.Module):
    r"""The parametrization ``W ↦ W + (α / r) · B · A`` of one ``(out, in)`` matrix.

    Args:
        out_features, in_features: the shape of ``W``.
        rank: ``r``.
        alpha: ``α``; the update is scaled by ``α / r``.
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A)  # (out, in)


def _recurrent_modules(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, RecurrentBase)]


def add_lora(
    model: nn.Module, rank: int = 8, alpha: float = 16.0, targets: Iterable[str] = TARGETS, freeze_base: bool = True
) -> nn.Module:
    """Attach LoRA adapters to every grukit recurrent layer inside ``model``, in place.

    Args:
        model: any module holding :class:`grukit.nn.GRU` (or LSTM) layers.
        rank: ``r`` of ``B · A``.
        alpha: scale numerator, the update is ``(α / r) · B · A``.
        targets: which matrices to adapt, from ``("weight_ih", "weight_hh")``.
        freeze_base: set ``requires_grad=False`` on every parameter that is not an adapter.

    Returns:
        ``model``, so that ``add_lora(model).train()`` reads naturally.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"add_lora expected rank to be a positive integer, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"add_lora expected a positive finite alpha, got {alpha!r}")
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"add_lora expected targets among {TARGETS}, got {targets!r}")
    layers = _recurrent_modules(model)
    if not layers:
        raise ValueError(f"add_lora found no grukit recurrent layer inside {type(model).__name__}")
    if lora_config(model) is not None:
        raise ValueError("add_lora: this model already has LoRA adapters; merge_lora(model) first")
    smallest = min(min(weight.shape) for layer in layers for name, weight in layer.named_parameters(recurse=False)
                   if name.startswith(targets))
    if rank > smallest:
        raise ValueError(
            f"add_lora expected rank <= {smallest}, the smallest side of the adapted matrices, got {rank}: a larger "
            "rank trains more parameters than the matrix itself has"
        )
    return _attach(model, rank, alpha, targets, freeze_base)


def _attach(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...], freeze_base: bool) -> nn.Module:
    """Register a :class:`LoRA` on each ``targets`` matrix of every recurrent layer of ``model`` (checked)."""
    if freeze_base:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    for layer in _recurrent_modules(model):
        names = [name for name, _ in layer.named_parameters(recurse=False) if name.startswith(targets)]
        for name in names:
            weight = getattr(layer, name)
            adapter = LoRA(weight.shape[0], weight.shape[1], rank, alpha).to(weight.device, weight.dtype)
            parametrize.register_parametrization(layer, name, adapter)
    return model


def lora_config(model: nn.Module) -> dict | None:
    """``{"rank", "alpha", "targets"}`` of the adapters attached to ``model``, or ``None``."""
    found: dict = {}
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for name, chain in module.parametrizations.items():
            for adapter in chain:
                if isinstance(adapter, LoRA):
                    found.setdefault("rank", adapter.rank)
                    found.setdefault("alpha", adapter.alpha)
                    found.setdefault("targets", set()).add(name.rsplit("_l", 1)[0])
    if not found:
        return None
    return {"rank": found["rank"], "alpha": found["alpha"], "targets": sorted(found["targets"])}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (``W ← W + (α / r) · B · A``) and remove it, in place."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                if any(isinstance(p, LoRA) for p in module.parametrizations[name]):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def split_state_dict(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(base, adapters)``: the base weights under their plain names (``layers.0.weight_hh_l0``), and the
    adapter tensors (``layers.0.parametrizations.weight_hh_l0.0.lora_A``) apart."""
    base: dict[str, Tensor] = {}
    adapters: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        if ".parametrizations." not in key:
            base[key] = tensor
        elif key.endswith(".original"):
            prefix, rest = key.split("parametrizations.", 1)
            base[prefix + rest[: -len(".original")]] = tensor
        else:
            adapters[key] = tensor
    return base, adapters


def load_base_state_dict(model: nn.Module, state: dict[str, Tensor], strict: bool = True) -> list[str]:
    """Load plain-named base weights into ``model`` whether or not it carries adapters.
    Returns the names of the model's base weights that ``state`` lacked."""
    expected, _ = split_state_dict(model)
    own = set(model.state_dict())
    renamed: dict[str, Tensor] = {}
    for key, tensor in state.items():
        prefix, _, name = key.rpartition(".")
        target = f"{prefix}.parametrizations.{name}.original" if prefix else f"parametrizations.{name}.original"
        renamed[key if key in own else target] = tensor
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if strict and unexpected:
        raise ValueError(f"weights hold names this model does not have: {unexpected[:5]}")
    model.load_state_dict(renamed, strict=False)
    return missing


def adapter_files(model: nn.Module) -> dict[str, bytes]:
    """The adapter files of ``model`` (name → bytes), empty when it has no adapters."""
    config = lora_config(model)
    if config is None:
        return {}
    _, adapters = split_state_dict(model)
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in adapters.items()}
    return {
        ADAPTER_CONFIG: (json.dumps(config, indent=2) + "\n").encode("utf-8"),
        ADAPTER_WEIGHTS: save_safetensors_bytes(tensors),
    }


def _adapter_shapes(model: nn.Module, rank: int, targets: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """The adapter tensors :func:`add_lora` would attach to ``model``, name → shape, without attaching them."""
    shapes = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, RecurrentBase):
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, weight in module.named_parameters(recurse=False):
            if name.startswith(targets):
                shapes[f"{prefix}parametrizations.{name}.0.lora_A"] = (rank, weight.shape[1])  # (r, in)
                shapes[f"{prefix}parametrizations.{name}.0.lora_B"] = (weight.shape[0], rank)  # (out, r)
    return shapes


def load_adapter_files(model: nn.Module, files: dict[str, bytes], where: str = "the adapter files") -> bool:
    """Attach and load the adapters in ``files`` (from :func:`adapter_files`); ``False`` when there are none.

    Everything is checked before ``model`` changes: an adapter made for another base model (other sizes or
    vocabulary) is refused with both shapes named."""
    if ADAPTER_CONFIG not in files:
        return False
    if ADAPTER_WEIGHTS not in files:
        raise CheckpointError(f"{where!r} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    try:
        config = json.loads(files[ADAPTER_CONFIG].decode("utf-8"))
        rank, alpha, targets = config["rank"], config["alpha"], tuple(config["targets"])
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or any(t not in TARGETS for t in targets):
            raise ValueError(f"expected a positive rank and targets among {TARGETS}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"expected a positive finite alpha, got {alpha!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{where!r}: {ADAPTER_CONFIG} is not a LoRA config like "
            f'{{"rank": 8, "alpha": 16.0, "targets": ["weight_hh", "weight_ih"]}} ({error})'
        ) from error
    try:
        tensors = load_safetensors_bytes(files[ADAPTER_WEIGHTS])
    except SafetensorError as error:
        raise CheckpointError(f"{where!r}: {ADAPTER_WEIGHTS} is not a readable safetensors file: {error}") from error
    if lora_config(model) is not None:
        raise ValueError("cannot load LoRA adapters onto a model that already has some; merge_lora(model) first")
    expected = _adapter_shapes(model, rank, targets)
    if set(tensors) != set(expected):
        raise CheckpointError(
            f"{where!r}: the adapters do not fit this {type(model).__name__}: it takes "
            f"{sorted(expected)[:3]}…, the adapter file holds {sorted(tensors)[:3]}…"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{where!r}: the adapters were made for another base model: {name} has shape "
                f"{tuple(tensors[name].shape)} in the adapter file, but this {type(model).__name__} needs {shape} "
                "(its embedding or hidden sizes differ)"
            )
    _attach(model, rank, float(alpha), targets, freeze_base=True)  # a rank above add_lora's limit still loads
    model.load_state_dict(tensors, strict=False)
    return True


def save_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Write only the adapters of ``model`` to the folder ``path`` (atomically, with a manifest)."""
    files = adapter_files(model)
    if not files:
        raise ValueError("save_lora: this model has no LoRA adapters; call add_lora(model, ...) first")
    write_folder(path, files)


def load_lora(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Attach the adapters saved by :func:`save_lora` in ``path`` to ``model`` (the same base architecture)."""
    if not load_adapter_files(model, read_folder(path), os.fspath(path)):
        raise CheckpointError(f"{str(path)!r} holds no {ADAPTER_CONFIG}: it is not a LoRA adapter folder")
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; a tied matrix counts once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total
