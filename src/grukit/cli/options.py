"""What every ``grukit`` subcommand shares: the parser class, argument types that refuse absurd values by the
flag's name, and the checks that keep a command from writing over a user's files."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path

from grukit.saved import OLD_ARCHITECTURES

ERROR_PREFIX = "grukit: error:"
CONFIG_SECTIONS = ("tokenizer", "model", "training")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` lists every option's default: ``(default: …)`` is added unless the help already says what the
    default is, the option is required, it is an on/off flag (off unless given) or it has no default value (its
    help then says what leaving it out does)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.nargs == 0 or "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a positional argument the user must give
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands show their defaults and whose errors are one line:
    ``grukit: error: <message> (see 'grukit <command> --help')``, exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{ERROR_PREFIX} {message} (see '{self.prog} --help')\n")


# Argument types --------------------------------------------------------------------------------------------
def _number(kind: type, test: Callable[[float], bool], expected: str) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
random_seed = _number(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction strictly between 0 and 1")
valid_fraction = _number(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
probability = _number(float, lambda v: 0 < v <= 1, "a probability in (0, 1]")


def nonblank_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a text that is not blank, got {text!r}")
    return text


# Config files ----------------------------------------------------------------------------------------------
def read_json_config(path: str, sections: tuple[str, ...], allowed: tuple[str, ...]) -> dict[str, dict]:
    """``{section: dict}`` for each of ``sections`` from a JSON file whose top-level keys are among ``allowed``."""
    from grukit.datasets import read_text

    try:
        config = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"config {path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"config {path} must hold a JSON object with sections {list(allowed)}")
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"config {path} has unknown sections {unknown}; expected {list(allowed)}")
    for section in sections:
        if not isinstance(config.get(section, {}), dict):
            raise ValueError(f"config {path}: section {section!r} must be a JSON object")
    return {section: dict(config.get(section, {})) for section in sections}


# Output folders --------------------------------------------------------------------------------------------
def enclosing_saved_folder(path: Path) -> Path | None:
    """The grukit model folder (it has a ``manifest.json``) or training run folder (``data/`` and
    ``train_log.csv``) that ``path`` lies inside, if any: writing there would break it."""
    for parent in path.resolve().parents:
        run_folder = (parent / "data").is_dir() and (parent / "train_log.csv").is_file()
        if run_folder or (parent / "manifest.json").is_file():
            return parent
    return None


def folder_entries(folder: Path) -> list[str]:
    """The names in ``folder`` (none when it does not exist); ``--out`` naming a file, or a folder inside a
    model or run folder grukit wrote, is refused."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file; expected a folder")
    inside = enclosing_saved_folder(folder)
    if inside is not None:
        raise ValueError(
            f"--out {folder} is inside {inside.name}/, a model or run folder grukit wrote, which it would break; "
            "choose a folder outside it"
        )
    return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []


def listed(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_foreign_folder(folder: Path, names: list[str], kind: str) -> None:
    raise ValueError(
        f"--out {folder} is not empty and is not a {kind} (it holds {listed(names)}); grukit will not write over "
        "it: choose a new or empty folder"
    )


def check_model_out(folder: Path, architecture: str | None = None) -> None:
    """Refuse an ``--out`` that saving a model folder there would empty: one holding anything but the files of
    a model folder grukit wrote before (those in its ``manifest.json``, and ``results.json``), or, given the
    ``architecture`` about to be saved (``"grukit.TextClassifier"``), a model of another kind (such as the
    pretrained model a command reads)."""
    names = folder_entries(folder)
    if not names:
        return
    manifest = folder / "manifest.json"
    owned = {"manifest.json", "results.json"}
    if manifest.is_file():
        with contextlib.suppress(ValueError, AttributeError):  # an unreadable manifest owns nothing
            owned |= set(json.loads(manifest.read_text("utf-8")).get("files", {}))
    foreign = [name for name in names if name not in owned]
    if not manifest.is_file() or foreign:
        refuse_foreign_folder(folder, foreign or names, "model folder grukit wrote")
    if architecture is not None:
        try:
            saved = json.loads((folder / "config.json").read_text("utf-8")).get("architecture")
        except (OSError, ValueError, AttributeError):
            saved = None
        saved = OLD_ARCHITECTURES.get(saved, saved)
        if saved != architecture:
            raise ValueError(
                f"--out {folder} holds a {saved or 'model of unknown kind'}, not a {architecture}; grukit will not "
                "write over another model: choose a new or empty folder"
            )
