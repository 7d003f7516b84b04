"""What a build asks TensorRT for, decided before TensorRT is touched.

`BuildPlan` is plain data (profiles in the network's layout, precision route, workspace bytes,
optimization level, the timing cache bytes) so the TensorRT-calling code in `compile` is a
straight line of calls, and everything it depends on is checked and tested without TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FCNError
from .profiles import Profile, Shape
from .versions import PrecisionRoute

__all__ = ["BuildPlan", "ParserIssue", "check_opt_level", "format_parser_errors", "workspace_bytes"]

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
    hint = ""
    if "type" in first.desc.lower() or "cast" in first.desc.lower():
        hint = (
            "; a strongly typed network needs one float dtype per node: re-export the ONNX file "
            "with fcn-export"
        )
    return f"TensorRT cannot parse {path}: {where}: {first.code}: {first.desc.strip()}{more}{hint}"


def workspace_bytes(gib: float) -> int:
    """``--workspace`` GiB → bytes, refusing nonsense before a long build."""
    if not gib > 0:
        raise FCNError(f"workspace must be a positive number of GiB, got {gib}")
    return int(gib * GIB)


def check_opt_level(level: int) -> int:
    if not 0 <= level <= 5:
        raise FCNError(f"builder optimization level must be 0..5, got {level}")
    return level
