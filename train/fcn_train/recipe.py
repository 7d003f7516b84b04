"""Training recipes: the optimizer, loss normalization and batching that go together.

- ``reference``: the FCN release (fcn.berkeleyvision.org). SGD, momentum 0.99, weight decay 5e-4 on
  weights, biases at 2× lr without decay, one native-size image per step, the per-pixel loss
  SUMMED, and tiny per-stage learning rates that compensate for the sum (1e-10 FCN-32s, 1e-12
  FCN-16s, 1e-14 FCN-8s, 1e-10 at-once). Tuned for VGG16-initialized nets with Caffe inputs.
- ``paper``: the paper's text (section 4.3). Minibatches of 20 images (padded to a common size with
  ignore pixels), momentum 0.9, lr 1e-4 for FCN-32s, 100× lower for each later stage. The paper
  does not say whether its loss is summed; with lr 1e-4 it must be the per-pixel MEAN, used here.
- ``synthetic``: not from the paper. Adam, lr 1e-3, mean loss, batches of 4 native-size images
  (padded with ignore pixels), no weight decay: nets trained from scratch (He init, no pretrained
  VGG16) on the small
  synthetic scenes converge in minutes on a CPU with it, where the SGD recipes, whose learning
  rates assume pretrained features, barely move. The default for ``--data synthetic``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["RECIPES", "Recipe", "make_optimizer", "resolve_recipe", "select_trainable"]


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "sgd" or "adam"
    lr: float
    momentum: float  # SGD momentum, or Adam's beta1
    weight_decay: float  # on weights only; biases never decay
    bias_lr_mult: float  # Caffe's lr_mult 2 on biases
    loss: str  # "sum" over pixels (the reference) or "mean" over labelled pixels
    batch_size: int
    crop: int | None = None  # random square crops for batching; None: native size (padded)


_REFERENCE_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10}
_PAPER_LR = {"fcn32s": 1e-4, "fcn16s": 1e-6, "fcn8s": 1e-8, "fcn8s-atonce": 1e-4}

RECIPES = {
    "reference": Recipe("sgd", 1e-10, 0.99, 5e-4, 2.0, "sum", 1),
    "paper": Recipe("sgd", 1e-4, 0.9, 5e-4, 2.0, "mean", 20),
    "synthetic": Recipe("adam", 1e-3, 0.9, 0.0, 1.0, "mean", 4),
}


def resolve_recipe(
    name: str,
    variant: str,
    lr: float | None = None,
    batch_size: int | None = None,
    momentum: float | None = None,
    crop: int | None = None,
) -> Recipe:
    """The named recipe with the stage's learning rate for ``variant``, then any overrides."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    stage_lr = {"reference": _REFERENCE_LR, "paper": _PAPER_LR}.get(name, {}).get(
        variant, recipe.lr
    )
    changes: dict[str, Any] = {
        "lr": lr if lr is not None else stage_lr,
        "batch_size": batch_size,
        "momentum": momentum,
        "crop": crop,
    }
    return dataclasses.replace(recipe, **{k: v for k, v in changes.items() if v is not None})


def select_trainable(model: nn.Module, which: str) -> None:
    """``all``: every layer but the frozen upsampling; ``last-layer``: only the score layers
    (FCN-32s-fixed)."""
    if which == "all":
        return
    if which != "last-layer":
        raise ValueError(f"train must be 'all' or 'last-layer', got {which!r}")
    keep = {id(p) for layer in model.score_layers() for p in layer.parameters()}  # type: ignore[operator]
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Two parameter groups, as Caffe's ``lr_mult``/``decay_mult``: weights (decayed) and biases
    (×lr, no decay)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weights = [p for n, p in params if not n.endswith("bias")]
    biases = [p for n, p in params if n.endswith("bias")]
    groups: list[dict[str, object]] = [
        {"params": weights, "lr": recipe.lr, "weight_decay": recipe.weight_decay},
        {"params": biases, "lr": recipe.lr * recipe.bias_lr_mult, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)  # type: ignore[arg-type]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))  # type: ignore[arg-type]
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
