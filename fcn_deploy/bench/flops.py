"""FLOPs per image from the architecture: the yardstick that turns a latency into a rate.

The net is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and run once
with hooks on every convolution and transposed convolution, so the count follows the real forward
at any variant, width and input size, crops and ceil-mode pools included. One multiply-add is two
FLOPs; ReLU, pooling, the skip additions and crops are left out (well under 0.1 % here), as MLPerf
and the papers do. Transposed convolutions count every input pixel's full k×k scatter, cropped
parts included: that is the work a kernel does.

FCN-8s at width 1: 125.7 GFLOPs at 224×224, 363.1 at 500×500, 670.0 at 512×1024, 2205.7 at
1024×2048.
"""

from __future__ import annotations

import torch
from torch import nn

from ..meta import ModelInfo
from ..models import create_model

__all__ = ["conv_flops", "flops_per_image", "model_flops"]


def conv_flops(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one Conv2d (``y`` its output) or ConvTranspose2d (``x`` its input) call."""
    kh, kw = module.kernel_size  # type: ignore[misc]
    groups = int(module.groups)  # type: ignore[arg-type]
    if isinstance(module, nn.ConvTranspose2d):
        # every input value is multiplied into a k×k patch of each of the out/groups channels
        macs = x.numel() * (module.out_channels // groups) * kh * kw
    else:
        # every output value is a dot product over in/groups channels × k×k taps
        macs = y.numel() * (module.in_channels // groups) * kh * kw  # type: ignore[operator]
    return 2 * macs


def model_flops(model: nn.Module, batch: int, height: int, width: int) -> int:
    """FLOPs of one forward of ``model`` (on the meta device) on a ``batch×3×height×width``
    input."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += conv_flops(module, inputs[0], output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            model(torch.empty(batch, 3, height, width, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total


def flops_per_image(info: ModelInfo, height: int, width: int) -> int:
    """FLOPs per image of the net ``info`` describes (variant, classes, width) at
    ``height×width``."""
    with torch.device("meta"):
        model = create_model(info.variant, num_classes=info.num_classes, width=info.width)
    return model_flops(model.eval(), 1, height, width)
