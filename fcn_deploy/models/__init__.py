"""The nets: VGG16 FCN-32s/16s/8s/8s at-once and the convolutionalized VGG16 classifier."""

from __future__ import annotations

from .fcn import FCN, FCN8s, FCN8sAtOnce, FCN16s, FCN32s, bilinear_kernel
from .vgg import FCVGG16, ConvVGG16, StateDict, WeightsSource, convolutionalize, width_of

__all__ = [
    "FCN",
    "FCVGG16",
    "ConvVGG16",
    "FCN8s",
    "FCN8sAtOnce",
    "FCN16s",
    "FCN32s",
    "Net",
    "StateDict",
    "WeightsSource",
    "bilinear_kernel",
    "convolutionalize",
    "create_model",
    "width_of",
]

Net = FCN | ConvVGG16  # every net this package builds; each has ``info: ModelInfo``

_CLASSES: dict[str, type[FCN] | type[ConvVGG16]] = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn8s-atonce": FCN8sAtOnce,
    "vgg16": ConvVGG16,
}


def create_model(variant: str, num_classes: int = 21, width: float = 1.0) -> Net:
    """A freshly initialized net by variant name.

    Variants: ``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s-atonce``, ``vgg16``.
    """
    if variant not in _CLASSES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(_CLASSES)}")
    return _CLASSES[variant](num_classes=num_classes, width=width)
