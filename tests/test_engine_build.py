"""build_engine, the --engine options and the TensorRT runner on machines WITHOUT TensorRT/GPU.

What can be checked here: everything is validated before TensorRT is needed, a missing TensorRT
is one clear line (and exit code 2 from a CLI), nothing is written, and the package imports
without TensorRT. The builds themselves are in test_trt_engine.py (TensorRT + CUDA only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.cli._common import add_allow_unverified, run_cli
from fcn_deploy.cli.engine_args import add_engine_arguments, build_engine_from_args
from fcn_deploy.engine import Profile, build_engine
from fcn_deploy.engine._trt import MISSING_MESSAGE, tensorrt_available
from fcn_deploy.errors import FCNError
from fcn_deploy.export.metadata import PASSED, OnnxMetadata, graph_digest
from fcn_deploy.meta import ModelInfo, SizeBounds

HAS_TENSORRT = (
    tensorrt_available()
)  # tensorrt-stubs alone make `import tensorrt` succeed: not TensorRT
needs_no_tensorrt = pytest.mark.skipif(
    HAS_TENSORRT, reason="tensorrt is installed here: test_trt_engine.py covers builds"
)


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return _tiny_onnx(tmp_path / "tiny.onnx")


def _tiny_onnx(
    path: Path,
    precision: str = "fp32",
    calibration: dict | None = None,
    verification: str = PASSED,
) -> Path:
    """A real fcn-deploy ONNX file (1×1 conv to 21 classes, dynamic N/H/W, metadata props)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(21, 3, 1, 1)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["logits"], name="/score/Conv")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", 21, "height", "width"]
            )
        ],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    meta = OnnxMetadata(
        ModelInfo("fcn8s", 21, width=0.125),
        "tensor",
        precision,
        False,
        SizeBounds((1, 1), (512, 512), 1, 4),
        "x",
        "logits",
        "0" * 64,
        "2.13.0",
        onnx.__version__,
        20,
        calibration=calibration,
        verification=verification,
        graph_sha256=graph_digest(model),  # a record that matches: as a verified export has
    )
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_profiles_outside_the_export_bounds_fail_before_tensorrt(tiny_onnx):
    with pytest.raises(
        FCNError, match=r"max shape 1x3x1024x1024: size 1024x1024 is outside 1x1..512x512"
    ):
        build_engine(
            tiny_onnx,
            tiny_onnx.with_name("m.engine"),
            profiles=[Profile((1, 3, 8, 8), (1, 3, 64, 64), (1, 3, 1024, 1024))],
        )
    assert _files(tiny_onnx.parent) == ["tiny.onnx"]


def test_bad_paths_and_options_fail_before_tensorrt(tiny_onnx, tmp_path):
    with pytest.raises(FCNError, match=r"must end in \.engine"):
        build_engine(tiny_onnx, tmp_path / "m.onnx2")
    with pytest.raises(FCNError, match="no such ONNX file"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    with pytest.raises(FCNError, match=r"folder .*nowhere does not exist"):
        build_engine(tiny_onnx, tmp_path / "nowhere" / "m.engine")
    with pytest.raises(FCNError, match=r"gate_threshold must be in \(0, 1\]"):
        build_engine(tiny_onnx, tmp_path / "m.engine", gate_threshold=1.5)
    assert _files(tmp_path) == ["tiny.onnx"]


def test_an_int8_graph_for_the_cpu_target_is_refused_before_tensorrt(tmp_path):
    for target in ("cpu", None):  # None: an export older than the target field (cpu)
        calibration = {"source": "synthetic"} | ({"target": target} if target else {})
        onnx_path = _tiny_onnx(tmp_path / "int8.onnx", "int8", calibration)
        with pytest.raises(FCNError, match=r"made for the 'cpu' target.*--int8-target tensorrt"):
            build_engine(onnx_path, tmp_path / "m.engine")
    assert _files(tmp_path) == ["int8.onnx"]


def test_fcn_export_int8_with_an_engine_calibrates_for_tensorrt():
    from fcn_deploy.cli.engine_args import check_engine_arguments
    from fcn_deploy.cli.export import build_parser

    args = build_parser().parse_args(["m.pt", "-o", "m.onnx", "--precision", "int8"])
    assert args.int8_target is None  # export_onnx gets "cpu"
    argv = ["m.pt", "-o", "m.onnx", "--precision", "int8", "--engine", "m.engine"]
    args = build_parser().parse_args(argv)
    check_engine_arguments(args)
    assert args.int8_target == "tensorrt"
    args = build_parser().parse_args([*argv, "--int8-target", "cpu"])
    with pytest.raises(FCNError, match="TensorRT cannot parse") as e:
        check_engine_arguments(args)
    assert e.value.param == "int8_target"


@needs_no_tensorrt
def test_build_without_tensorrt_says_where_engines_are_built(tiny_onnx, tmp_path):
    with pytest.raises(FCNError) as e:
        build_engine(tiny_onnx, tmp_path / "m.engine", timing_cache=tmp_path / "cache.bin")
    assert str(e.value) == MISSING_MESSAGE
    assert _files(tmp_path) == ["tiny.onnx"]  # no engine, sidecar, cache or temp file


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fcn-export")
    add_engine_arguments(parser)
    add_allow_unverified(parser)
    return parser.parse_args(argv)


def test_engine_arguments_parse_repeated_profiles():
    args = _parse(
        [
            "--engine",
            "m.engine",
            "--min-shape",
            "1x3x64x128",
            "--opt-shape",
            "1x3x360x640",
            "--max-shape",
            "4x3x720x1280",
            "--min-shape",
            "1x3x128x64",
            "--opt-shape",
            "1x3x640x360",
            "--max-shape",
            "4x3x1280x720",
            "--workspace",
            "2",
            "--opt-level",
            "5",
            "--engine-precision",
            "fp16",
            "--gate-threshold",
            "0.98",
        ]
    )
    assert args.engine == Path("m.engine") and args.min_shape == ["1x3x64x128", "1x3x128x64"]
    assert (
        args.workspace == 2.0
        and args.opt_level == 5
        and args.engine_precision == "fp16"
        and not args.no_gate
    )
    with pytest.raises(SystemExit):
        _parse(["--opt-level", "7"])


def test_engine_arguments_reject_bad_values_with_one_line(tiny_onnx, capsys):
    def main(argv):
        return build_engine_from_args(_parse(argv), tiny_onnx)

    assert (
        run_cli(
            main, ["--engine", "m.engine", "--min-shape", "1x4x64x64", "--max-shape", "1x3x64x64"]
        )
        == 2
    )
    assert (
        capsys.readouterr().err.strip()
        == "error: bad shape '1x4x64x64': the channel dim must be 3 (NxCxHxW, e.g. 1x3x64x64)"
    )
    assert run_cli(main, ["--engine", "m.engine", "--gate-threshold", "0"]) == 2
    err = capsys.readouterr().err  # argparse refuses it, before any export or build
    assert "argument --gate-threshold: expected a number in (0, 1]" in err


@needs_no_tensorrt
def test_engine_arguments_without_tensorrt_exit_2_with_the_reason(tiny_onnx, capsys):
    code = run_cli(
        lambda argv: build_engine_from_args(_parse(argv), tiny_onnx),
        ["--engine", str(tiny_onnx.with_name("m.engine"))],
    )
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {MISSING_MESSAGE}"
    assert _files(tiny_onnx.parent) == ["tiny.onnx"]


@needs_no_tensorrt
def test_tensorrt_runner_without_tensorrt(tmp_path):
    from fcn_deploy.runtime import load_runner

    with pytest.raises(FCNError, match="no such engine file"):
        load_runner(tmp_path / "missing.engine")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(FCNError) as e:
        load_runner(engine)
    assert str(e.value) == MISSING_MESSAGE


def test_engine_package_imports_without_tensorrt(tiny_onnx, tmp_path):
    """Even where TensorRT exists: with it blocked, the package imports and builds fail clearly."""
    code = (
        "import sys; sys.modules['tensorrt'] = None\n"
        "import fcn_deploy, fcn_deploy.engine, fcn_deploy.runtime.trt_runner\n"
        "from fcn_deploy.errors import FCNError\n"
        "try:\n"
        f"    fcn_deploy.build_engine({str(tiny_onnx)!r}, {str(tmp_path / 'm.engine')!r})\n"
        "except FCNError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == MISSING_MESSAGE
