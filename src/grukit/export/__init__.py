"""Models out of the Python process: ONNX graphs that onnxruntime runs with grukit's results
(:func:`to_onnx`) and int8 copies of them for CPU inference (:func:`quantize_int8`). Needs the ``export``
extra (``pip install 'grukit[export]'``)."""

from grukit.export.onnx import build_model, to_onnx
from grukit.export.quantize import quantize_int8

__all__ = ["build_model", "quantize_int8", "to_onnx"]
