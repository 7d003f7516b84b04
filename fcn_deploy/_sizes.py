"""The image sizes a model holds, as a union of ranges, and the choices made from them.

Most models hold one box of sizes (an ONNX export: ``min_hw`` up to ``max_hw``). A TensorRT
engine holds one box per optimization profile, and the boxes need not nest: landscape
(``64x128…720x1280``) and portrait (``128x64…1280x720``) profiles hold a 700×1200 image and a
1200×700 one, but no 1000×1000 one, although it lies inside the box around both. Every decision
about an image's size (pad it, run it whole, tile it, refuse it, advertise it) is taken against
the ranges one by one, never against that bounding box.

An image below a range's minimum is padded up to it (the Segmenter repeats its edge pixels and
crops the result), so a range holds every image no larger than its maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

from .meta import SizeBounds

__all__ = ["holds", "largest_tile", "padded_size", "sizes_text"]

HW = tuple[int, int]


def holds(bounds: SizeBounds, height: int, width: int) -> bool:
    """Whether one range holds ``height×width`` as it is, unpadded (a tile, say)."""
    top = bounds.max_hw
    within = top is None or (height <= top[0] and width <= top[1])
    return within and height >= bounds.min_hw[0] and width >= bounds.min_hw[1]


def padded_size(ranges: Sequence[SizeBounds], height: int, width: int) -> HW | None:
    """The size an image of ``height×width`` runs at: itself, padded up to the minimum of a range
    that holds it (the one needing the fewest extra pixels), or None when no range does."""
    fits = [
        (max(height, r.min_hw[0]), max(width, r.min_hw[1]))
        for r in ranges
        if r.max_hw is None or (height <= r.max_hw[0] and width <= r.max_hw[1])
    ]
    return min(fits, key=lambda hw: hw[0] * hw[1]) if fits else None


def largest_tile(ranges: Sequence[SizeBounds], cap: HW) -> HW:
    """The largest tile (by area) that one range holds, at most ``cap`` where the range allows:
    tiles must run whole, so the tile comes from one range, never from their bounding box."""

    def tile(r: SizeBounds) -> HW:
        top = r.max_hw or cap
        return (max(r.min_hw[0], min(top[0], cap[0])), max(r.min_hw[1], min(top[1], cap[1])))

    return max((tile(r) for r in ranges), key=lambda hw: hw[0] * hw[1])


def sizes_text(ranges: Sequence[SizeBounds], with_min: bool = False) -> str:
    """``up to 720x1280 or 1280x720`` (H×W) for messages, ``any size`` when a range is
    unbounded; ``with_min``: ``64x128..720x1280 or 128x64..1280x720``."""

    def text(r: SizeBounds) -> str:
        top = f"{r.max_hw[0]}x{r.max_hw[1]}" if r.max_hw else "any"
        return f"{r.min_hw[0]}x{r.min_hw[1]}..{top}" if with_min else top

    if not with_min and any(r.max_hw is None for r in ranges):
        return "any size"
    return ("" if with_min else "up to ") + " or ".join(dict.fromkeys(map(text, ranges)))
