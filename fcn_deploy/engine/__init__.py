"""Engine layer: verified ONNX → FP16/FP32 TensorRT engines with dynamic shapes.

Plain logic (profiles, version gates, the layer-precision summary, the sidecar, the accuracy
gate's arithmetic) imports without TensorRT and is tested everywhere. The TensorRT calls live in
`compile` (build) and `executor` (run), imported only when an engine is built or run, so this
package imports on any machine; there, a missing TensorRT is one FCNError line.
"""

from .builder import ENGINE_SUFFIXES, EngineGateError, EngineReport, build_engine
from .gate import GateRow, compare_outputs, format_gate, gate_passed, gate_shapes
from .layer_info import LayerSummary, summarize_layers, tensor_precision
from .plan import BuildPlan, ParserIssue, format_parser_errors
from .profiles import Profile, default_profiles, format_shape, parse_shape, profiles_from_strings, select_profile, validate_profiles
from .sidecar import EngineMetadata, check_compatible, read_sidecar, sidecar_path, write_sidecar
from .versions import PrecisionRoute, TrtVersion, parse_trt_version, precision_route

__all__ = [
    "build_engine", "EngineReport", "EngineGateError", "ENGINE_SUFFIXES",
    "Profile", "parse_shape", "format_shape", "profiles_from_strings", "default_profiles", "validate_profiles", "select_profile",
    "TrtVersion", "parse_trt_version", "PrecisionRoute", "precision_route",
    "LayerSummary", "summarize_layers", "tensor_precision",
    "EngineMetadata", "sidecar_path", "read_sidecar", "write_sidecar", "check_compatible",
    "GateRow", "gate_shapes", "compare_outputs", "gate_passed", "format_gate",
    "BuildPlan", "ParserIssue", "format_parser_errors",
]  # fmt: skip
