"""``fcn-export --triton-repo``: a model repository whose config parses with Triton's own schema.

Every variant of config.pbtxt (ONNX on GPU/CPU, with and without the TensorRT accelerator,
tensor and image I/O, FP16 I/O, a TensorRT plan) is parsed with protobuf ``text_format`` into
``tritonclient.grpc.model_config_pb2.ModelConfig``, which rejects any unknown field or bad value.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fcn_deploy import FCNError
from fcn_deploy.export import read_onnx_metadata
from fcn_deploy.export.triton_repo import triton_model_config, write_triton_repo

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="needs the serve extra (tritonclient)"
)
from google.protobuf import text_format  # noqa: E402

FCN_EXPORT = str(Path(sys.executable).with_name("fcn-export"))


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from conftest import randomize

    import fcn_deploy
    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    fcn_deploy.save_checkpoint(randomize(create_model("fcn8s", width=0.125)), root / "m.pt")
    files = {}
    for io in ("tensor", "image"):
        files[io] = root / f"{io}.onnx"
        export_onnx(root / "m.pt", files[io], io=io, max_size=(256, 320), max_batch=6,
                    verify=False, progress=False)  # fmt: skip
    files["checkpoint"] = root / "m.pt"
    return files


def _params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


@pytest.mark.parametrize("io", ["tensor", "image"])
@pytest.mark.parametrize("kind,fp16", [("gpu", False), ("cpu", False), ("gpu", True)])
def test_onnx_repository_parses_with_tritons_schema(
    io: str, kind: str, fp16: bool, onnx_files: dict[str, Path], tmp_path: Path
) -> None:
    report = write_triton_repo(tmp_path / "repo", onnx_files[io], name="seg", instances=2,
                               kind=kind, queue_delay_us=500, tensorrt_fp16=fp16)  # fmt: skip
    written = sorted(str(p.relative_to(tmp_path / "repo")) for p in (tmp_path / "repo").rglob("*"))
    assert written == ["seg", "seg/.fcn-deploy", "seg/1", "seg/1/model.onnx", "seg/config.pbtxt"]
    assert report.model_file.read_bytes() == onnx_files[io].read_bytes()
    config = parse(report.config_path.read_text())
    meta = read_onnx_metadata(onnx_files[io])
    assert config.name == "seg" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 6 == report.max_batch  # from the export
    (inp,), (out,) = config.input, config.output
    assert (inp.name, out.name) == (meta.input_name, meta.output_name)
    if io == "image":
        assert list(inp.dims) == [-1, -1, 3] and list(out.dims) == [-1, -1]
        assert inp.data_type == out.data_type == model_config_pb2.TYPE_UINT8
    else:
        assert list(inp.dims) == [3, -1, -1] and list(out.dims) == [21, -1, -1]
        assert inp.data_type == out.data_type == model_config_pb2.TYPE_FP32
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.count == 2
    assert group.kind == (model_config_pb2.ModelInstanceGroup.KIND_GPU if kind == "gpu"
                          else model_config_pb2.ModelInstanceGroup.KIND_CPU)  # fmt: skip
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if fp16:
        (trt,) = accelerators
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
        shape = "1x1x1x3" if io == "image" else "1x3x1x1"
        assert trt.parameters["trt_profile_min_shapes"] == f"{meta.input_name}:{shape}"
        top = "6x256x320x3" if io == "image" else "6x3x256x320"
        assert trt.parameters["trt_profile_max_shapes"] == f"{meta.input_name}:{top}"
    else:
        assert not accelerators
    info = json.loads(_params(config)["fcn_deploy.info"])
    assert info["class_names"] == meta.info.class_names and len(info["palette"]) == 21
    assert json.loads(_params(config)["fcn_deploy.bounds"])["max_hw"] == [256, 320]


def test_fp16_io_and_plan_variants_parse(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    meta = read_onnx_metadata(onnx_files["tensor"])
    fp16 = replace(meta, precision="fp16", fp16_io=True)
    config = parse(triton_model_config("m", "onnxruntime_onnx", fp16, 4))
    assert config.input[0].data_type == model_config_pb2.TYPE_FP16

    # a TensorRT engine (built elsewhere: TensorRT is not installed here): bytes stand in for it
    engine = tmp_path / "fcn.engine"
    engine.write_bytes(b"serialized engine")
    report = write_triton_repo(tmp_path / "repo", engine, metadata=meta, max_batch=3, profiles=3)
    config = parse(report.config_path.read_text())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 3
    # every profile for every instance: without them Triton serves profile 0 alone
    assert list(config.instance_group[0].profile) == ["0", "1", "2"]
    onnx_config = parse(triton_model_config("m", "onnxruntime_onnx", meta, 4))
    assert list(onnx_config.instance_group[0].profile) == []  # TensorRT plans only
    assert report.model_file.name == "model.plan"
    assert report.model_file.read_bytes() == b"serialized engine"
    with pytest.raises(FCNError, match="kind='cpu'"):
        write_triton_repo(tmp_path / "repo", engine, metadata=meta, kind="cpu")
    with pytest.raises(FCNError, match="tensorrt_fp16"):
        triton_model_config("m", "tensorrt_plan", meta, 4, tensorrt_fp16=True)
    with pytest.raises(FCNError, match="metadata is required"):
        write_triton_repo(tmp_path / "repo", engine)


def test_nothing_half_written_and_replaced_whole(
    onnx_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = tmp_path / "repo"
    first = write_triton_repo(repo, onnx_files["tensor"], name="fcn")
    before = first.config_path.read_text()

    import fcn_deploy.export.triton_repo as module

    def fail(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(module.shutil, "copyfile", fail)  # the copy fails half way
    # the file it could not write is named (where it was going), not the source
    with pytest.raises(FCNError, match=r"cannot write .*repo/fcn/1/model\.onnx: disk full"):
        write_triton_repo(repo, onnx_files["image"], name="fcn", kind="cpu")
    monkeypatch.undo()
    assert sorted(p.name for p in repo.iterdir()) == ["fcn"]  # no staging folder left
    assert first.config_path.read_text() == before  # the old model untouched

    with caplog.at_level(logging.WARNING, logger="fcn_deploy"):
        second = write_triton_repo(repo, onnx_files["image"], name="fcn", kind="cpu")
    assert "fcn exists and is replaced" in caplog.text  # said, not silent
    assert sorted(p.name for p in repo.iterdir()) == ["fcn"]
    assert "KIND_CPU" in second.config_path.read_text()
    assert second.model_file.read_bytes() == onnx_files["image"].read_bytes()


def test_external_data_keeps_its_layout(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    """Weights at ``sub/model.onnx`` land at ``1/sub/model.onnx`` (not over the model); a weight
    file named like the model itself is refused."""
    import numpy as np
    from conftest import with_external_data

    from fcn_deploy.export import ort_run, ort_session

    source = with_external_data(onnx_files["tensor"], tmp_path / "src" / "m.onnx", "sub/model.onnx")
    report = write_triton_repo(tmp_path / "repo", source)
    copied = report.model_dir / "1" / "sub" / "model.onnx"
    assert copied.read_bytes() == (tmp_path / "src" / "sub" / "model.onnx").read_bytes()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = ort_run(ort_session(onnx_files["tensor"]), x)
    np.testing.assert_array_equal(ort_run(ort_session(report.model_file), x), expected)

    clash = with_external_data(onnx_files["tensor"], tmp_path / "clash" / "f.onnx", "model.onnx")
    with pytest.raises(FCNError, match="the name Triton gives the model itself"):
        write_triton_repo(tmp_path / "repo2", clash)
    assert not (tmp_path / "repo2").exists()


def test_fcn_export_triton_repo_flag(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FCN_EXPORT, *map(str, args)], capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    result = run(onnx_files["image"], "--triton-repo", tmp_path / "a", "--triton-name", "seg",
                 "--triton-kind", "cpu", "--triton-instances", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = parse((tmp_path / "a" / "seg" / "config.pbtxt").read_text())
    assert config.instance_group[0].count == 3 and config.input[0].name == "image"

    result = run(onnx_files["checkpoint"], "-o", tmp_path / "m.onnx", "--max-batch", "2",
                 "--no-verify", "--triton-repo", tmp_path / "b", "--triton-trt-fp16")  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = parse((tmp_path / "b" / "fcn" / "config.pbtxt").read_text())
    assert config.max_batch_size == 2
    assert (tmp_path / "b" / "fcn" / "1" / "model.onnx").read_bytes() == (
        tmp_path / "m.onnx"
    ).read_bytes()

    result = run(onnx_files["image"], "--triton-repo", tmp_path / "c", "--triton-kind", "cpu",
                 "--triton-trt-fp16")  # fmt: skip
    # one error line (after the warning that this --no-verify export was never verified)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "GPU instances" in lines[0] and not (tmp_path / "c" / "fcn").exists()
