"""Where a run's weights start: VGG16, a previous stage's checkpoint, or scratch (``--init``)."""

from __future__ import annotations

import torch

from fcn_deploy.caffemodel import is_caffe_file, read_caffemodel
from fcn_deploy.checkpoint import load_model, read_state_dict
from fcn_deploy.data import SegmentationDataset
from fcn_deploy.errors import FCNError
from fcn_deploy.meta import Preprocessing
from fcn_deploy.models import FCN, FCN8s, FCN8sAtOnce, FCN16s, FCN32s

__all__ = ["FCN_CLASSES", "initial_model"]

FCN_CLASSES: dict[str, type[FCN]] = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn8s-atonce": FCN8sAtOnce,
}


def initial_model(
    variant: str, init: str, width: float, dataset: SegmentationDataset, seed: int
) -> FCN:
    """The net a run starts from, labelled with ``dataset``'s classes and palette.

    - ``vgg16:PATH``: the staged recipe's first step (torchvision's VGG16 ``.pth`` or the VGG
      team's Caffe ``VGG_ILSVRC_16_layers.caffemodel``; width and preprocessing come from the
      file);
    - ``checkpoint:PATH``: the next stage (FCN-16s from FCN-32s, FCN-8s from FCN-16s) via
      `FCN.from_fcn`: shared layers copied, the new skip's score layer at zero;
    - ``scratch``: He init, torchvision-style input normalization (inputs of unit scale suit a net
      without pretrained features better than Caffe's 0…255 minus mean).
    """
    if variant not in FCN_CLASSES:
        raise FCNError(f"unknown variant {variant!r}; choose one of {', '.join(FCN_CLASSES)}")
    cls, n = FCN_CLASSES[variant], dataset.num_classes
    kind, _, path = init.partition(":")
    torch.manual_seed(seed)
    if kind == "scratch" and not path:
        model = cls(num_classes=n, width=width)
        model.info = model.info.replace(preprocessing=Preprocessing.torchvision())
    elif kind == "vgg16" and path:
        vgg16 = read_caffemodel(path).state_dict if is_caffe_file(path) else read_state_dict(path)
        if "conv1_1.weight" in vgg16 and "fc8.weight" not in vgg16:
            raise FCNError(
                f"init={init!r}: {path} holds an FCN, not the VGG16 classifier; use "
                f"'checkpoint:{path}'",
                param="init",
            )
        model = cls.from_vgg16(vgg16, num_classes=n)
    elif kind == "checkpoint" and path:
        source = load_model(path)
        if not isinstance(source, FCN):
            raise FCNError(
                f"init={init!r}: {path} holds a {source.info.variant}, not an FCN; use "
                f"'vgg16:{path}'",
                param="init",
            )
        if source.num_classes != n:
            raise FCNError(
                f"init={init!r}: the checkpoint has {source.num_classes} classes but "
                f"{dataset.name} has {n}",
                param="init",
            )
        model = cls.from_fcn(source)
    else:
        raise FCNError(
            f"init={init!r}: expected vgg16:PATH, checkpoint:PATH or scratch", param="init"
        )
    model.info = model.info.replace(
        class_names=list(dataset.class_names), palette=list(dataset.palette)
    )
    return model
