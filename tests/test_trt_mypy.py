"""CI's static check of the TensorRT code: mypy against the mended tensorrt-stubs (10.13 API).

TensorRT cannot be installed on these machines, so this is what proves each call in
fcn_deploy/engine and the TensorRT runner exists with the arguments given. The check is shown to
bite (a misspelt method and a missing argument are reported), and names TensorRT 11 removed may
appear only behind the version gate's route.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRT_MODULES = [
    "fcn_deploy/engine",
    "fcn_deploy/runtime/trt_runner.py",
    "fcn_deploy/cli/engine_args.py",
]
# Names TensorRT 11 removed (docs/tensorrt.md): allowed only under `if <...>.fp16_builder_flag:`.
REMOVED_IN_11 = {
    "FP16",
    "platform_has_fast_fp16",
    "EXPLICIT_BATCH",
    "device_memory_size",
    "int8_calibrator",
    "create_execution_context_without_device_memory",
    "supports_model",
}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install mypy)"
)


def _load_prepare_script():
    spec = importlib.util.spec_from_file_location(
        "prepare_trt_stubs", ROOT / "scripts" / "prepare_trt_stubs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    prepare = _load_prepare_script()
    if prepare.find_stubs() is None:
        pytest.skip(
            "tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.*)"
        )
    out = tmp_path_factory.mktemp("trt-stubs")
    prepare.prepare(out)
    return out


def _mypy(stubs: Path, *targets: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, MYPYPATH=str(stubs))
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--follow-imports=silent",
        "--no-incremental",
        "--disallow-untyped-defs",
        "--warn-unused-ignores",
        *targets,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_stub_mends_apply(stubs):
    text = (stubs / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    assert "in_: list[" in text and "(self, in:" not in text
    assert "channel_axis: int = ...)" in text
    assert "import tensorrt_libs" not in (stubs / "tensorrt" / "__init__.pyi").read_text()


@pytest.mark.slow
def test_tensorrt_modules_are_mypy_clean(stubs):
    result = _mypy(stubs, *TRT_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


@pytest.mark.slow
def test_mypy_catches_misused_tensorrt_calls(stubs, tmp_path):
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
    )
    result = _mypy(stubs, str(bad), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'has no attribute "parse_from_filee"' in result.stdout
    assert 'Missing positional argument "config"' in result.stdout


def _gated(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "fp16_builder_flag" in ast.unparse(node.test):
            return True
    return False


def test_names_removed_in_tensorrt_11_appear_only_behind_the_version_gate():
    uses = []
    for path in [
        *sorted((ROOT / "fcn_deploy" / "engine").glob("*.py")),
        ROOT / "fcn_deploy/runtime/trt_runner.py",
    ]:
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in REMOVED_IN_11:
                uses.append((path.name, node.lineno, node.attr, _gated(node, parents)))
    assert [(name, attr) for name, _, attr, _ in uses] == [("compile.py", "FP16")], (
        uses
    )  # BuilderFlag.FP16
    assert all(gated for *_, gated in uses), uses
