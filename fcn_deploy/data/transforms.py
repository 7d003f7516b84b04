"""Batching images of different sizes: random crops and padding, the ignore label filling the
gaps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import IGNORE_LABEL

__all__ = ["pad_batch", "random_crop"]


def random_crop(
    image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size×size`` window at a random place; sides shorter than ``size`` are padded first."""
    image, labels = _pad_to(image, labels, max(size, image.shape[0]), max(size, image.shape[1]))
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    return image[top : top + size, left : left + size], labels[top : top + size, left : left + size]


def pad_batch(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack items into ``N×H×W×3`` and ``N×H×W``, padding each to the largest H and W.

    Padded pixels are black in the image and ``IGNORE_LABEL`` in the labels, so they add nothing
    to the loss (the minibatch recipe batches native-size images this way).
    """
    h = max(im.shape[0] for im, _ in items)
    w = max(im.shape[1] for im, _ in items)
    padded = [_pad_to(im, lab, h, w) for im, lab in items]
    return np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded])


def _pad_to(image: np.ndarray, labels: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    dh, dw = h - image.shape[0], w - image.shape[1]
    if dh == 0 and dw == 0:
        return image, labels
    return (
        np.pad(image, ((0, dh), (0, dw), (0, 0))),
        np.pad(labels, ((0, dh), (0, dw)), constant_values=IGNORE_LABEL),
    )
