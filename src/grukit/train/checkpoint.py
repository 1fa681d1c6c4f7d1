"""Checkpoints as readable folders, written atomically and verified on load. No pickle anywhere.

A checkpoint folder holds::

    config.json            what to build (written by the owner of the model)
    model.safetensors      the weights
    optimizer.safetensors  optimizer tensors (optional), with their structure in training_state.json
    training_state.json    epoch, step, RNG states, data position, anything JSON (optional)
    manifest.json          sha256 and size of every file above, and the save's generation (1, 2, 3, …)

Saving ``NAME`` takes the lock file ``.NAME.lock`` beside it (so saves from several processes take turns and
the last one wins), writes every file into a hidden sibling ``.NAME.<random>.tmp``, fsyncs, moves the previous
folder aside into ``.NAME.<random>.old`` and renames the new one into place. A crash leaves either the old
checkpoint or the new one, never half of one: a folder left aside by a crash between the two renames is put
back by the next save or load, and the staging folders such a crash leaves are removed then. A save never
replaces anything but an empty folder or a grukit checkpoint. Loading checks the manifest before any file is
parsed, and opens only the plain file names it lists inside the folder.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
SHA256 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or of another kind than expected."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _names(entries: list[str], shown: int = 5) -> str:
    listed = ", ".join(repr(name) for name in entries[:shown])
    return listed + (f" and {len(entries) - shown} more" if len(entries) > shown else "")


# Locking, staging names and recovery ---------------------------------------------------------------------
@contextmanager
def _locked(path: Path, writing: bool) -> Iterator[bool]:
    """Hold the lock file ``.NAME.lock`` beside ``path``; yields whether the lock is held.

    Readers where no lock file can be made (a read-only folder) go on without it (``False``). The holder removes
    the lock file before releasing it, so a waiter that wakes on a removed file opens the current one again.
    """
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            if writing:
                raise
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(lock)
                held = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                held = False
        except BaseException:
            os.close(fd)
            raise
        if held:
            break
        os.close(fd)
    try:
        yield True
    finally:
        with suppress(OSError):
            lock.unlink()
        os.close(fd)


def _hidden_sibling(path: Path, kind: str) -> Path:
    """Make an empty folder ``.NAME.<8 hex>.<kind>`` beside ``path``, with the mode a plain mkdir gives (umask)."""
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.{kind}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate


def _generation(folder: Path) -> int | None:
    """The save generation of the checkpoint ``folder`` (0 for one written before generations), ``None`` when it
    is not a readable checkpoint."""
    try:
        return _read_manifest(folder).get("generation", 0)
    except (CheckpointError, OSError):
        return None


def _tidy(path: Path) -> None:
    """Undo what killed saves of ``path`` left; only while holding its lock.

    When ``path`` is missing, the newest checkpoint a save moved aside (``.NAME.*.old/NAME``, highest generation)
    is put back: it is the last save that completed. Then every staging folder of ``path``
    (``.NAME.<8 chars>.tmp`` / ``.old``, the names saves make) is removed; nothing else is touched.
    """
    if not path.exists() and not path.is_symlink():
        candidates = []
        for retired in path.parent.glob(f".{glob.escape(path.name)}.*.old"):
            generation = _generation(retired / path.name)
            if generation is not None:
                candidates.append((generation, retired / path.name))
        if candidates:
            _, newest = max(candidates, key=lambda candidate: candidate[0])
            os.replace(newest, path)
            with suppress(OSError):
                newest.parent.rmdir()
            _fsync_dir(path.parent)
            warnings.warn(f"restored checkpoint {str(path)!r} that an interrupted save had moved aside", stacklevel=4)
    staging = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-z_]{{8}}\.(tmp|old)")
    for leftover in path.parent.iterdir():
        if staging.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _plain_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a file of a checkpoint folder, or ``None`` when it can."""
    if not isinstance(name, str) or not name:
        return "it is not a non-empty string"
    if any(separator in name for separator in ("/", "\\", "\0")):
        return "it is a path, not a plain file name"
    if name.startswith("."):
        return "it is hidden or points outside the folder"
    return None


def _read_manifest(path: Path) -> dict:
    """The checked manifest of the folder ``path``: format, plain file names, a sha256 and a size for each."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{str(path)!r} has no {MANIFEST}: it is not a grukit checkpoint, or its writing never finished"
        )
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{str(manifest_path)!r} is not valid JSON ({error})") from error
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise CheckpointError(
            f"{str(manifest_path)!r} is not a grukit manifest: expected a JSON object with "
            f'"format": {FORMAT!r} and a "files" object, got {json.dumps(manifest)[:120]}'
        )
    generation = manifest.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise CheckpointError(f"{str(manifest_path)!r} has an invalid generation {generation!r}")
    for name, entry in manifest["files"].items():
        problem = "it is the manifest itself" if name == MANIFEST else _plain_name_problem(name)
        if problem:
            raise CheckpointError(
                f"{str(manifest_path)!r} lists {name!r}, refused because {problem}: a checkpoint holds only "
                "plain file names inside its folder"
            )
        size = entry.get("bytes") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
            or not isinstance(digest, str)
            or (not SHA256.fullmatch(digest))
        ):
            raise CheckpointError(
                f"{str(manifest_path)!r} lists {name!r} as {json.dumps(entry)[:120]}: expected "
                '{"bytes": <size>, "sha256": <64 hex digits>}'
            )
    return manifest


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` as the file ``path`` through a hidden temporary file in the same folder (created with the
    umask's permissions, like any new file), fsynced, then renamed over ``path``: a crash leaves the old file or
    the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _where(path: str | os.PathLike) -> Path:
    """The absolute folder that ``path`` names: a trailing "/" or "." still names the folder, and a symbolic link
    to an existing folder names the folder it points to (so saving through a link updates what it points to)."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.realpath(absolute)) if absolute.is_symlink() and absolute.is_dir() else absolute


def _generation_to_replace(path: Path) -> int:
    """The generation of the checkpoint at ``path`` that a save may replace (0 when nothing or an empty folder is
    there). Anything else at ``path`` is refused, so that a save never deletes a person's files."""
    if not path.exists():
        if path.is_symlink():
            raise CheckpointError(f"refusing to save a checkpoint to {str(path)!r}: it is a broken symbolic link")
        return 0
    if not path.is_dir():
        raise CheckpointError(
            f"refusing to save a checkpoint to {str(path)!r}: a file is there, not a grukit checkpoint folder; "
            "nothing was changed (choose another path, or move the file away)"
        )
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries:
        return 0
    try:
        manifest = _read_manifest(path)
    except CheckpointError as error:
        raise CheckpointError(
            f"refusing to replace {str(path)!r}: it holds {_names(entries)} and is not a grukit checkpoint "
            f"({error}); nothing was deleted (choose another path, or move those files away)"
        ) from error
    unlisted = sorted(set(entries) - set(manifest["files"]) - {MANIFEST})
    if unlisted:
        raise CheckpointError(
            f"refusing to replace the checkpoint {str(path)!r}: it also holds {_names(unlisted)}, which its "
            f"{MANIFEST} does not list; nothing was deleted (move those files away first)"
        )
    return manifest.get("generation", 0)


def write_folder(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name → bytes) plus ``manifest.json`` as the folder ``path``, atomically.

    ``path`` may be new, an empty folder, or a grukit checkpoint, which is replaced only once the new folder is
    complete on disk; anything else there is refused with :class:`CheckpointError`. Saves of one ``path`` from
    several processes take turns; the last one wins.
    """
    given, path = Path(path), _where(path)
    for name in files:
        problem = "it is reserved for the manifest" if name == MANIFEST else _plain_name_problem(name)
        if problem:
            raise CheckpointError(f"cannot write {name!r} into checkpoint {str(given)!r}: {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, writing=True):
        _tidy(path)
        generation = _generation_to_replace(path) + 1
        staging = _hidden_sibling(path, "tmp")
        try:
            manifest = {"format": FORMAT, "version": 1, "generation": generation, "files": {}}
            for name, data in files.items():
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
                # Two renames: a crash between them leaves the previous checkpoint in `retired`, which the next
                # save or load puts back; any failure of the second puts it straight back.
                retired = _hidden_sibling(path, "old")
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
    return given


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint folder is at ``path``, counting one that a save interrupted between its two
    renames left aside (it is put back first)."""
    path = _where(path)
    with _locked(path, writing=False) as held:
        if held:
            _tidy(path)
        return path.is_dir()


def read_folder(path: str | os.PathLike, names: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Read every file a checkpoint's manifest lists (or only those of ``names`` that it lists), verifying
    sizes and sha256 checksums. Waits for a save of the same folder in progress to finish."""
    path = Path(path)
    with _locked(_where(path), writing=False) as held:
        if held:
            _tidy(_where(path))
        if not path.is_dir():
            raise CheckpointError(f"no checkpoint folder at {str(path)!r}")
        listed = _read_manifest(path)["files"]
        files = {}
        for name, entry in listed.items():
            if names is not None and name not in names:
                continue
            file = path / name
            if file.is_symlink():
                raise CheckpointError(
                    f"checkpoint {str(path)!r} holds {name!r} as a symbolic link; refusing to follow it"
                )
            if not file.is_file():
                raise CheckpointError(f"checkpoint {str(path)!r} is missing {name!r}, which its manifest lists")
            if file.stat().st_size != entry["bytes"]:  # checked before reading, so a swapped-in huge file is not read
                raise CheckpointError(
                    f"checkpoint file {str(file)!r} is corrupted or truncated: expected {entry['bytes']} bytes "
                    f"with sha256 {entry['sha256'][:12]}…, got {file.stat().st_size} bytes"
                )
            data = file.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != entry["bytes"] or digest != entry["sha256"]:
                raise CheckpointError(
                    f"checkpoint file {str(file)!r} is corrupted or truncated: expected {entry['bytes']} bytes "
                    f"with sha256 {entry['sha256'][:12]}…, got {len(data)} bytes with sha256 {digest[:12]}…"
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
        training_state: epoch, step, data position, … (JSON); RNG states are added to it. Without it and without
            ``optimizer`` (a model saved for use, not to resume training) no ``training_state.json`` is written.
        extra_files: more files for the folder, e.g. tokenizer files.
    """
    if "architecture" not in config:
        raise CheckpointError(f"a checkpoint config must name its 'architecture', got keys {sorted(config)}")
    files = {"config.json": _json_bytes(config)}
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    files["model.safetensors"] = save_safetensors_bytes(weights)
    if training_state is not None or optimizer is not None:
        state = {**(training_state or {}), "rng": rng_state()}
        if optimizer is not None:
            tensors, structure = optimizer_to_files(optimizer)
            files["optimizer.safetensors"] = save_safetensors_bytes(tensors)
            state["optimizer"] = structure
        files["training_state.json"] = _json_bytes(state)
    files.update(extra_files or {})
    return write_folder(path, files)


def _json_file(path: str | os.PathLike, files: dict[str, bytes], name: str, default: bytes | None = None) -> dict:
    """The JSON object in the checkpoint file ``name`` (``default`` when the folder has none)."""
    data = files.get(name, default)
    if data is None:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} has no {name}")
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds invalid JSON in {name}: {error}") from error
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r}: {name} must hold a JSON object, got {json.dumps(value)[:80]}"
        )
    return value


def read_config(path: str | os.PathLike) -> dict:
    """The verified ``config.json`` of the checkpoint folder at ``path`` (the weights are not read)."""
    return _json_file(path, read_folder(path, names=("config.json",)), "config.json")


def load_checkpoint(path: str | os.PathLike, architecture: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Read and verify a checkpoint folder. With ``architecture`` (an id, or several accepted ids), refuse a
    checkpoint of another kind."""
    files = read_folder(path)
    config = _json_file(path, files, "config.json")
    if "model.safetensors" not in files:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} has no model.safetensors")
    state = _json_file(path, files, "training_state.json", default=b"{}")
    files.pop("config.json")
    files.pop("training_state.json", None)
    accepted = (architecture,) if isinstance(architecture, str) else architecture
    if accepted is not None and config.get("architecture") not in accepted:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} holds a {config.get('architecture')!r} model, expected {accepted[0]!r}"
        )
    tensors = {}
    for name in ("model.safetensors", "optimizer.safetensors"):
        try:
            tensors[name] = load_safetensors_bytes(files.pop(name, save_safetensors_bytes({})))
        except SafetensorError as error:
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r} has an unreadable safetensors file {name}: {error}"
            ) from error
    structure = state.pop("optimizer", None)
    optimizer_state = None
    if structure is not None:
        try:
            optimizer_state = optimizer_from_files(tensors["optimizer.safetensors"], structure)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r}: the optimizer state in training_state.json does not match "
                f"optimizer.safetensors ({type(error).__name__}: {error})"
            ) from error
    return Checkpoint(config, tensors["model.safetensors"], optimizer_state, state, files)


# Weights against the config, before a model is allocated ----------------------------------------------------
def config_values_behind(config: dict, expected: tuple[int, ...], actual: tuple[int, ...]) -> list[str]:
    """The integer settings of ``config`` (``"units=64"``) that explain a size of the ``expected`` shape absent
    from the ``actual`` one, directly or as a recurrent layer's 3 (GRU) or 4 (LSTM) gate blocks."""
    found = []
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        sizes = {value, 3 * value, 4 * value}
        if any(size in expected and size not in actual for size in sizes):
            found.append(f"{key}={value}")
    return found


def check_weights_fit(
    path: str | os.PathLike,
    expected: dict[str, tuple[int, ...]],
    weights: dict[str, torch.Tensor],
    describe: Callable[[str], str] | None = None,
) -> None:
    """Refuse ``weights`` whose names or shapes differ from ``expected`` (what the checkpoint's config builds,
    e.g. the shapes of the model built on the ``meta`` device), so that an edited ``config.json`` fails here
    rather than allocating a model of the wrong size. ``describe(name)`` says which layer and setting made the
    weight ``name``."""
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r}: model.safetensors does not fit config.json: the config builds "
            f"weights it lacks ({_names(missing) or 'none'}) and it holds weights the config does not build "
            f"({_names(unexpected) or 'none'})"
        )
    for name, shape in expected.items():
        actual = tuple(weights[name].shape)
        if actual != tuple(shape):
            made_by = f" of {describe(name)}" if describe is not None else ""
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r}: config.json does not fit model.safetensors: weight {name!r}"
                f"{made_by} would have shape {tuple(shape)} by the config, but the saved weight has shape {actual}"
            )
