"""The module that gets exported: the net in its precision, built at the PyTorch level.

FP16 is done by a wrapper module rather than by rewriting the ONNX graph afterwards, so the graph
is consistently typed by construction: a half copy of the net between one Cast in and one Cast out
(never an FP32 tensor fed to an FP16 op, which TensorRT's strongly typed parser rejects). Where
the FP32 net's activations, measured on image-like probes, come near FP16's range, the values stay
FP32 from the first layer that leaves the range to the layer that brings them back (`Fp16Plan`):
those layers compute in FP32 with the FP32 weights, with explicit casts around them, and every
layer that computes in FP16 casts an FP32 input back (a ReLU between them can bring FP32 values
back into range). Image I/O is added afterwards, in ONNX (see ``image_io.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..meta import ModelInfo

__all__ = [
    "FP16_MAX",
    "FP16_SAFE_PEAK",
    "DeployModule",
    "Float32Island",
    "Fp16Plan",
    "LayerPeaks",
    "activation_peaks",
    "copy_module",
    "group_diagonal_deconvs",
    "probe_activation_peaks",
    "probe_fp16_plan",
    "synthetic_images",
]

FP16_MAX = 65504.0
# A layer whose peak |activation| on the probe images exceeds this stays in FP32: 8× headroom for
# real photos with more contrast than the probes.
FP16_SAFE_PEAK = FP16_MAX / 8


class LayerPeaks(NamedTuple):
    """Peak |input| and |output| of one layer of the FP32 net on the probes."""

    input: float
    output: float


@dataclass(frozen=True)
class Fp16Plan:
    """Which layers of a half net compute in FP32, and which of them hand FP32 on.

    Casting a layer's output back to FP16 cannot hold a value past 65504 (it becomes inf, and so
    does everything after it), and computing that layer in FP32 alone buys nothing (cuDNN
    accumulates FP16 convolutions in FP32 anyway). So a layer whose input or output passes
    ``limit`` computes in FP32, and one whose output passes it keeps its output FP32: values stay
    FP32 until a layer brings them back inside the range. The one decision the FP16 export, eager
    FP16 (`TorchRunner`) and mixed-precision training share.

    Consistent by construction: every layer sees its input in its own precision. A layer in
    ``fp32_layers`` casts its input to FP32; any other layer casts an FP32 input back to FP16
    (`DeployModule`), which is safe because its own input peak, measured on the FP32 net, is
    within ``limit``: an FP32 output can reach such a layer through a ReLU that zeroes the large
    (negative) values, e.g. fc7 with a bias far below zero, whose consumer score_fr sees only
    small values.
    """

    fp32_layers: tuple[str, ...] = ()  # compute in FP32 (input or output past the limit)
    fp32_outputs: tuple[str, ...] = ()  # of those, the ones whose output stays FP32
    peak: float = 0.0  # largest |activation| measured

    @classmethod
    def from_peaks(cls, peaks: Mapping[str, LayerPeaks], limit: float = FP16_SAFE_PEAK) -> Fp16Plan:
        return cls(
            tuple(n for n, p in peaks.items() if max(p) > limit),
            tuple(n for n, p in peaks.items() if p.output > limit),
            max((max(p) for p in peaks.values()), default=0.0),
        )


class Float32Island(nn.Module):
    """One layer of a half net computed in FP32 from its FP32 weights (explicit casts around it).

    ``fp32_output``: hand the output on in FP32 (it is past FP16's range); else cast it back.
    """

    def __init__(self, layer: nn.Module, fp32_output: bool = False) -> None:
        super().__init__()
        self.layer = layer.float()
        self.fp32_output = fp32_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x.float())
        return y if self.fp32_output else y.half()


Args = tuple[torch.Tensor, ...]


def _half_input(module: nn.Module, args: Args) -> Args | None:
    """Forward pre-hook of a layer computing in FP16: an FP32 input (a `Float32Island`'s output,
    through a ReLU, a skip sum or a crop) is cast back explicitly; an FP16 one is left alone, so
    a net without islands traces to the same graph as without the hook."""
    x = args[0]
    return (x.half(), *args[1:]) if x.dtype == torch.float32 else None


def group_diagonal_deconvs(net: nn.Module) -> list[str]:
    """Make, in place, every transposed conv that maps channel c only to channel c depthwise.

    FCN's upsampling layers are ``C×C×k×k`` bilinear kernels that are zero off the diagonal
    (frozen in the reference nets): as written, upscore8 multiplies 21 channels by 21 kernels
    and throws 20 of every 21 products away. The depthwise form (``groups=C``, weight
    ``C×1×k×k``) gives the same output from 1/C of the arithmetic, which matters once the rest
    of the net runs in INT8. A layer with any off-diagonal weight (trained upsampling) is kept.
    Returns the names of the layers changed.
    """
    changed = []
    for name, m in list(net.named_modules()):
        if not isinstance(m, nn.ConvTranspose2d) or m.groups != 1:
            continue
        c = m.in_channels
        w = m.weight.detach()
        if c < 2 or m.out_channels != c or bool(w[~torch.eye(c, dtype=torch.bool)].any()):
            continue
        depthwise = nn.ConvTranspose2d(
            c, c, _hw(m.kernel_size), _hw(m.stride), _hw(m.padding), _hw(m.output_padding),
            groups=c, bias=m.bias is not None, dilation=_hw(m.dilation),
        ).to(device=w.device, dtype=w.dtype)  # fmt: skip
        with torch.no_grad():
            depthwise.weight.copy_(w.diagonal(dim1=0, dim2=1).permute(2, 0, 1).unsqueeze(1))
            if m.bias is not None and depthwise.bias is not None:
                depthwise.bias.copy_(m.bias)
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, depthwise)
        changed.append(name)
    return changed


def copy_module(net: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``net``'s modules that shares its weights (``dtype`` None), or holds ``dtype``
    copies of its floating-point weights: the copy's changes of structure or precision never
    reach ``net``, and FP32 weights are not duplicated for nothing."""
    memo: dict[int, Any] = {}
    for t in (*net.parameters(), *net.buffers()):
        if dtype is None or not t.is_floating_point():
            memo[id(t)] = t
        elif isinstance(t, nn.Parameter):
            memo[id(t)] = nn.Parameter(t.detach().to(dtype), requires_grad=t.requires_grad)
        else:
            memo[id(t)] = t.to(dtype)
    return copy.deepcopy(net, memo)


def _hw(pair: tuple[int, ...] | str) -> tuple[int, int]:
    return (int(pair[0]), int(pair[1]))


class DeployModule(nn.Module):
    """The net in ``precision`` with float32 I/O (float16 with ``fp16_io``): float N×3×H×W →
    logits."""

    def __init__(
        self,
        model: nn.Module,
        precision: str = "fp32",
        fp16_io: bool = False,
        plan: Fp16Plan = Fp16Plan(),
    ) -> None:
        super().__init__()
        self.fp16_io = fp16_io
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        net = copy_module(model).eval()  # FP32: the caller's weights, shared (a full net is 0.5 GB)
        group_diagonal_deconvs(net)
        if precision == "fp16":
            fp32 = {name: net.get_submodule(name) for name in plan.fp32_layers}
            net = copy_module(net, torch.float16)
            for name, layer in fp32.items():  # the FP32 weights, never rounded to FP16 first
                parent, _, leaf = name.rpartition(".")
                owner = net.get_submodule(parent) if parent else net
                setattr(owner, leaf, Float32Island(layer, name in plan.fp32_outputs))
            if plan.fp32_outputs:  # FP32 values flow on: every FP16 layer casts them back
                for name, layer in _scored_layers(net):
                    if name not in fp32 and not name.startswith(tuple(f"{n}." for n in fp32)):
                        layer.register_forward_pre_hook(_half_input)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x.to(self.dtype))  # N×C×H×W; FP32 where the last layer is an island
        return logits.to(torch.float16 if self.fp16_io else torch.float32)


def _scored_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]


@torch.inference_mode()
def activation_peaks(model: nn.Module, batch: torch.Tensor) -> dict[str, LayerPeaks]:
    """Peak |input| and |output| of every conv/deconv of the FP32 ``model`` on ``batch``."""
    peaks: dict[str, LayerPeaks] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            seen = LayerPeaks(float(args[0].abs().max()), float(out.detach().abs().max()))
            old = peaks.get(name, LayerPeaks(0.0, 0.0))
            peaks[name] = LayerPeaks(max(old.input, seen.input), max(old.output, seen.output))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _scored_layers(model)]
    try:
        model.eval()(batch)
    finally:
        for h in handles:
            h.remove()
    return peaks


PROBE_SHAPE = (3, 160, 224)  # FP16 range probe: N, H, W of synthetic images


def probe_activation_peaks(model: nn.Module) -> dict[str, LayerPeaks]:
    """Peak |input| and |output| of every conv/deconv of the FP32 ``model`` on seeded image-like
    probes, always on the CPU in IEEE FP32 (a copy when the model lives elsewhere): one plan,
    measured one way, whichever device later runs it. On a GPU, cuDNN's TF32 convolutions would
    give other peaks, and a layer near the limit could land on the other side of it."""
    info: ModelInfo = model.info  # type: ignore[assignment]
    probe = info.preprocessing.apply(synthetic_images(*PROBE_SHAPE, np.random.default_rng(0)))
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    net = model if on_cpu else copy.deepcopy(model).cpu()
    training = model.training
    try:
        return activation_peaks(net, torch.from_numpy(probe))
    finally:
        model.train(training)  # activation_peaks switches to eval mode


def probe_fp16_plan(model: nn.Module) -> Fp16Plan:
    """The `Fp16Plan` of the FP32 ``model``, measured on the probes (on the CPU, see
    `probe_activation_peaks`)."""
    return Fp16Plan.from_peaks(probe_activation_peaks(model))


def synthetic_images(
    n: int, height: int, width: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """uint8 N×H×W×3 BGR images that look like photos to a conv net, not like white noise.

    Smooth colour gradients, a few filled rectangles and discs with hard edges, mild sensor noise
    and, in one image of each batch, saturated black/white regions (the extremes of the 0..255
    range, where Caffe-style inputs are largest).
    """
    rng = rng or np.random.default_rng()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        img = np.empty((height, width, 3), np.float32)
        for c in range(3):
            a, b = rng.uniform(-1, 1, 2) * 255 / max(height, width, 1)
            img[..., c] = rng.uniform(30, 220) + a * yy + b * xx
        for _ in range(int(rng.integers(2, 6))):
            color = rng.uniform(0, 255, 3)
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = rng.uniform(0.05, 0.4) * height + 1, rng.uniform(0.05, 0.4) * width + 1
            if rng.random() < 0.5:
                mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
            else:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            img[mask] = color
        if k == 0 and n > 1:
            img[: height // 2, : width // 3] = 255.0
            img[height // 2 :, width // 3 :] = 0.0
        img += rng.normal(0, 4, img.shape).astype(np.float32)
        out[k] = np.clip(img, 0, 255).round().astype(np.uint8)
    return out
