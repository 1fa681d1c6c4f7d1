r"""int8 weights for CPU inference: onnxruntime's dynamic quantisation of an exported graph.

Each quantised matrix ``W`` is stored as int8 with one scale per tensor, ``W ≈ s_W · W_q``; at run time
every activation ``x`` is quantised per call to uint8, ``x ≈ s_x (x_q − z_x)``, and the product runs in integer
arithmetic. What gets quantised: ``MatMul`` (dense heads, the decoder, minGRU's projections), ``Gather``
(embeddings: a quarter of the bytes) and ``LSTM`` (onnxruntime's ``DynamicQuantizeLSTM``). onnxruntime has no
int8 GRU kernel, so ``GRU`` operators keep float32 weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

QUANTISED_OPS = ("MatMul", "Gather", "LSTM")


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write an int8 copy of the ONNX file ``source`` (from :func:`grukit.export.to_onnx`) to ``target``;
    inputs and outputs keep their names, shapes and float32 type. Returns ``target``."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"quantize_int8 expected an ONNX file written by to_onnx, got {os.fspath(source)!r}")
    if source.resolve() == target.resolve():
        raise ValueError(f"quantize_int8 would overwrite its input {os.fspath(source)!r}; give another target")
    onnx.checker.check_model(os.fspath(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_dynamic(source, target, op_types_to_quantize=list(QUANTISED_OPS), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return target


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """Drop onnxruntime's advice to pre-process the graph (shape inference for static quantisation), which does
    not apply to dynamic quantisation of grukit's graphs."""
    return "pre-processing before quantization" not in record.getMessage()
