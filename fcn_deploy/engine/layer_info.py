"""Which precision each engine layer really runs in, read from the engine inspector's JSON.

``engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)``
(with ``ProfilingVerbosity.DETAILED``) gives ``{"Layers": [...], "Bindings": [...]}``; each layer
has ``Name``, ``LayerType`` (the kernel family: ``CaskConvolution``, ``CaskDeconvolutionV2``,
``Reformat``, ...), ``ParameterType`` (``Convolution``, ``Deconvolution``, ``Pooling``, ...),
``Inputs``/``Outputs`` (``Name``, ``Dimensions``, ``Format/Datatype`` such as ``"Channel major
FP16 format where channel % 8 == 0"`` or ``"Row major linear FP32"``) and, for convolutions,
``Kernel``, ``OutMaps``, ``Groups`` and ``Weights`` (``{"Type": "Half", "Count": n}``). This is
the format NVIDIA's trex tool reads. Layers of profiles other than the first carry a
``[profile N]`` suffix and are left out (their precisions repeat the first profile's).

The FP16 claim of an engine rests on this summary: never on the flag or the graph alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import FCNError

__all__ = ["FP16_CONV_SHARE", "LayerSummary", "summarize_layers", "tensor_precision"]

# An engine is labelled fp16 only when at least this share of its conv FLOPs runs in FP16 (the
# rest being e.g. a final score conv kept in FP32 on purpose); "mixed" below that, "fp32" at 0.
FP16_CONV_SHARE = 0.9

# Datatype tokens in ``Format/Datatype`` strings, longest first so "BFloat16" is not read as "Float".
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
    convs: int  # convolutions and deconvolutions
    fp16_convs: int
    conv_flops: float  # 2·MACs at the inspected shape; weight count when shapes were dynamic
    fp16_conv_flops: float
    flops_basis: str  # "shape" (real FLOPs at the inspected shape) or "weights" (per output pixel)
    precisions: dict[str, int]  # layers per precision, all layers
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
        """``int8``, ``fp16``, ``mixed`` or ``fp32``: what the conv layers actually run in."""
        if self.convs and self.int8_conv_flop_share >= FP16_CONV_SHARE:
            return "int8"
        if self.convs and self.fp16_conv_flop_share >= FP16_CONV_SHARE:
            return "fp16"
        return "mixed" if self.fp16_convs or self.int8_convs else "fp32"

    def describe(self) -> str:
        return (
            f"{self.label}: {self.fp16_convs}/{self.convs} convs and {self.fp16_conv_flop_share:.1%} of conv "
            f"FLOPs in FP16 ({'at the inspected shape' if self.flops_basis == 'shape' else 'weighted by weights'}), "
            f"{self.fp16_layers}/{self.layers} float layers in FP16"
            + (f", {self.int8_convs}/{self.convs} convs in INT8" if self.int8_convs else "")
        )

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


def _is_conv(layer: Mapping[str, Any]) -> bool:
    kind = str(layer.get("ParameterType") or layer.get("LayerType") or "")
    return "Convolution" in kind or "Deconvolution" in kind


def _layer_precision(layer: Mapping[str, Any]) -> str | None:
    """The precision a layer computes in: its first input's datatype (as trex reads it)."""
    tensors = layer.get("Inputs") or layer.get("Outputs") or []
    for t in tensors:
        p = tensor_precision(str(t.get("Format/Datatype", "")))
        if p is not None:
            return p
    return None


def _weight_count(layer: Mapping[str, Any]) -> float:
    return float((layer.get("Weights") or {}).get("Count", 0))


def _conv_flops(layer: Mapping[str, Any]) -> tuple[float, bool]:
    """(FLOPs, exact): 2·MACs from the output volume, or the weight count when dims are dynamic."""
    weights = _weight_count(layer)
    try:
        n, k, p, q = (int(v) for v in layer["Outputs"][0]["Dimensions"][-4:])
        c = int(layer["Inputs"][0]["Dimensions"][-3])
        r, s = (int(v) for v in layer["Kernel"][-2:])
        groups = int(layer.get("Groups", 1)) or 1
    except (KeyError, IndexError, TypeError, ValueError):
        return weights, False
    if min(n, k, p, q, c, r, s) <= 0:  # -1: a dynamic dim, the inspector had no shapes set
        return weights, False
    if "Deconvolution" in str(layer.get("ParameterType", "")) or "Deconv" in str(
        layer.get("LayerType", "")
    ):
        _, c_in, h_in, w_in = (int(v) for v in layer["Inputs"][0]["Dimensions"][-4:])
        return 2.0 * n * c_in * h_in * w_in * k * r * s / groups, True
    return 2.0 * n * k * p * q * c * r * s / groups, True


def summarize_layers(engine_json: str) -> LayerSummary:
    """Summarize the inspector's JSON text; FCNError if it is not DETAILED layer information."""
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
    conv_rows = [layer for layer in rows if _is_conv(layer)]
    measured = [_conv_flops(layer) for layer in conv_rows]
    exact = all(e for _, e in measured)
    if not exact:  # mixing real FLOPs with weight counts would be meaningless: use weights for all
        measured = [(_weight_count(layer) or 1.0, False) for layer in conv_rows]
    conv_flops = {id(layer): f for layer, (f, _) in zip(conv_rows, measured)}
    counts: dict[str, int] = {}
    n_float = n_fp16 = convs = fp16_convs = int8_convs = 0
    flops = fp16_flops = int8_flops = 0.0
    for layer in rows:
        p = _layer_precision(layer)
        counts[p or "unknown"] = counts.get(p or "unknown", 0) + 1
        if p in _FLOAT:
            n_float += 1
            n_fp16 += p == "fp16"
        if id(layer) in conv_flops:
            f = conv_flops[id(layer)]
            convs += 1
            flops += f
            if p == "fp16":
                fp16_convs += 1
                fp16_flops += f
            elif p == "int8":
                int8_convs += 1
                int8_flops += f
    if not math.isfinite(flops):
        raise FCNError("the engine inspector reported conv shapes too large to count")
    return LayerSummary(
        n_float,
        n_fp16,
        convs,
        fp16_convs,
        flops,
        fp16_flops,
        "shape" if exact else "weights",
        counts,
        int8_convs,
        int8_flops,
    )
