"""Engine layer: verified ONNX → FP16/FP32 TensorRT engines with dynamic shapes.

Plain logic (profiles, version gates, the layer-precision summary, the sidecar, the accuracy
gate's arithmetic) imports without TensorRT and is tested everywhere. The TensorRT calls live in
`compile` (build), `executor` (run) and `trt_base` (the process's logger, Builder and Runtime),
imported only when an engine is built or run, so this package imports on any machine; there, a
missing TensorRT is one FCNError line. They are checked against the real bindings of every
supported release (scripts/trt_bindings.py, docs/tensorrt.md).
"""

from .builder import ENGINE_SUFFIXES, EngineGateError, EngineReport, build_engine
from .gate import GateRow, compare_outputs, format_gate, gate_jobs, gate_passed, gate_shapes
from .layer_info import LayerSummary, summarize_layers, tensor_precision
from .plan import BuildPlan, ParserIssue, format_parser_errors
from .profiles import (
    Profile,
    choose_profile,
    default_profiles,
    format_shape,
    parse_shape,
    profiles_from_strings,
    select_profile,
    validate_profiles,
)
from .sidecar import EngineMetadata, check_compatible, read_sidecar, sidecar_path, write_sidecar
from .versions import PrecisionRoute, TrtVersion, parse_trt_version, precision_route

__all__ = [
    "ENGINE_SUFFIXES",
    "BuildPlan",
    "EngineGateError",
    "EngineMetadata",
    "EngineReport",
    "GateRow",
    "LayerSummary",
    "ParserIssue",
    "PrecisionRoute",
    "Profile",
    "TrtVersion",
    "build_engine",
    "check_compatible",
    "choose_profile",
    "compare_outputs",
    "default_profiles",
    "format_gate",
    "format_parser_errors",
    "format_shape",
    "gate_jobs",
    "gate_passed",
    "gate_shapes",
    "parse_shape",
    "parse_trt_version",
    "precision_route",
    "profiles_from_strings",
    "read_sidecar",
    "select_profile",
    "sidecar_path",
    "summarize_layers",
    "tensor_precision",
    "validate_profiles",
    "write_sidecar",
]
