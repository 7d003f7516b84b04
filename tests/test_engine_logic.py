"""The engine layer's plain logic, everywhere: profiles, version gates, layer summary, sidecar,
gate.

None of this needs TensorRT; the inspector JSON below follows the documented format (NVIDIA's
trex reads the same fields: Layers/Bindings, LayerType, ParameterType, Inputs/Outputs with
Dimensions and Format/Datatype, Kernel/OutMaps/Groups/Weights on convolutions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.engine import (
    EngineMetadata,
    ParserIssue,
    Profile,
    check_compatible,
    compare_outputs,
    default_profiles,
    format_gate,
    format_parser_errors,
    gate_passed,
    gate_shapes,
    parse_shape,
    parse_trt_version,
    precision_route,
    profiles_from_strings,
    read_sidecar,
    select_profile,
    sidecar_path,
    summarize_layers,
    tensor_precision,
    validate_profiles,
    write_sidecar,
)
from fcn_deploy.engine.layer_info import LayerSummary, precision_problem
from fcn_deploy.engine.plan import check_opt_level, workspace_bytes
from fcn_deploy.engine.sidecar import check_engine_bytes, publish_engine
from fcn_deploy.errors import FCNError
from fcn_deploy.export.metadata import RECORD_MISMATCH, UNRECORDED, OnnxMetadata
from fcn_deploy.meta import ModelInfo, Preprocessing, SizeBounds

BOUNDS = SizeBounds(min_hw=(1, 1), max_hw=(4096, 4096), min_batch=1, max_batch=32)
LANDSCAPE = Profile((1, 3, 64, 128), (1, 3, 360, 640), (4, 3, 720, 1280))
PORTRAIT = Profile((1, 3, 128, 64), (1, 3, 640, 360), (4, 3, 1280, 720))


# --- profiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shape",
    [
        ("1x3x64x64", (1, 3, 64, 64)),
        (" 8×3×512×1024 ", (8, 3, 512, 1024)),
        ("2,3,17,33", (2, 3, 17, 33)),
    ],
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    "text, needle",
    [
        ("1x4x64x64", "channel dim must be 3"),
        ("1x3x64", "NxCxHxW"),
        ("0x3x64x64", "at least 1"),
        ("1x3x64xW", "NxCxHxW"),
    ],
)
def test_parse_shape_rejects(text, needle):
    with pytest.raises(FCNError, match=needle):
        parse_shape(text)


def test_profile_order_is_checked_per_dim():
    with pytest.raises(FCNError, match="height must satisfy min ≤ opt ≤ max, got 64, 32, 128"):
        Profile((1, 3, 64, 64), (1, 3, 32, 64), (1, 3, 128, 128))


def test_profiles_from_strings_pairs_repeated_flags_and_defaults_opt():
    ps = profiles_from_strings(["1x3x64x128", "1x3x128x64"], [], ["4x3x720x1280", "4x3x1280x720"])
    assert [p.max for p in ps] == [(4, 3, 720, 1280), (4, 3, 1280, 720)]
    assert ps[0].opt == (1, 3, 512, 512)  # the typical size, inside both ranges
    small = profiles_from_strings(["1x3x32x32"], [], ["2x3x100x300"])[0]
    assert small.opt == (1, 3, 100, 300)  # clamped into the range
    with pytest.raises(FCNError, match="2 --min-shape and 1 --max-shape"):
        profiles_from_strings(["1x3x8x8", "1x3x8x8"], [], ["1x3x9x9"])
    with pytest.raises(FCNError, match="1 --opt-shape values for 2 profiles"):
        profiles_from_strings(["1x3x8x8", "1x3x8x8"], ["1x3x8x8"], ["1x3x9x9", "1x3x9x9"])


def test_validate_profiles_against_export_bounds():
    validate_profiles([LANDSCAPE, PORTRAIT], BOUNDS)
    small = SizeBounds(min_hw=(32, 32), max_hw=(1024, 1024), max_batch=2)
    with pytest.raises(
        FCNError, match=r"profile 1 max shape 4x3x1280x720: batch 4 is outside 1\.\.2"
    ):
        validate_profiles(
            [Profile((1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 512, 512)), PORTRAIT], small
        )
    with pytest.raises(FCNError, match="min shape 1x3x16x16: size 16x16 is outside 32x32"):
        validate_profiles([Profile((1, 3, 16, 16), (1, 3, 64, 64), (1, 3, 64, 64))], small)
    with pytest.raises(FCNError, match="no optimization profiles"):
        validate_profiles([], small)


def test_default_profiles_fit_the_bounds_and_tune_for_512():
    ps = default_profiles(BOUNDS)
    validate_profiles(ps, BOUNDS)
    batch, large = ps
    assert batch.opt == (1, 3, 512, 512) and batch.max == (8, 3, 1024, 1024)
    assert large.max == (1, 3, 4096, 4096) and large.min == batch.min
    small = SizeBounds(min_hw=(32, 32), max_hw=(256, 384), max_batch=2)
    (only,) = default_profiles(small)  # nothing beyond the batched profile: one profile
    validate_profiles([only], small)
    assert only == Profile((1, 3, 32, 32), (1, 3, 256, 384), (2, 3, 256, 384))


def test_covering_profiles_add_one_for_the_shapes_the_defaults_miss():
    """gpu-check's batch 8 at 1024x2048 fits neither default profile: one more holds it."""
    from fcn_deploy.engine.profiles import covering_profiles

    ps = default_profiles(BOUNDS)
    sweep = [(8, 3, 500, 500), (8, 3, 1024, 2048), (4, 3, 2048, 1024), (1, 3, 4000, 4000)]
    covered = covering_profiles(ps, sweep)
    assert covered[:2] == ps and len(covered) == 3
    # from batch 1 up: a smaller batch at those sizes (a chunk, a partial batch) runs too
    assert covered[2] == Profile((1, 3, 1024, 1024), (8, 3, 1024, 2048), (8, 3, 2048, 2048))
    validate_profiles(covered, BOUNDS)
    assert all(any(p.fits(s) for p in covered) for s in sweep)
    assert covering_profiles(ps, [(1, 3, 500, 500)]) == ps  # nothing missing: nothing added


def test_select_profile_picks_the_fitting_one_or_names_every_range():
    ps = [LANDSCAPE, PORTRAIT]
    assert select_profile(ps, (1, 3, 360, 640)) == 0
    assert select_profile(ps, (2, 3, 1000, 500)) == 1
    assert select_profile(ps, (1, 3, 300, 300)) in (0, 1)  # both fit: the nearer opt wins
    assert select_profile(ps, (1, 3, 200, 600)) == 0 and select_profile(ps, (1, 3, 600, 200)) == 1
    with pytest.raises(FCNError) as e:
        select_profile(ps, (1, 3, 1200, 1200))
    msg = str(e.value)
    assert "1x3x1200x1200" in msg and "profile 0: 1..4 x 3 x 64..720 x 128..1280" in msg
    assert "profile 1: 1..4 x 3 x 128..1280 x 64..720" in msg and "rebuild" in msg
    with pytest.raises(FCNError, match="outside every optimization profile"):
        select_profile(ps, (5, 3, 360, 640))  # batch too large


def test_profile_layout_for_image_io_is_nhwc():
    lo, _opt, hi = LANDSCAPE.for_io("image")
    assert lo == (1, 64, 128, 3) and hi == (4, 720, 1280, 3)
    assert LANDSCAPE.for_io("tensor")[1] == (1, 3, 360, 640)
    assert Profile.from_dict(json.loads(json.dumps(LANDSCAPE.to_dict()))) == LANDSCAPE


# --- version gates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parts",
    [
        ("10.13.3.9", (10, 13, 3)),
        ("11.0.0.12", (11, 0, 0)),
        ("10.12.0b1", (10, 12, 0)),
        ("10.8", (10, 8, 0)),
    ],
)
def test_parse_trt_version(text, parts):
    v = parse_trt_version(text)
    assert (v.major, v.minor, v.patch) == parts


def test_parse_trt_version_rejects_garbage():
    with pytest.raises(FCNError, match="cannot read the TensorRT version"):
        parse_trt_version("unknown")


def test_route_strongly_typed_on_10_12_plus_with_the_flag_and_on_11_without():
    r = precision_route(parse_trt_version("10.13.3.9"), "fp16", "fp16", has_fp16_flag=True)
    assert r.strongly_typed and r.strongly_typed_flag and not r.fp16_builder_flag
    r = precision_route(parse_trt_version("10.12.0.36"), "fp32", "fp32", has_fp16_flag=True)
    assert r.strongly_typed and r.strongly_typed_flag and not r.fp16_builder_flag
    r = precision_route(parse_trt_version("11.0.0.12"), "fp16", "fp16", has_fp16_flag=False)
    assert r.strongly_typed and not r.strongly_typed_flag and not r.fp16_builder_flag


def test_route_refuses_an_fp16_engine_from_an_fp32_graph_when_strongly_typed():
    for version in ("10.13.0", "11.1.0"):
        with pytest.raises(FCNError, match="re-export with precision='fp16'"):
            precision_route(parse_trt_version(version), "fp16", "fp32", has_fp16_flag=True)


def test_route_uses_the_fp16_flag_only_before_10_12_and_never_falls_back_silently():
    r = precision_route(parse_trt_version("10.8.0.43"), "fp16", "fp32", has_fp16_flag=True)
    assert r.fp16_builder_flag and not r.strongly_typed and not r.strongly_typed_flag
    with pytest.raises(FCNError, match=r"no BuilderFlag.FP16"):
        precision_route(parse_trt_version("10.8.0.43"), "fp16", "fp32", has_fp16_flag=False)
    r = precision_route(parse_trt_version("10.8.0.43"), "fp32", "fp32", has_fp16_flag=True)
    assert not r.fp16_builder_flag and not r.strongly_typed
    with pytest.raises(FCNError, match="too old"):
        precision_route(parse_trt_version("8.6.1"), "fp16", "fp16", has_fp16_flag=True)
    with pytest.raises(FCNError, match="fp16, fp32 or int8"):
        precision_route(parse_trt_version("10.13.0"), "bf16", "fp32", has_fp16_flag=True)


# --- layer precision summary ------------------------------------------------------------------

FP16_NHWC = "Channel major FP16 format where channel % 8 == 0"
FP32_LINEAR = "Row major linear FP32"


def _t(name, dims, fmt):
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


def _conv(name, n, c, k, h, w, ho, wo, fmt, r=3, kind="CaskConvolution", ptype="Convolution"):
    return {
        "Name": name,
        "LayerType": kind,
        "ParameterType": ptype,
        "Inputs": [_t(f"{name}_in", [n, c, h, w], fmt)],
        "Outputs": [_t(f"{name}_out", [n, k, ho, wo], fmt)],
        "Kernel": [r, r],
        "PaddingMode": "kEXPLICIT_ROUND_DOWN",
        "PrePadding": [1, 1],
        "PostPadding": [1, 1],
        "Stride": [1, 1],
        "Dilation": [1, 1],
        "OutMaps": k,
        "Groups": 1,
        "Weights": {"Type": "Half" if "FP16" in fmt else "Float", "Count": k * c * r * r},
        "Bias": {"Type": "Float", "Count": k},
        "HasBias": 1,
        "HasReLU": 1,
        "Activation": "RELU",
        "TacticName": "sm90_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc",
        "TacticValue": "0x1f2e",
        "StreamId": 0,
        "Metadata": f"[ONNX Layer: /{name}/Conv]\x1e[ONNX Layer: /{name}/Relu]",
    }


def _engine_json(
    fp16_score: bool = False, dynamic: bool = False, second_profile: bool = True
) -> str:
    h = -1 if dynamic else 64
    score_fmt = FP16_NHWC if fp16_score else FP32_LINEAR
    layers = [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv",
            "LayerType": "Reformat",
            "Inputs": [_t("x", [1, 3, h, h], FP32_LINEAR)],
            "Outputs": [_t("x_f16", [1, 3, h, h], FP16_NHWC)],
            "ParameterType": "Reformat",
            "Origin": "REFORMAT",
            "TacticValue": "0x0",
            "StreamId": 0,
        },
        _conv("conv1", 1, 3, 16, h, h, h, h, FP16_NHWC),
        _conv("conv2", 1, 16, 16, h, h, h, h, FP16_NHWC),
        {
            "Name": "/pool/MaxPool",
            "LayerType": "CaskPooling",
            "ParameterType": "Pooling",
            "PoolingType": "MAX",
            "WindowSize": [2, 2],
            "Stride": [2, 2],
            "Inputs": [_t("c2", [1, 16, h, h], FP16_NHWC)],
            "Outputs": [
                _t("p", [1, 16, h // 2 if h > 0 else -1, h // 2 if h > 0 else -1], FP16_NHWC)
            ],
        },
        _conv(
            "score",
            1,
            16,
            21,
            32 if h > 0 else -1,
            32 if h > 0 else -1,
            32 if h > 0 else -1,
            32 if h > 0 else -1,
            score_fmt,
            r=1,
        ),
        _conv(
            "upscore",
            1,
            21,
            21,
            32 if h > 0 else -1,
            32 if h > 0 else -1,
            64 if h > 0 else -1,
            64 if h > 0 else -1,
            FP16_NHWC,
            r=4,
            kind="CaskDeconvolutionV2",
            ptype="Deconvolution",
        ),
        {
            "Name": "/Cast",
            "LayerType": "Cast",
            "ParameterType": "Cast",
            "Inputs": [_t("u", [1, 21, h, h], "Row major linear FP16 format")],
            "Outputs": [_t("logits", [1, 21, h, h], FP32_LINEAR)],
        },
    ]
    if second_profile:  # a second profile repeats every layer with a suffix; only profile 0 counts
        layers += [dict(layer, Name=layer["Name"] + " [profile 1]") for layer in layers]
    return json.dumps(
        {
            "Layers": layers,
            "Bindings": ["x", "logits"]
            + (["x [profile 1]", "logits [profile 1]"] if second_profile else []),
        }
    )


def test_tensor_precision_reads_trt_format_strings():
    assert tensor_precision(FP16_NHWC) == "fp16"
    assert tensor_precision("Row major linear FP16 format") == "fp16"
    assert tensor_precision(FP32_LINEAR) == "fp32"
    assert tensor_precision("Half") == "fp16" and tensor_precision("Float") == "fp32"
    assert tensor_precision("Channel major BFloat16 format where channel % 8 == 0") == "bf16"
    assert tensor_precision("Row major linear UInt8 format") == "uint8"
    assert tensor_precision("Row major linear Int64 format") == "int64"
    assert tensor_precision("Unknown format") is None


def test_summary_counts_fp16_layers_and_conv_flops_at_concrete_shapes():
    s = summarize_layers(_engine_json(fp16_score=False))
    flops = {  # 2·N·K·P·Q·C·R·S for convs, 2·N·C_in·H_in·W_in·K·R·S for the deconv
        "conv1": 2 * 16 * 64 * 64 * 3 * 9, "conv2": 2 * 16 * 64 * 64 * 16 * 9,
        "score": 2 * 21 * 32 * 32 * 16, "upscore": 2 * 21 * 32 * 32 * 21 * 16,
    }  # fmt: skip
    assert s.flops_basis == "shape" and s.convs == 4 and s.fp16_convs == 3
    assert s.conv_flops == sum(flops.values())
    assert s.fp16_conv_flops == flops["conv1"] + flops["conv2"] + flops["upscore"]
    assert s.layers == 7 and s.fp16_layers == 5  # reformat (FP32 in) and score conv are FP32
    assert s.precisions == {"fp32": 2, "fp16": 5}
    assert s.fp16_conv_flop_share == pytest.approx(s.fp16_conv_flops / s.conv_flops)
    assert s.label == "fp16"  # ≥ 90 % of conv FLOPs in FP16, the FP32 score conv is small
    assert "3/4 convs" in s.describe()


def test_summary_labels_an_all_fp32_engine_fp32_and_a_half_one_mixed():
    fp32 = summarize_layers(
        json.dumps({"Layers": [_conv("c", 1, 3, 8, 16, 16, 16, 16, FP32_LINEAR)], "Bindings": []})
    )
    assert fp32.label == "fp32" and fp32.fp16_conv_flop_share == 0.0
    mixed = summarize_layers(
        json.dumps(
            {
                "Layers": [
                    _conv("a", 1, 8, 8, 16, 16, 16, 16, FP32_LINEAR),
                    _conv("b", 1, 8, 8, 16, 16, 16, 16, FP16_NHWC),
                ]
            }
        )
    )
    assert mixed.label == "mixed" and mixed.fp16_conv_flop_share == pytest.approx(0.5)
    none = summarize_layers(json.dumps({"Layers": []}))
    assert none.label == "unknown" and "no convolution found" in none.note  # never fp16 nor fp32


FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> dict:
    doc = json.loads((FIXTURES / name).read_text())
    assert "trt-engine-explorer" in doc["_source"]  # every fixture names where its format is from
    return doc


def _flops(layer: dict, p: int, q: int) -> float:
    n, c = layer["Inputs"][0]["Dimensions"][:2]
    k = layer.get("OutMaps", layer.get("ConvOutMaps"))
    r, s = layer.get("Kernel", layer.get("ConvKernel"))
    return 2.0 * n * k * p * q * c * r * s


def test_fused_conv_act_pool_is_counted_from_trex_published_example():
    """trt-engine-explorer's QAT ResNet-18 (A100): 20 CaskConvolution + 1 fused ConvActPool,
    INT8."""
    doc = _fixture("trex_resnet_qat_residual_convactpool.json")
    fused = [layer for layer in doc["Layers"] if layer.get("ParameterType") == "ConvActPool"]
    assert len(fused) == 1 and fused[0]["Outputs"][0]["Dimensions"] == [32, 64, 56, 56]  # pooled
    s = summarize_layers(json.dumps(doc))
    assert s.convs == 21 and s.conv_precisions == {"int8": 21} and s.label == "int8"
    assert s.int8_convs == 21 and s.int8_conv_flop_share == pytest.approx(1.0)
    assert s.flops_basis == "shape" and s.unknown_convs == 0
    cask = sum(
        _flops(layer, *layer["Outputs"][0]["Dimensions"][2:])
        for layer in doc["Layers"]
        if layer.get("ParameterType") == "Convolution"
    )
    # the fused conv: 7×7 stride 2 pad 3 on 224×224 → 112×112 before the pool, not the 56×56 after
    assert s.conv_flops == pytest.approx(cask + _flops(fused[0], 112, 112))


def test_fp16_conv_act_pool_alone_is_fp16_not_fp32():
    """Counting only "Convolution" saw no conv here and called a real FP16 engine fp32."""
    doc = _fixture("trex_resnet_qat_residual_convactpool.json")
    (fused,) = [layer for layer in doc["Layers"] if layer.get("ParameterType") == "ConvActPool"]
    fp16 = json.loads(json.dumps(fused).replace("Row major Int8 format", FP16_NHWC))
    fp16 = json.loads(
        json.dumps(fp16).replace(
            "Thirty-two wide channel vectorized row major Int8 format", FP16_NHWC
        )
    )
    s = summarize_layers(json.dumps({"Layers": [fp16]}))
    assert s.convs == 1 and s.fp16_convs == 1 and s.label == "fp16" and s.flops_basis == "shape"
    assert precision_problem("fp16", s) is None


def test_convs_inside_a_myelin_foreign_node_are_counted_and_unknown_when_hidden():
    doc = _fixture("myelin_foreignnode_fcn8s_fp16.json")
    s = summarize_layers(json.dumps(doc))
    assert s.convs == 21 and s.unknown_convs == 21 and s.flops_basis == "count"
    assert s.label == "unknown" and "Myelin" in s.note and s.note in s.describe()
    assert precision_problem("fp16", s) is None  # unknown is not refused: written with its note
    ops = {n: "Cast" for n in ("node__to_copy", "node__to_copy_1")}
    ops |= {f"node_Conv_{i}": "Conv" for i in range(100, 124)} | {"node_Slice_9": "Slice"}
    ops |= {f"node_convolution{x}": "ConvTranspose" for x in ("", "_1", "_2")}
    assert summarize_layers(json.dumps(doc), ops).convs == 21  # exact, from the ONNX graph
    assert summarize_layers(json.dumps(doc), {}).convs == 0  # a map without them: none found


def test_a_myelin_node_with_16_bit_outputs_names_its_precision():
    doc = _fixture("myelin_foreignnode_fcn8s_fp16.json")
    doc["Layers"][0]["Outputs"][0]["Format/Datatype"] = "Row major linear FP16 format"
    s = summarize_layers(json.dumps(doc))
    assert s.label == "fp16" and s.fp16_convs == 21 and s.fp16_conv_flop_share == 1.0
    mixed = {"Layers": [*doc["Layers"], _conv("c", 1, 8, 8, 16, 16, 16, 16, FP32_LINEAR)]}
    assert summarize_layers(json.dumps(mixed)).flops_basis == "count"  # one basis for all convs


def test_a_myelin_node_ending_in_the_fp32_output_cast_is_read_from_its_inputs_or_weights():
    doc = _fixture("myelin_foreignnode_fcn8s_fp16.json")
    body, tail = json.loads(json.dumps(doc["Layers"][0])), json.loads(json.dumps(doc["Layers"][0]))
    body["Outputs"][0]["Format/Datatype"] = "Row major linear FP16 format"
    tail["Inputs"][0]["Format/Datatype"] = "Row major linear FP16 format"  # FP32 output cast
    s = summarize_layers(json.dumps({"Layers": [body, tail]}))
    assert s.label == "fp16" and s.unknown_convs == 0 and s.fp16_convs == 42
    weights_only = dict(doc["Layers"][0], Weights={"Type": "Half", "Count": 9})
    assert summarize_layers(json.dumps({"Layers": [body, weights_only]})).label == "fp16"
    fp32 = summarize_layers(json.dumps({"Layers": [body, doc["Layers"][0]]}))
    assert fp32.label == "unknown" and fp32.unknown_convs == 21  # still never called fp16 blind


def test_a_myelin_node_without_metadata_is_read_from_its_name():
    doc = _fixture("myelin_foreignnode_fcn8s_fp16.json")
    layer = dict(doc["Layers"][0], Name="{ForeignNode[node_Conv_100...node_convolution_2]}")
    del layer["Metadata"]
    s = summarize_layers(json.dumps({"Layers": [layer]}))
    assert s.convs == 2 and s.label == "unknown"  # a lower bound, and still never fp32


def test_only_measured_fp32_refuses_an_fp16_request():
    fp32 = summarize_layers(
        json.dumps({"Layers": [_conv("c", 1, 3, 8, 16, 16, 16, 16, FP32_LINEAR)]})
    )
    assert "asked for an fp16 engine" in precision_problem("fp16", fp32)
    assert precision_problem("fp32", fp32) is None


def test_summary_falls_back_to_weight_counts_for_dynamic_dims():
    s = summarize_layers(_engine_json(dynamic=True, second_profile=False))
    assert s.flops_basis == "weights"
    assert s.conv_flops == 16 * 3 * 9 + 16 * 16 * 9 + 21 * 16 + 21 * 21 * 16
    assert "weighted by weights" in s.describe()


def test_summary_needs_detailed_verbosity_and_json():
    with pytest.raises(FCNError, match=r"ProfilingVerbosity.DETAILED"):
        summarize_layers(json.dumps({"Layers": ["conv1", "conv2"], "Bindings": []}))
    with pytest.raises(FCNError, match="unreadable JSON"):
        summarize_layers("{not json")
    with pytest.raises(FCNError, match="no Layers list"):
        summarize_layers(json.dumps([1, 2]))


def test_summary_round_trips_through_dict():
    s = summarize_layers(_engine_json())
    d = json.loads(json.dumps(s.to_dict()))
    assert d["label"] == "fp16" and LayerSummary.from_dict(d) == s


# --- sidecar and compatibility
# ---------------------------------------------------------------------


def _meta(tmp_path) -> EngineMetadata:
    info = ModelInfo("fcn8s", 21, width=0.125, preprocessing=Preprocessing.caffe())
    onnx_meta = OnnxMetadata(
        info,
        "tensor",
        "fp16",
        False,
        SizeBounds((1, 1), (1024, 1024), 1, 8),
        "x",
        "logits",
        "ab" * 32,
        "2.13.0",
        "1.23.0",
        20,
        verification="passed",
        graph_sha256="12" * 32,
    )
    return EngineMetadata(
        tensorrt_version="10.13.3.9",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        profiles=[LANDSCAPE, PORTRAIT],
        precision="fp16",
        requested_precision="fp16",
        layers=summarize_layers(_engine_json()),
        onnx=onnx_meta,
        onnx_sha256="cd" * 32,
        engine_sha256="ef" * 32,
        build_seconds=42.5,
        built_at="2025-01-01T00:00:00+00:00",
        builder={"opt_level": 3, "workspace_gib": 4.0},
    )


def test_sidecar_round_trip_is_atomic_and_readable(tmp_path):
    engine = tmp_path / "model.engine"
    meta = _meta(tmp_path)
    path = write_sidecar(engine, meta)
    assert path == sidecar_path(engine) == tmp_path / "model.engine.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine.json"]  # no temp file left
    doc = json.loads(path.read_text())
    assert doc["tensorrt_version"] == "10.13.3.9" and doc["compute_capability"] == [9, 0]
    assert doc["layers"]["label"] == "fp16" and doc["onnx"]["io"] == "tensor"
    assert json.loads(doc["onnx"]["info"])["variant"] == "fcn8s"
    back = read_sidecar(engine)
    assert back.profiles == meta.profiles and back.onnx == meta.onnx and back.layers == meta.layers
    assert back.onnx.info.class_names[15] == "person"


def test_engine_report_summary_states_precision_profiles_and_gate(tmp_path):
    from fcn_deploy.engine import EngineReport

    meta = _meta(tmp_path)
    ref = np.zeros((1, 21, 64, 128), np.float32)
    ref[:, 3] = 1.0
    rows = [compare_outputs(ref, ref, "tensor", 0.99, 0, s) for s in gate_shapes(LANDSCAPE)]
    text = EngineReport(tmp_path / "m.engine", meta, rows, 0.99).summary()
    assert (
        "TensorRT 10.13.3.9 on NVIDIA H100 80GB HBM3 (sm_90)" in text
        and "precision: fp16: 3/4 convs" in text
    )
    assert str(LANDSCAPE) in text and text.count(" ok") == 4
    assert "skipped" in EngineReport(None, meta).summary() and EngineReport(None, meta).passed


def test_sidecar_missing_or_damaged_is_one_clear_line(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(FCNError, match=r"m.engine.json is missing.*rebuild"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"tensorrt_version": "10.13"}')
    with pytest.raises(FCNError, match=r"damaged or from an incompatible fcn-deploy.*rebuild"):
        read_sidecar(engine)


def test_compatibility_check_refuses_other_versions_and_gpus(tmp_path):
    meta = _meta(tmp_path)
    check_compatible(meta, "10.13.3.9", (9, 0), "NVIDIA H100 PCIe")  # same release and architecture
    with pytest.raises(
        FCNError,
        match=r"built with TensorRT 10\.13\.3\.9 but TensorRT 11\.0\.0\.1 is installed.*rebuild",
    ):
        check_compatible(meta, "11.0.0.1", (9, 0))
    with pytest.raises(
        FCNError,
        match=r"built for NVIDIA H100 80GB HBM3 \(compute capability 9\.0\).*8\.9.*rebuild",
    ):
        check_compatible(meta, "10.13.3.9", (8, 9), "NVIDIA L4")


def test_a_repackaged_wheel_is_the_same_release_and_another_gpu_model_only_warns(tmp_path, caplog):
    from fcn_deploy.engine.versions import release_key

    assert release_key("10.14.1.48.post1") == release_key("10.14.1.48") == (10, 14, 1, 48)
    assert release_key("11.0") == (11, 0, 0, 0) and release_key("10.14.1.49") > (10, 14, 1, 48)
    meta = _meta(tmp_path)
    check_compatible(meta, "10.13.3.9.post1", (9, 0), "NVIDIA H100 80GB HBM3")
    assert not caplog.records
    with pytest.raises(FCNError, match=r"10\.13\.3\.9 but TensorRT 10\.13\.3\.10 is installed"):
        check_compatible(meta, "10.13.3.10", (9, 0))
    check_compatible(meta, "10.13.3.9", (9, 0), "NVIDIA H100 PCIe")  # same compute capability
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "built on NVIDIA H100 80GB HBM3 and runs on NVIDIA H100 PCIe" in caplog.text


# --- accuracy gate arithmetic
# ----------------------------------------------------------------------


def test_gate_shapes_cover_min_opt_max_and_an_odd_size_inside():
    shapes = gate_shapes(LANDSCAPE)
    assert shapes[:3] == [LANDSCAPE.min, LANDSCAPE.opt, LANDSCAPE.max]
    odd = shapes[3]
    assert LANDSCAPE.fits(odd) and odd[2] % 2 == 1 and odd[3] % 2 == 1 and odd[2] != odd[3]
    fixed = Profile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    assert gate_shapes(fixed) == [fixed.min]  # no repeats


def test_compare_outputs_passes_equal_logits_and_fails_flipped_labels():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 21, 40, 50)).astype(np.float32)
    row = compare_outputs(ref, ref + np.float32(1e-3), "tensor", 0.99, 0, (2, 3, 40, 50))
    assert (
        row.passed
        and row.label_agreement == 1.0
        and row.max_abs_error == pytest.approx(1e-3, rel=1e-3)
    )
    assert row.rel_error == pytest.approx(1e-3 / np.abs(ref).max(), rel=1e-3)
    bad = ref.copy()
    flip = rng.random((2, 40, 50)) < 0.05  # ~5 % of pixels get another class
    bad[:, 0][flip] = ref.max() + 10
    row = compare_outputs(ref, bad, "tensor", 0.99, 1, (2, 3, 40, 50))
    assert not row.passed and 0.9 < row.label_agreement < 0.99 and row.profile == 1
    nan = ref.copy()
    nan[0, 0, 0, 0] = np.nan
    assert not compare_outputs(ref, nan, "tensor", 0.5, 0, (2, 3, 40, 50)).passed
    assert not compare_outputs(
        ref, ref[:, :, :-1], "tensor", 0.5, 0, (2, 3, 40, 50)
    ).passed  # wrong output size
    assert not gate_passed([]) and gate_passed(
        [compare_outputs(ref, ref, "tensor", 1.0, 0, (2, 3, 40, 50))]
    )


def test_compare_outputs_image_mode_compares_labels():
    labels = np.random.default_rng(1).integers(0, 21, (1, 30, 30), dtype=np.uint8)
    other = labels.copy()
    other[0, :3] = (other[0, :3] + 1) % 21  # 10 % of pixels differ
    row = compare_outputs(labels, other, "image", 0.95, 0, (1, 3, 30, 30))
    assert (
        row.max_abs_error is None and row.label_agreement == pytest.approx(0.9) and not row.passed
    )
    table = format_gate([row], 0.95)
    assert "1x3x30x30" in table and "FAIL" in table and "95.00%" in table


# --- build plan helpers ------------------------------------------------------------------------


def test_parser_errors_become_one_line_naming_the_node():
    issues = [
        ParserIssue(
            "UNSUPPORTED_NODE", "Cast: input types must match\n", 17, "/score/Conv", "Conv"
        ),
        ParserIssue("INVALID_NODE", "other", 18, "", "Add"),
    ]
    msg = format_parser_errors("m.onnx", issues)
    assert "\n" not in msg and "node /score/Conv (Conv)" in msg and "(+1 more errors)" in msg
    assert "strongly typed" in msg  # a dtype problem gets the re-export hint
    assert "node #18 (Add)" in format_parser_errors("m.onnx", issues[1:])


def test_the_qdq_zero_point_parser_error_gets_the_int8_target_hint_not_the_dtype_one():
    zero_point = ParserIssue(
        "INVALID_NODE",
        "Assertion failed: shiftIsAllZeros(zeroPoint): Non-zero zero point is not supported.",
        0,
        "x_QuantizeLinear",
        "QuantizeLinear",
    )
    msg = format_parser_errors("m.onnx", [zero_point])
    assert "--int8-target tensorrt" in msg and "strongly typed" not in msg
    dq_type = ParserIssue("INVALID_NODE", "input has type Int32", 1, "b_DQ", "DequantizeLinear")
    assert "strongly typed" not in format_parser_errors("m.onnx", [dq_type])


def test_severity_passes_orders_tensorrt_severities():
    from fcn_deploy.engine.plan import severity_passes

    assert severity_passes("ERROR", "WARNING") and severity_passes("WARNING", "WARNING")
    assert not severity_passes("INFO", "WARNING") and not severity_passes("VERBOSE", "INFO")
    assert severity_passes("VERBOSE", "VERBOSE") and severity_passes("INTERNAL_ERROR", "ERROR")
    assert severity_passes("SOMETHING_NEW", "WARNING")  # kept, never lost


def test_workspace_and_opt_level_are_checked():
    assert workspace_bytes(4) == 4 << 30 and workspace_bytes(0.5) == 1 << 29
    with pytest.raises(FCNError, match="positive number of GiB"):
        workspace_bytes(0)
    assert check_opt_level(5) == 5
    with pytest.raises(FCNError, match=r"0..5"):
        check_opt_level(6)


def test_an_engine_is_reused_only_for_the_same_onnx_profiles_release_and_gpu(tmp_path):
    from fcn_deploy.engine.sidecar import same_build

    meta = _meta(tmp_path)
    here = (meta.onnx_sha256, list(meta.profiles), "10.13.3.9.post1", meta.gpu_name, (9, 0))
    assert same_build(meta, *here)
    for i, other in enumerate(
        ["f" * 64, list(meta.profiles)[:1], "10.13.3.10", "NVIDIA H100 PCIe", (8, 9)]
    ):
        assert not same_build(meta, *here[:i], other, *here[i + 1 :]), other


def test_an_engine_whose_sidecar_lost_its_verification_record_is_refused(tmp_path):
    """The sidecar carries the ONNX file's record; editing it (here: deleting the record, or
    turning the status into a pass) reads as a mismatch, refused like the ONNX file would be."""
    from fcn_deploy.runtime import load_runner

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    meta = _meta(tmp_path)
    failed = replace(meta, onnx=replace(meta.onnx, verification="failed: labels 91.2% < 98%"))
    path = write_sidecar(engine, failed)
    doc = json.loads(path.read_text())
    assert json.loads(doc["onnx"]["verification"])["status"] == "failed: labels 91.2% < 98%"
    record = json.loads(doc["onnx"]["verification"])
    forged = json.dumps(record | {"status": "passed"})
    for edit in ({"verification": forged}, {"verification": None}):
        doc["onnx"] = {k: v for k, v in (doc["onnx"] | edit).items() if v is not None}
        path.write_text(json.dumps(doc))
        assert read_sidecar(engine).onnx.verification == RECORD_MISMATCH
        with pytest.raises(FCNError, match=r"edited after export\?\); re-export") as e:
            load_runner(engine)
        assert e.value.param == "allow_unverified"
    # a sidecar of the previous release: its ONNX entry has no record and loads as it did
    doc["onnx"]["format_version"] = "1"
    path.write_text(json.dumps(doc))
    assert read_sidecar(engine).onnx.verification == UNRECORDED
    try:  # it goes on to TensorRT itself (missing here, or the plan is no engine)
        load_runner(engine)
    except FCNError as allowed:
        assert "verification" not in str(allowed)


def _two_builds(tmp_path) -> tuple[tuple[bytes, EngineMetadata], tuple[bytes, EngineMetadata]]:
    meta = _meta(tmp_path)
    old, new = b"old plan", b"new plan"
    return (
        (old, replace(meta, engine_sha256=hashlib.sha256(old).hexdigest(), build_seconds=1.0)),
        (new, replace(meta, engine_sha256=hashlib.sha256(new).hexdigest(), build_seconds=2.0)),
    )


def test_publish_engine_writes_a_matching_pair_and_the_executor_check_refuses_a_mixed_one(
    tmp_path,
):
    (old, old_meta), (new, new_meta) = _two_builds(tmp_path)
    engine = tmp_path / "model.engine"
    publish_engine(engine, old, old_meta)
    publish_engine(engine, new, new_meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine", "model.engine.json"]
    assert engine.read_bytes() == new and read_sidecar(engine).build_seconds == 2.0
    check_engine_bytes(read_sidecar(engine), hashlib.sha256(new).hexdigest())
    # a reader that read the old sidecar and then the new engine
    with pytest.raises(FCNError, match="the engine does not match its sidecar"):
        check_engine_bytes(old_meta, hashlib.sha256(new).hexdigest())


def test_an_engine_is_never_left_beside_a_sidecar_of_another_build(tmp_path, monkeypatch):
    """Each step of the publication fails in turn (a full disk writing, a failed rename): the old
    pair stays whole, or no engine is left; never an engine with a wrong or missing sidecar."""
    import os

    from fcn_deploy import _io

    (old, old_meta), (new, new_meta) = _two_builds(tmp_path)
    engine = tmp_path / "model.engine"
    real_replace = os.replace
    for failing in (1, 2):  # the sidecar's rename, then the engine's
        publish_engine(engine, old, old_meta)
        calls = []

        def replace_or_fail(src, dst, failing=failing, calls=calls):
            calls.append(dst)
            if len(calls) == failing:
                raise OSError(28, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(_io.os, "replace", replace_or_fail)
        with pytest.raises(FCNError, match="No space left on device"):
            publish_engine(engine, new, new_meta)
        monkeypatch.setattr(_io.os, "replace", real_replace)
        assert not engine.exists()  # the old engine went first, the new one never came
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["model.engine.json"], names  # no temp file left either
    publish_engine(engine, old, old_meta)
    unwritable = replace(new_meta, builder={"route": object()})  # fails while written
    with pytest.raises(TypeError):
        publish_engine(engine, new, unwritable)
    assert engine.read_bytes() == old and read_sidecar(engine).build_seconds == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine", "model.engine.json"]


def test_a_failed_cuda_initialisation_names_the_driver_the_cuda_variant_needs():
    from fcn_deploy.engine.versions import cuda_init_message

    said = ["CUDA initialization failure with error: 35"]
    msg = cuda_init_message("Builder", "11.4.0.106", "cu13", said)
    assert msg.startswith("TensorRT 11.4.0.106 could not create its Builder")
    assert "tensorrt-cu13 needs driver 580.65.06" in msg and "error: 35" in msg
    assert "\n" not in msg
    unknown = cuda_init_message("Runtime", "10.12.0.36", None, [])
    assert "tensorrt-cu12 needs driver 525+" in unknown and "said" not in unknown


def test_an_engine_built_from_an_unverified_export_is_refused_unless_allowed(tmp_path):
    from fcn_deploy.runtime import load_runner

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    meta = _meta(tmp_path)
    write_sidecar(
        engine, replace(meta, onnx=replace(meta.onnx, verification="failed: labels 91.2% < 98%"))
    )
    with pytest.raises(FCNError, match="failed verification") as e:
        load_runner(engine)
    assert e.value.param == "allow_unverified"
    try:  # allowed: it goes on to TensorRT itself (missing here, or the plan is no engine)
        load_runner(engine, allow_unverified=True)
    except FCNError as allowed:
        assert "failed verification" not in str(allowed)
