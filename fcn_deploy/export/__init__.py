"""Export layer: PyTorch FCN → verified, self-describing, dynamic-shape ONNX.

`export_onnx` writes the file; `read_onnx_metadata` reads what it says about itself; `ort_session`
/ `ort_run` are the ONNX Runtime helpers the engine accuracy gate and the runtime reuse.
"""

from .checks import GraphSummary
from .exporter import ExportReport, export_onnx, model_sha256
from .graph import synthetic_images
from .metadata import OnnxMetadata, check_verified, read_onnx_metadata
from .ort import ort_run, ort_session
from .verify import VerifyRow, choose_sizes, format_rows, verify_onnx

__all__ = [
    "ExportReport",
    "GraphSummary",
    "OnnxMetadata",
    "VerifyRow",
    "check_verified",
    "choose_sizes",
    "export_onnx",
    "format_rows",
    "model_sha256",
    "ort_run",
    "ort_session",
    "read_onnx_metadata",
    "synthetic_images",
    "verify_onnx",
]
