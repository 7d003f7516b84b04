"""Image-mode output, as TensorRT will parse it: every Cast to UINT8 reads FLOAT or HALF.

TensorRT converts UINT8 only to and from FLOAT/HALF (NvInferRuntimeBase.h, DataType::kUINT8)
and parses ArgMax into TopK with INT32 indices cast to INT64 (onnx-tensorrt argMinMaxHelper), so
the labels leave ArgMax → Cast(FLOAT) → Cast(UINT8). Checked here with ONNX Runtime: the labels
are exactly the argmax of the same graph's logits, up to 200 classes. The engine itself is
tested in test_trt_engine.py where TensorRT and a GPU exist.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.export.image_io import add_image_io
from fcn_deploy.meta import Preprocessing

ort = pytest.importorskip("onnxruntime")


def _score_net(classes: int, seed: int = 0) -> onnx.ModelProto:
    """A 3×3 conv scoring every pixel: float N×3×H×W → logits N×C×H×W, dynamic N, H, W."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(0, 1, (classes, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["logits"], pads=[1, 1, 1, 1], name="score")],
        "score",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", classes, "height", "width"]
            )
        ],
        [weight],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("classes", [21, 200])
def test_image_labels_equal_the_argmax_of_the_logits(classes):
    pre = Preprocessing.caffe()
    tensor_graph = _score_net(classes)
    image_graph = _score_net(classes)
    add_image_io(image_graph, pre)
    onnx.checker.check_model(image_graph, full_check=True)
    images = np.random.default_rng(1).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    labels = _run(image_graph, images)
    logits = _run(tensor_graph, pre.apply(images).astype(np.float32))
    assert labels.dtype == np.uint8 and labels.shape == (2, 37, 53)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1).astype(np.uint8))
    assert len(np.unique(labels)) > 1


def test_every_cast_to_uint8_reads_float_or_half():
    proto = _score_net(21)
    add_image_io(proto, Preprocessing.caffe())
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types |= {v.name: v.type.tensor_type.elem_type for v in inferred.graph.input}
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    to_uint8 = [n for n in casts if helper.get_attribute_value(n.attribute[0]) == TensorProto.UINT8]
    assert len(to_uint8) == 1
    assert types[to_uint8[0].input[0]] in (TensorProto.FLOAT, TensorProto.FLOAT16)
    (argmax,) = [n for n in proto.graph.node if n.op_type == "ArgMax"]
    assert types[argmax.output[0]] == TensorProto.INT64  # what the Cast to FLOAT reads


def test_image_io_refuses_more_classes_than_uint8_labels_hold(tmp_path):
    from fcn_deploy.errors import FCNError
    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    model = create_model("fcn32s", num_classes=257, width=0.0625)
    with pytest.raises(FCNError, match=r"at most 256 classes; this model has 257") as e:
        export_onnx(model, tmp_path / "m.onnx", io="image", verify=False, progress=False)
    assert e.value.param == "io" and list(tmp_path.iterdir()) == []
