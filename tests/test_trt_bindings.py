"""The TensorRT code against the real Python bindings of 10.12, 10.16, 11.0 and 11.4.

TensorRT's libraries cannot be installed here, but its bindings can (scripts/trt_bindings.py:
the real compiled module of each release, with stand-in libraries whose factories return NULL).
Per release: mypy of every module that touches TensorRT against that release's generated stubs,
and, in a subprocess importing the real module, every path that needs no library: the version
route and the names each route uses, parser errors with real ErrorCode values, the dtype map,
the logger and progress-monitor subclasses, and the one-line error when TensorRT cannot create a
Builder (what a missing GPU or too old a driver gives) from the CLI. Without network or a C
compiler these skip with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _load_script():
    spec = importlib.util.spec_from_file_location("trt_bindings", ROOT / "scripts/trt_bindings.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["trt_bindings"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt-stand-ins")


@pytest.fixture(scope="module", params=script.RELEASES)
def binding(request, stand_ins):
    try:
        return script.prepare(request.param, stand_ins)
    except script.Unavailable as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_tensorrt_modules_are_mypy_clean_against_the_release(binding):
    result = script.mypy(binding)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


@pytest.mark.slow
def test_mypy_catches_misused_tensorrt_calls(stand_ins, tmp_path):
    try:
        binding = script.prepare(script.NEWEST, stand_ins)
    except script.Unavailable as e:
        pytest.skip(str(e))
    bad = tmp_path / "bad_trt.py"
    bad.write_text(
        "import tensorrt as trt\n\n\n"
        "def build(path: str) -> None:\n"
        "    logger = trt.Logger(trt.Logger.WARNING)\n"
        "    builder = trt.Builder(logger)\n"
        "    network = builder.create_network(0)\n"
        "    parser = trt.OnnxParser(network, logger)\n"
        "    parser.parse_from_filee(path)\n"
        "    builder.build_serialized_network(network)\n"
        "    trt.BuilderFlag.FP16\n"  # removed in 11
    )
    result = script.mypy(binding, [str(bad)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'has no attribute "parse_from_filee"' in result.stdout
    assert "bad_trt.py:10: error:" in result.stdout  # build_serialized_network without config
    assert 'has no attribute "FP16"' in result.stdout


# Run inside the real binding (a subprocess: one release per process); prints what it found.
PROBE = r"""
import json, logging, signal, sys
import tensorrt as trt
from fcn_deploy.errors import FCNError
from fcn_deploy.engine import ParserIssue, format_parser_errors
from fcn_deploy.engine.plan import enum_name
from fcn_deploy.engine.versions import parse_trt_version, precision_route
from fcn_deploy.engine import compile as trt_compile, executor, trt_base

found = {"version": trt.__version__}
version = parse_trt_version(trt.__version__)
routes = {}
for p in ("fp16", "fp32", "int8"):
    r = precision_route(version, p, p, trt_compile.has_fp16_flag())
    routes[p] = [r.strongly_typed, r.strongly_typed_flag, r.fp16_builder_flag]
found["routes"] = routes
found["has_fp16_flag"] = trt_compile.has_fp16_flag()
# the enum members each route and the executor use, looked up in this release
names = {
    "NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"],
    "MemoryPoolType": ["WORKSPACE"],
    "ProfilingVerbosity": ["DETAILED"],
    "LayerInformationFormat": ["JSON"],
    "TensorIOMode": ["INPUT", "OUTPUT"],
    "ExecutionContextAllocationStrategy": ["ON_PROFILE_CHANGE"],
}
found["missing"] = [
    f"{enum}.{m}" for enum, members in names.items() for m in members
    if m not in getattr(trt, enum).__members__
]
found["severities"] = sorted(trt.ILogger.Severity.__members__)
found["levels"] = sorted(trt_base.LEVELS)
found["data_types"] = sorted(trt.DataType.__members__)
found["dtype_map"] = sorted(executor._TORCH_DTYPES)
found["torch_dtypes"] = {
    n: str(executor._torch_dtype(getattr(trt.DataType, n))) for n in ("FLOAT", "HALF", "UINT8")
}
found["raw_name_type"] = type(trt.ErrorCode.INVALID_NODE.name).__name__
found["parser_errors"] = {
    int(code): format_parser_errors(
        "m.onnx",
        [ParserIssue(enum_name(code), "Non-zero zero point is not supported.", 3, "q0",
                     "QuantizeLinear")],
    )
    for code in trt.ErrorCode.__members__.values()
}
found["code_names"] = {int(c): n for n, c in trt.ErrorCode.__members__.items()}

# one logger per process, routed through logging, errors captured
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.levelname, record.getMessage()))
logging.getLogger("fcn_deploy").addHandler(Keep())
logging.getLogger("fcn_deploy").setLevel(logging.DEBUG)
logger = trt_base.process_logger()
found["one_logger"] = logger is trt_base.process_logger() and isinstance(logger, trt.ILogger)
logger.log(trt.ILogger.Severity.WARNING, "w1\n")
logger.log(trt.ILogger.Severity.INFO, "i1")
with logger.capture() as errors:
    logger.log(trt.ILogger.Severity.ERROR, "e1")
found["captured"] = errors
found["records"] = list(records)
# filtered in log(): TensorRT hands an ILogger every message (ILogger has no min_severity)
found["ilogger_has_min_severity"] = hasattr(trt.ILogger, "min_severity")
logger.min_severity = trt.ILogger.Severity.WARNING
for severity, text in (("INFO", "i2"), ("VERBOSE", "v2"), ("WARNING", "w2"), ("ERROR", "e2")):
    logger.log(getattr(trt.ILogger.Severity, severity), text)
found["filtered"] = records[len(found["records"]):]
from fcn_deploy.engine.plan import SEVERITIES
found["severity_values"] = [int(getattr(trt.ILogger.Severity, n)) for n in SEVERITIES]

# the progress monitor: a real IProgressMonitor, cancelled through the signal flag while the
# "build" (a stand-in for build_serialized_network) runs on run_cancellable's worker thread
import os, threading, time
from fcn_deploy.engine.cancel import run_cancellable
monitor = trt_compile.BuildMonitor(progress=False)
found["monitor_is_trt"] = isinstance(monitor, trt.IProgressMonitor)
monitor.phase_start("Building", None, 3)
steps = [monitor.step_complete("Building", 0)]
class Reraised(Exception):
    pass
def previous(signum, frame):
    raise Reraised(signum)
signal.signal(signal.SIGTERM, previous)
def build():  # TensorRT stops at the first False step_complete returns
    for step in range(1, 3000):
        steps.append(monitor.step_complete("Building", step))
        if not steps[-1]:
            return
        time.sleep(0.01)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
try:
    run_cancellable(build, monitor.cancelled)
    found["reraised"] = None
except Reraised as e:
    found["reraised"] = e.args[0]
monitor.phase_finish("Building")
found["steps"] = steps

# creation failure (the stand-ins' factories return NULL, as a failed CUDA init does)
for create in (trt_base.create_builder, trt_base.create_runtime):
    try:
        create()
        found[create.__name__] = None
    except FCNError as e:
        found[create.__name__] = str(e)
from fcn_deploy.bench.machine import machine_info
import torch
found["recorded_version"] = machine_info(torch.device("cpu"))["versions"].get("tensorrt")
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def probed(binding) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=binding.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_release_takes_the_route_the_version_gate_chose(binding, probed):
    assert probed["version"] == binding.version
    # benchmarks record the module's version: tensorrt-cu12/-cu13 installs have no `tensorrt`
    # distribution metadata (nor does this one)
    assert probed["recorded_version"] == binding.version
    on_11 = binding.version.startswith("11.")
    # strongly typed everywhere (>= 10.12); the STRONGLY_TYPED flag on 10.x only; never FP16
    assert probed["routes"] == {p: [True, not on_11, False] for p in ("fp16", "fp32", "int8")}
    assert probed["has_fp16_flag"] is (not on_11)  # BuilderFlag.FP16 is gone in 11
    assert probed["missing"] == []


def test_parser_errors_read_right_with_every_real_error_code(binding, probed):
    # the binding's own `name` is a method before 10.16: the formatter must not use it
    assert probed["raw_name_type"] == ("method" if binding.version < "10.16" else "str")
    assert len(probed["parser_errors"]) >= 10
    for code, message in probed["parser_errors"].items():
        name = probed["code_names"][code]
        assert f"node q0 (QuantizeLinear): {name}: Non-zero zero point" in message
        assert "bound method" not in message and "ErrorCode." not in message
        assert "--int8-target tensorrt" in message and "strongly typed" not in message


def test_the_dtype_map_and_logger_levels_are_the_release_names(probed):
    assert set(probed["dtype_map"]) <= set(probed["data_types"])
    assert {"FLOAT", "HALF", "UINT8", "INT64"} <= set(probed["dtype_map"])
    assert probed["torch_dtypes"] == {
        "FLOAT": "torch.float32",
        "HALF": "torch.float16",
        "UINT8": "torch.uint8",
    }
    assert probed["levels"] == probed["severities"]


def test_one_logger_routes_messages_through_logging_and_captures_errors(probed):
    assert probed["one_logger"] is True
    assert probed["captured"] == ["e1"]
    assert probed["records"] == [
        ["WARNING", "TensorRT: w1"],
        ["DEBUG", "TensorRT: i1"],  # INFO is hundreds of lines a build
        ["DEBUG", "TensorRT: e1"],  # captured: it goes into the FCNError's text instead
    ]


def test_the_logger_filters_by_min_severity_itself(probed):
    """``min_severity`` belongs to the binding's ``trt.Logger`` only; set on an ``ILogger``
    subclass it did nothing until ``log`` filtered by it."""
    assert probed["ilogger_has_min_severity"] is False
    assert probed["filtered"] == [["WARNING", "TensorRT: w2"], ["ERROR", "TensorRT: e2"]]
    assert probed["severity_values"] == [0, 1, 2, 3, 4]  # the order severity_passes assumes


def test_a_signal_cancels_the_build_through_the_monitor_then_reaches_its_handler(probed):
    import signal

    assert probed["monitor_is_trt"] is True
    steps = probed["steps"]  # False asks TensorRT to stop the build; it came within 3000 steps
    assert len(steps) > 2 and all(steps[:-1]) and steps[-1] is False
    assert probed["reraised"] == int(signal.SIGTERM)  # then exit 143 as everywhere else


def test_a_failed_cuda_initialisation_is_one_line(binding, probed):
    for what, key in (("Builder", "create_builder"), ("Runtime", "create_runtime")):
        message = probed[key]
        assert message.startswith(f"TensorRT {binding.version} could not create its {what}")
        assert "driver" in message and "nvidia-smi" in message and "\n" not in message


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from test_engine_build import _tiny_onnx  # a real fcn-deploy ONNX file, no export needed

    return _tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.mark.slow
def test_fcn_export_answers_a_failed_cuda_initialisation_in_one_line(binding, tiny_onnx, tmp_path):
    engine = tmp_path / "tiny.engine"
    result = subprocess.run(
        [str(BIN / "fcn-export"), str(tiny_onnx), "--engine", str(engine)],
        env=binding.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: TensorRT {binding.version} could not create its Builder")
    assert not engine.exists()
