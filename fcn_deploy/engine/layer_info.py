"""Which precision each engine layer really runs in, read from the engine inspector's JSON.

``engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)``
(with ``ProfilingVerbosity.DETAILED``) gives ``{"Layers": [...], "Bindings": [...]}``; each layer
has ``Name``, ``LayerType`` (the kernel family: ``CaskConvolution``, ``CaskDeconvolutionV2``,
``Reformat``, ...), ``ParameterType`` (``Convolution``, ``Deconvolution``, ``Pooling``, ...),
``Inputs``/``Outputs`` (``Name``, ``Dimensions``, ``Format/Datatype`` such as ``"Channel major
FP16 format where channel % 8 == 0"`` or ``"Row major linear FP32"``) and, for convolutions,
``Kernel``, ``OutMaps``, ``Groups`` and ``Weights`` (``{"Type": "Half", "Count": n}``). This is
the format NVIDIA's trex tool reads. Two more kinds of layer hold convolutions: a fused
``ParameterType: "ConvActPool"`` with ``ConvKernel``/``ConvOutMaps``/``ConvWeights`` (see
trt-engine-explorer's examples/pytorch/resnet/A100/qat-residual/*.graph.json), and on 10.x a
Myelin ``{ForeignNode[...]}`` layer that absorbed a subgraph, whose ``Metadata`` lists the ONNX
nodes inside (``[ONNX Layer: name]``, onnx-tensorrt's processMetadata) but no conv shapes.
When convolutions cannot be identified or their precision is not shown, the label is
``unknown`` with the reason in ``note``: never ``fp32``. Layers of profiles other than the first
carry a ``[profile N]`` suffix and are left out (their precisions repeat the first profile's).

The FP16 claim of an engine rests on this summary: never on the flag or the graph alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FCNError

__all__ = [
    "FP16_CONV_SHARE",
    "LayerSummary",
    "precision_problem",
    "summarize_layers",
    "tensor_precision",
]

# An engine is labelled fp16 only when at least this share of its conv FLOPs runs in FP16 (the
# rest being e.g. a final score conv kept in FP32 on purpose); "mixed" below that, "fp32" at 0.
FP16_CONV_SHARE = 0.9

# Datatype tokens in ``Format/Datatype`` strings, longest first so "BFloat16" is not read as
# "Float".
_PRECISION_TOKENS = (
    ("BFloat16", "bf16"), ("BF16", "bf16"), ("FP16", "fp16"), ("Half", "fp16"), ("FP32", "fp32"),
    ("Float", "fp32"), ("FP8", "fp8"), ("Int8", "int8"), ("INT8", "int8"), ("Int32", "int32"),
    ("INT32", "int32"), ("Int64", "int64"), ("UInt8", "uint8"), ("Bool", "bool"), ("BOOL", "bool"),
)  # fmt: skip
_FLOAT = {"fp16", "bf16", "fp32", "fp8"}
_PROFILE_SUFFIX = re.compile(r"\[profile \d+\]")


def tensor_precision(fmt: str) -> str | None:
    """``"Channel major FP16 format where channel % 8 == 0"`` → ``"fp16"``; None if unknown."""
    for token, name in _PRECISION_TOKENS:
        if re.search(rf"(?<![A-Za-z]){token}(?![a-z])", fmt):
            return name
    return None


@dataclass(frozen=True)
class LayerSummary:
    """Layer and conv-FLOP precision shares of one engine (its first profile)."""

    layers: int  # layers with a floating-point input
    fp16_layers: int
    convs: (
        int  # convolutions and deconvolutions, fused ones and those inside Myelin layers included
    )
    fp16_convs: int
    conv_flops: float  # 2·MACs at the inspected shape; weight count or conv count otherwise
    fp16_conv_flops: float
    flops_basis: str  # "shape" (real FLOPs), "weights" (dynamic dims) or "count" (Myelin convs)
    precisions: dict[str, int]  # layers per precision, all layers
    conv_precisions: dict[str, int] = field(default_factory=dict)  # convs per precision
    unknown_convs: int = 0  # convs whose precision the inspector's JSON does not show
    note: str = ""  # why the label is "unknown"
    int8_convs: int = 0  # convolutions computing in INT8 (explicit Q/DQ quantization)
    int8_conv_flops: float = 0.0

    @property
    def fp16_layer_share(self) -> float:
        return self.fp16_layers / self.layers if self.layers else 0.0

    @property
    def fp16_conv_flop_share(self) -> float:
        return self.fp16_conv_flops / self.conv_flops if self.conv_flops else 0.0

    @property
    def int8_conv_flop_share(self) -> float:
        return self.int8_conv_flops / self.conv_flops if self.conv_flops else 0.0

    @property
    def label(self) -> str:
        """What the conv layers actually run in: ``int8``, ``fp16``, ``fp32`` (or another single
        precision), ``mixed``, or ``unknown`` when the convolutions cannot all be identified (see
        `note`). The int8 and fp16 labels need FP16_CONV_SHARE of the conv FLOPs."""
        if self.unknown_convs or not self.convs:
            return "unknown"
        if self.int8_conv_flop_share >= FP16_CONV_SHARE:
            return "int8"
        if self.fp16_conv_flop_share >= FP16_CONV_SHARE:
            return "fp16"
        if len(self.conv_precisions) == 1:
            return next(iter(self.conv_precisions))
        if not self.conv_precisions:  # a summary written before conv_precisions existed
            return "mixed" if self.fp16_convs or self.int8_convs else "fp32"
        return "mixed"

    def describe(self) -> str:
        basis = {"shape": "at the inspected shape", "weights": "weighted by weights"}.get(
            self.flops_basis, "counted per conv: Myelin layers give no conv shapes"
        )
        text = (
            f"{self.label}: {self.fp16_convs}/{self.convs} convs and "
            f"{self.fp16_conv_flop_share:.1%} of conv FLOPs in FP16 ({basis}), "
            f"{self.fp16_layers}/{self.layers} float layers in FP16"
            + (f", {self.int8_convs}/{self.convs} convs in INT8" if self.int8_convs else "")
        )
        return f"{text}; {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            label=self.label,
            fp16_layer_share=self.fp16_layer_share,
            fp16_conv_flop_share=self.fp16_conv_flop_share,
            int8_conv_flop_share=self.int8_conv_flop_share,
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSummary:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


# What the inspector calls a fused Conv+activation+pooling layer (trt-engine-explorer's example
# examples/pytorch/resnet/A100/qat-residual/*.graph.json): its conv fields carry a "Conv" prefix.
_FUSED_CONV = "ConvActPool"
# onnx-tensorrt's processMetadata: "[ONNX Layer: <node name> | ...]", joined with U+001E when
# layers were fused (trex/parser.py splits on the same delimiter, or "+" after its own clean-up).
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]|]+?)\s*(?:\|[^\]]*)?\]")
_CONV_OPS = {"Conv", "ConvTranspose"}


def _is_myelin(layer: Mapping[str, Any]) -> bool:
    """A Myelin layer: a ForeignNode that absorbed a subgraph (TensorRT 10.x)."""
    return layer.get("LayerType") == "Myelin" or str(layer.get("Name", "")).startswith(
        "{ForeignNode["
    )


def _is_conv(layer: Mapping[str, Any]) -> bool:
    kind = str(layer.get("ParameterType") or layer.get("LayerType") or "")
    return "Convolution" in kind or "Deconvolution" in kind or kind == _FUSED_CONV


def _conv_field(layer: Mapping[str, Any], name: str) -> Any:
    """``Kernel``, ``Weights``, ... of a conv layer: ``ConvKernel`` etc. in a fused ConvActPool."""
    return (
        layer.get("Conv" + name) if layer.get("ParameterType") == _FUSED_CONV else layer.get(name)
    )


def _is_deconv(layer: Mapping[str, Any]) -> bool:
    kinds = (layer.get("ParameterType"), layer.get("ConvParameterType"), layer.get("LayerType"))
    return any("Deconv" in str(k) for k in kinds)


def _absorbed_ops(layer: Mapping[str, Any], onnx_ops: Mapping[str, str] | None) -> list[str]:
    """The ONNX op types a Myelin layer absorbed, from its Metadata (or failing that its name).

    With the ONNX graph's node → op map, exact; without it, a node name containing "conv" counts
    as a convolution (torch's exporters name them ``/conv1/Conv``, ``node_Conv_12``,
    ``node_convolution``).
    """
    text = str(layer.get("Metadata") or "")
    names = [m.strip() for m in _ONNX_LAYER.findall(text)]
    if not names:  # no metadata: "{ForeignNode[first...last]}" names two of the nodes at best
        inner = str(layer.get("Name", ""))[len("{ForeignNode[") : -2]
        names = [n.strip() for n in re.split(r"\.\.\.|\+", inner) if n.strip()]
    if onnx_ops is not None:
        return [onnx_ops.get(n, "?") for n in names]
    return ["Conv" if "conv" in n.lower() else "?" for n in names]


def _layer_precision(layer: Mapping[str, Any]) -> str | None:
    """The precision a layer computes in: its first input's datatype (as trex reads it).

    A Myelin layer is read from every tensor it shows instead: its outputs, inputs and weights.
    Its boundary tensors are often FP32 with the casts inside (the network's FP32 input; the last
    upsampling with the FP32 output cast, or image mode's ArgMax/Cast), so FP32 says nothing and
    the first 16- or 8-bit tensor names its precision (int8: a Q/DQ pair fused inside).
    """
    if _is_myelin(layer):
        types = [str(t.get("Format/Datatype", "")) for t in layer.get("Outputs") or []]
        types += [str(t.get("Format/Datatype", "")) for t in layer.get("Inputs") or []]
        types += [
            str(v.get("Type", "")) for v in layer.values() if isinstance(v, dict) and "Type" in v
        ]
        for text in types:
            p = tensor_precision(text)
            if p in ("fp16", "bf16", "fp8", "int8"):
                return p
        return None
    tensors = layer.get("Inputs") or layer.get("Outputs") or []
    for t in tensors:
        p = tensor_precision(str(t.get("Format/Datatype", "")))
        if p is not None:
            return p
    return None


def _weight_count(layer: Mapping[str, Any]) -> float:
    return float((_conv_field(layer, "Weights") or {}).get("Count", 0))


def _conv_flops(layer: Mapping[str, Any]) -> tuple[float, bool]:
    """(FLOPs, exact): 2·MACs from the conv's output volume; the weight count for dynamic dims.

    A fused ConvActPool reports the pooled output, so its conv output size comes from the input,
    kernel, stride, padding and dilation instead.
    """
    weights = _weight_count(layer)
    try:
        n, c, h, w = (int(v) for v in layer["Inputs"][0]["Dimensions"][-4:])
        k = int(_conv_field(layer, "OutMaps") or layer["Outputs"][0]["Dimensions"][-3])
        r, s = (int(v) for v in _conv_field(layer, "Kernel")[-2:])
        groups = int(_conv_field(layer, "Groups") or 1) or 1
        if layer.get("ParameterType") == _FUSED_CONV:
            (sh, sw), (dh, dw) = _conv_field(layer, "Stride"), _conv_field(layer, "Dilation")
            (ph0, pw0), (ph1, pw1) = (
                _conv_field(layer, "PrePadding"),
                _conv_field(layer, "PostPadding"),
            )
            p = (h + ph0 + ph1 - dh * (r - 1) - 1) // sh + 1
            q = (w + pw0 + pw1 - dw * (s - 1) - 1) // sw + 1
        else:
            p, q = (int(v) for v in layer["Outputs"][0]["Dimensions"][-2:])
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return weights, False
    if min(n, k, p, q, c, h, w, r, s) <= 0:  # -1: a dynamic dim, the inspector had no shapes set
        return weights, False
    if _is_deconv(layer):
        return 2.0 * n * c * h * w * k * r * s / groups, True
    return 2.0 * n * k * p * q * c * r * s / groups, True


def summarize_layers(engine_json: str, onnx_ops: Mapping[str, str] | None = None) -> LayerSummary:
    """Summarize the inspector's JSON text; FCNError if it is not DETAILED layer information.

    ``onnx_ops`` (ONNX node name → op type, from the graph the engine was built from) lets the
    convolutions inside Myelin layers be counted exactly; without it their node names are used.
    """
    try:
        doc = json.loads(engine_json)
    except json.JSONDecodeError as e:
        raise FCNError(f"the engine inspector returned unreadable JSON ({e.msg})") from None
    layers = doc.get("Layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise FCNError(
            "the engine inspector's JSON has no Layers list; is this TensorRT's engine information?"
        )
    if layers and not isinstance(layers[0], dict):
        raise FCNError(
            "the engine has only layer names, no precisions: build it with "
            "config.profiling_verbosity = ProfilingVerbosity.DETAILED"
        )
    rows = [layer for layer in layers if not _PROFILE_SUFFIX.search(str(layer.get("Name", "")))]
    # (layer, convs in it, FLOPs): one per conv layer, n per Myelin layer that absorbed n convs
    conv_rows: list[tuple[Mapping[str, Any], int]] = []
    for layer in rows:
        if _is_myelin(layer):
            n = sum(op in _CONV_OPS for op in _absorbed_ops(layer, onnx_ops))
            if n:
                conv_rows.append((layer, n))
        elif _is_conv(layer):
            conv_rows.append((layer, 1))
    myelin = any(_is_myelin(layer) for layer, _ in conv_rows)
    measured = [_conv_flops(layer) for layer, _ in conv_rows]
    if myelin:  # no shapes for the convs inside a Myelin layer: count convs, all of them
        basis, flops_of = "count", [float(n) for _, n in conv_rows]
    elif all(exact for _, exact in measured):
        basis, flops_of = "shape", [f for f, _ in measured]
    else:  # mixing real FLOPs with weight counts would be meaningless: weights for all
        basis, flops_of = "weights", [_weight_count(layer) or 1.0 for layer, _ in conv_rows]
    conv_info = {id(layer): (n, f) for (layer, n), f in zip(conv_rows, flops_of, strict=True)}
    counts: dict[str, int] = {}
    conv_counts: dict[str, int] = {}
    n_float = n_fp16 = convs = fp16_convs = int8_convs = unknown = 0
    flops = fp16_flops = int8_flops = 0.0
    for layer in rows:
        p = _layer_precision(layer)
        counts[p or "unknown"] = counts.get(p or "unknown", 0) + 1
        if p in _FLOAT:
            n_float += 1
            n_fp16 += p == "fp16"
        if id(layer) in conv_info:
            n, f = conv_info[id(layer)]
            convs += n
            flops += f
            if p is None:
                unknown += n
                continue
            conv_counts[p] = conv_counts.get(p, 0) + n
            if p == "fp16":
                fp16_convs += n
                fp16_flops += f
            elif p == "int8":
                int8_convs += n
                int8_flops += f
    if not math.isfinite(flops):
        raise FCNError("the engine inspector reported conv shapes too large to count")
    note = ""
    if unknown:
        note = (
            f"the precision of {unknown} of {convs} convolutions is unknown: they run inside "
            "Myelin ForeignNode layers with no 16- or 8-bit input, output or weights, so the "
            "inspector does not show it"
        )
    elif not convs:
        note = "no convolution found among the inspector's layers, so their precision is unknown"
    return LayerSummary(
        n_float,
        n_fp16,
        convs,
        fp16_convs,
        flops,
        fp16_flops,
        basis,
        counts,
        conv_counts,
        unknown,
        note,
        int8_convs,
        int8_flops,
    )


def precision_problem(requested: str, summary: LayerSummary) -> str | None:
    """Why a build asked for ``requested`` must be refused, or None.

    Only a request that measurably missed its precision is refused: FP16 that produced FP32
    convolutions (the silent-FP32 trap), or INT8 with every convolution identified and none in
    INT8 (the Q/DQ pairs were not fused); ``unknown`` is not evidence of either and is written
    with its note.
    """
    if requested == "fp16" and summary.label == "fp32":
        return (
            f"asked for an fp16 engine but TensorRT built {summary.describe()}; nothing was "
            "written. Check that the ONNX graph is fp16 (fcn-export --precision fp16)"
        )
    if (
        requested == "int8"
        and summary.convs
        and not summary.int8_convs
        and not summary.unknown_convs
    ):
        return (
            f"asked for an int8 engine but TensorRT built {summary.describe()}; nothing was "
            "written. Check that the ONNX graph has Q/DQ (fcn-export --precision int8)"
        )
    return None
