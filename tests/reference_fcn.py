"""An independent, deliberately plain implementation of the four reference nets for cross-checks.

Written the PyTorch-port way (every layer spelled out, crops as literal slices) and sharing no
code with fcn_deploy.models, so agreement between the two means something.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceFCN(nn.Module):
    def __init__(self, stride: int, at_once: bool = False, n_class: int = 21, width: float = 1.0):
        super().__init__()
        c = lambda k: max(1, round(k * width))  # noqa: E731
        self.stride, self.at_once = stride, at_once
        self.conv1_1 = nn.Conv2d(3, c(64), 3, padding=100)
        self.conv1_2 = nn.Conv2d(c(64), c(64), 3, padding=1)
        self.conv2_1 = nn.Conv2d(c(64), c(128), 3, padding=1)
        self.conv2_2 = nn.Conv2d(c(128), c(128), 3, padding=1)
        self.conv3_1 = nn.Conv2d(c(128), c(256), 3, padding=1)
        self.conv3_2 = nn.Conv2d(c(256), c(256), 3, padding=1)
        self.conv3_3 = nn.Conv2d(c(256), c(256), 3, padding=1)
        self.conv4_1 = nn.Conv2d(c(256), c(512), 3, padding=1)
        self.conv4_2 = nn.Conv2d(c(512), c(512), 3, padding=1)
        self.conv4_3 = nn.Conv2d(c(512), c(512), 3, padding=1)
        self.conv5_1 = nn.Conv2d(c(512), c(512), 3, padding=1)
        self.conv5_2 = nn.Conv2d(c(512), c(512), 3, padding=1)
        self.conv5_3 = nn.Conv2d(c(512), c(512), 3, padding=1)
        self.fc6 = nn.Conv2d(c(512), c(4096), 7)
        self.fc7 = nn.Conv2d(c(4096), c(4096), 1)
        self.score_fr = nn.Conv2d(c(4096), n_class, 1)
        if stride == 32:
            self.upscore = nn.ConvTranspose2d(n_class, n_class, 64, stride=32, bias=False)
        else:
            self.score_pool4 = nn.Conv2d(c(512), n_class, 1)
            self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        if stride == 16:
            self.upscore16 = nn.ConvTranspose2d(n_class, n_class, 32, stride=16, bias=False)
        if stride == 8:
            self.score_pool3 = nn.Conv2d(c(256), n_class, 1)
            self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[2], x.shape[3]
        r = F.relu
        pool = lambda t: F.max_pool2d(t, 2, stride=2, ceil_mode=True)  # noqa: E731
        h = pool(r(self.conv1_2(r(self.conv1_1(x)))))
        h = pool(r(self.conv2_2(r(self.conv2_1(h)))))
        h = pool(r(self.conv3_3(r(self.conv3_2(r(self.conv3_1(h)))))))
        p3 = h
        h = pool(r(self.conv4_3(r(self.conv4_2(r(self.conv4_1(h)))))))
        p4 = h
        h = pool(r(self.conv5_3(r(self.conv5_2(r(self.conv5_1(h)))))))
        h = self.score_fr(r(self.fc7(r(self.fc6(h)))))
        if self.stride == 32:
            return self.upscore(h)[:, :, 19 : 19 + H, 19 : 19 + W]
        u2 = self.upscore2(h)
        s4 = self.score_pool4(p4 * 0.01 if self.at_once else p4)
        h = u2 + s4[:, :, 5 : 5 + u2.shape[2], 5 : 5 + u2.shape[3]]
        if self.stride == 16:
            return self.upscore16(h)[:, :, 27 : 27 + H, 27 : 27 + W]
        u4 = self.upscore_pool4(h)
        s3 = self.score_pool3(p3 * 0.0001 if self.at_once else p3)
        h = u4 + s3[:, :, 9 : 9 + u4.shape[2], 9 : 9 + u4.shape[3]]
        return self.upscore8(h)[:, :, 31 : 31 + H, 31 : 31 + W]


REFERENCE_ARGS = {
    "fcn32s": dict(stride=32),
    "fcn16s": dict(stride=16),
    "fcn8s": dict(stride=8),
    "fcn8s-atonce": dict(stride=8, at_once=True),
}


class TorchvisionVGG16(nn.Module):
    """torchvision's VGG16 layout (features.N, avgpool, classifier.0/3/6), written out here."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        c = lambda k: max(1, round(k * width))  # noqa: E731
        layers: list[nn.Module] = []
        cin = 3
        for v in [
            64,
            64,
            "M",
            128,
            128,
            "M",
            256,
            256,
            256,
            "M",
            512,
            512,
            512,
            "M",
            512,
            512,
            512,
            "M",
        ]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, c(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = c(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, c(4096)), nn.ReLU(True), nn.Dropout(),
            nn.Linear(c(4096), c(4096)), nn.ReLU(True), nn.Dropout(),
            nn.Linear(c(4096), num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
