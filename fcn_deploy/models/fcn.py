"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once: the reference Caffe nets, one definition.

Layer names are the Caffe ones and thus the state-dict keys, so the PyTorch port's checkpoints
load with ``strict=True`` and the forward below reads like the prototxt:

    VGG16 trunk (conv1_1 pad 100, ceil-mode pools) → fc6 7×7 → fc7 1×1 → score_fr 1×1
    32s: upscore ×32                                                     → crop 19
    16s: upscore2 ×2 + crop(score_pool4, 5)              → upscore16 ×16 → crop 27
     8s: upscore2 ×2 + crop(score_pool4, 5) → upscore_pool4 ×2
                     + crop(score_pool3, 9)              → upscore8 ×8   → crop 31

Why pad 100: without it an input under 192 pixels would shrink to nothing before fc6's 7×7
kernel; with it every input size from 1×1 up works, and the crops below restore the input's H×W.

Where the offsets come from: Caffe's ``coord_map`` gives every map an affine relation to the
input, ``y_map = scale · y_input + shift`` (conv/pool: scale 1/s, shift (pad − (k−1)/2)/s;
deconv: scale s, shift (k−1)/2 − pad). Composed from the input to ``upscore`` (FCN-32s) the map is
``y_input + 19``: conv1_1 adds 99, the five pools and fc6 give (y+99)/32 − 3.484375, and the
k64 s32 deconv multiplies by 32 and adds 31.5. The same composition gives 27 (FCN-16s), 31
(FCN-8s) and, relative to upscore2 and upscore_pool4, 5 for pool4 and 9 for pool3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..meta import ModelInfo, Preprocessing
from .vgg import (
    FC6_KERNEL,
    FC_CHANNELS,
    VGG16Trunk,
    WeightsSource,
    as_state_dict,
    scaled,
    torchvision_vgg16_to_caffe,
    width_of,
)

__all__ = [
    "CROP_8S",
    "CROP_16S",
    "CROP_32S",
    "CROP_POOL3",
    "CROP_POOL4",
    "FCN",
    "FCN8s",
    "FCN8sAtOnce",
    "FCN16s",
    "FCN32s",
    "bilinear_kernel",
]

FIRST_PADDING = 100
CROP_32S = 19  # upscore (k64 s32) → input
CROP_16S = 27  # upscore16 (k32 s16) → input
CROP_8S = 31  # upscore8 (k16 s8) → input
CROP_POOL4 = 5  # score_pool4 → upscore2
CROP_POOL3 = 9  # score_pool3 → upscore_pool4
AT_ONCE_POOL4_SCALE = 0.01  # at-once training: keep the finer, larger-valued pools from dominating
AT_ONCE_POOL3_SCALE = 0.0001


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """A ``C×C×k×k`` transposed-conv weight that upsamples bilinearly, channel by channel."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=torch.float64)
    weight[range(channels), range(channels)] = torch.outer(taps, taps)
    return weight.float()


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """Rows/columns ``offset … offset+h−1`` of ``x``, where h×w is ``like``'s size (Caffe's
    Crop)."""
    h, w = like.shape[2], like.shape[3]
    return x[:, :, offset : offset + h, offset : offset + w]


class FCN(VGG16Trunk):
    """A fully convolutional VGG16 for semantic segmentation.

    Args:
        num_classes: output classes (21 for PASCAL VOC: background + 20).
        width: multiplies every channel count (0.125 for small test/demo models; 1.0 is VGG16).
        output_stride: 32, 16 or 8 — how many skips (pool4, pool3) are fused.
        at_once: FCN-8s trained in one stage, with pool4/pool3 scaled by 0.01/0.0001.
        learn_upsampling: make the bilinear transposed convs trainable (the reference freezes them:
            learning them made "no significant difference").
    """

    def __init__(
        self,
        num_classes: int = 21,
        width: float = 1.0,
        output_stride: int = 32,
        at_once: bool = False,
        learn_upsampling: bool = False,
    ) -> None:
        super().__init__(width, first_padding=FIRST_PADDING)
        if output_stride not in (32, 16, 8):
            raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride}")
        if at_once and output_stride != 8:
            raise ValueError("at_once applies to FCN-8s only")
        self.output_stride = output_stride
        self.at_once = at_once
        self.num_classes = num_classes
        self.width = width
        variant = "fcn8s-atonce" if at_once else f"fcn{output_stride}s"
        self.info = ModelInfo(variant, num_classes, width, preprocessing=Preprocessing.caffe())

        n, fc = num_classes, scaled(FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(self.pool5_channels, fc, FC6_KERNEL)
        self.drop6 = nn.Dropout(0.5)  # element-wise, as Caffe's (the port uses Dropout2d)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.drop7 = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(fc, n, 1)
        if output_stride == 32:
            self.upscore = nn.ConvTranspose2d(n, n, 64, stride=32, bias=False)
        else:
            self.upscore2 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
            self.score_pool4 = nn.Conv2d(self.pool4_channels, n, 1)
        if output_stride == 16:
            self.upscore16 = nn.ConvTranspose2d(n, n, 32, stride=16, bias=False)
        if output_stride == 8:
            self.upscore_pool4 = nn.ConvTranspose2d(n, n, 4, stride=2, bias=False)
            self.score_pool3 = nn.Conv2d(self.pool3_channels, n, 1)
            self.upscore8 = nn.ConvTranspose2d(n, n, 16, stride=8, bias=False)
        self.reset_parameters(learn_upsampling)

    def reset_parameters(self, learn_upsampling: bool = False) -> None:
        """Trunk and fc: He init (for training from scratch); score layers: zero; upsampling:
        bilinear."""
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                module.weight.data.copy_(bilinear_kernel(module.in_channels, module.kernel_size[0]))
                module.weight.requires_grad_(learn_upsampling)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]  # every Conv2d here has one
        for module in self.score_layers():
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)  # type: ignore[arg-type]

    def score_layers(self) -> list[nn.Conv2d]:
        """score_fr, score_pool4, score_pool3 (those this variant has)."""
        names = ("score_fr", "score_pool4", "score_pool3")
        return [getattr(self, name) for name in names if hasattr(self, name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3, pool4, pool5 = self.trunk(x)  # 1/8, 1/16, 1/32 (of the input padded by 100)
        h = self.drop6(F.relu(self.fc6(pool5)))  # 7×7 conv: 6 fewer rows/cols than pool5
        h = self.drop7(F.relu(self.fc7(h)))
        h = self.score_fr(h)  # N×n×h×w, 1/32
        if self.output_stride == 32:
            return _crop(self.upscore(h), CROP_32S, x)  # N×n×H×W

        h = self.upscore2(h)  # 1/16
        if self.at_once:
            pool4 = pool4 * AT_ONCE_POOL4_SCALE
        h = h + _crop(self.score_pool4(pool4), CROP_POOL4, h)
        if self.output_stride == 16:
            return _crop(self.upscore16(h), CROP_16S, x)

        h = self.upscore_pool4(h)  # 1/8
        if self.at_once:
            pool3 = pool3 * AT_ONCE_POOL3_SCALE
        h = h + _crop(self.score_pool3(pool3), CROP_POOL3, h)
        return _crop(self.upscore8(h), CROP_8S, x)  # N×n×H×W

    @classmethod
    def from_vgg16(cls, vgg16: WeightsSource, num_classes: int = 21, **kwargs: Any) -> FCN:
        """An FCN initialized from a VGG16 classifier: torchvision's (its module or state dict)
        or Caffe's (a state dict with Caffe names, fc6/fc7 already convolutions, as
        ``read_caffemodel`` gives).

        conv1_1 … fc7 come from the classifier, convolutionalized (fc6 as 7×7, fc7 as 1×1); fc8 is
        dropped (its 1000 ImageNet classes are not ours) and the score layers start at zero. The
        net keeps the classifier's kind of preprocessing: torchvision's RGB mean/std, or for Caffe
        weights BGR 0..255 minus the mean (the release's, as its FCNs trained from this VGG16
        used). For a file: ``FCN32s.from_vgg16(read_state_dict("vgg16-397923af.pth"))``.
        """
        sd = as_state_dict(vgg16, "vgg16")
        caffe = "conv1_1.weight" in sd
        if not caffe:
            sd = torchvision_vgg16_to_caffe(sd)
        model = cls(num_classes=num_classes, width=width_of(sd), **kwargs)
        if not caffe:
            model.info = model.info.replace(preprocessing=Preprocessing.torchvision())
        model.copy_matching(sd, require=[k for k in sd if not k.startswith("fc8.")])
        return model

    @classmethod
    def from_fcn(cls, source: FCN | WeightsSource, **kwargs: Any) -> FCN:
        """The next stage of the staged recipe: FCN-16s from FCN-32s, FCN-8s from FCN-16s.

        Every layer the two nets share is copied and the new score layer starts at zero, so the new
        net starts from the source's class scores: its output is the source's coarse score map
        taken through the new upsampling path (×2 then ×16 instead of ×32, or ×2 then ×8 instead
        of ×16). Two bilinear steps round corners that one step keeps, so outputs are close but
        not bit-equal (labels differ only along class boundaries). Classes, palette and
        preprocessing carry over.
        """
        if isinstance(source, FCN):
            sd, info = source.state_dict(), source.info
            num_classes, width = source.num_classes, source.width
        else:
            sd, info = as_state_dict(source, "source"), None
            num_classes, width = sd["score_fr.weight"].shape[0], width_of(sd)
        model = cls(num_classes=num_classes, width=width, **kwargs)
        if info is not None:
            model.info = model.info.replace(
                class_names=info.class_names, palette=info.palette, preprocessing=info.preprocessing
            )
        shared = [k for k in model.state_dict() if k in sd and not k.startswith("upscore")]
        model.copy_matching(sd, require=shared)
        return model

    def copy_matching(self, sd: dict[str, torch.Tensor], require: list[str]) -> None:
        """Copy ``sd[k]`` into this net for every k in ``require``, checking names and shapes."""
        own = self.state_dict()
        for key in require:
            if key not in own:
                raise KeyError(f"{key} is not a layer of {self.info.variant}")
            if own[key].shape != sd[key].shape:
                raise ValueError(
                    f"{key}: shape {tuple(sd[key].shape)} does not fit {tuple(own[key].shape)}"
                )
            own[key].copy_(sd[key])


class FCN32s(FCN):
    """FCN-32s: score_fr upsampled ×32 in one step."""

    def __init__(
        self, num_classes: int = 21, width: float = 1.0, learn_upsampling: bool = False
    ) -> None:
        super().__init__(num_classes, width, 32, False, learn_upsampling)


class FCN16s(FCN):
    """FCN-16s: FCN-32s plus the pool4 skip."""

    def __init__(
        self, num_classes: int = 21, width: float = 1.0, learn_upsampling: bool = False
    ) -> None:
        super().__init__(num_classes, width, 16, False, learn_upsampling)


class FCN8s(FCN):
    """FCN-8s: FCN-16s plus the pool3 skip."""

    def __init__(
        self, num_classes: int = 21, width: float = 1.0, learn_upsampling: bool = False
    ) -> None:
        super().__init__(num_classes, width, 8, False, learn_upsampling)


class FCN8sAtOnce(FCN):
    """FCN-8s trained in one stage, pool4 and pool3 scaled by 0.01 and 0.0001 before scoring."""

    def __init__(
        self, num_classes: int = 21, width: float = 1.0, learn_upsampling: bool = False
    ) -> None:
        super().__init__(num_classes, width, 8, True, learn_upsampling)
