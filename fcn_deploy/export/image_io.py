"""Image mode: the checkpoint's preprocessing and the argmax spliced around the exported net.

The net is exported exactly as in tensor mode and the image I/O is added as a handful of plain
ONNX nodes, rather than traced from a PyTorch wrapper: with torch 2.13 the dynamo exporter
simplified the crop arithmetic of a net behind an NHWC permute into wrong formulas (``(h+a)//16``
for ``2*((h+a)//32)``: off by one row at half of all sizes), while the tensor-mode export is right.

    image  uint8 N×H×W×3 BGR → Cast float → [Gather 2,1,0 if the net wants RGB]
           → ×scale − mean ÷ std → Transpose N×3×H×W → net → logits N×C×H×W
           → ArgMax(axis 1) → Cast float → Cast uint8 → labels N×H×W

The arithmetic and its order are `Preprocessing.apply`'s, so both give the same float32 input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..meta import Preprocessing

__all__ = ["MAX_IMAGE_CLASSES", "add_image_io"]

# Labels leave as UINT8 through FLOAT (the one UINT8 conversion TensorRT has): a class index of
# 256 or more is outside UINT8, and FLOAT → UINT8 of it is undefined (ONNX Cast, TensorRT alike).
MAX_IMAGE_CLASSES = 256

_PREFIX = "image_io/"


def add_image_io(
    proto: Any, pre: Preprocessing, input_name: str = "image", output_name: str = "labels"
) -> None:
    """Turn a float-I/O tensor-mode graph into uint8 image in → uint8 labels out (in place)."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    net_in, net_out = g.input[0], g.output[0]
    image = _value_info(input_name, TensorProto.UINT8, net_in, (0, 2, 3), trailing=3)  # N×H×W×3
    labels = _value_info(output_name, TensorProto.UINT8, net_out, (0, 2, 3))  # N×H×W

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, _PREFIX + name))
        return _PREFIX + name

    scale = const("scale", np.asarray(pre.scale, np.float32))
    mean = const(
        "mean", np.asarray(pre.mean, np.float32)
    )  # shape [3]: broadcasts over NHWC's last axis
    std = const("std", np.asarray(pre.std, np.float32))
    nodes = [
        helper.make_node(
            "Cast",
            [input_name],
            [_PREFIX + "float"],
            to=TensorProto.FLOAT,
            name=_PREFIX + "cast_in",
        )
    ]
    pixels = _PREFIX + "float"
    if pre.color == "rgb":
        order = const("rgb_order", np.asarray([2, 1, 0], np.int64))
        nodes.append(
            helper.make_node(
                "Gather", [pixels, order], [_PREFIX + "rgb"], axis=3, name=_PREFIX + "to_rgb"
            )
        )
        pixels = _PREFIX + "rgb"
    nodes += [
        helper.make_node("Mul", [pixels, scale], [_PREFIX + "scaled"], name=_PREFIX + "scale"),
        helper.make_node(
            "Sub", [_PREFIX + "scaled", mean], [_PREFIX + "centered"], name=_PREFIX + "sub_mean"
        ),
        helper.make_node(
            "Div", [_PREFIX + "centered", std], [_PREFIX + "nhwc"], name=_PREFIX + "div_std"
        ),
        helper.make_node(
            "Transpose",
            [_PREFIX + "nhwc"],
            [net_in.name],
            perm=[0, 3, 1, 2],
            name=_PREFIX + "to_nchw",
        ),
    ]
    post = [
        helper.make_node(
            "ArgMax",
            [net_out.name],
            [_PREFIX + "argmax"],
            axis=1,
            keepdims=0,
            name=_PREFIX + "argmax",
        ),
        # INT64 → FLOAT → UINT8, never INT64/INT32 → UINT8 directly: TensorRT converts UINT8
        # only to and from FLOAT and HALF (NvInferRuntimeBase.h, DataType::kUINT8: "kUINT8
        # conversions are not supported for {kINT8, kINT32, kBOOL}"), and its ONNX parser turns
        # ArgMax into TopK whose INT32 indices it casts to INT64 (onnx-tensorrt importerUtils.cpp,
        # argMinMaxHelper). A strongly typed network keeps both Casts as written; class indices
        # (< 256) are exact in FLOAT, and FLOAT → UINT8 truncates, which keeps integers as they are.
        helper.make_node(
            "Cast",
            [_PREFIX + "argmax"],
            [_PREFIX + "label_float"],
            to=TensorProto.FLOAT,
            name=_PREFIX + "cast_label_float",
        ),
        helper.make_node(
            "Cast",
            [_PREFIX + "label_float"],
            [output_name],
            to=TensorProto.UINT8,
            name=_PREFIX + "cast_out",
        ),
    ]
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body + post)
    del g.input[:]
    g.input.append(image)
    del g.output[:]
    g.output.append(labels)


def _value_info(
    name: str, elem_type: int, like: Any, axes: tuple[int, ...], trailing: int = 0
) -> Any:
    """A graph I/O declaration whose dims are ``like``'s dims at ``axes`` (plus a static one)."""
    from onnx import helper

    info = helper.make_tensor_value_info(
        name, elem_type, [None] * len(axes) + ([trailing] if trailing else [])
    )
    source = like.type.tensor_type.shape.dim
    for index, axis in enumerate(axes):
        info.type.tensor_type.shape.dim[index].CopyFrom(source[axis])
    return info
