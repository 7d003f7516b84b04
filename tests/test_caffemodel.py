"""Caffe .caffemodel files: read without Caffe, checked against the PyTorch nets holding the same
weights and against OpenCV's own Caffe reader and engine (``cv2.dnn.readNetFromCaffe``).

No real caffemodel can be downloaded here: `caffe_writer` writes them from random weights, in
every form the reader takes (``shape`` or old 4-D dims, float or double data, V1 or V2 layers).
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tomllib
import torch
from caffe_writer import (
    Layer,
    at_once_scales,
    layers_of,
    length_delimited,
    random_weights,
    two_headed,
    write_caffemodel,
)
from PIL import Image
from reference_fcn import REFERENCE_ARGS, ReferenceFCN, TorchvisionVGG16

from fcn_deploy import FCNError, Preprocessing, export_onnx, load_model
from fcn_deploy.caffemodel import (
    CAFFE_VGG16_PREPROCESSING,
    NYUD_PREPROCESSING,
    SIFT_FLOW_PREPROCESSING,
    is_caffe_file,
    read_caffemodel,
)
from fcn_deploy.cli.export import main as export_main
from fcn_deploy.cli.predict import main as predict_main
from fcn_deploy.export import read_onnx_metadata
from fcn_deploy.meta import VOC_CLASSES, read_classes, voc_palette
from fcn_deploy.models import convolutionalize
from fcn_deploy.models.vgg import scaled

BIN = Path(sys.executable).parent
WIDTH = 0.0625
X = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(1)) * 40


def reference(variant: str, seed: int = 0, n_class: int = 21) -> ReferenceFCN:
    return random_weights(
        ReferenceFCN(**REFERENCE_ARGS[variant], width=WIDTH, n_class=n_class), seed
    )


def fcn_layers(model: torch.nn.Module, variant: str) -> list[Layer]:
    layers = layers_of(model)
    if variant == "fcn8s-atonce":
        layers += at_once_scales(model.conv4_3.out_channels, model.conv3_3.out_channels)
    return layers


# (variant, V1 layer list, old 4-D blob dims, double data): every form at least once
FORMS = [
    ("fcn32s", False, False, False),
    ("fcn16s", True, True, False),
    ("fcn8s", False, True, True),
    ("fcn8s-atonce", False, False, True),  # Scale came after V1: at-once files are V2
]


@pytest.mark.parametrize(("variant", "v1", "legacy", "double"), FORMS)
def test_each_form_loads_the_same_net(
    tmp_path: Path, variant: str, v1: bool, legacy: bool, double: bool
) -> None:
    ref = reference(variant)
    path = write_caffemodel(
        tmp_path / "net.caffemodel", fcn_layers(ref, variant), v1=v1, legacy=legacy, double=double
    )
    model = load_model(path)
    assert model.info.variant == variant and model.info.num_classes == 21
    assert model.info.class_names == list(VOC_CLASSES) and model.info.palette[:21] == voc_palette(
        21
    )
    assert model.info.preprocessing == Preprocessing.caffe()
    for key, value in ref.state_dict().items():  # the very values, not merely close ones
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.allclose(model(X), ref(X), rtol=1e-5, atol=1e-5)


def test_suffix_is_not_needed_and_variant_is_checked(tmp_path: Path) -> None:
    ref = reference("fcn16s")
    path = write_caffemodel(tmp_path / "weights.bin", layers_of(ref))
    assert load_model(path).info.variant == "fcn16s"  # recognised by its bytes
    with pytest.raises(
        FCNError, match=r"does not match fcn8s: 4 missing keys such as upscore_pool4"
    ):
        load_model(path, variant="fcn8s")
    atonce = write_caffemodel(
        tmp_path / "a.caffemodel", fcn_layers(reference("fcn8s"), "fcn8s-atonce")
    )
    with pytest.raises(FCNError, match="it is fcn8s-atonce, not fcn8s"):
        load_model(atonce, variant="fcn8s")


def test_sift_flow_semantic_head_and_each_releases_mean(tmp_path: Path) -> None:
    """SIFT Flow's nets have a semantic (``*_sem``, 33 classes) and a geometric (``*_geo``, 3)
    head; NYUDv2's colour net has 40 classes. Each release subtracts its own data's mean pixel."""
    sem, geo = reference("fcn16s", n_class=33), reference("fcn16s", seed=1, n_class=3)
    layers = two_headed(sem, geo, ("score_fr", "upscore2", "score_pool4", "upscore16"))
    model = load_model(write_caffemodel(tmp_path / "siftflow-fcn16s.caffemodel", layers))
    assert model.info.variant == "fcn16s" and model.info.num_classes == 33
    assert model.info.preprocessing == SIFT_FLOW_PREPROCESSING
    with torch.no_grad():
        assert torch.allclose(model(X), sem(X), rtol=1e-5, atol=1e-5)
    nyud = write_caffemodel(
        tmp_path / "nyud.caffemodel", layers_of(reference("fcn32s", n_class=40))
    )
    assert load_model(nyud).info.preprocessing == NYUD_PREPROCESSING


# The NYUDv2 HHA net's input as the release reads it (nyud_layers.py): the HHA image's channels
# in the order they are stored, minus their mean; docs/caffe.md gives this recipe.
HHA_PREPROCESSING = Preprocessing("rgb", 1.0, (132.431, 94.076, 118.477))

# The class names of the releases, in output order, from the release's data/ folder: spot checks
# of the first, some in between and the last (the whole lists are in fcn_deploy/classes/).
RELEASE_NAMES = {
    "pascal-context": (60, {0: "background", 20: "tvmonitor", 21: "bag", 52: "bedcloth",
                            59: "wood"}),
    "nyud": (40, {0: "wall", 19: "floor mat", 23: "refridgerator", 39: "otherprop"}),
    "sift-flow": (33, {0: "awning", 27: "sky", 32: "window"}),
}  # fmt: skip


@pytest.mark.parametrize("release", RELEASE_NAMES)
def test_the_releases_of_other_label_sets_carry_their_class_names(
    tmp_path: Path, release: str, capsys
) -> None:
    classes, spots = RELEASE_NAMES[release]
    if release == "sift-flow":  # two heads: the semantic one gives the classes
        sem, geo = reference("fcn32s", n_class=classes), reference("fcn32s", seed=1, n_class=3)
        layers = two_headed(sem, geo, ("score_fr", "upscore"))
    else:
        layers = layers_of(reference("fcn32s", n_class=classes))
    path = write_caffemodel(tmp_path / f"{release}.caffemodel", layers)
    info = load_model(path).info
    assert len(info.class_names) == info.num_classes == classes
    assert len(set(info.class_names)) == classes
    assert {k: info.class_names[k] for k in spots} == spots
    assert info.palette[:classes] == voc_palette(classes)

    out = tmp_path / "model.onnx"  # the names travel into the export, and --classes still wins
    if release == "nyud":  # the HHA net is this very file: its preprocessing is the user's to set
        assert info.preprocessing == NYUD_PREPROCESSING
        model = load_model(path)
        model.info = model.info.replace(preprocessing=HHA_PREPROCESSING)
        export_onnx(model, out, verify=False, progress=False)
        assert read_onnx_metadata(out).info.preprocessing == HHA_PREPROCESSING
    else:
        argv = [str(path), "-o", str(out), "--no-verify"]
        assert export_main(argv) == 0, capsys.readouterr().err
    assert read_onnx_metadata(out).info.class_names == info.class_names
    own = tmp_path / "own.txt"
    own.write_text("\n".join(f"mine {k}" for k in range(classes)))
    assert load_model(path).info.with_classes(own).class_names[-1] == f"mine {classes - 1}"


def test_the_class_lists_ship_with_the_package() -> None:
    """Each list is package data (pyproject.toml), read as a class file would be."""
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["fcn_deploy"]
    files = sorted((root / "fcn_deploy" / "classes").glob("*.txt"))
    assert [f.stem for f in files] == sorted(RELEASE_NAMES)
    for file in files:
        assert any(fnmatch.fnmatch(f"classes/{file.name}", glob) for glob in globs), file
        assert len(read_classes(file)[0]) == RELEASE_NAMES[file.stem][0]


# -- OpenCV: an independent Caffe reader and engine -----------------------------------------------


class Prototxt:
    """A Caffe net description written layer by layer (BVLC Caffe's ``Input``, ``Convolution``,
    ``ReLU``, ``Pooling``, ``InnerProduct``, ``Deconvolution``, ``Crop``, ``Eltwise``,
    ``Scale``)."""

    def __init__(self, size: int) -> None:
        self.lines = [
            'layer { name: "input" type: "Input" top: "data"',
            f"  input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}",
        ]

    def layer(self, name: str, kind: str, bottoms: list[str], params: str = "") -> None:
        inputs = " ".join(f'bottom: "{b}"' for b in bottoms)
        self.lines.append(
            f'layer {{ name: "{name}" type: "{kind}" {inputs} top: "{name}" {params} }}'
        )

    def conv(self, name: str, bottom: str, n: int, kernel: int, pad: int, relu: str = "") -> None:
        params = f"num_output: {n} pad: {pad} kernel_size: {kernel} stride: 1"
        self.layer(name, "Convolution", [bottom], f"convolution_param {{ {params} }}")
        if relu:
            self.relu(relu, name)

    def relu(self, name: str, blob: str) -> None:
        """An in-place ReLU, as Caffe nets write them."""
        self.lines.append(f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}')

    def vgg16_trunk(self, width: float, first_pad: int) -> None:
        """conv1_1 … pool5, channels scaled by ``width``."""
        bottom = "data"
        for block, (n, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
            for i in range(1, convs + 1):
                pad = first_pad if bottom == "data" else 1
                self.conv(f"conv{block}_{i}", bottom, scaled(n, width), 3, pad, f"relu{block}_{i}")
                bottom = f"conv{block}_{i}"
            pool = "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"
            self.layer(f"pool{block}", "Pooling", [bottom], pool)
            bottom = f"pool{block}"

    def text(self) -> str:
        return "\n".join(self.lines)


def deploy_prototxt(variant: str, width: float, n_class: int) -> str:
    """The authors' deploy net: the layers, order, names and parameters of
    ``voc-fcn8s/deploy.prototxt`` in github.com/shelhamer/fcn.berkeleyvision.org (its
    training-only ``param`` blocks left out), with channel counts scaled by ``width`` so the test
    stays small, and built the same way for FCN-32s/16s (the release's voc-fcn32s/16s ``net.py``)
    and at-once's fixed ``Scale`` layers (voc-fcn8s-atonce ``net.py``)."""
    net = Prototxt(500)
    net.vgg16_trunk(width, first_pad=100)
    net.conv("fc6", "pool5", scaled(4096, width), 7, 0, "relu6")
    net.conv("fc7", "fc6", scaled(4096, width), 1, 0, "relu7")
    net.conv("score_fr", "fc7", n_class, 1, 0)

    def deconv(name: str, bottom: str, kernel: int, stride: int) -> None:
        params = f"num_output: {n_class} bias_term: false kernel_size: {kernel} stride: {stride}"
        net.layer(name, "Deconvolution", [bottom], f"convolution_param {{ {params} }}")

    def crop(name: str, bottoms: list[str], offset: int) -> None:
        net.layer(name, "Crop", bottoms, f"crop_param {{ axis: 2 offset: {offset} }}")

    def fuse(name: str, bottoms: list[str]) -> None:
        net.layer(name, "Eltwise", bottoms, "eltwise_param { operation: SUM }")

    if variant == "fcn32s":
        deconv("upscore", "score_fr", 64, 32)
        crop("score", ["upscore", "data"], 19)
        return net.text()
    pool4, pool3 = "pool4", "pool3"
    if variant == "fcn8s-atonce":
        net.layer("scale_pool4", "Scale", ["pool4"])
        net.layer("scale_pool3", "Scale", ["pool3"])
        pool4, pool3 = "scale_pool4", "scale_pool3"
    deconv("upscore2", "score_fr", 4, 2)
    net.conv("score_pool4", pool4, n_class, 1, 0)
    crop("score_pool4c", ["score_pool4", "upscore2"], 5)
    fuse("fuse_pool4", ["upscore2", "score_pool4c"])
    if variant == "fcn16s":
        deconv("upscore16", "fuse_pool4", 32, 16)
        crop("score", ["upscore16", "data"], 27)
        return net.text()
    deconv("upscore_pool4", "fuse_pool4", 4, 2)
    net.conv("score_pool3", pool3, n_class, 1, 0)
    crop("score_pool3c", ["score_pool3", "upscore_pool4"], 9)
    fuse("fuse_pool3", ["upscore_pool4", "score_pool3c"])
    deconv("upscore8", "fuse_pool3", 16, 8)
    crop("score", ["upscore8", "data"], 31)
    return net.text()


def opencv_forward(prototxt: Path, caffemodel: Path, x: torch.Tensor) -> torch.Tensor:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(np.ascontiguousarray(x.numpy()))
    return torch.from_numpy(net.forward().copy())


@pytest.mark.parametrize("variant", ["fcn32s", "fcn8s", "fcn8s-atonce"])
def test_logits_equal_opencvs_on_the_same_caffemodel(tmp_path: Path, variant: str) -> None:
    """Conv blobs as they stand, Deconvolution blobs as PyTorch's transposed-conv layout (random,
    asymmetric upsampling weights would show a transposition), crops, skips and at-once's scales:
    OpenCV reads the same file with the release's net description and must agree."""
    ref = reference(variant, n_class=5)
    path = write_caffemodel(tmp_path / "net.caffemodel", fcn_layers(ref, variant))
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt(variant, WIDTH, 5))
    ours = load_model(path)
    with torch.no_grad():
        logits = ours(X)
    theirs = opencv_forward(prototxt, path, X)
    assert theirs.shape == logits.shape == (1, 5, 45, 61)
    scale = logits.abs().max()
    assert (theirs - logits).abs().max() <= 1e-4 * scale, float((theirs - logits).abs().max())


def vgg16_prototxt(width: float) -> str:
    """VGG_ILSVRC_16_layers_deploy.prototxt's structure (the VGG team's Caffe model-zoo release):
    13 convs, 5 max pools, then fc6/fc7/fc8 as InnerProduct (the paper's starting point)."""
    net = Prototxt(224)
    net.vgg16_trunk(width, first_pad=1)
    bottom = "pool5"
    for name, n in (("fc6", scaled(4096, width)), ("fc7", scaled(4096, width)), ("fc8", 1000)):
        net.layer(name, "InnerProduct", [bottom], f"inner_product_param {{ num_output: {n} }}")
        if name != "fc8":
            net.relu(f"relu{name[2:]}", name)
        bottom = name
    return net.text()


def caffe_vgg16(tmp_path: Path) -> tuple[TorchvisionVGG16, Path]:
    """A VGG16 classifier and its caffemodel as the VGG team's file is: V1 layers, 4-D dims,
    fc6/fc7/fc8 InnerProduct."""
    vgg = random_weights(TorchvisionVGG16(width=WIDTH), seed=3)
    conv = convolutionalize(vgg.state_dict())  # Caffe names; fc6 viewed as 7×7 (the test's side)
    layers = layers_of(conv, inner_product=("fc6", "fc7", "fc8"))
    return vgg, write_caffemodel(
        tmp_path / "VGG_ILSVRC_16_layers.caffemodel", layers, v1=True, legacy=True
    )


def test_caffe_vgg16_innerproduct_becomes_convolutions(tmp_path: Path) -> None:
    vgg, path = caffe_vgg16(tmp_path)
    model = load_model(path)
    assert model.info.variant == "vgg16" and model.info.num_classes == 1000
    assert model.info.preprocessing == CAFFE_VGG16_PREPROCESSING
    assert model.fc6.weight.shape[-2:] == (7, 7) and model.fc7.weight.shape[-2:] == (1, 1)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 40
    prototxt = tmp_path / "vgg16.prototxt"
    prototxt.write_text(vgg16_prototxt(WIDTH))
    with torch.no_grad():
        ours, classifier = model(x)[:, :, 0, 0], vgg(x)
    theirs = opencv_forward(prototxt, path, x)
    scale = classifier.abs().max()
    assert (ours - classifier).abs().max() <= 1e-4 * scale
    assert (theirs - classifier).abs().max() <= 1e-4 * scale


def test_train_init_from_the_caffe_vgg16(tmp_path: Path) -> None:
    from fcn_deploy.data import SyntheticSegmentation
    from fcn_train.initialize import initial_model

    vgg, path = caffe_vgg16(tmp_path)
    data = SyntheticSegmentation("train", 2)
    fcn = initial_model("fcn32s", f"vgg16:{path}", 1.0, data, seed=0)
    caffe = read_caffemodel(path).state_dict
    assert fcn.width == WIDTH and fcn.info.preprocessing == Preprocessing.caffe()
    for key in ("conv1_1.weight", "conv5_3.bias", "fc6.weight", "fc7.weight", "fc7.bias"):
        assert torch.equal(fcn.state_dict()[key], caffe[key]), key
    assert torch.equal(fcn.fc6.weight.flatten(1), vgg.classifier[0].weight)
    assert not fcn.score_fr.weight.any()
    fcn8 = write_caffemodel(tmp_path / "fcn8s.caffemodel", layers_of(reference("fcn8s")))
    with pytest.raises(FCNError, match="holds an FCN, not the VGG16 classifier"):
        initial_model("fcn32s", f"vgg16:{fcn8}", 1.0, data, seed=0)


# -- fcn-export and fcn-predict on a caffemodel --------------------------------------------------


def test_export_labels_equal_the_pytorch_ports_and_carry_the_class_file(
    tmp_path: Path, capsys
) -> None:
    ref = reference("fcn8s", seed=4)
    path = write_caffemodel(tmp_path / "fcn8s-heavy-pascal.caffemodel", layers_of(ref), legacy=True)
    classes = tmp_path / "classes.txt"
    names = [f"class {k}" for k in range(21)]
    classes.write_text("# 21 classes\n" + "\n".join(names[:20]) + "\nlast one 0 0 255\n")
    onnx_path = tmp_path / "fcn8s.onnx"
    argv = [str(path), "-o", str(onnx_path), "--no-verify"]  # the check is the port's, below
    assert export_main([*argv, "--classes", str(classes)]) == 0, capsys.readouterr().err
    meta = read_onnx_metadata(onnx_path)
    assert meta.info.variant == "fcn8s" and meta.info.preprocessing == Preprocessing.caffe()
    assert meta.info.class_names == [*names[:20], "last one"]
    assert meta.info.palette == [*voc_palette(20), (0, 0, 255)]
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (2, 67, 93, 3), dtype=np.uint8)
    x = Preprocessing.caffe().apply(bgr)  # BGR minus the release's mean, as the release's infer.py
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {meta.input_name: x})[0]
    with torch.no_grad():
        port = ref(torch.from_numpy(x)).numpy()
    assert np.abs(logits - port).max() <= 1e-5 * np.abs(port).max()
    labels = logits.argmax(1)  # equal but where two classes tie within float rounding
    assert (labels == port.argmax(1)).mean() >= 0.999 and labels.std() > 0


def test_classes_file_colours_predictions_and_must_fit(tmp_path: Path, capsys) -> None:
    ref = reference("fcn32s", n_class=3)
    path = write_caffemodel(tmp_path / "context.caffemodel", layers_of(ref))
    classes = tmp_path / "classes.txt"
    classes.write_text("wall 120 120 120\nfloor mat\nsky 0 0 255  # a comment\n")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8))
    predict = [str(image), "-o", str(tmp_path / "out"), "--model", str(path), "-q"]
    assert predict_main([*predict, "--classes", str(classes)]) == 0, capsys.readouterr().err
    written = Image.open(tmp_path / "out" / "photo.png").getpalette()[:9]  # type: ignore[index]
    assert written == [120, 120, 120, *voc_palette(2)[1], 0, 0, 255]

    classes.write_text("wall\nfloor\n")
    out = tmp_path / "m.onnx"
    capsys.readouterr()
    assert export_main([str(path), "-o", str(out), "--classes", str(classes)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {classes} names 2 classes but the model has 3 (option --classes)"
    )
    assert not out.exists()


# -- bad files: one line each --------------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(FCNError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


def test_bad_files_are_one_line_each(tmp_path: Path) -> None:
    good = write_caffemodel(tmp_path / "good.caffemodel", layers_of(reference("fcn32s")))
    data = good.read_bytes()

    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("fcn8s", 1.0, 21))
    assert "is a Caffe prototxt" in _error(prototxt) and "pass the .caffemodel" in _error(prototxt)

    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    assert "truncated" in _error(truncated)

    alexnet = write_caffemodel(
        tmp_path / "bvlc_alexnet.caffemodel",
        [
            Layer(n, "Convolution", [np.zeros((2, 2, 3, 3), np.float32), np.zeros(2, np.float32)])
            for n in ("conv1", "conv2", "fc6", "fc7", "fc8")
        ],
    )
    message = _error(alexnet)
    assert "5 layers with weights such as conv1, conv2, fc6" in message
    assert "missing conv1_1, score_fr" in message

    bad_shape = tmp_path / "shape.caffemodel"
    blob = np.zeros((4, 3, 3, 3), np.float32)
    write_caffemodel(bad_shape, [Layer("conv1_1", "Convolution", [blob])])
    raw = bytearray(bad_shape.read_bytes())
    dims = length_delimited(7, length_delimited(1, bytes([4, 3, 3, 3])))
    at = raw.rindex(dims)
    raw[at : at + len(dims)] = length_delimited(7, length_delimited(1, bytes([4, 3, 3, 2])))
    bad_shape.write_bytes(bytes(raw))
    assert "declares shape (4, 3, 3, 2) (72 values) but holds 108" in _error(bad_shape)

    absurd = tmp_path / "absurd.caffemodel"  # a layer that says it is 2**60 bytes long
    absurd.write_bytes(length_delimited(1, b"FCN") + b"\xa2\x06" + bytes([0x80] * 8 + [0x10]))
    message = _error(absurd)
    assert f"declares {2**60:,} bytes but only 0 follow" in message

    for name in ("garbage.caffemodel", "image.caffemodel"):
        path = tmp_path / name
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100) if "image" in name else b"\x0f" * 64)
        assert "not" in _error(path)


def test_cli_bad_caffemodel_is_one_line(tmp_path: Path) -> None:
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("fcn32s", 1.0, 21))
    out = tmp_path / "m.onnx"
    run = subprocess.run(
        [str(BIN / "fcn-export"), str(prototxt), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: {prototxt} is a Caffe prototxt")
    assert not out.exists()


# -- damaged and hostile files: each refused in one line, before the work it would cost ----------


def _replace(layers: list[Layer], name: str, **changes: object) -> list[Layer]:
    """``layers`` with the layer ``name`` changed (its type, blobs or declared shapes)."""
    out = []
    for layer in layers:
        if layer.name == name:
            layer = Layer(
                name,
                changes.get("type", layer.type),  # type: ignore[arg-type]
                changes.get("blobs", layer.blobs),  # type: ignore[arg-type]
                changes.get("shapes"),  # type: ignore[arg-type]
            )
        out.append(layer)
    return out


@pytest.mark.parametrize("count", [5, 40, 20_000_000])
def test_a_shape_of_more_than_four_dims_is_refused_at_the_fifth(tmp_path: Path, count: int) -> None:
    """A weight is at most 4-D: the reader stops at the fifth dim, not after reading them all."""
    path = tmp_path / "dims.caffemodel"
    blob = np.ones(1, np.float32)
    write_caffemodel(path, [Layer("conv1_1", "Convolution", [blob], shapes=[[1] * count])])
    fifth = path.read_bytes().index(bytes([1] * 5)) + 4
    assert f"layer conv1_1 blob 0 has more than 4 dims (at byte {fifth};" in _error(path)


def test_an_empty_shape_on_conv1_1_is_refused(tmp_path: Path) -> None:
    layers = _replace(
        layers_of(reference("fcn32s")), "conv1_1", blobs=[np.ones(1, np.float32)], shapes=[[]]
    )
    message = _error(write_caffemodel(tmp_path / "empty-shape.caffemodel", layers))
    assert "layer conv1_1 (Convolution) blob 0 (the weight) has shape ()" in message
    assert "out×in×kh×kw" in message


def test_an_innerproduct_of_more_than_a_matrix_is_refused(tmp_path: Path) -> None:
    vgg = convolutionalize(random_weights(TorchvisionVGG16(width=WIDTH), seed=3).state_dict())
    blob = np.zeros((2, 1, 512, 256), np.float32)
    layers = _replace(layers_of(vgg, inner_product=("fc6", "fc7", "fc8")), "fc7", blobs=[blob])
    message = _error(write_caffemodel(tmp_path / "fc7.caffemodel", layers))
    assert "layer fc7 (InnerProduct) blob 0 (the weight) has shape (2, 1, 512, 256)" in message
    assert "out×in" in message


def test_a_net_of_zero_classes_is_refused_at_load(tmp_path: Path) -> None:
    layers = layers_of(reference("fcn32s"))
    channels = layers[-3].blobs[0].shape[1]  # score_fr's input: fc7's outputs
    layers = _replace(
        layers,
        "score_fr",
        blobs=[np.zeros((0, channels, 1, 1), np.float32), np.zeros(0, np.float32)],
    )
    layers = _replace(layers, "upscore", blobs=[np.zeros((0, 0, 64, 64), np.float32)])
    message = _error(write_caffemodel(tmp_path / "none.caffemodel", layers))
    assert f"layer score_fr blob 0 has shape (0, {channels}, 1, 1): a dim of 0" in message


def test_a_state_dict_of_zero_classes_or_a_scalar_conv1_1_is_refused(tmp_path: Path) -> None:
    """The same rules for PyTorch files: the shapes the net is built from are checked first."""
    sd = reference("fcn32s").state_dict()
    for key, value, expected in (
        ("score_fr.weight", torch.zeros(0, 256, 1, 1), "score_fr.weight has shape (0, 256, 1, 1)"),
        ("conv1_1.weight", torch.ones(()), "conv1_1.weight has shape ()"),
    ):
        path = tmp_path / f"{key}.pt"
        torch.save({**sd, key: value}, path)
        assert expected in _error(path)


def test_duplicate_layer_names_are_refused(tmp_path: Path) -> None:
    layers = layers_of(reference("fcn32s"))
    fc7 = next(layer for layer in layers if layer.name == "fc7")
    message = _error(write_caffemodel(tmp_path / "twice.caffemodel", [*layers, fc7]))
    assert "two layers with weights are named fc7" in message


@pytest.mark.parametrize("double", [False, True])
def test_nan_or_infinite_weights_are_refused_naming_the_layer(tmp_path: Path, double: bool) -> None:
    layers = layers_of(reference("fcn32s"))
    fc7 = next(layer for layer in layers if layer.name == "fc7")
    weight = fc7.blobs[0].astype(np.float64)
    weight[3, 2] = 1e300 if double else np.nan  # a double beyond float32's range becomes inf
    layers = _replace(layers, "fc7", blobs=[weight, fc7.blobs[1]])
    path = write_caffemodel(tmp_path / "nan.caffemodel", layers, double=double)
    assert "layer fc7 blob 0 holds NaN or infinite values" in _error(path)


def test_data_split_over_two_records_is_refused(tmp_path: Path) -> None:
    data = np.arange(4, dtype="<f4").tobytes()
    blob = (
        length_delimited(5, data[:8])
        + length_delimited(5, data[8:])
        + length_delimited(7, length_delimited(1, bytes([4])))
    )
    layer = length_delimited(1, b"conv1_1") + length_delimited(2, b"Convolution")
    path = tmp_path / "split.caffemodel"
    path.write_bytes(length_delimited(100, layer + length_delimited(7, blob)))
    assert "layer conv1_1 blob 0 has its data in 2 records" in _error(path)


def test_empty_scale_blobs_do_not_make_the_net_at_once(tmp_path: Path) -> None:
    ref = reference("fcn8s")
    empty = [
        Layer(scale.name, "Scale", [np.zeros(0, np.float32)]) for scale in at_once_scales(1, 1)
    ]
    message = _error(write_caffemodel(tmp_path / "scales.caffemodel", layers_of(ref) + empty))
    assert "layer scale_pool4 blob 0 has shape (0,): a dim of 0" in message


def test_at_once_is_refused_for_a_file_without_its_scale_layers(tmp_path: Path) -> None:
    path = write_caffemodel(tmp_path / "fcn8s.caffemodel", layers_of(reference("fcn8s")))
    with pytest.raises(FCNError, match="no scale_pool4/scale_pool3 Scale layers") as info:
        load_model(path, variant="fcn8s-atonce")
    assert info.value.param == "variant" and "it is fcn8s, not fcn8s-atonce" in str(info.value)


def test_truncation_and_negative_dims_are_worded_right(tmp_path: Path) -> None:
    cut = tmp_path / "cut.caffemodel"  # a layer whose length is cut after its first byte
    cut.write_bytes(length_delimited(1, b"FCN") + b"\xa2\x06\x80")
    message = _error(cut)
    assert "ends at byte 8 inside a record" in message and "truncated" in message
    assert "go on to byte" not in message

    negative = tmp_path / "negative.caffemodel"
    blob = np.ones(2, np.float32)
    write_caffemodel(negative, [Layer("conv1_1", "Convolution", [blob], shapes=[[-1, -2]])])
    message = _error(negative)
    assert "layer conv1_1 blob 0 declares shape (-1, -2): a negative dim" in message
    assert "holds" not in message


def test_one_million_empty_layers_are_refused_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "empty-layers.caffemodel"
    path.write_bytes(length_delimited(1, b"FCN") + b"\xa2\x06\x00" * 1_000_000)
    message = _error(path)
    assert "holds more than 1,024 layers" in message


def test_a_layer_of_300k_blobs_is_refused_at_the_third(tmp_path: Path) -> None:
    path = tmp_path / "blobs.caffemodel"
    blob = length_delimited(7, length_delimited(5, np.ones(1, "<f4").tobytes()))
    head = length_delimited(1, b"conv1_1") + length_delimited(2, b"Convolution")
    data = length_delimited(1, b"FCN") + length_delimited(100, head + blob * 300_000)
    path.write_bytes(data)
    third = data.index(head) + len(head) + 2 * len(blob)
    message = _error(path)
    assert "layer conv1_1 (Convolution) has more than 2 blobs" in message
    assert f"(at byte {third + 1})" in message  # the third blob's, not the 300,000th


def test_special_files_are_refused_without_reading(tmp_path: Path) -> None:
    """A FIFO would block the open for ever and /dev/zero never ends: both are refused from
    their file type, before they are opened."""
    fifo = tmp_path / "pipe.caffemodel"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.caffemodel"
    zero.symlink_to("/dev/zero")
    other = tmp_path / "pipe.bin"  # not a Caffe name: not opened to look at its bytes either
    os.mkfifo(other)
    results: dict[str, object] = {}

    def attempt() -> None:
        for path in (fifo, zero):
            try:
                load_model(path)
            except FCNError as e:
                results[path.name] = str(e)
        results["is_caffe_file"] = is_caffe_file(other)

    thread = threading.Thread(target=attempt, daemon=True)  # a hang fails the test, not the run
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"hung; got {results}"
    assert results["pipe.caffemodel"] == (f"{fifo} is a named pipe (FIFO), not a regular file")
    assert "zero.caffemodel is a character device (a symlink to /dev/zero), not a regular" in str(
        results["zero.caffemodel"]
    )
    assert results["is_caffe_file"] is False


def test_a_caffemodel_named_onnx_is_exported_by_what_it_is(tmp_path: Path, capsys) -> None:
    ref = reference("fcn32s")
    path = write_caffemodel(tmp_path / "weights.onnx", layers_of(ref))
    out = tmp_path / "model.onnx"
    assert export_main([str(path), "-o", str(out), "--no-verify"]) == 0, capsys.readouterr().err
    assert read_onnx_metadata(out).info.variant == "fcn32s"
    with pytest.raises(FCNError, match="is already ONNX; pass the checkpoint"):  # a real one
        export_onnx(out, tmp_path / "again.onnx", verify=False, progress=False)
