"""The TensorRT build calls, and nothing else: ONNX file + `BuildPlan` → serialized engine.

Importing this module imports TensorRT (an FCNError saying where engines can be built if it is
missing), so `builder.build_engine` imports it only when asked to build. Every decision (route,
flags, shapes, sizes) was made in plain code before; this is a straight line of API calls,
type-checked against the real bindings of 10.12, 10.16, 11.0 and 11.4 (scripts/trt_bindings.py),
where the one name 11.x removed (``BuilderFlag.FP16``) is looked up only on the route the version
gate chose for < 10.12.

Ctrl-C/SIGTERM during a build: an exception raised inside ``IProgressMonitor.step_complete`` is
swallowed by the binding (the build then just "fails"), so the signal only sets a flag that
``step_complete`` returns (False: "stop the build", the binding's docstring), and once TensorRT
has returned the signal is raised again for its own handler (KeyboardInterrupt, exit 130/143).
The build runs on a worker thread so that the main thread can run the signal handler while it
lasts (`cancel.run_cancellable` says why).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsInt, cast

import torch

from .._progress import Progress
from ..errors import FCNError
from ._trt import import_tensorrt
from .cancel import run_cancellable
from .layer_info import LayerSummary, summarize_layers
from .plan import BuildPlan, ParserIssue, attach_timing_cache, enum_name, format_parser_errors
from .profiles import Shape
from .trt_base import create_builder, create_runtime, process_logger, reported

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
    "tensorrt_version",
]


def tensorrt_version() -> str:
    return str(trt.__version__)


def has_fp16_flag() -> bool:
    """Whether ``BuilderFlag.FP16`` exists; consulted only on the < 10.12 route
    (`precision_route`)."""
    return "FP16" in trt.BuilderFlag.__members__


@dataclass
class CompiledEngine:
    serialized: bytes
    timing_cache: bytes
    build_seconds: float
    timing_cache_used: bool  # False: no cache given, or TensorRT could not use it


class BuildMonitor(trt.IProgressMonitor):
    """Build progress (a Progress bar per top-level phase) and the build's cancel switch.

    TensorRT calls it from builder threads. The step arguments are typed ``SupportsInt`` as the
    11.x bindings declare them (``int`` on 10.x): an override may not narrow them.
    """

    def __init__(self, progress: bool = True) -> None:
        trt.IProgressMonitor.__init__(self)  # the binding needs the base initialised explicitly
        self._lock = threading.Lock()
        self._bars: dict[str, Progress] = {}
        self._progress = progress
        self.cancelled = threading.Event()

    def phase_start(
        self, phase_name: str, parent_phase: str | None, num_steps: SupportsInt
    ) -> None:
        # nested phases would flood the log; the top-level ones tell the story
        if parent_phase or not self._progress:
            return
        with self._lock:
            self._bars[phase_name] = Progress(
                int(num_steps) or None, f"building: {phase_name}", unit="step"
            )

    def step_complete(self, phase_name: str, step: SupportsInt) -> bool:
        with self._lock:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(1)
        return not self.cancelled.is_set()  # False stops the build

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
            ParserIssue(enum_name(e.code()), e.desc(), e.node(), e.node_name(), e.node_operator())
        )
    raise FCNError(format_parser_errors(onnx_path, issues))


def _host_bytes(memory: trt.IHostMemory) -> bytes:
    """IHostMemory exposes Python's buffer protocol (pyCore.cpp: ``py::buffer_protocol()``),
    which the generated stubs cannot express."""
    return bytes(cast(Any, memory))


def compile_engine(
    onnx_path: str | os.PathLike[str], plan: BuildPlan, progress: bool = True
) -> CompiledEngine:
    """Parse, configure and build; FCNError with the reason (TensorRT's own errors included) when
    TensorRT cannot."""
    logger = process_logger()
    builder = create_builder()
    # STRONGLY_TYPED on 10.12-10.x only: on 11 every network is strongly typed (EXPLICIT_BATCH:
    # never)
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if plan.route.strongly_typed_flag
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with logger.capture():  # the parser's own records hold the same errors: keep them at DEBUG
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
    if plan.route.fp16_builder_flag:  # only on < 10.12, where the version gate chose it
        config.set_flag(trt.BuilderFlag.__members__["FP16"])  # removed in 11: not an attribute
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
        with logger.capture() as errors:
            index = config.add_optimization_profile(profile)
        if index < 0:
            raise FCNError(
                f"TensorRT rejected optimization profile {i} ({plan.profiles[i]}){reported(errors)}"
            )
    monitor = BuildMonitor(progress)
    config.progress_monitor = monitor

    # CUDA's current device is per thread: the worker builds on the caller's (the builder's)
    device = torch.cuda.current_device() if torch.cuda.is_available() else None

    def build() -> trt.IHostMemory | None:
        if device is not None:
            torch.cuda.set_device(device)
        return builder.build_serialized_network(network, config)

    start = time.perf_counter()
    with logger.capture() as errors:
        serialized = run_cancellable(build, monitor.cancelled)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise FCNError(
            f"TensorRT failed to build an engine from {onnx_path}{reported(errors)}; try a larger "
            "workspace_gib or smaller profile max shapes"
        )
    log.info("built in %.1f s", seconds)
    timing = config.get_timing_cache().serialize()
    del cache  # attached to the config until here: the build is done
    used = bool(plan.timing_cache) and warning is None
    return CompiledEngine(_host_bytes(serialized), _host_bytes(timing), seconds, used)


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
    runtime = create_runtime()
    with process_logger().capture() as errors:
        engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise FCNError(f"TensorRT could not deserialize the engine it just built{reported(errors)}")
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    if context is not None and context.set_input_shape(input_name, trt.Dims(list(shape))):
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    del inspector, context, engine  # TensorRT objects go before their runtime
    return summarize_layers(text, onnx_ops)
