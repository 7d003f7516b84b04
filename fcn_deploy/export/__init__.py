"""Export layer: PyTorch FCN → verified, self-describing, dynamic-shape ONNX."""

from .exporter import ExportReport, VerifyRow, export_onnx
from .metadata import OnnxMetadata, read_onnx_metadata

__all__ = ["export_onnx", "ExportReport", "VerifyRow", "OnnxMetadata", "read_onnx_metadata"]
