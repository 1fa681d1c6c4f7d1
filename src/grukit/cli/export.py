"""``grukit export MODEL_DIR OUT.onnx [--int8 OUT_INT8.onnx]``: a saved model folder as an ONNX file.

A language model gives two graphs: ``OUT.onnx`` reads a whole prompt, ``OUT.step.onnx`` one token at a time
(see :mod:`grukit.export.onnx` for every graph's inputs and outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

import grukit


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


def run_export(args: argparse.Namespace) -> int:
    try:
        from grukit.export import quantize_int8, to_onnx
        from grukit.lm.model import GRULanguageModel
    except ImportError as error:
        raise ImportError(
            f"grukit export needs onnx and onnxruntime: pip install 'grukit[export]' ({error})"
        ) from error
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise ValueError(f"the output should be an .onnx file, got {args.output!r}")
    model = grukit.load(args.model)
    written = [to_onnx(model, output)]
    if isinstance(model, GRULanguageModel):
        written.append(to_onnx(model, step_path(output), graph="step"))
    if args.int8:
        written.append(quantize_int8(output, args.int8))
        if isinstance(model, GRULanguageModel):
            written.append(quantize_int8(written[1], step_path(Path(args.int8))))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
