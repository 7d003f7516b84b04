"""Which TensorRT API route a version takes: the version gates, as plain functions.

TensorRT 10.12 deprecated weak typing (``BuilderFlag.FP16``) and 11.0 removed it, so FP16 lives
in the ONNX graph and the network is strongly typed; only older 10.x builds take the flag path.
Deciding the route from ``trt.__version__`` here (not with ``hasattr``, which silently builds
FP32 when the flag is gone) keeps the builder a straight line of calls, and every branch testable
without TensorRT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FCNError

__all__ = [
    "MIN_VERSION",
    "STRONGLY_TYPED_SINCE",
    "PrecisionRoute",
    "TrtVersion",
    "cuda_init_message",
    "cuda_variant",
    "parse_trt_version",
    "precision_route",
    "release_key",
]

MIN_VERSION = (10, 0)  # execute_async_v3, set_input_shape and named I/O tensors are the 10.x API
STRONGLY_TYPED_SINCE = (10, 12)  # weak typing deprecated: the strongly typed route from here on
STRONGLY_TYPED_DEFAULT_SINCE = (11, 0)  # every network strongly typed, BuilderFlag.FP16 removed
# The least Linux driver of each TensorRT CUDA variant: its CUDA major's first release (CUDA 12.0
# and 13.0 release notes, "Minimum Required Driver Version for CUDA Minor Version Compatibility").
DRIVER_MINIMUM = {"cu12": "525.60.13 (CUDA 12)", "cu13": "580.65.06 (CUDA 13)"}


@dataclass(frozen=True, order=True)
class TrtVersion:
    """``major.minor.patch`` of ``trt.__version__`` (build numbers ignored for routing)."""

    major: int
    minor: int
    patch: int = 0

    def at_least(self, major_minor: tuple[int, int]) -> bool:
        return (self.major, self.minor) >= major_minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_trt_version(text: str) -> TrtVersion:
    """``"10.13.3.9"``, ``"11.0.0.12"``, ``"10.12.0b1"`` → `TrtVersion`; FCNError if unreadable."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise FCNError(
            f"cannot read the TensorRT version {text!r}; is tensorrt installed correctly?"
        )
    return TrtVersion(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


@dataclass(frozen=True)
class PrecisionRoute:
    """How to ask a TensorRT version for an engine of one precision.

    ``strongly_typed_flag``: pass ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` to
    ``create_network`` (10.12–10.x; 11.x networks are strongly typed without it).
    ``fp16_builder_flag``: set ``BuilderFlag.FP16`` (weak typing, < 10.12 only).
    ``strongly_typed``: the network's dtypes are the ONNX graph's, so the graph must already be
    FP16.
    """

    strongly_typed: bool
    strongly_typed_flag: bool
    fp16_builder_flag: bool
    note: str


def precision_route(
    version: TrtVersion, precision: str, graph_precision: str, has_fp16_flag: bool
) -> PrecisionRoute:
    """The route for an engine of ``precision`` from an ONNX graph computing in ``graph_precision``.

    ``has_fp16_flag`` is whether ``trt.BuilderFlag`` has ``FP16``: it is consulted only where the
    version says the flag path is the one to take, and its absence there is an error, never a
    silent FP32 build.
    """
    if precision not in ("fp16", "fp32", "int8"):
        raise FCNError(
            f"engine precision must be fp16, fp32 or int8, got {precision!r}", param="precision"
        )
    if precision == "int8" and not version.at_least(STRONGLY_TYPED_SINCE):
        raise FCNError(
            f"int8 engines are built from the Q/DQ graph as strongly typed networks, which needs "
            f"TensorRT 10.12+; this is {version}",
            param="precision",
        )
    if not version.at_least(MIN_VERSION):
        raise FCNError(
            f"TensorRT {version} is too old: fcn-deploy needs TensorRT 10.0+ (10.12+ recommended)"
        )
    if version.at_least(STRONGLY_TYPED_SINCE):
        if precision != graph_precision:
            raise FCNError(
                f"a {precision} engine needs a {precision} ONNX graph on TensorRT {version} "
                "(networks are strongly typed: the graph's dtypes are the engine's), but this "
                f"graph is {graph_precision}; re-export with precision='{precision}'",
                param="precision",
            )
        on_11 = version.at_least(STRONGLY_TYPED_DEFAULT_SINCE)
        note = (
            "strongly typed (default on 11.x)" if on_11 else "strongly typed (STRONGLY_TYPED flag)"
        )
        return PrecisionRoute(True, not on_11, False, note)
    # 10.0–10.11: weakly typed; the builder picks per-layer precision among those the flags allow
    if precision == "fp32":
        if graph_precision == "fp16":
            raise FCNError(
                f"an fp32 engine from an fp16 ONNX graph is not supported on TensorRT {version}; "
                "export with precision='fp32'",
                param="precision",
            )
        return PrecisionRoute(False, False, False, "weakly typed, FP32 (TF32 allowed)")
    if not has_fp16_flag:
        raise FCNError(
            f"TensorRT {version} reports no BuilderFlag.FP16, so it cannot build an fp16 engine by "
            "the "
            "flag route; upgrade to TensorRT 10.12+ (strongly typed FP16)"
        )
    return PrecisionRoute(
        False, False, True, "weakly typed with BuilderFlag.FP16 (TensorRT < 10.12)"
    )


def release_key(text: str) -> tuple[int, ...]:
    """``major.minor.patch.build`` of a TensorRT version: what an engine is tied to.

    ``"10.14.1.48.post1"`` (a repackaged wheel) and ``"10.14.1.48"`` are one release; anything
    after the build number is packaging, not TensorRT.
    """
    m = re.match(r"^\s*(\d+(?:\.\d+){0,3})", text)
    if not m:
        raise FCNError(f"cannot read the TensorRT version {text!r}")
    parts = [int(p) for p in m.group(1).split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def cuda_variant() -> str | None:
    """``cu12`` or ``cu13``: the CUDA major of the installed TensorRT wheels, None if unknown."""
    from importlib import metadata

    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        m = re.fullmatch(r"tensorrt-(cu\d+)(?:-bindings|-libs)?", name)
        if m:
            return m.group(1)
    return None


def cuda_init_message(what: str, version: str, variant: str | None, errors: list[str]) -> str:
    """One line for a Builder/Runtime TensorRT could not create: CUDA did not initialise."""
    need = (
        f"tensorrt-{variant} needs driver {DRIVER_MINIMUM[variant]} or newer"
        if variant in DRIVER_MINIMUM
        else "tensorrt-cu12 needs driver 525+, tensorrt-cu13 driver 580+"
    )
    said = f" (TensorRT said: {errors[-1]})" if errors else ""
    return (
        f"TensorRT {version} could not create its {what}: CUDA did not initialise{said}. Either "
        f"no NVIDIA GPU/driver is visible (check nvidia-smi) or the driver is too old ({need}); "
        "install the TensorRT matching the driver (pip install fcn-deploy[gpu] for CUDA 13, "
        "[gpu-cu12] for CUDA 12)"
    )
