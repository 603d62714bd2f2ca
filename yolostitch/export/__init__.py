"""Export to ONNX and TorchScript (verified against PyTorch) and int8 ONNX quantisation.

onnx and onnxruntime are imported only when an ONNX function runs; without them those functions raise an
ImportError that says what to install.
"""

from ._deps import ONNX_MISSING
from .exporter import (ExportResult, export_onnx, export_torchscript, export_weights, onnx_result, read_metadata,
                       torchscript_result, verify_onnx, verify_torchscript)
from .quantize import Int8Report, int8_report, quantize_int8
from .wrapper import ExportModule, max_relative_diff

__all__ = ["ONNX_MISSING", "ExportModule", "ExportResult", "Int8Report", "export_onnx", "export_torchscript",
           "export_weights", "int8_report", "max_relative_diff", "onnx_result", "quantize_int8", "read_metadata",
           "torchscript_result", "verify_onnx", "verify_torchscript"]
