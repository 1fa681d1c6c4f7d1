"""``grukit export MODEL_DIR OUT.onnx [--int8 OUT_INT8.onnx]``: a saved model folder as an ONNX file.

A language model gives two graphs: ``OUT.onnx`` reads a whole prompt, ``OUT.step.onnx`` one token at a time
(see :mod:`grukit.export.onnx` for every graph's inputs and outputs). Every file it would write must be a new
``.onnx`` name or an ONNX graph grukit wrote before, outside any model or run folder; anything else is refused
before a file is written."""

from __future__ import annotations

import argparse
from pathlib import Path

import grukit
from grukit.cli.options import enclosing_saved_folder
from grukit.lm.model import ARCHITECTURE, OLD_ARCHITECTURES
from grukit.train.checkpoint import read_config

WRITERS = ("grukit", "onnx.quantize")  # producer_name of to_onnx's graphs and of their int8 copies


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``grukit`` command."""
    export = subparsers.add_parser("export", help="write a saved model folder as an ONNX graph for onnxruntime")
    export.add_argument("model", help="a model folder written by save_pretrained")
    export.add_argument("output", help="the ONNX file to write (a language model also writes <name>.step.onnx)")
    export.add_argument("--int8", metavar="FILE", help="also write an int8 (dynamically quantised) copy here")
    export.set_defaults(handler=run_export)


def step_path(output: Path) -> Path:
    """Where a language model's one-token graph goes beside ``output``: ``lm.onnx`` → ``lm.step.onnx``."""
    return output.with_name(f"{output.stem}.step{output.suffix or '.onnx'}")


def check_outputs(paths: list[Path]) -> None:
    """Refuse, before anything is written, outputs that are not ``.onnx`` files, that name one file twice, that
    lie inside a model or run folder, or that would write over a folder or a file other than an ONNX graph grukit
    wrote (an earlier export may be replaced; nothing else a user owns is)."""
    import onnx
    from google.protobuf.message import DecodeError

    for path in paths:
        if path.suffix != ".onnx":
            raise ValueError(f"the output should be an .onnx file, got {str(path)!r}")
    resolved = [path.resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise ValueError(
                f"{paths[index]} would be written twice (a language model's one-token graph goes to "
                f"<name>.step.onnx beside each output): give the outputs other names"
            )
        inside = enclosing_saved_folder(path)
        if inside is not None:
            raise ValueError(
                f"{paths[index]} is inside {inside.name}/, a model or run folder grukit wrote, which it would break; "
                "write the ONNX file elsewhere"
            )
        if path.is_dir():
            raise ValueError(f"{paths[index]} is a folder; expected the name of an .onnx file to write")
        if path.exists():
            try:
                producer = onnx.load(path, load_external_data=False).producer_name
            except (DecodeError, OSError, ValueError, RuntimeError):  # not an ONNX file at all
                producer = None
            if producer not in WRITERS:
                raise ValueError(
                    f"{paths[index]} exists and is not an ONNX graph grukit wrote; grukit will not write over it: "
                    "choose another name"
                )


def run_export(args: argparse.Namespace) -> int:
    try:
        from grukit.export import quantize_int8, to_onnx
        from grukit.lm.model import GRULanguageModel
    except ImportError as error:
        raise ImportError(
            f"grukit export needs onnx and onnxruntime: pip install 'grukit[export]' ({error})"
        ) from error
    output = Path(args.output)
    int8 = Path(args.int8) if args.int8 else None
    is_language_model = read_config(args.model).get("architecture") in (ARCHITECTURE, *OLD_ARCHITECTURES)
    outputs = [output, *([int8] if int8 else [])]
    check_outputs(outputs + ([step_path(path) for path in outputs] if is_language_model else []))
    model = grukit.load(args.model)
    written = [to_onnx(model, output)]
    if isinstance(model, GRULanguageModel):
        written.append(to_onnx(model, step_path(output), graph="step"))
    if int8:
        written.append(quantize_int8(output, int8))
        if isinstance(model, GRULanguageModel):
            written.append(quantize_int8(written[1], step_path(int8)))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
