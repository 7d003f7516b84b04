"""INT8 export: calibrated Q/DQ graphs that ONNX Runtime and OpenVINO run, scored against FP32."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import randomize

from fcn_deploy.engine.layer_info import precision_problem, summarize_layers
from fcn_deploy.engine.versions import parse_trt_version, precision_route
from fcn_deploy.errors import FCNError
from fcn_deploy.export import export_onnx, read_onnx_metadata, synthetic_images
from fcn_deploy.export.quantize import CalibrationSource
from fcn_deploy.metrics import agreement_passes
from fcn_deploy.models import create_model
from fcn_deploy.runtime import load_runner

FCN_EXPORT = str(Path(sys.executable).parent / "fcn-export")
SIZES = [(1, 1, 3), (2, 45, 61), (1, 150, 170)]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize(create_model("fcn8s", num_classes=7, width=0.125))


def _export(net, path: Path, **kw):
    options = dict(
        precision="int8",
        max_size=(256, 256),
        max_batch=2,
        calibration_images=6,
        held_out_images=6,
        verify_sizes=SIZES,
        seed=0,  # the probe images: one set on every run
        progress=False,
    )
    options.update(kw)
    return export_onnx(net, path, **options)


def _zero_points(path: Path) -> dict[str, set[int]]:
    """dtype name → the zero point values of every QuantizeLinear in the file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            found.setdefault(zp.dtype.name, set()).update(int(v) for v in zp.ravel())
    return found


@pytest.mark.slow
def test_int8_export_is_qdq_dynamic_and_scored(net, tmp_path: Path) -> None:
    path = tmp_path / "int8.onnx"
    report = _export(net, path)
    meta = read_onnx_metadata(path)
    assert meta.precision == "int8" and meta.bounds.max_hw == (256, 256)
    assert meta.calibration == {
        "source": "synthetic",
        "method": "minmax",
        "target": "cpu",
        "images": 6,
        "fp32_layers": ["upscore8"],  # the logits upsampling always stays FP32
        "finetune_iterations": 0,
    }
    assert _zero_points(path).keys() == {"uint8"}  # cpu target: uint8 activations
    assert [r.shape for r in report.rows] == SIZES  # dynamic batch, height and width
    # a random net's near-tied logits flip a few pixels (the 1x3 probe may differ in one)
    assert all(agreement_passes(r.label_agreement, int(np.prod(r.shape)), 0.9) for r in report.rows)
    acc = report.int8
    assert acc is not None and acc.images == 6 and acc.data == "synthetic val, 6 images"
    assert acc.fp32_mean_iu is not None and acc.int8_mean_iu is not None
    assert 0.9 < acc.label_agreement <= 1.0
    assert "held-out data" in acc.table() and acc.passed == (
        acc.label_agreement >= 0.98 and acc.iu_drop <= 1.0
    )
    with load_runner(path, device="cpu") as runner:  # ONNX Runtime runs the Q/DQ graph
        assert runner.name == "onnxruntime-int8"
        x = net.info.preprocessing.apply(synthetic_images(1, 77, 93, np.random.default_rng(2)))
        assert runner.infer(x).shape == (1, 7, 77, 93)


@pytest.mark.slow
def test_tensorrt_target_is_symmetric_and_openvino_runs_image_mode(net, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    path = tmp_path / "int8-trt.onnx"
    report = _export(net, path, int8_target="tensorrt", io="image")
    assert _zero_points(path) == {"int8": {0}}  # what TensorRT's Q/DQ import takes
    assert read_onnx_metadata(path).calibration["target"] == "tensorrt"
    assert report.int8 is not None and report.int8.label_agreement > 0.9
    images = synthetic_images(2, 64, 80, np.random.default_rng(5))
    with load_runner(path, backend="openvino") as ov, load_runner(path, device="cpu") as ort:
        assert ov.name == "openvino-int8"
        a, b = ov.infer(images), ort.infer(images)
        assert a.dtype == b.dtype == torch.uint8 and a.shape == (2, 64, 80)
        assert float((a == b).float().mean()) > 0.97  # two runtimes' INT8 kernels round alike


@pytest.mark.slow
def test_folder_calibration_and_histogram_methods(net, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for k, image in enumerate(synthetic_images(5, 70, 90, np.random.default_rng(1))):
        cv2.imwrite(str(folder / f"{k}.png"), cv2.resize(image, (90 + 10 * k, 70)))
    report = _export(
        net,
        tmp_path / "m.onnx",
        calibration=str(folder),
        calibration_images=3,
        calibration_method="percentile",
        verify_sizes=[(1, 40, 40)],
    )
    acc = report.int8
    assert acc is not None and acc.images == 2 and acc.fp32_mean_iu is None  # no labels
    assert acc.data == "held-out images, 2 images"
    glob_report = _export(
        net,
        tmp_path / "g.onnx",
        calibration=str(folder / "*.png"),
        calibration_images=4,
        calibration_method="entropy",
        verify_sizes=[(1, 40, 40)],
    )
    assert glob_report.metadata.calibration["method"] == "entropy"
    with pytest.raises(FCNError, match="no held-out images"):
        _export(net, tmp_path / "h.onnx", calibration=str(folder), calibration_images=5)


def test_calibration_sources_fail_clearly(net, tmp_path: Path) -> None:
    assert CalibrationSource.parse("synthetic").has_labels
    assert CalibrationSource.parse("voc:/data/VOCdevkit").root == "/data/VOCdevkit"
    assert CalibrationSource.parse("some/folder").kind == "images"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FCNError, match="yields no images"):
        _export(net, tmp_path / "a.onnx", calibration=str(empty))
    with pytest.raises(FCNError, match="no such folder"):
        _export(net, tmp_path / "b.onnx", calibration=f"voc:{tmp_path / 'nope'}")
    with pytest.raises(FCNError, match=r"calibration_images must be ≥ 1"):
        _export(net, tmp_path / "c.onnx", calibration_images=0)
    with pytest.raises(FCNError, match="names no folder"):
        CalibrationSource.parse("sbd:")
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "x.png"), np.zeros((300, 20, 3), np.uint8))
    with pytest.raises(FCNError, match="calibration image 0"):
        _export(net, tmp_path / "d.onnx", calibration=str(big))
    for path in ("a", "b", "c", "d"):
        assert not (tmp_path / f"{path}.onnx").exists()  # nothing half-written


@pytest.mark.slow
def test_cli_exits_nonzero_below_the_threshold(make_checkpoint, tmp_path: Path) -> None:
    ckpt = make_checkpoint("fcn8s", width=0.125, num_classes=7)
    base = [
        FCN_EXPORT,
        str(ckpt),
        "--precision",
        "int8",
        "--max-size",
        "200x200",
        "--calibration-images",
        "4",
        "--held-out-images",
        "20",
        "--seed",
        "1",
    ]
    ok = subprocess.run(
        [
            *base,
            "-o",
            str(tmp_path / "ok.onnx"),
            "--min-label-agreement",
            "0.5",
            "--max-iu-drop",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr
    assert "INT8 vs FP32 (minmax ranges from 4 synthetic image(s)" in ok.stdout
    assert "synthetic val, 20 images" in ok.stdout
    strict = subprocess.run(
        [
            *base,
            "-o",
            str(tmp_path / "strict.onnx"),
            "--min-label-agreement",
            "1",
            "--max-iu-drop",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert strict.returncode not in (0, None) and "FAIL" in strict.stdout
    _failed_export_is_refused_unless_allowed(tmp_path / "strict.onnx", tmp_path)
    negative = subprocess.run(  # refused by the parser, before any work
        [*base, "-o", str(tmp_path / "neg.onnx"), "--max-iu-drop", "-1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert negative.returncode == 2 and "--max-iu-drop" in negative.stderr
    assert len(negative.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "neg.onnx").exists()
    bad = subprocess.run(
        [*base, "-o", str(tmp_path / "bad.onnx"), "--calibration", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "yields no images" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad.onnx").exists()


def _failed_export_is_refused_unless_allowed(path: Path, tmp_path: Path) -> None:
    """A file whose verification failed says so in its metadata; every loader refuses it unless
    told, and then runs it."""
    from fcn_deploy.api import Segmenter

    status = read_onnx_metadata(path).verification or ""
    assert status.startswith("failed: INT8 on synthetic val"), status
    with pytest.raises(FCNError, match="failed verification") as refused:
        Segmenter.load(path)
    assert refused.value.param == "allow_unverified"
    with Segmenter.load(path, allow_unverified=True) as seg:
        assert seg.predict(np.zeros((40, 50, 3), np.uint8)).shape == (40, 50)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), synthetic_images(1, 48, 64, np.random.default_rng(0))[0])
    bin_dir = Path(sys.executable).parent
    for tool, args in (
        ("fcn-predict", [str(path), str(image), "-o", str(tmp_path / "out")]),
        ("fcn-bench", [str(path), "--backends", "onnxruntime-int8", "--sizes", "32x32"]),
        ("fcn-eval", [str(path), "--data", "synthetic", "--num-images", "1"]),
        ("fcn-export", [str(path), "--triton-repo", str(tmp_path / "repo")]),
    ):
        run = subprocess.run(
            [str(bin_dir / tool), *args], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 2, run.stderr
        assert "failed verification" in run.stderr and "--allow-unverified" in run.stderr
        assert "Traceback" not in run.stderr
    allowed = subprocess.run(
        [str(bin_dir / "fcn-predict"), str(path), str(image), "-o", str(tmp_path / "out"),
         "--allow-unverified", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "a.png").is_file()


def test_engine_summary_labels_int8_and_needs_strongly_typed_tensorrt() -> None:
    def conv(name: str, fmt: str) -> dict:
        t = {"Dimensions": [1, 8, 16, 16], "Format/Datatype": fmt}
        return {
            "Name": name,
            "LayerType": "CaskConvolution",
            "ParameterType": "Convolution",
            "Inputs": [t],
            "Outputs": [t],
            "Kernel": [3, 3],
            "Groups": 1,
        }

    int8 = "Channel major INT8 format where channel % 32 == 0"
    all_int8 = summarize_layers(json.dumps({"Layers": [conv("a", int8), conv("b", int8)]}))
    assert all_int8.label == "int8" and all_int8.int8_convs == 2
    assert "2/2 convs in INT8" in all_int8.describe()
    half = summarize_layers(
        json.dumps({"Layers": [conv("a", int8), conv("b", "Row major linear FP32")]})
    )
    assert half.label == "mixed" and half.int8_conv_flop_share == pytest.approx(0.5)
    # the builder's gate: an int8 build with every conv identified and none in INT8 is refused;
    # one with INT8 convs, or with convs of unknown precision (Myelin), is not
    fp32 = "Row major linear FP32"
    none = summarize_layers(json.dumps({"Layers": [conv("a", fp32), conv("b", fp32)]}))
    assert "Q/DQ" in (precision_problem("int8", none) or "")
    assert precision_problem("int8", all_int8) is None and precision_problem("int8", half) is None
    myelin = {"Name": "{ForeignNode[/conv1/Conv...]}", "LayerType": "Myelin", "Outputs": []}
    unknown = summarize_layers(json.dumps({"Layers": [myelin]}), {"/conv1/Conv": "Conv"})
    assert unknown.label == "unknown" and precision_problem("int8", unknown) is None
    route = precision_route(parse_trt_version("10.13.0"), "int8", "int8", False)
    assert route.strongly_typed
    with pytest.raises(FCNError, match=r"10\.12\+"):
        precision_route(parse_trt_version("10.8.0"), "int8", "int8", True)
    with pytest.raises(FCNError, match="int8 ONNX graph"):
        precision_route(parse_trt_version("10.13.0"), "int8", "fp32", False)


@pytest.mark.slow
def test_quantization_aware_finetuning_exports_conv_input_qdq(net, tmp_path: Path) -> None:
    import onnx

    from fcn_deploy.export.quantize import Int8Options, conv_nodes

    options = Int8Options(target="tensorrt", finetune_iterations=2)
    path = tmp_path / "qat.onnx"
    report = _export(net, path, int8_options=options, verify_sizes=[(1, 40, 50)])
    assert report.metadata.calibration["finetune_iterations"] == 2
    model = onnx.load(str(path))
    graph = model.graph
    made = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    producers = {o: n for n in graph.node for o in n.output}
    assert report.metadata.calibration["fp32_layers"] == ["upscore8"]
    fp32 = {conv_nodes(model)["upscore8"]}  # the logits upsampling reads FP32 ...
    assert producers[next(n for n in graph.node if n.name in fp32).input[0]].op_type == "Add"
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose") and n.name not in fp32]
    fed = set()
    for conv in convs:  # ... every other conv a dequantized input ...
        dq = producers[conv.input[0]]
        assert dq.op_type == "DequantizeLinear" and dq.input[0] in made
        fed.add(producers[dq.input[0]].input[0])
    # ... and those are the only tensors quantized (no Q/DQ on adds, pools or outputs)
    assert {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"} == fed
    assert _zero_points(path) == {"int8": {0}}
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), synthetic_images(1, 40, 40)[0])
    cv2.imwrite(str(folder / "b.png"), synthetic_images(1, 40, 40)[0])
    with pytest.raises(FCNError, match="needs labelled images"):
        _export(
            net,
            tmp_path / "x.onnx",
            calibration=str(folder),
            calibration_images=1,
            int8_options=options,
        )


def test_in_memory_calibration_images_work_as_a_folder_would() -> None:
    images = [np.full((8, 10, 3), k, np.uint8) for k in range(5)]
    source = CalibrationSource.from_arrays(images, "my frames")
    assert source.spec == "my frames" and not source.has_labels
    assert [int(im[0, 0, 0]) for im in source.calibration_images(2)] == [0, 1]
    assert [(int(im[0, 0, 0]), lab) for im, lab in source.held_out(2, skip=2)] == [
        (2, None),
        (3, None),
    ]
    with pytest.raises(FCNError, match="yields no images"):
        CalibrationSource.from_arrays([], "nothing").calibration_images(1)
