"""What a build asks TensorRT for, decided before TensorRT is touched.

`BuildPlan` is plain data (profiles in the network's layout, precision route, workspace bytes,
optimization level, the timing cache bytes) so the TensorRT-calling code in `compile` is a
straight line of calls, and everything it depends on is checked and tested without TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import FCNError
from ..export.metadata import OnnxMetadata
from .profiles import Profile, Shape
from .versions import PrecisionRoute

__all__ = [
    "BuildPlan",
    "ParserIssue",
    "attach_timing_cache",
    "check_int8_target",
    "check_opt_level",
    "enum_name",
    "format_parser_errors",
    "severity_passes",
    "workspace_bytes",
]

Cache = TypeVar("Cache")

GIB = 1 << 30


@dataclass(frozen=True)
class BuildPlan:
    """Everything `compile.compile_engine` needs, already validated."""

    input_name: str
    io: str
    profiles: tuple[Profile, ...]
    route: PrecisionRoute
    workspace_bytes: int
    opt_level: int
    timing_cache: bytes | None  # None: start an empty cache

    def profile_shapes(self) -> list[tuple[Shape, Shape, Shape]]:
        """min/opt/max of each profile in the network input's layout (NHWC for image mode)."""
        return [p.for_io(self.io) for p in self.profiles]


@dataclass(frozen=True)
class ParserIssue:
    """One ``parser.get_error(i)``: code name, description, node index, name and operator."""

    code: str
    desc: str
    node: int
    node_name: str
    node_operator: str


def enum_name(value: object) -> str:
    """The member name of a TensorRT enum value (``ErrorCode.INVALID_NODE`` → ``INVALID_NODE``).

    Not ``value.name``: on TensorRT 10.12–10.15 the bindings' ``name`` is a method (a property
    from 10.16 on), so it reads ``<bound method PyCapsule.name ...>``; ``str()`` is
    ``Type.MEMBER`` on every release (checked against each release's real binding in
    tests/test_trt_bindings.py).
    """
    return str(value).rpartition(".")[2]


# ILogger::Severity from the most to the least severe (include/NvInferRuntime.h: kINTERNAL_ERROR
# = 0 ... kVERBOSE = 4)
SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


def severity_passes(severity: str, minimum: str) -> bool:
    """Whether a message of ``severity`` is as severe as ``minimum`` or more (member names).

    A Python ``trt.ILogger`` subclass must filter in its own ``log``: only the binding's
    built-in ``trt.Logger`` has a ``min_severity`` (python/src/infer/pyCore.cpp, ``DefaultLogger``
    with ``def_readwrite("min_severity", ...)``), and TensorRT never reads an attribute of that
    name on an ``ILogger``. An unknown name passes (it is kept, not lost).
    """
    if severity not in SEVERITIES or minimum not in SEVERITIES:
        return True
    return SEVERITIES.index(severity) <= SEVERITIES.index(minimum)


def _parser_hint(issue: ParserIssue) -> str:
    """What to do about the first parser error, where the fix is known."""
    desc = issue.desc.lower()
    if "zero point" in desc or "asymmetric" in desc:
        # onnx-tensorrt's QuantDequantLinearHelper: non-zero zero points (UINT8 activations) are
        # accepted only with the DLA parser flag kENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA
        return (
            "; TensorRT takes only symmetric INT8 Q/DQ (zero point 0): re-export with "
            "--precision int8 --int8-target tensorrt"
        )
    if "quantizelinear" in issue.node_operator.lower():
        return ""
    if "strongly typed" in desc or "type" in desc or "cast" in desc:
        return (
            "; a strongly typed network needs one float dtype per node: re-export the ONNX file "
            "with fcn-export"
        )
    return ""


def format_parser_errors(path: str, issues: Sequence[ParserIssue]) -> str:
    """One line for the user: the first error with its node, and how many more there were."""
    if not issues:
        return (
            f"TensorRT could not parse {path} (no parser error was reported; run with a verbose "
            "logger)"
        )
    first = issues[0]
    where = f"node {first.node_name or '#' + str(first.node)}"
    if first.node_operator:
        where += f" ({first.node_operator})"
    more = f" (+{len(issues) - 1} more errors)" if len(issues) > 1 else ""
    desc = first.desc.strip()
    return f"TensorRT cannot parse {path}: {where}: {first.code}: {desc}{more}{_parser_hint(first)}"


def check_int8_target(meta: OnnxMetadata, precision: str) -> None:
    """Refuse an INT8 graph calibrated for another target before any TensorRT work.

    The ``cpu`` target's UINT8 activations have non-zero zero points, which onnx-tensorrt's
    Q/DQ importer refuses ("Non-zero zero point is not supported", QuantDequantLinearHelper:
    only the DLA parser flag kENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA admits them). Exports
    older than the target field were ``cpu``.
    """
    if "int8" not in (precision, meta.precision):
        return
    target = (meta.calibration or {}).get("target", "cpu")
    if target != "tensorrt":
        raise FCNError(
            f"this INT8 ONNX graph was made for the {target!r} target (UINT8 activations with "
            "non-zero zero points), which TensorRT cannot parse; export it with --precision int8 "
            "--int8-target tensorrt (fcn-export chooses it when --engine is given)",
            param="precision",
        )


def workspace_bytes(gib: float) -> int:
    """``--workspace`` GiB → bytes, refusing nonsense before a long build."""
    if not gib > 0:
        raise FCNError(f"workspace must be a positive number of GiB, got {gib}")
    return int(gib * GIB)


def check_opt_level(level: int) -> int:
    if not 0 <= level <= 5:
        raise FCNError(f"builder optimization level must be 0..5, got {level}")
    return level


def attach_timing_cache(
    blob: bytes | None,
    create: Callable[[bytes], Cache | None],
    attach: Callable[[Cache], bool],
) -> tuple[Cache, str | None]:
    """Attach the timing cache read from ``blob``, or a fresh one when TensorRT cannot use it.

    ``create`` is ``config.create_timing_cache`` and ``attach`` is ``config.set_timing_cache(c,
    False)``. A cache file from another GPU or TensorRT release, or a damaged one, makes
    ``createTimingCache`` return nullptr (None in Python: include/NvInfer.h, pyCore.cpp's
    ``netconfig_create_timing_cache``) or raise, and ``setTimingCache`` return false; passing None
    on would raise TypeError (its C++ parameter is ``ITimingCache const&``). Returns the cache in
    use (keep it alive until the build ends) and a warning to log, or None when the blob was used.
    """
    problem: str | None = None
    if blob:
        try:
            cache = create(blob)
        except (RuntimeError, TypeError, ValueError) as e:
            cache, problem = None, f"TensorRT could not read it ({e})"
        if cache is not None:
            if attach(cache):
                return cache, None
            problem = "it was made on another GPU or TensorRT release"
        problem = problem or "TensorRT could not read it (damaged, or from another release)"
    fresh = create(b"")
    if fresh is None or not attach(fresh):
        raise FCNError("TensorRT could not create an empty timing cache (out of memory?)")
    warning = f"timing cache not used: {problem}; starting a new one" if problem else None
    return fresh, warning
