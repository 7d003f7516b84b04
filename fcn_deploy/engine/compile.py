"""The TensorRT build calls, and nothing else: ONNX file + `BuildPlan` → serialized engine.

Importing this module imports TensorRT (an FCNError saying where engines can be built if it is
missing), so `builder.build_engine` imports it only when asked to build. Every decision (route,
flags, shapes, sizes) was made in plain code before; this is a straight line of API calls
written against the 10.13 stubs, where names that 11.x removed appear only behind the route the
version gate chose.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._progress import Progress
from ..errors import FCNError
from ._trt import import_tensorrt
from .layer_info import LayerSummary, summarize_layers
from .plan import BuildPlan, ParserIssue, attach_timing_cache, format_parser_errors
from .profiles import Shape

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = import_tensorrt()

log = logging.getLogger(__name__)

__all__ = [
    "CompiledEngine",
    "compile_engine",
    "has_fp16_flag",
    "inspect_layers",
    "make_logger",
    "tensorrt_version",
]


def tensorrt_version() -> str:
    return str(trt.__version__)


def has_fp16_flag() -> bool:
    """Whether ``BuilderFlag.FP16`` exists; consulted only on the < 10.12 route
    (`precision_route`)."""
    return "FP16" in trt.BuilderFlag.__members__


def make_logger(verbose: bool = False) -> trt.Logger:
    """Warnings and errors only: TensorRT's INFO output is hundreds of lines per build."""
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


@dataclass
class CompiledEngine:
    serialized: bytes
    timing_cache: bytes
    build_seconds: float
    timing_cache_used: bool  # False: no cache given, or TensorRT could not use it


class _BuildMonitor(trt.IProgressMonitor):
    """Build progress: a Progress bar per top-level builder phase (called from builder threads)."""

    def __init__(self) -> None:
        trt.IProgressMonitor.__init__(self)
        self._lock = threading.Lock()
        self._bars: dict[str, Progress] = {}

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        if parent_phase:  # nested phases would flood the log; the top-level ones tell the story
            return
        with self._lock:
            self._bars[phase_name] = Progress(
                num_steps or None, f"building: {phase_name}", unit="step"
            )

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(1)
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            bar = self._bars.pop(phase_name, None)
        if bar is not None:
            bar.close()


def _parse(parser: trt.OnnxParser, onnx_path: str) -> None:
    if parser.parse_from_file(onnx_path):
        return
    issues = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        issues.append(
            ParserIssue(e.code().name, e.desc(), e.node(), e.node_name(), e.node_operator())
        )
    raise FCNError(format_parser_errors(onnx_path, issues))


def compile_engine(
    onnx_path: str | os.PathLike[str], plan: BuildPlan, progress: bool = True
) -> CompiledEngine:
    """Parse, configure and build; FCNError with the reason when TensorRT cannot."""
    logger = make_logger()
    builder = trt.Builder(logger)
    # STRONGLY_TYPED on 10.12-10.x only: on 11 every network is strongly typed (EXPLICIT_BATCH:
    # never)
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if plan.route.strongly_typed_flag
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    _parse(parser, os.fspath(onnx_path))
    if network.num_inputs != 1 or network.get_input(0).name != plan.input_name:
        raise FCNError(
            f"{onnx_path}: expected one input named {plan.input_name!r}; re-export the model with "
            "fcn-export"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.opt_level
    config.profiling_verbosity = (
        trt.ProfilingVerbosity.DETAILED
    )  # the inspector needs layer precisions
    if plan.route.fp16_builder_flag:
        config.set_flag(trt.BuilderFlag.FP16)  # only on < 10.12, where the version gate chose it
    cache, warning = attach_timing_cache(
        plan.timing_cache,
        config.create_timing_cache,
        lambda c: config.set_timing_cache(c, False),
    )
    if warning:
        log.warning(warning)
    for i, (lo, opt, hi) in enumerate(plan.profile_shapes()):
        profile = builder.create_optimization_profile()
        profile.set_shape(
            plan.input_name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi))
        )
        if config.add_optimization_profile(profile) < 0:
            raise FCNError(
                f"TensorRT rejected optimization profile {i} ({plan.profiles[i]}); see its error "
                "above"
            )
    monitor = _BuildMonitor() if progress else None
    if monitor is not None:
        config.progress_monitor = monitor

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise FCNError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT errors above); "
            "try a larger workspace_gib or smaller profile max shapes"
        )
    log.info("built in %.1f s", seconds)
    timing = config.get_timing_cache().serialize()
    del cache  # attached to the config until here: the build is done
    used = bool(plan.timing_cache) and warning is None
    return CompiledEngine(bytes(serialized), bytes(timing), seconds, used)


def inspect_layers(
    serialized: bytes,
    input_name: str,
    shape: Shape,
    onnx_ops: Mapping[str, str] | None = None,
) -> LayerSummary:
    """Layer precisions of a built engine, inspected at ``shape`` (profile 0's opt, network layout).

    An execution context with the input shape set gives the inspector concrete dimensions, so the
    conv FLOP shares are real FLOPs rather than weight counts.
    """
    runtime = trt.Runtime(make_logger())
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise FCNError(
            "TensorRT could not deserialize the engine it just built (see its error above)"
        )
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    if context is not None and context.set_input_shape(input_name, trt.Dims(list(shape))):
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    del inspector, context, engine  # TensorRT objects go before their runtime
    return summarize_layers(text, onnx_ops)
