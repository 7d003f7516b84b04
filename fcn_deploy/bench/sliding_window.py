"""The paper's dense-evaluation claim, measured: one convolutional pass against a sliding window.

A VGG16 classifier with fully connected layers scores one 224×224 crop per call; to score every
crop of a larger image at stride 32 it runs once per window. Convolutionalized (fc6 as a 7×7
conv, fc7/fc8 as 1×1), the same weights score all those windows in one pass, sharing the trunk's
work between overlapping windows. The two are not bit-equal on a larger image (inside a crop the
padded convolutions see zeros where the whole image has neighbours), so this reports how close
they are — correlation of the score maps, top-1 agreement per window — next to the speedup. On a
single 224×224 image they compute the same function and must agree to float tolerance.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .._progress import Progress
from ..errors import FCNError
from ..meta import Preprocessing
from ..models import FCVGG16, ConvVGG16, convolutionalize
from ..models.vgg import INPUT_SIZE
from .flops import flops_per_image
from .machine import ieee_fp32
from .results import SlidingWindowRow
from .scenarios import BenchConfig, random_images
from .timing import measure

__all__ = ["STRIDE", "WINDOW", "dense_vs_windows", "run_sliding_window"]

WINDOW = INPUT_SIZE  # the classifier's input size
STRIDE = 32  # VGG16's output stride: one score per 32 pixels of shift
EQUAL_TOL = 1e-4  # relative to the largest score: float reassociation, nothing more


def _windows(x: torch.Tensor) -> torch.Tensor:
    """Every 224×224 crop at stride 32, row-major: ``N×3×H×W`` → ``(N·rows·cols)×3×224×224``."""
    crops = x.unfold(2, WINDOW, STRIDE).unfold(3, WINDOW, STRIDE)  # N×3×rows×cols×224×224
    return crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, WINDOW, WINDOW).contiguous()


def _check_size(h: int, w: int) -> None:
    if h < WINDOW or w < WINDOW or (h - WINDOW) % STRIDE or (w - WINDOW) % STRIDE:
        raise FCNError(
            f"sliding-window size {h}x{w} must be 224 + 32·k on each side (224x224, 256x256, "
            "480x640, …) so the windows tile it exactly"
        )


@ieee_fp32()  # fc6 as a cuDNN convolution and as a Linear: both true FP32
def run_sliding_window(
    cfg: BenchConfig, device: torch.device, width: float = 1.0, chunk: int = 16
) -> list[SlidingWindowRow]:
    """For each size: the conv net in one pass vs the FC net on every window, timed and compared."""
    for h, w in cfg.sizes:
        _check_size(h, w)
    torch.manual_seed(cfg.seed)
    fc_net = FCVGG16(width=width).eval().to(device)
    conv_net = convolutionalize({k: v.cpu() for k, v in fc_net.state_dict().items()}).to(device)
    pre = Preprocessing.torchvision()
    rows = []
    with (
        Progress(len(cfg.sizes), "fcn-bench sliding-window", unit="size") as progress,
        torch.inference_mode(),
    ):
        for i, (h, w) in enumerate(cfg.sizes):
            x = torch.from_numpy(pre.apply(random_images(1, h, w, cfg.seed + i))).to(device)
            rows.append(dense_vs_windows(fc_net, conv_net, x, cfg.warmup, cfg.iters, chunk))
            progress.update(1, size=f"{h}x{w}")
    return rows


@torch.inference_mode()
def dense_vs_windows(
    fc_net: nn.Module,
    conv_net: ConvVGG16,
    x: torch.Tensor,
    warmup: int = 1,
    iters: int = 3,
    chunk: int = 16,
) -> SlidingWindowRow:
    """One ``1×3×H×W`` input (H, W = 224 + 32·k): the conv net's single pass against the FC net on
    every 224×224 window at stride 32, timed (median ms) and compared score by score."""
    _, _, h, w = x.shape
    _check_size(h, w)
    device = x.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    crops = _windows(x)

    def fc_all() -> torch.Tensor:
        return torch.cat([fc_net(c) for c in crops.split(chunk)])

    conv_t = measure(functools.partial(conv_net, x), sync, warmup=warmup, iters=iters)
    fc_t = measure(fc_all, sync, warmup=warmup, iters=iters)
    dense = conv_net(x)[0].flatten(1).T.cpu().double()  # windows×classes, row-major like crops
    per_window = fc_all().cpu().double()
    return _compare(
        h,
        w,
        dense,
        per_window,
        conv_t.percentile(50),
        fc_t.percentile(50),
        flops_per_image(conv_net.info, h, w),
        len(crops) * flops_per_image(conv_net.info, WINDOW, WINDOW),
    )


def _compare(
    h: int,
    w: int,
    dense: torch.Tensor,
    per_window: torch.Tensor,
    conv_ms: float,
    fc_ms: float,
    conv_flops: int,
    fc_flops: int,
) -> SlidingWindowRow:
    diff = (dense - per_window).abs().max().item()
    scale = per_window.abs().max().item()
    corr = float(np.corrcoef(dense.flatten().numpy(), per_window.flatten().numpy())[0, 1])
    return SlidingWindowRow(
        height=h,
        width=w,
        windows=int(per_window.shape[0]),
        conv_ms=conv_ms,
        fc_windows_ms=fc_ms,
        speedup=fc_ms / conv_ms,
        conv_gflops=conv_flops / 1e9,
        fc_windows_gflops=fc_flops / 1e9,
        score_correlation=corr,
        top1_agreement=float((dense.argmax(1) == per_window.argmax(1)).double().mean()),
        max_abs_diff=diff,
        max_abs_score=scale,
        equal=bool(diff <= EQUAL_TOL * max(scale, 1.0)) if per_window.shape[0] == 1 else None,
    )
