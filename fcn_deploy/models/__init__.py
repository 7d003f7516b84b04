"""The nets: VGG16 FCN-32s/16s/8s/8s at-once and the convolutionalized VGG16 classifier."""

from __future__ import annotations

from torch import nn

from .fcn import FCN, FCN8s, FCN8sAtOnce, FCN16s, FCN32s, bilinear_kernel
from .vgg import ConvVGG16, convolutionalize

__all__ = [
    "FCN",
    "ConvVGG16",
    "FCN8s",
    "FCN8sAtOnce",
    "FCN16s",
    "FCN32s",
    "bilinear_kernel",
    "convolutionalize",
    "create_model",
]

_CLASSES: dict[str, type[nn.Module]] = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn8s-atonce": FCN8sAtOnce,
    "vgg16": ConvVGG16,
}


def create_model(variant: str, num_classes: int = 21, width: float = 1.0) -> nn.Module:
    """A freshly initialized net by variant name (``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s-atonce``, ``vgg16``)."""
    if variant not in _CLASSES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(_CLASSES)}")
    return _CLASSES[variant](num_classes=num_classes, width=width)
