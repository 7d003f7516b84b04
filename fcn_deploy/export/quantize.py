"""INT8: calibrated explicit quantization (Q/DQ in the ONNX graph) of the FP32 export.

One artifact for three runtimes: ONNX Runtime and OpenVINO fold the QuantizeLinear /
DequantizeLinear pairs into INT8 convolutions on the CPU, and TensorRT's strongly typed parser
builds INT8 layers from the same pairs. So the graph uses only what all three accept: symmetric
INT8 (zero point 0) everywhere, per-channel weight scales on the output-channel axis, per-tensor
activation scales, FP32 biases, and Q/DQ only around the convolutions.

Why calibration needs care on these nets: Caffe-style FCNs take 0..255 inputs minus the mean and
pad the first convolution by 100, so most of every feature map is the padded border, cropped off
at the end. Ranges measured over whole tensors are dominated by values the output never uses
(the border and the bias-only responses in it), which leaves few INT8 steps for the pixels that
matter. Ranges are therefore measured on the pixels that reach the output (the crop window of
each layer, from Caffe's coordinate maps) — see `calibrate_ranges`.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Progress
from .._walk import glob_files, walk_files
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_HELD_OUT_IMAGES",
    "INT8_TARGETS",
    "OUTPUT_UPSAMPLING",
    "CalibrationSource",
    "Int8Accuracy",
    "Int8Options",
    "conv_nodes",
    "input_ranges",
    "int8_accuracy",
    "quantization_aware_finetune",
    "quantize_model",
    "quantize_qdq",
]

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# What the INT8 file is for: "cpu" (ONNX Runtime, OpenVINO): uint8 activations with a zero point,
# the native u8×s8 form of x86 VNNI kernels, with ReLU folded into the range; "tensorrt": int8
# activations with zero point 0, the only form TensorRT's Q/DQ import takes (the CPU runtimes
# run it too).
INT8_TARGETS = ("cpu", "tensorrt")
# The last upsampling of each variant, whose output is the logits. It stays FP32: in INT8 its
# output would be rounded to 256 levels over the logits' range (enough to flip near-tied labels:
# 97.6% -> 97.9% label agreement on the full-size random FCN-8s in FP32), and as the depthwise
# bilinear interpolation it is exported as, it costs ~1% of the net (OpenVINO INT8 at 500x500:
# 294 -> 273 ms, the quantize/convert around it gone).
OUTPUT_UPSAMPLING = ("upscore8", "upscore16", "upscore")
DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_HELD_OUT_IMAGES = 200  # images INT8 is scored on against FP32 (never calibration images)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration (and held-out scoring) images come from.

    ``synthetic`` (the built-in scenes: calibrate on ``train``, score on ``val``), ``voc:ROOT`` or
    ``sbd:ROOT`` (calibrate on ``train``, score on ``val``, with labels), or a folder / glob of
    images (calibrate on the first N files, check label agreement on the ones after them).
    """

    kind: str  # "synthetic", "voc", "sbd" or "images"
    spec: str  # what the user wrote
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS  # per image read (None: no limit)
    arrays: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], spec: str) -> CalibrationSource:
        """uint8 BGR images in memory (e.g. drawn like a benchmark's inputs), used as a folder of
        them would be: calibrate on the first N, check label agreement on the ones after."""
        return cls("images", spec, None, tuple(images))

    @classmethod
    def parse(
        cls, text: str, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
    ) -> CalibrationSource:
        text = str(text).strip()
        if not text:
            raise FCNError(
                "calibration is empty; use synthetic, voc:ROOT, sbd:ROOT or a folder/glob",
                param="calibration",
            )
        if text == "synthetic":
            return cls("synthetic", text, max_megapixels)
        kind, sep, root = text.partition(":")
        if sep and kind in ("voc", "sbd"):
            if not root:
                raise FCNError(
                    f"calibration={text!r} names no folder; use {kind}:ROOT", param="calibration"
                )
            return cls(kind, text, max_megapixels)
        return cls("images", text, max_megapixels)

    @property
    def root(self) -> str:
        return self.spec.partition(":")[2] if self.kind in ("voc", "sbd") else self.spec

    @property
    def has_labels(self) -> bool:
        return self.kind != "images"

    def _files(self) -> list[Path]:
        path = Path(self.root)  # each real folder read once: symlink cycles end
        if path.is_dir():
            return [p for p in walk_files(path) if p.suffix.lower() in _IMAGE_SUFFIXES]
        return [p for p in glob_files(self.root) if p.suffix.lower() in _IMAGE_SUFFIXES]

    def _images(self, start: int, stop: int) -> list[np.ndarray]:
        if self.arrays:
            return list(self.arrays[start:stop])
        from ..imageio import read_image

        return [read_image(p, self.max_megapixels) for p in self._files()[start:stop]]

    def _dataset(self, split: str, count: int) -> Any:
        from ..data import SBDSegmentation, SyntheticSegmentation, VOCSegmentation

        if self.kind == "synthetic":
            return SyntheticSegmentation(split, num_images=count)
        dataset = (VOCSegmentation if self.kind == "voc" else SBDSegmentation)(self.root, split)
        dataset.ids = dataset.ids[:count]
        dataset.max_megapixels = self.max_megapixels
        return dataset

    def calibration_images(self, count: int) -> list[np.ndarray]:
        """``count`` uint8 BGR images (fewer if the source has fewer); an error if it has none."""
        if count < 1:
            raise FCNError(
                f"calibration_images must be ≥ 1, got {count}", param="calibration_images"
            )
        if self.kind == "images":
            images = self._images(0, count)
        else:
            dataset = self._dataset("train", count)
            images = [dataset[i][0] for i in range(len(dataset))]
        if not images:
            raise FCNError(
                f"calibration={self.spec!r} yields no images; give synthetic, voc:ROOT, sbd:ROOT, "
                f"or a folder/glob of {', '.join(s[1:] for s in _IMAGE_SUFFIXES[:4])} files",
                param="calibration",
            )
        if len(images) < count:
            log.warning(
                "calibration=%r has %d image(s), fewer than %d", self.spec, len(images), count
            )
        return images

    def held_out(self, count: int, skip: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Up to ``count`` (image, labels or None) pairs never used for calibration."""
        if self.kind == "images":
            for image in self._images(skip, skip + count):
                yield image, None
            return
        dataset = self._dataset("val", count)
        for i in range(len(dataset)):
            yield dataset[i]


def conv_nodes(proto: Any, prefix: str = "net.") -> dict[str, str]:
    """PyTorch layer name → ONNX node name of every Conv/ConvTranspose in an exported graph.

    The dynamo exporter keeps parameter names as initializer names (``net.conv1_1.weight``), so
    a node is found by the weight it reads; shared identical weights (the bilinear kernels of
    upscore2 and upscore_pool4 are deduplicated) map to the first layer that reads them.
    """
    found: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight = node.input[1]
            if weight.startswith(prefix) and weight.endswith(".weight"):
                found.setdefault(weight[len(prefix) : -len(".weight")], node.name)
    return found


class _Reader:
    """ONNX Runtime's CalibrationDataReader over preprocessed batches, with a progress bar."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray], progress: bool) -> None:
        self.input_name = input_name
        self.batches = batches
        self.bar = Progress(len(batches), "calibrating", unit="image") if progress else None
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            if self.bar is not None:
                self.bar.close()
            return None
        batch = self.batches[self.index]
        self.index += 1
        if self.bar is not None:
            self.bar.update(len(batch))
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self.index = 0


class _ToDebugLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("onnxruntime quantizer: %s", record.getMessage())


@contextlib.contextmanager
def _quantizer_to_debug_log() -> Iterator[None]:
    """ONNX Runtime's quantizer warns through the root logger (``logging.warning``, which also
    installs a stderr handler on first use) and prints calibration progress to stdout; both are
    advice for its own API, so they go to this module's debug log instead."""
    root, handler, stdout = logging.getLogger(), _ToDebugLog(), _io.StringIO()
    root.addHandler(handler)  # a root with a handler: logging.warning adds none of its own
    try:
        with contextlib.redirect_stdout(stdout):
            yield
    finally:
        root.removeHandler(handler)
        for line in stdout.getvalue().splitlines():
            if line.strip():
                log.debug("onnxruntime quantizer: %s", line.strip())


def quantize_qdq(
    path: str | os.PathLike[str],
    batches: Sequence[np.ndarray],
    method: str = "minmax",
    exclude: Sequence[str] = (),
    overrides: dict[str, float] | None = None,
    progress: bool = True,
    target: str = "cpu",
    conv_inputs_only: bool = False,
) -> Any:
    """The FP32 tensor-mode graph at ``path`` with Q/DQ around its convolutions.

    Activation ranges are calibrated on ``batches`` (preprocessed N×3×H×W arrays).

    ``exclude``: layer names (``score_fr``, ``upscore8`` …) left in FP32. ``overrides``: layer
    name → the absolute range of that layer's input, replacing the calibrated one (used for
    ranges chosen in PyTorch). Weights are symmetric per-channel INT8 for every target;
    activations follow ``target`` (see `INT8_TARGETS`): ``tensorrt`` also keeps biases FP32.
    Q/DQ go on the inputs and outputs of every op ONNX Runtime can quantize, or with
    ``conv_inputs_only`` on conv/deconv inputs only (where quantization-aware fine-tuning put them).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if target not in INT8_TARGETS:
        raise FCNError(
            f"int8_target={target!r} is unknown; choose {', '.join(INT8_TARGETS)}",
            param="int8_target",
        )
    if method not in CALIBRATION_METHODS:
        raise FCNError(
            f"calibration_method={method!r} is unknown; choose {', '.join(CALIBRATION_METHODS)}",
            param="calibration_method",
        )
    proto = onnx.load(os.fspath(path), load_external_data=False)  # the structure is enough here
    nodes = conv_nodes(proto)
    unknown = [name for name in (*exclude, *(overrides or {})) if name not in nodes]
    if unknown:
        raise FCNError(
            f"layer(s) {', '.join(unknown)} are not convolutions of this net; "
            f"it has {', '.join(nodes)}",
            param="fp32_layers",
        )
    by_node = {n.name: n for n in proto.graph.node}
    tensor_overrides = {
        by_node[nodes[layer]].input[0]: [
            {"rmin": np.array(-amax, np.float32), "rmax": np.array(amax, np.float32)}
        ]
        for layer, amax in (overrides or {}).items()
    }
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    symmetric = target == "tensorrt"
    reader = _Reader(proto.graph.input[0].name, batches, progress)
    with tempfile.TemporaryDirectory(prefix="fcn-int8-") as tmp, _quantizer_to_debug_log():
        out = os.path.join(tmp, "int8.onnx")
        quantize_static(
            os.fspath(path),  # a path: given a ModelProto, the quantizer rewrites it in place
            out,
            reader,  # type: ignore[arg-type]  # duck-typed CalibrationDataReader
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "ConvTranspose"] if conv_inputs_only else None,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[nodes[layer] for layer in exclude],
            calibrate_method=calibrate,
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": not symmetric,  # TensorRT takes FP32 biases (no INT32 DQ)
                "TensorQuantOverrides": tensor_overrides,
                "OpTypesToExcludeOutputQuantization": (
                    ["Conv", "ConvTranspose"] if conv_inputs_only else []
                ),
                # not CalibMaxIntermediateOutputs: ORT 1.32 drops the chunks it should merge
            },
            calibration_cache_path=os.path.join(tmp, "calibration.cache"),
        )
        return onnx.load(out)


@dataclass
class Int8Accuracy:
    """INT8 against the FP32 export on held-out images of the calibration source."""

    data: str  # what was scored, e.g. "synthetic val, 200 images"
    images: int
    label_agreement: float  # share of pixels where INT8 and FP32 pick the same class
    fp32_mean_iu: float | None  # None when the source has no labels
    int8_mean_iu: float | None
    min_agreement: float
    max_iu_drop: float  # points of mean IU (0..100) INT8 may lose

    @property
    def iu_drop(self) -> float | None:
        if self.fp32_mean_iu is None or self.int8_mean_iu is None:
            return None
        return 100.0 * (self.fp32_mean_iu - self.int8_mean_iu)

    @property
    def passed(self) -> bool:
        drop = self.iu_drop
        return self.label_agreement >= self.min_agreement and (
            drop is None or drop <= self.max_iu_drop
        )

    def table(self) -> str:
        def iu(v: float | None) -> str:
            return f"{100 * v:8.2f}" if v is not None else f"{'-':>8}"

        drop = self.iu_drop
        return "\n".join(
            [
                f"{'held-out data':<32} {'labels=FP32':>11} {'FP32 IU':>8} {'INT8 IU':>8} "
                f"{'drop':>6}  result   (pass: labels >= {self.min_agreement:.1%}, drop <= "
                f"{self.max_iu_drop:g} points)",
                f"{self.data:<32} {self.label_agreement:11.4%} {iu(self.fp32_mean_iu)} "
                f"{iu(self.int8_mean_iu)} {f'{drop:6.2f}' if drop is not None else '     -'}  "
                f"{'ok' if self.passed else 'FAIL'}",
            ]
        )


def int8_accuracy(
    fp32: str | os.PathLike[str],
    int8: str | os.PathLike[str],
    info: Any,
    io: str,
    source: CalibrationSource,
    count: int,
    skip: int,
    min_agreement: float,
    max_iu_drop: float,
    progress: bool = True,
) -> Int8Accuracy:
    """Score the INT8 file against the FP32 tensor-mode graph ``fp32`` on held-out images."""
    from ..metrics import confusion_matrix, segmentation_scores
    from .ort import ort_run, ort_session

    sessions = [ort_session(fp32), ort_session(int8)]
    n = info.num_classes
    matrices = [np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)]
    same = total = images = 0
    labelled = source.has_labels
    bar = Progress(count, "scoring INT8", unit="image") if progress else None
    for image, labels in source.held_out(count, skip):
        if bar is not None:
            bar.update(1)
        x = info.preprocessing.apply(image[None])
        ref = ort_run(sessions[0], x).argmax(axis=1)[0]
        out = ort_run(sessions[1], image[None] if io == "image" else x)
        got = out[0] if io == "image" else out.argmax(axis=1)[0]
        same += int((ref == got).sum())
        total += ref.size
        images += 1
        if labels is not None:
            for k, pred in enumerate((ref, got)):
                matrices[k] += confusion_matrix(labels, pred, n)
        else:
            labelled = False
    if bar is not None:
        bar.close()
    if images == 0:
        raise FCNError(
            f"calibration={source.spec!r} has no held-out images to score INT8 on "
            f"(all {skip} were used for calibration); add images or lower calibration_images",
            param="calibration",
        )
    ius = [segmentation_scores(m)["mean_iu"] if labelled else None for m in matrices]
    name = {"synthetic": "synthetic val", "voc": "VOC val", "sbd": "SBD val"}.get(
        source.kind, "held-out images"
    )
    return Int8Accuracy(
        f"{name}, {images} images", images, same / total, ius[0], ius[1], min_agreement, max_iu_drop
    )


@dataclass(frozen=True)
class Int8Options:
    """How the INT8 graph is made (the defaults are what the accuracy study chose)."""

    method: str = "minmax"  # calibration of the activation ranges: minmax, entropy, percentile
    target: str = "cpu"  # cpu (uint8 activations) or tensorrt (int8, zero point 0): INT8_TARGETS
    fp32_layers: tuple[str, ...] = ()  # convolutions left in FP32
    finetune_iterations: int = 0  # > 0: quantization-aware fine-tuning first (needs labels)
    finetune_lr: float = 1e-4


def quantize_model(
    path: str | os.PathLike[str],
    batches: Sequence[np.ndarray],
    options: Int8Options,
    progress: bool = True,
    overrides: dict[str, float] | None = None,
) -> tuple[Any, list[str]]:
    """The INT8 Q/DQ graph of the FP32 tensor-mode export at ``path``, and its FP32 layers.

    ``overrides`` (conv input ranges from quantization-aware fine-tuning) fix those ranges and
    put Q/DQ on conv inputs only, as the fine-tuning simulated. The upsampling that produces the
    logits (`OUTPUT_UPSAMPLING`) always stays FP32.
    """
    import onnx

    layers = conv_nodes(onnx.load(os.fspath(path), load_external_data=False))
    fp32_layers = [name for name in options.fp32_layers if name in layers]
    fp32_layers += [n for n in OUTPUT_UPSAMPLING if n in layers and n not in fp32_layers]
    overrides = {k: v for k, v in (overrides or {}).items() if k in layers and k not in fp32_layers}
    quantized = quantize_qdq(
        path,
        batches,
        options.method,
        fp32_layers,
        overrides,
        progress,
        options.target,
        conv_inputs_only=bool(overrides),
    )
    return quantized, fp32_layers


def _fake_quant_weight(axis: int) -> Any:
    """A parametrization: the weight as per-channel symmetric INT8 would hold it (STE gradients)."""
    import torch
    from torch import nn

    class FakeQuantWeight(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            dims = [d for d in range(w.dim()) if d != axis]
            scale = (w.detach().abs().amax(dim=dims) / 127.0).clamp_min(1e-12)
            zero = torch.zeros_like(scale, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, axis, -128, 127)

    return FakeQuantWeight()


def input_ranges(model: Any, batches: Sequence[np.ndarray]) -> dict[str, float]:
    """Largest |input| of every conv/deconv of ``model`` over ``batches`` (min-max calibration)."""
    import torch
    from torch import nn

    amax: dict[str, float] = {}
    convs = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]

    def hook(name: str) -> Any:
        def record(_m: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            amax[name] = max(amax.get(name, 0.0), float(inputs[0].detach().abs().max()))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in convs]
    try:
        with torch.inference_mode():
            for batch in batches:
                model.eval()(torch.from_numpy(batch))
    finally:
        for h in handles:
            h.remove()
    return amax


def quantization_aware_finetune(
    model: Any,
    source: CalibrationSource,
    batches: Sequence[np.ndarray],
    iterations: int = 200,
    lr: float = 1e-4,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Any, dict[str, float]]:
    """A copy of ``model`` fine-tuned with INT8 fake quantization, and its conv input ranges.

    The ranges are min-max over ``batches`` and stay fixed; every conv/deconv sees its input and
    weights (per-channel) rounded as symmetric INT8 would round them (straight-through
    gradients), so training moves the weights to where INT8 rounding costs least. Labelled
    training images come from ``source``'s train split. The copy holds plain FP32 weights: the
    Q/DQ export quantizes them exactly as the fake quantization did.
    """
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.utils import parametrize

    from ..data import pad_batch
    from ..metrics import IGNORE_LABEL

    if not source.has_labels:
        raise FCNError(
            f"quantization-aware fine-tuning needs labelled images; calibration={source.spec!r} "
            "has none (use synthetic, voc:ROOT or sbd:ROOT)",
            param="calibration",
        )
    net = copy.deepcopy(model).float()
    amax = input_ranges(net, batches)
    convs = [
        (n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    handles = []
    for name, module in convs:
        scale = max(amax[name], 1e-8) / 127.0

        def quant_input(_m: Any, inputs: tuple[torch.Tensor, ...], s: float = scale) -> Any:
            return (torch.fake_quantize_per_tensor_affine(inputs[0], s, 0, -128, 127),)

        handles.append(module.register_forward_pre_hook(quant_input))
        parametrize.register_parametrization(
            module, "weight", _fake_quant_weight(0 if isinstance(module, nn.Conv2d) else 1)
        )
    dataset = source._dataset("train", max(iterations * batch_size, 1))
    rng = np.random.default_rng(seed)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    info = model.info
    net.train()
    bar = Progress(iterations, "INT8 fine-tuning", unit="step") if progress else None
    for _ in range(iterations):
        picks = rng.integers(0, len(dataset), batch_size)
        images, labels = pad_batch([dataset[int(i)] for i in picks])
        x = torch.from_numpy(info.preprocessing.apply(images))
        loss = F.cross_entropy(
            net(x), torch.from_numpy(labels.astype(np.int64)), ignore_index=IGNORE_LABEL
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if bar is not None:
            bar.update(1, loss=f"{float(loss.detach()):.4f}")
    if bar is not None:
        bar.close()
    for h in handles:
        h.remove()
    for _, module in convs:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return net.eval(), amax
