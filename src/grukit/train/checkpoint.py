"""Checkpoints as readable folders, written atomically and verified on load. No pickle anywhere.

A checkpoint folder holds::

    config.json            what to build (written by the owner of the model)
    model.safetensors      the weights
    optimizer.safetensors  optimizer tensors (optional), with their structure in training_state.json
    training_state.json    epoch, step, RNG states, data position, anything JSON (optional)
    manifest.json          sha256 and size of every file above

Writing goes to a hidden sibling folder; every file is fsynced, then the folder is renamed into place,
so a crash leaves either the old checkpoint or the new one, never half of one. Loading checks the
manifest before any file is parsed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

MANIFEST = "manifest.json"
FORMAT = "grukit-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or of another kind than expected."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_folder(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name → bytes) plus ``manifest.json`` as the folder ``path``, atomically.

    An existing folder at ``path`` is replaced only once the new one is complete on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        manifest = {"format": FORMAT, "version": 1, "files": {}}
        for name, data in files.items():
            if "/" in name or name == MANIFEST:
                raise ValueError(f"checkpoint file names must be plain and not {MANIFEST!r}, got {name!r}")
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        with open(staging / MANIFEST, "wb") as handle:
            handle.write(_json_bytes(manifest))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(staging)
        if path.exists():
            # Two renames: a crash between them leaves the previous checkpoint intact in `retired`, and any
            # failure of the second puts it straight back.
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired / path.name)
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(retired / path.name, path)
                retired.rmdir()
                raise
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _recover_interrupted_swap(path: Path) -> None:
    """Put back the previous checkpoint that a crash between :func:`write_folder`'s two renames left aside."""
    retired = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.old/{glob.escape(path.name)}"))
    if retired and (retired[-1] / MANIFEST).is_file():
        os.replace(retired[-1], path)
        shutil.rmtree(retired[-1].parent, ignore_errors=True)
        warnings.warn(f"restored checkpoint {str(path)!r} that an interrupted save had moved aside", stacklevel=3)


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint folder is at ``path``, counting one that a save interrupted between its two
    renames left aside (it is put back first)."""
    path = Path(path)
    if not path.is_dir():
        _recover_interrupted_swap(path)
    return path.is_dir()


def read_folder(path: str | os.PathLike) -> dict[str, bytes]:
    """Read every file a checkpoint's manifest lists, verifying sizes and sha256 checksums."""
    path = Path(path)
    if not path.is_dir():
        _recover_interrupted_swap(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {str(path)!r}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{str(path)!r} has no {MANIFEST}: it is not a grukit checkpoint, or its writing never finished"
        )
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        listed = manifest["files"]
        if manifest.get("format") != FORMAT:
            raise KeyError("format")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{str(manifest_path)!r} is not a valid grukit manifest ({error})") from error
    files = {}
    for name, entry in listed.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} is missing {name!r}, which its manifest lists")
        data = file.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint file {str(file)!r} is corrupted or truncated: expected {entry['bytes']} bytes "
                f"with sha256 {entry['sha256'][:12]}…, got {len(data)} bytes with sha256 "
                f"{hashlib.sha256(data).hexdigest()[:12]}…"
            )
        files[name] = data
    return files


# Optimizer and RNG state as safetensors + JSON ------------------------------------------------------------
def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON structure."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state_dict["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    """Rebuild an optimizer ``state_dict`` from :func:`optimizer_to_files`'s output."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, slots in structure["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": structure["param_groups"]}


def rng_state() -> dict:
    """Python, numpy and torch RNG states as JSON-serialisable values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, so the same seed gives the same training on the CPU."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything expected a non-negative integer seed, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# The checkpoint itself -------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    config: dict
    weights: dict[str, torch.Tensor]
    optimizer_state: dict | None = None
    training_state: dict = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    config: dict,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring).

    Args:
        config: JSON-serialisable description of the model; must name its ``"architecture"``.
        weights: parameter and buffer tensors, e.g. ``model.state_dict()``.
        optimizer: saved with its state when given.
        training_state: epoch, step, data position, … (JSON); RNG states are added to it.
        extra_files: more files for the folder, e.g. tokenizer files.
    """
    if "architecture" not in config:
        raise ValueError(f"a checkpoint config must name its 'architecture', got keys {sorted(config)}")
    files = {"config.json": _json_bytes(config)}
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    files["model.safetensors"] = save_safetensors_bytes(weights)
    state = dict(training_state or {})
    state["rng"] = rng_state()
    if optimizer is not None:
        tensors, structure = optimizer_to_files(optimizer)
        files["optimizer.safetensors"] = save_safetensors_bytes(tensors)
        state["optimizer"] = structure
    files["training_state.json"] = _json_bytes(state)
    files.update(extra_files or {})
    return write_folder(path, files)


def read_config(path: str | os.PathLike) -> dict:
    """The verified ``config.json`` of the checkpoint folder at ``path``."""
    files = read_folder(path)
    if "config.json" not in files:
        raise CheckpointError(f"checkpoint {str(path)!r} has no config.json")
    try:
        config = json.loads(files["config.json"].decode("utf-8"))
    except ValueError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} holds invalid JSON in config.json: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: config.json must hold a JSON object, got {config!r:.80}")
    return config


def load_checkpoint(path: str | os.PathLike, architecture: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint folder. With ``architecture``, refuse a checkpoint of another kind."""
    files = read_folder(path)
    for required in ("config.json", "model.safetensors"):
        if required not in files:
            raise CheckpointError(f"checkpoint {str(path)!r} has no {required}")
    try:
        config = json.loads(files.pop("config.json").decode("utf-8"))
        state = json.loads(files.pop("training_state.json", b"{}").decode("utf-8"))
    except ValueError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} holds invalid JSON: {error}") from error
    if architecture is not None and config.get("architecture") != architecture:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {config.get('architecture')!r} model, expected {architecture!r}"
        )
    try:
        weights = load_safetensors_bytes(files.pop("model.safetensors"))
        optimizer_tensors = load_safetensors_bytes(files.pop("optimizer.safetensors", save_safetensors_bytes({})))
    except SafetensorError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unreadable safetensors file: {error}") from error
    structure = state.pop("optimizer", None)
    optimizer_state = optimizer_from_files(optimizer_tensors, structure) if structure is not None else None
    return Checkpoint(config, weights, optimizer_state, state, files)
