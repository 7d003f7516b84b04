"""Real TensorRT engines: build, inspect, gate, run. Only where TensorRT imports and CUDA exists.

Everything else about engines (profiles, gates, sidecar, layer summary, mypy against the stubs)
is tested everywhere in the other test_engine*/test_trt* files; these skip with the reason here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fcn_deploy.engine import Profile, build_engine, gate_shapes, read_sidecar, sidecar_path
from fcn_deploy.engine._trt import tensorrt_available
from fcn_deploy.errors import FCNError

pytestmark = [
    pytest.mark.skipif(
        not tensorrt_available(),
        reason="TensorRT is not installed (engines need TensorRT 10.12+ and an NVIDIA GPU)",
    ),
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA GPU: TensorRT engines run only on NVIDIA GPUs",
    ),
    pytest.mark.slow,
    pytest.mark.gpu,
]

# Two profiles, as a user with landscape and portrait photos would build them.
PROFILES = [
    Profile((1, 3, 32, 64), (1, 3, 96, 160), (2, 3, 160, 256)),
    Profile((1, 3, 64, 32), (1, 3, 160, 96), (2, 3, 256, 160)),
]
SHAPES = [(1, 3, 32, 64), (2, 3, 97, 131), (1, 3, 160, 256), (1, 3, 201, 77), (2, 3, 256, 160)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny FCN-8s exported to FP32 and FP16 ONNX (FP32 I/O, Casts at the boundary)."""
    from conftest import randomize

    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    folder = tmp_path_factory.mktemp("trt")
    model = randomize(create_model("fcn8s", num_classes=21, width=0.125), seed=0)
    paths = {}
    for precision, io in (("fp32", "tensor"), ("fp16", "tensor"), ("fp16", "image")):
        name = precision if io == "tensor" else f"{precision}-{io}"
        path = folder / f"fcn8s-{name}.onnx"
        export_onnx(
            model,
            path,
            precision=precision,
            io=io,
            max_size=(512, 512),
            max_batch=4,
            progress=False,
        )
        paths[name] = path
    return folder, paths


def _reference(onnx_path, x: np.ndarray) -> np.ndarray:
    from fcn_deploy.export.ort import ort_run, ort_session

    return ort_run(ort_session(onnx_path), x)


def test_fp16_engine_builds_is_fp16_and_passes_the_gate(exported):
    folder, paths = exported
    engine = folder / "fcn8s-fp16.engine"
    cache = folder / "timing.cache"
    report = build_engine(
        paths["fp16"],
        engine,
        profiles=PROFILES,
        timing_cache=cache,
        workspace_gib=1,
        progress=False,
    )
    assert report.passed and report.path == engine and engine.is_file() and cache.is_file()
    meta = read_sidecar(engine)
    assert meta.precision == "fp16" and meta.layers.label == "fp16"
    assert meta.layers.fp16_conv_flop_share >= 0.9 and meta.layers.flops_basis == "shape"
    assert (
        meta.profiles == PROFILES and meta.compute_capability == torch.cuda.get_device_capability()
    )
    gate = json.loads(sidecar_path(engine).read_text())["gate"]
    assert len(gate["rows"]) >= 2 * 4 and all(r["passed"] for r in gate["rows"])
    for index, profile in enumerate(PROFILES):  # each profile checked at its own sizes, named
        rows = [tuple(r["shape"]) for r in gate["rows"] if r["profile"] == index]
        assert rows == gate_shapes(profile)
    print(report.summary())
    again = build_engine(
        paths["fp16"],
        folder / "again.engine",
        profiles=PROFILES,
        timing_cache=cache,
        gate=False,
        progress=False,
    )
    assert again.metadata.builder["timing_cache_loaded"] is True


def test_runner_matches_onnxruntime_across_profiles_and_reuses_buffers(exported):
    from fcn_deploy.runtime import load_runner

    folder, paths = exported
    engine = folder / "fcn8s-fp32.engine"
    build_engine(paths["fp32"], engine, profiles=PROFILES, workspace_gib=1, progress=False)
    runner = load_runner(engine)
    assert runner.backend == "tensorrt" and runner.io == "tensor" and runner.info.variant == "fcn8s"
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.normal(0, 50, shape).astype(np.float32)
        out = runner.infer(x)  # numpy in
        assert (
            out.is_cuda
            and out.dtype == torch.float32
            and tuple(out.shape) == (shape[0], 21, shape[2], shape[3])
        )
        ref = _reference(paths["fp32"], x)
        assert np.abs(out.cpu().numpy() - ref).max() <= 1e-2 * np.abs(ref).max()  # TF32 allowed
        same = runner.infer(torch.from_numpy(x).cuda())  # torch in, same shape: same buffer reused
        assert torch.equal(same, out)
    buffer = runner.executor._out
    runner.infer(np.zeros(SHAPES[-1], np.float32))
    assert runner.executor._out is buffer  # same shape as the previous call: no reallocation
    with pytest.raises(FCNError, match="outside every optimization profile"):
        runner.infer(np.zeros((1, 3, 256, 256), np.float32))  # inside the envelope, in no profile
    with pytest.raises(FCNError, match="outside"):
        runner.infer(np.zeros((3, 3, 64, 64), np.float32))
    runner.close()


def test_engine_for_another_tensorrt_version_is_refused(exported, tmp_path):
    from fcn_deploy.runtime import load_runner

    folder, paths = exported
    engine = tmp_path / "m.engine"
    build_engine(paths["fp32"], engine, profiles=PROFILES[:1], gate=False, progress=False)
    doc = json.loads(sidecar_path(engine).read_text())
    doc["tensorrt_version"] = "9.9.9.9"
    sidecar_path(engine).write_text(json.dumps(doc))
    with pytest.raises(FCNError, match=r"built with TensorRT 9.9.9.9.*rebuild"):
        load_runner(engine)
    doc["tensorrt_version"] = read_sidecar(folder / "fcn8s-fp32.engine").tensorrt_version
    doc["compute_capability"] = [1, 0]
    sidecar_path(engine).write_text(json.dumps(doc))
    with pytest.raises(FCNError, match=r"compute capability 1.0.*rebuild"):
        load_runner(engine)


def test_fp16_engine_from_fp32_graph_is_refused_on_strongly_typed_tensorrt(exported, tmp_path):
    import tensorrt

    from fcn_deploy.engine.versions import STRONGLY_TYPED_SINCE, parse_trt_version

    if not parse_trt_version(tensorrt.__version__).at_least(STRONGLY_TYPED_SINCE):
        pytest.skip(f"TensorRT {tensorrt.__version__} builds FP16 with the builder flag")
    _, paths = exported
    with pytest.raises(FCNError, match="re-export with precision='fp16'"):
        build_engine(paths["fp32"], tmp_path / "m.engine", precision="fp16", progress=False)
    assert not (tmp_path / "m.engine").exists()


def test_image_mode_engine_returns_the_labels_onnxruntime_gives(exported):
    """uint8 NHWC images in, uint8 labels out: ArgMax → Cast(FLOAT) → Cast(UINT8) in TensorRT."""
    from fcn_deploy.runtime import load_runner

    folder, paths = exported
    engine = folder / "fcn8s-fp16-image.engine"
    report = build_engine(paths["fp16-image"], engine, profiles=PROFILES, progress=False)
    assert report.passed and all(r.max_abs_error is None for r in report.gate_rows)
    assert read_sidecar(engine).precision != "fp32"
    runner = load_runner(engine, device="cuda")
    assert runner.io == "image" and runner.device.index is not None
    rng = np.random.default_rng(3)
    for n, _, h, w in SHAPES:
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        labels = runner.infer(images)
        assert labels.dtype == torch.uint8 and tuple(labels.shape) == (n, h, w)
        ref = _reference(paths["fp16-image"], images)
        assert (labels.cpu().numpy() == ref).mean() >= 0.99  # FP16 kernels differ a little
    runner.close()


def test_executor_runs_misaligned_views_on_its_own_stream(exported):
    """batch[1:] starts 140 bytes past a 256-byte boundary; the caller's side stream is honoured."""
    from fcn_deploy.runtime import load_runner

    folder, paths = exported
    engine = folder / "fcn8s-fp32-views.engine"
    build_engine(paths["fp32"], engine, profiles=PROFILES, gate=False, progress=False)
    runner = load_runner(engine)  # default device: cuda:N, which must equal the input's
    executor = runner.executor
    assert executor.stream.cuda_stream != 0  # never the legacy default stream
    batch = torch.randn(3, 3, 33, 65, device=runner.device) * 50
    view = batch[1:]
    assert view.data_ptr() % 256 != 0 and view.is_contiguous()
    expected = executor.run(view.clone()).clone()
    side = torch.cuda.Stream(runner.device)
    side.wait_stream(torch.cuda.current_stream(runner.device))  # `batch` was made on the default
    with torch.cuda.stream(side):
        got = executor.run(view).clone()  # ordered on `side` by the executor's events
    side.synchronize()
    assert torch.equal(got, expected)
    assert executor.run(view, profile=0).shape == (2, 21, 33, 65) and executor.profile == 0
    with pytest.raises(FCNError, match="outside profile 1"):
        executor.run(view, profile=1)  # height 33 is below profile 1's min of 64
    runner.close()
    assert runner.executor is None
