"""fcn-export: small nets of every variant exported, checked and verified at fresh random sizes.

Exports take several seconds each, so each (variant, precision, I/O) file is made once per module
and shared. Verification sizes are drawn from a fresh seed every run (printed on failure).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import randomize
from onnx import TensorProto, helper
from torch import nn

import fcn_deploy
from fcn_deploy.cli.export import main as export_main
from fcn_deploy.errors import FCNError
from fcn_deploy.export import (
    OnnxMetadata,
    choose_sizes,
    export_onnx,
    read_onnx_metadata,
    synthetic_images,
    verify_onnx,
)
from fcn_deploy.export.checks import check_graph
from fcn_deploy.export.graph import (
    DeployModule,
    Float32Island,
    Fp16Plan,
    LayerPeaks,
    activation_peaks,
    group_diagonal_deconvs,
    probe_fp16_plan,
)
from fcn_deploy.export.metadata import (
    NOT_VERIFIED,
    PASSED,
    RECORD_KEY,
    RECORD_MISMATCH,
    UNRECORDED,
)
from fcn_deploy.export.ort import ort_run, ort_session
from fcn_deploy.meta import ModelInfo, Preprocessing, SizeBounds
from fcn_deploy.models import create_model
from fcn_deploy.runtime import load_runner

SEED = int(np.random.default_rng().integers(2**31))
FCN_EXPORT = str(Path(sys.executable).parent / "fcn-export")
BOUNDS = SizeBounds((1, 1), (4096, 4096), 1, 32)


def small(
    variant: str, seed: int = 0, preprocessing: Preprocessing | None = None
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = randomize(create_model(variant, num_classes=5, width=0.125), seed)
    if preprocessing is not None:
        model.info = model.info.replace(preprocessing=preprocessing)  # type: ignore[assignment]
    return model


def fresh_sizes() -> list[tuple[int, int, int]]:
    return choose_sizes(BOUNDS, np.random.default_rng(SEED), large_side=256)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def exports(out_dir: Path) -> dict[str, tuple[torch.nn.Module, fcn_deploy.export.ExportReport]]:
    """Each export once: every variant in FP32, both precisions × both I/O modes somewhere."""
    plans = {
        "fcn8s-fp32-tensor": ("fcn8s", {}, None),
        "fcn16s-fp32-tensor": ("fcn16s", {}, None),
        "fcn32s-fp32-image": (
            "fcn32s",
            {"io": "image"},
            Preprocessing.torchvision(),
        ),  # the RGB path
        "fcn8s-atonce-fp32-tensor": ("fcn8s-atonce", {}, None),
        "fcn8s-fp16-tensor": ("fcn8s", {"precision": "fp16"}, None),
        "fcn16s-fp16-image": ("fcn16s", {"precision": "fp16", "io": "image"}, None),
    }
    done = {}
    for name, (variant, options, pre) in plans.items():
        model = small(variant, preprocessing=pre)
        report = export_onnx(
            model,
            out_dir / f"{name}.onnx",
            verify_sizes=fresh_sizes(),
            seed=SEED,
            progress=False,
            **options,
        )
        done[name] = (model, report)
    return done


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "fcn8s-fp32-tensor",
        "fcn16s-fp32-tensor",
        "fcn32s-fp32-image",
        "fcn8s-atonce-fp32-tensor",
        "fcn8s-fp16-tensor",
        "fcn16s-fp16-image",
    ],
)
def test_export_verifies_at_fresh_sizes(exports, name: str) -> None:
    _model, report = exports[name]
    assert report.rows and report.passed, f"seed {SEED}\n{report.table()}"
    assert all(r.note == "" for r in report.rows)  # random score layers: outputs are not all zero
    assert {r.shape for r in report.rows} == set(fresh_sizes())
    assert report.path.stat().st_size == report.file_size > 0
    proto = onnx.load(str(report.path))
    onnx.checker.check_model(proto)
    dims = [d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == (
        ["batch", "height", "width"]
        if report.metadata.io == "image"
        else ["batch", "", "height", "width"]
    )
    for node in proto.graph.node:
        if node.op_type == "ConvTranspose":
            assert not any(a.name == "output_shape" for a in node.attribute)
    assert read_onnx_metadata(report.path) == report.metadata


@pytest.mark.slow
def test_fp16_graph_is_consistently_typed(exports) -> None:
    _, report = exports["fcn8s-fp16-tensor"]
    assert report.graph.fp16_convs == report.graph.convs > 0
    proto = onnx.load(str(report.path))
    assert (
        proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    )  # FP32 I/O by default
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert report.fp16_label_agreement is not None and report.fp16_label_agreement >= 0.99
    assert report.activation_peak is not None and 0 < report.activation_peak < 65504


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn32s-fp32-image", "fcn16s-fp16-image"])
def test_image_graph_equals_preprocessing_and_argmax(exports, name: str) -> None:
    model, report = exports[name]
    images = synthetic_images(2, 150, 190, np.random.default_rng(SEED))
    with torch.inference_mode():
        expected = model(torch.from_numpy(model.info.preprocessing.apply(images))).argmax(1).numpy()
    with load_runner(report.path, device="cpu") as runner:
        labels = runner.infer(images).numpy()
    assert labels.dtype == np.uint8 and labels.shape == (2, 150, 190)
    threshold = 0.999 if report.metadata.precision == "fp32" else 0.99
    assert (labels == expected).mean() >= threshold
    assert len(np.unique(expected)) > 1  # a label map, not a constant


@pytest.mark.slow
def test_zero_reference_is_flagged_not_passed(exports) -> None:
    _model, report = exports["fcn8s-fp32-tensor"]
    zero = small("fcn8s")
    for layer in zero.score_layers():
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    rows = verify_onnx(
        report.path, zero, report.metadata, [(1, 9, 11)], np.random.default_rng(0), progress=False
    )
    assert "all zeros" in rows[0].note and not rows[0].passed


def test_metadata_round_trip(tmp_path: Path) -> None:
    info = ModelInfo(
        "fcn16s",
        3,
        0.5,
        ["a", "b", "c"],
        [(1, 2, 3), (4, 5, 6), (7, 8, 9)],
        Preprocessing.torchvision(),
    )
    meta = OnnxMetadata(
        info,
        "tensor",
        "fp16",
        True,
        SizeBounds((1, 1), (720, 1280), 1, 8),
        "x",
        "logits",
        "ab" * 32,
        "2.13",
        "1.23",
        20,
    )
    assert OnnxMetadata.from_props(meta.to_props()).verification == RECORD_MISMATCH  # no record
    meta = replace(meta, verification=PASSED, graph_sha256="cd" * 32)
    props = meta.to_props()
    assert all(k.startswith("fcn_deploy.") for k in props) and "fcn_deploy.bounds" in props
    assert OnnxMetadata.from_props(props) == meta
    record = json.loads(props[RECORD_KEY])
    failed = replace(meta, verification="failed: 1 of 4 probe sizes").to_props()[RECORD_KEY]
    forged = failed.replace("failed: 1 of 4 probe sizes", "passed")
    wider = json.dumps(replace(meta.bounds, max_hw=(8192, 8192)).to_dict())
    edits = {
        "record deleted": {RECORD_KEY: None},
        "bounds widened": {"fcn_deploy.bounds": wider},
        "an entry added": {"fcn_deploy.note": "ok"},
        "failure turned into a pass": {RECORD_KEY: forged},
        "graph hash replaced": {RECORD_KEY: json.dumps(record | {"graph": "ef" * 32})},
        "record not JSON": {RECORD_KEY: "passed"},
    }  # fmt: skip
    for what, edit in edits.items():
        changed = {k: v for k, v in (props | edit).items() if v is not None}
        assert OnnxMetadata.from_props(changed).verification == RECORD_MISMATCH, what
    # the previous release's format: no record, a mark on failure only
    old = {k: v for k, v in props.items() if k != RECORD_KEY} | {"fcn_deploy.format_version": "1"}
    assert OnnxMetadata.from_props(old).verification == UNRECORDED
    marked = OnnxMetadata.from_props(old | {"fcn_deploy.unverified": "failed: INT8 on x"})
    assert marked.verification == "failed: INT8 on x"
    with pytest.raises(ValueError):
        OnnxMetadata(
            info, "image", "fp32", True, meta.bounds, "x", "y", "", "", "", 20
        )  # fp16_io needs fp16 tensor


def test_read_metadata_rejects_foreign_and_damaged_files(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(FCNError, match="without fcn-deploy metadata"):
        read_onnx_metadata(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00not a protobuf" * 10)
    with pytest.raises(FCNError):
        read_onnx_metadata(garbage)
    with pytest.raises(FCNError, match="no such ONNX model"):
        read_onnx_metadata(tmp_path / "missing.onnx")


def test_the_streamed_file_is_what_onnx_save_writes(tmp_path: Path) -> None:
    """The exporter never builds a ModelProto holding the weights: it holds them aside and
    streams them into the file. The bytes are onnx.save's for the full proto (FP32 and FP16)."""
    from onnx import numpy_helper

    from fcn_deploy.export.exporter import _trace
    from fcn_deploy.export.proto import PLACEHOLDER, write_model

    net = small("fcn16s")
    meta = OnnxMetadata(net.info, "tensor", "fp32", False, BOUNDS, "x", "logits", "", "", "", 20)
    for precision in ("fp32", "fp16"):
        proto, weights = _trace(DeployModule(net, precision), meta, 20)
        held = [t for t in proto.graph.initializer if t.name in weights]
        assert len(held) > 10 and all(t.external_data[0].value == PLACEHOLDER for t in held)
        assert proto.ByteSize() < sum(a.nbytes for a in weights.values()) / 20  # the graph
        write_model(proto, tmp_path / "streamed.onnx", weights)
        for t in held:
            t.CopyFrom(numpy_helper.from_array(weights[t.name], t.name))
        onnx.save(proto, str(tmp_path / "saved.onnx"))
        assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "saved.onnx").read_bytes()
    with pytest.raises(FCNError, match="no weights were given"):
        write_model(_trace(DeployModule(net), meta, 20)[0], tmp_path / "x.onnx", {})


def test_check_graph_rejects_mixed_dtypes() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="bad_add")],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT16, [2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT16, [2])],
    )
    with pytest.raises(FCNError):  # onnx's own type check or ours: either way, named and refused
        check_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def test_bilinear_upsampling_is_exported_depthwise_with_the_same_output(make_model) -> None:
    """FCN's frozen bilinear deconvs become groups=C (1/21 of the work) with equal logits; a
    trained (non-diagonal) one is left alone; the caller's model is never changed."""
    net = make_model("fcn8s", width=0.125, num_classes=21)
    x = torch.randn(2, 3, 61, 83)
    deploy = DeployModule(net)
    assert [n for n, m in deploy.net.named_modules() if getattr(m, "groups", 1) == 21] == [
        "upscore2",
        "upscore_pool4",
        "upscore8",
    ]
    assert net.upscore8.groups == 1 and net.upscore8.weight.shape == (21, 21, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net(x), rtol=0, atol=1e-5)
        trained = copy.deepcopy(net)
        trained.upscore2.weight[0, 1, 0, 0] = 0.5  # an off-diagonal weight: trained upsampling
    assert group_diagonal_deconvs(trained) == ["upscore_pool4", "upscore8"]
    assert trained.upscore2.groups == 1


def test_fp16_plan_keeps_values_fp32_until_a_layer_brings_them_back() -> None:
    peaks = {
        "conv1_1": LayerPeaks(150.0, 900.0),
        "fc7": LayerPeaks(900.0, 2e6),  # leaves the range
        "score_fr": LayerPeaks(2e6, 3e5),  # FP32 in, still past it
        "upscore2": LayerPeaks(3e5, 500.0),  # back inside: hands FP16 on
        "score_pool4": LayerPeaks(40.0, 60.0),
    }
    plan = Fp16Plan.from_peaks(peaks)
    assert plan.fp32_layers == ("fc7", "score_fr", "upscore2")
    assert plan.fp32_outputs == ("fc7", "score_fr") and plan.peak == 2e6


def _perturbations(net: torch.nn.Module) -> list[tuple[str, str]]:
    """Every conv/deconv of ``net``, to be pushed past FP16's range two ways: ``before`` a ReLU
    (a bias of -30000: huge negative outputs the ReLU then zeroes, so the next layer's own input
    is small) and ``after`` one (weights ×3000: huge values that survive it). Deconvolutions have
    no bias and no ReLU after them: ``after`` only."""
    layers = [
        (n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    return [
        (name, how)
        for name, layer in layers
        for how in ("before", "after")
        if how == "after" or layer.bias is not None
    ]


@pytest.mark.slow  # 39 perturbed nets, each planned, run in FP16 and traced: ~1 min on 2 cores
def test_fp16_plan_is_consistent_for_every_single_layer_perturbation(make_model) -> None:
    """A consumer of an FP32 output computes in FP32 or casts it back: whichever one layer of
    FCN-8s (every layer FCN-32s has, and the skips) leaves FP16's range, the half net runs
    eagerly and traces through torch.export, stays finite and keeps the FP32 net's labels.
    (FCN-32s with fc7.bias -= 20000 used to keep fc7 alone in FP32 and hand score_fr, FP16 and
    fed through the ReLU, an FP32 tensor: "Input type (float) and bias type (c10::Half)"
    eagerly, a failed torch.export.) The plan is measured on the test's own input, as
    `probe_fp16_plan` measures it on its probes."""
    x = torch.from_numpy(
        Preprocessing.caffe().apply(synthetic_images(2, 32, 48, np.random.default_rng(3)))
    )
    cases = _perturbations(make_model("fcn8s", width=0.0625, num_classes=5))
    assert len(cases) == 39
    for name, how in cases:
        model = make_model("fcn8s", width=0.0625, num_classes=5)
        layer = model.get_submodule(name)
        with torch.no_grad():
            if how == "before":
                layer.bias.sub_(30000.0)
            else:
                layer.weight.mul_(3000.0)
        plan = Fp16Plan.from_peaks(activation_peaks(model, x))
        assert name in plan.fp32_layers, (name, how, plan)
        deploy = DeployModule(model, "fp16", plan=plan).eval()
        with torch.inference_mode():
            ref = model(x)
            half = deploy(x)
        assert half.dtype == torch.float32 and torch.isfinite(half).all(), (name, how)
        agree = (half.argmax(1) == ref.argmax(1)).float().mean().item()
        assert agree >= 0.98, (name, how, agree, plan)
        torch.export.export(deploy, (x,))  # an FP32 tensor into an FP16 layer fails here


def test_fp16_export_stays_finite_past_fp16s_range(make_model, tmp_path: Path) -> None:
    """fc7 ×1000 on a width-0.125 FCN-8s: activations far past 65504 from fc7 to the logits."""
    model = make_model("fcn8s", width=0.125)
    with torch.no_grad():
        model.fc7.weight.mul_(1000.0)
    plan = probe_fp16_plan(model)
    assert plan.peak > 65504 and {"fc7", "score_fr", "upscore8"} <= set(plan.fp32_layers)
    assert "conv1_1" not in plan.fp32_layers
    deploy = DeployModule(model, "fp16", plan=plan)
    island = deploy.net.fc7
    assert isinstance(island, Float32Island) and island.fp32_output
    assert torch.equal(island.layer.weight, model.fc7.weight)  # FP32 weights, never rounded
    assert deploy.net.conv1_1.weight.dtype == torch.float16

    report = export_onnx(model, tmp_path / "big.onnx", precision="fp16", max_size=(256, 256),
                         max_batch=2, verify=False, progress=False)  # fmt: skip
    assert report.fp32_layers == list(plan.fp32_layers)
    x = model.info.preprocessing.apply(synthetic_images(2, 160, 224, np.random.default_rng(1)))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
        eager = deploy(torch.from_numpy(x)).numpy()  # what TorchRunner's FP16 runs
    # fc7's output here passes 65504: cast back to FP16 it would be inf (labels ~30% agreed)
    for logits in (ort_run(ort_session(report.path), x), eager):
        assert np.isfinite(logits).all()
        assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.99


@pytest.mark.slow
def test_cli_subprocess_exports_and_verifies(tmp_path: Path, make_checkpoint) -> None:
    ckpt = make_checkpoint("fcn8s-atonce", width=0.125)
    out = tmp_path / "atonce.onnx"
    cmd = [
        FCN_EXPORT,
        str(ckpt),
        "-o",
        str(out),
        "--max-size",
        "300x400",
        "--max-batch",
        "4",
        "--seed",
        str(SEED),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (
        f"seed {SEED}" in run.stdout and run.stdout.count(" ok") >= 3 and "FAIL" not in run.stdout
    )
    meta = read_onnx_metadata(out)
    assert (
        meta.info.variant == "fcn8s-atonce"
        and meta.bounds.max_hw == (300, 400)
        and meta.bounds.max_batch == 4
    )
    assert len(meta.source_sha256) == 64


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert export_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_bad_inputs_give_one_line_and_no_file(tmp_path: Path, make_checkpoint, capsys) -> None:
    ckpt = make_checkpoint("fcn32s", width=0.0625)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:2000])
    out = tmp_path / "m.onnx"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = {
        "no such file": [str(tmp_path / "missing.pt"), "-o", str(out)],
        "truncated": [str(truncated), "-o", str(out)],
        "does not exist": [str(ckpt), "-o", str(tmp_path / "nodir" / "m.onnx")],
        "at least 1": [str(ckpt), "-o", str(out), "--max-size", "0x5"],
        "--max-batch": [str(ckpt), "-o", str(out), "--max-batch", "0"],
        "whole number": [str(ckpt), "-o", str(out), "--max-batch", "many"],
        "HxW": [str(ckpt), "-o", str(out), "--max-size", "big"],
        "--fp16-io": [str(ckpt), "-o", str(out), "--fp16-io"],
    }
    if not __import__("os").access(locked, __import__("os").W_OK):  # root can write anywhere
        cases["not writable"] = [str(ckpt), "-o", str(locked / "m.onnx")]
    for expected, argv in cases.items():
        assert expected in _one_line_exit_2([*argv, "--no-verify"], capsys)
        assert (
            not out.exists()
            and not list(tmp_path.glob(".m.onnx.*"))
            and not list(tmp_path.glob("*/m.onnx"))
        )


def test_cli_subprocess_bad_input_is_one_line(tmp_path: Path) -> None:
    cmd = [FCN_EXPORT, str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.onnx")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert (
        run.returncode == 2
        and run.stderr.strip().count("\n") == 0
        and run.stderr.startswith("error: ")
    )
    assert not (tmp_path / "m.onnx").exists()


def rewrite(source: Path, dest: Path, edit: Callable[[onnx.ModelProto], None]) -> Path:
    """``source`` changed by ``edit`` (metadata or graph) and saved as ``dest``, as a user with
    the onnx package would."""
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(dest))
    return dest


def set_props(**changes: str | None) -> Callable[[onnx.ModelProto], None]:
    """An edit setting (None: deleting) ``fcn_deploy.<key>`` entries."""

    def edit(model: onnx.ModelProto) -> None:
        props = {p.key: p.value for p in model.metadata_props}
        for key, value in changes.items():
            props.pop(f"fcn_deploy.{key}", None)
            if value is not None:
                props[f"fcn_deploy.{key}"] = value
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)

    return edit


def rename_first_node(model: onnx.ModelProto) -> None:
    model.graph.node[0].name += "_edited"


@pytest.mark.slow
def test_a_file_edited_after_export_is_refused_until_allowed(exports, tmp_path: Path) -> None:
    """Deleting the record, changing the bounds or the graph: every loader refuses the file with
    one line unless allowed; then it runs."""
    _model, report = exports["fcn8s-fp32-tensor"]
    assert report.metadata.verification == PASSED
    record = json.loads(report.metadata.to_props()[RECORD_KEY])
    wider = json.dumps(replace(report.metadata.bounds, max_hw=(8192, 8192)).to_dict())
    edited = [
        rewrite(report.path, tmp_path / "deleted.onnx", set_props(verification=None)),
        rewrite(report.path, tmp_path / "bounds.onnx", set_props(bounds=wider)),
        rewrite(report.path, tmp_path / "graph.onnx", rename_first_node),
        rewrite(report.path, tmp_path / "status.onnx",
                set_props(verification=json.dumps(record | {"status": "passed "}))),
    ]  # fmt: skip
    message = "verification record missing or does not match (edited after export?)"
    image = synthetic_images(1, 40, 50, np.random.default_rng(0))[0]
    for path in edited:
        assert read_onnx_metadata(path).verification == RECORD_MISMATCH, path.name
        with pytest.raises(FCNError, match=re.escape(message)) as refused:
            load_runner(path, device="cpu")
        assert refused.value.param == "allow_unverified"
        with load_runner(path, device="cpu", allow_unverified=True) as runner:
            x = report.metadata.info.preprocessing.apply(image[None])
            assert runner.infer(x).shape[-2:] == (40, 50)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    predict = str(Path(sys.executable).parent / "fcn-predict")
    cmd = [predict, str(edited[0]), str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr and "--allow-unverified" in run.stderr
    run = subprocess.run([*cmd, "--allow-unverified", "-q"], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert (tmp_path / "out" / "a.png").is_file()


@pytest.mark.slow
def test_no_verify_export_says_so_and_loads_with_one_warning(
    tmp_path: Path, make_checkpoint
) -> None:
    ckpt = make_checkpoint("fcn32s", width=0.0625, num_classes=5)
    out = tmp_path / "m.onnx"
    cmd = [FCN_EXPORT, str(ckpt), "-o", str(out), "--max-size", "64x64", "--no-verify"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "not verified" in run.stdout
    assert read_onnx_metadata(out).verification == NOT_VERIFIED
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_images(1, 40, 50, np.random.default_rng(0))[0])
    predict = str(Path(sys.executable).parent / "fcn-predict")
    for quiet in ([], ["-q"]):  # a warning, so -q keeps it
        folder = str(tmp_path / f"out{len(quiet)}")
        args = [predict, str(out), str(tmp_path / "a.png"), "-o", folder, *quiet]
        run = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, run.stderr
        assert f"{out} was exported without verification" in warnings[0]
