"""VGG16, described once, and the paper's central move: its classifier as convolutions.

``convolutionalize`` turns torchvision's VGG16 (``features.N``, ``classifier.0/3/6``) into a net
whose fully connected layers are convolutions covering the whole input map (fc6: 7×7, fc7 and
fc8: 1×1). On a 224×224 image its 1×1 output is the classifier's logits; on a larger image it is
a map of class scores, one per 224×224 window at stride 32, computed in a single pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..meta import ModelInfo, Preprocessing

__all__ = [
    "FCVGG16",
    "INPUT_SIZE",
    "VGG16_BLOCKS",
    "ConvVGG16",
    "StateDict",
    "VGG16Trunk",
    "convolutionalize",
    "torchvision_to_caffe_names",
    "width_of",
]

# The trunk as data: (layer names, output channels at width 1.0) per block; a 2×2/2 max pool
# closes every block. Strides after each block: 1/2, 1/4, 1/8 (pool3), 1/16 (pool4), 1/32 (pool5).
VGG16_BLOCKS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("conv1_1", "conv1_2"), 64),
    (("conv2_1", "conv2_2"), 128),
    (("conv3_1", "conv3_2", "conv3_3"), 256),
    (("conv4_1", "conv4_2", "conv4_3"), 512),
    (("conv5_1", "conv5_2", "conv5_3"), 512),
)
FC_CHANNELS = 4096
FC6_KERNEL = 7  # pool5 of a 224×224 image is 7×7: fc6 sees exactly that window
INPUT_SIZE = 224  # the classifier's input (height = width): 7×7 at pool5, stride 32

StateDict = Mapping[str, torch.Tensor]
WeightsSource = StateDict | nn.Module  # model files take weights, never paths


def as_state_dict(source: WeightsSource, parameter: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict or module; a path gets a pointer to the loader instead."""
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return dict(source)
    raise TypeError(
        f"{parameter} must be a state dict or nn.Module, got {type(source).__name__}; "
        "read a file with fcn_deploy.checkpoint.read_state_dict(path)"
    )


def width_of(sd: StateDict) -> float:
    """The width multiplier of a net's weights: conv1_1's output channels over VGG16's 64."""
    return sd["conv1_1.weight"].shape[0] / VGG16_BLOCKS[0][1]


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier (never below 1)."""
    return max(1, round(channels * width))


def conv_names() -> list[str]:
    return [name for names, _ in VGG16_BLOCKS for name in names]


def torchvision_to_caffe_names() -> dict[str, str]:
    """torchvision's ``features.N`` / ``classifier.N`` prefixes → Caffe layer names.

    Convs sit at features.0, 2, 5, 7, 10, …: each is followed by a ReLU, and each block by a pool,
    which take an index but hold no weights.
    """
    table, index = {}, 0
    for names, _ in VGG16_BLOCKS:
        for name in names:
            table[f"features.{index}"] = name
            index += 2  # conv, relu
        index += 1  # pool
    table.update({"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"})
    return table


class VGG16Trunk(nn.Module):
    """Base of every net here: conv1_1 … conv5_3 as direct attributes, so state-dict keys are the
    Caffe names (``conv1_1.weight``), and ``trunk()`` returning pool3, pool4 and pool5.

    ``first_padding`` is 1 for the classifier and 100 for the FCNs (see ``fcn.py``).
    """

    info: ModelInfo  # what deploying the net needs; each net below sets it

    def __init__(self, width: float = 1.0, first_padding: int = 1) -> None:
        super().__init__()
        in_channels = 3
        for names, channels in VGG16_BLOCKS:
            out_channels = scaled(channels, width)
            for name in names:
                padding = first_padding if name == "conv1_1" else 1
                self.add_module(name, nn.Conv2d(in_channels, out_channels, 3, padding=padding))
                in_channels = out_channels
        self.pool3_channels = scaled(VGG16_BLOCKS[2][1], width)
        self.pool4_channels = scaled(VGG16_BLOCKS[3][1], width)
        self.pool5_channels = in_channels

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pools = []
        h = x
        for names, _ in VGG16_BLOCKS:
            for name in names:
                h = F.relu(getattr(self, name)(h))
            # Caffe rounds pooled sizes up: ceil_mode keeps every input pixel.
            h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)
            pools.append(h)
        return pools[2], pools[3], pools[4]  # 1/8, 1/16, 1/32


class ConvVGG16(VGG16Trunk):
    """The VGG16 classifier with its fully connected layers as convolutions.

    State-dict keys are the Caffe names (``conv1_1`` … ``conv5_3``, ``fc6``, ``fc7``, ``fc8``);
    the output is ``N×1000×h×w`` with ``h = ceil(H/32) - 6`` (1×1 at 224×224).
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        # Not FCN's padding 100: these weights were trained on 224×224 crops with padding 1, and
        # keeping it makes the 224×224 output the classifier's logits exactly.
        super().__init__(width, first_padding=1)
        self.info = ModelInfo(
            "vgg16", num_classes, width, preprocessing=Preprocessing.torchvision()
        )
        fc = scaled(FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(self.pool5_channels, fc, FC6_KERNEL)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc8 = nn.Conv2d(fc, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, pool5 = self.trunk(x)  # N×512×ceil(H/32)×ceil(W/32)
        h = F.relu(self.fc6(pool5))  # N×4096×(H/32-6)×(W/32-6)
        h = F.relu(self.fc7(h))  # (dropout: identity at inference)
        return self.fc8(h)  # N×1000×h×w


class FCVGG16(nn.Module):
    """VGG16 in torchvision's layout (``features.N``, ``classifier.0/3/6``), fully connected head.

    The plain classifier: what ``fcn-pretrain`` trains, the reference the convolutionalized net is
    checked against (``fcn-bench --scenario sliding-window``); its state dict is what
    ``convolutionalize`` and ``FCN.from_vgg16`` read. Dropout is omitted: it is the identity at
    inference (and the small synthetic task trains without it).
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for names, out in VGG16_BLOCKS:
            for _ in names:
                layers += [
                    nn.Conv2d(channels, scaled(out, width), 3, padding=1),
                    nn.ReLU(inplace=True),
                ]
                channels = scaled(out, width)
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        fc = scaled(FC_CHANNELS, width)
        self.classifier = nn.Sequential(
            nn.Linear(channels * FC6_KERNEL * FC6_KERNEL, fc), nn.ReLU(inplace=True), nn.Identity(),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Identity(),
            nn.Linear(fc, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # N×512×7×7 for a 224×224 window
        return self.classifier(torch.flatten(h, 1))  # N×classes


def torchvision_vgg16_to_caffe(sd: StateDict) -> dict[str, torch.Tensor]:
    """Rename a torchvision VGG16 state dict to Caffe names and reshape fc weights to conv kernels.

    fc6 is Linear(512·7·7 → 4096) applied to ``flatten(N×512×7×7)``, so its weight viewed as
    ``4096×512×7×7`` is exactly a 7×7 convolution; fc7 and fc8 become 1×1 convolutions.
    """
    names = torchvision_to_caffe_names()
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        prefix, _, kind = key.rpartition(".")
        if prefix not in names:
            raise KeyError(key)
        name = names[prefix]
        if kind == "weight" and value.dim() == 2:
            kernel = FC6_KERNEL if name == "fc6" else 1
            value = value.reshape(value.shape[0], -1, kernel, kernel)
        out[f"{name}.{kind}"] = value
    return out


def convolutionalize(vgg16: WeightsSource) -> ConvVGG16:
    """A torchvision VGG16 classifier (its module or state dict) → ``ConvVGG16``.

    The width (0.125 … 1.0) and class count are read from the weights' shapes. For a file such as
    ``vgg16-397923af.pth``: ``convolutionalize(read_state_dict(path))`` or ``load_model(path)``.
    """
    sd = torchvision_vgg16_to_caffe(as_state_dict(vgg16, "vgg16"))
    model = ConvVGG16(num_classes=sd["fc8.weight"].shape[0], width=width_of(sd))
    model.load_state_dict(sd, strict=True)
    return model.eval()
