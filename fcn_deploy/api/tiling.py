"""Overlapping tiles for images larger than a model accepts.

An FCN's receptive field is hundreds of pixels wide (VGG16's fc6 alone sees 404), so a pixel near
a tile's edge is predicted from a truncated context and may differ from whole-image inference.
Two things keep tiles close to the whole image:

- tiles start on multiples of the net's output stride (32), so each tile's pooling grid lines up
  with the whole image's (FCNs are not shift-invariant below their stride: a random FCN-8s agreed
  on 92% of pixels with unaligned tiles and 98% with aligned ones);
- tiles overlap, and each pixel is taken mostly from the tile whose centre it is nearest: class
  scores (tensor I/O) are blended with weights that ramp from 0 at a tile's inner edge to 1 across
  the overlap (sin² and cos², which sum to one); labels (image I/O: the model returns no scores)
  are cut at the middle of each overlap.

Tiles are processed one row at a time and rows of the result are finished as soon as no later tile
touches them, so memory grows with the image's width, never its area.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ALIGN", "TileGrid", "run_tiled", "tile_spans"]

ALIGN = 32  # VGG16's output stride (five 2× pools): tiles start on this grid

#: ``infer(tiles)``: uint8 ``N×h×w×3`` BGR tiles → ``N×C×h×w`` scores or ``N×h×w`` labels (torch)
TileFn = Callable[[np.ndarray], torch.Tensor]
Span = tuple[int, int]


def tile_spans(length: int, tile: int, overlap: int, align: int = ALIGN) -> list[Span]:
    """``(start, end)`` of tiles of at most ``tile`` pixels covering ``length``, sharing ≥
    ``overlap``.

    Starts are multiples of ``align``; the last tile ends at ``length`` and may be up to
    ``align - 1`` pixels shorter than the others. Needs ``tile ≥ overlap + align``.
    """
    if length <= tile:
        return [(0, length)]
    stride = (tile - overlap) // align * align
    if stride < align:
        raise ValueError(f"tile {tile} must exceed overlap {overlap} by at least {align}")
    last = (
        -(-(length - tile) // align) * align
    )  # the first aligned start whose tile reaches the end
    starts = [*range(0, last, stride), last]
    return [(s, min(s + tile, length)) for s in starts]


def _cuts(spans: list[Span]) -> list[int]:
    """Where tile ``i`` hands over to tile ``i+1`` (the middle of their overlap), then the end."""
    return [(spans[i + 1][0] + spans[i][1]) // 2 for i in range(len(spans) - 1)] + [spans[-1][1]]


def _ramp_weights(spans: list[Span], i: int) -> torch.Tensor:
    """1-D blending weights of tile ``i``: 1 inside, sin²/cos² ramps across overlaps with
    neighbours."""
    start, end = spans[i]
    w = np.ones(end - start, np.float32)
    if i > 0:  # rising over the overlap with the previous tile
        n = spans[i - 1][1] - start
        w[:n] = np.sin(np.pi / 2 * (np.arange(n) + 0.5) / n) ** 2
    if i + 1 < len(spans):  # falling over the overlap with the next tile
        n = end - spans[i + 1][0]
        w[len(w) - n :] *= np.cos(np.pi / 2 * (np.arange(n) + 0.5) / n) ** 2
    return torch.from_numpy(w)


def _batches(spans: list[Span], batch: int) -> list[list[int]]:
    """Tile indices in runs of equal width, at most ``batch`` long (one runner call each)."""
    runs: list[list[int]] = []
    for j, (s, e) in enumerate(spans):
        if (
            runs
            and len(runs[-1]) < batch
            and spans[runs[-1][0]][1] - spans[runs[-1][0]][0] == e - s
        ):
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


@dataclass(frozen=True)
class TileGrid:
    """Tiles of at most ``tile`` (h, w) pixels over an ``height×width`` image, overlapping ≥
    ``overlap``."""

    height: int
    width: int
    tile: tuple[int, int]
    overlap: int

    @property
    def rows(self) -> list[Span]:
        return tile_spans(self.height, self.tile[0], self.overlap)

    @property
    def cols(self) -> list[Span]:
        return tile_spans(self.width, self.tile[1], self.overlap)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)


def run_tiled(
    image: np.ndarray, grid: TileGrid, infer: TileFn, scores: bool, batch: int
) -> Iterator[torch.Tensor]:
    """Yield finished rows of the result, top to bottom, on the device ``infer`` returns.

    Each block is ``C×rows×W`` blended scores when ``scores`` else ``rows×W`` stitched labels.
    """
    rows, cols = grid.rows, grid.cols
    y_cuts, x_cuts = _cuts(rows), _cuts(cols)
    wx = [_ramp_weights(cols, j) for j in range(len(cols))]
    acc = weight = torch.empty(0)  # scores: weighted sums and weights of rows [done, done + len)
    done = 0  # rows [0, done) have been yielded
    for i, (y, y1) in enumerate(rows):
        outs: dict[int, torch.Tensor] = {}
        for run in _batches(cols, batch):
            out = infer(np.stack([image[y:y1, x:x1] for x, x1 in (cols[j] for j in run)]))
            outs.update(zip(run, out, strict=True))
        if not scores:  # labels: each tile owns the pixels nearest its centre
            row = outs[0].new_empty((y_cuts[i] - done, grid.width))
            x0 = 0
            for j, (x, _) in enumerate(cols):
                row[:, x0 : x_cuts[j]] = outs[j][done - y : y_cuts[i] - y, x0 - x : x_cuts[j] - x]
                x0 = x_cuts[j]
            yield row
            done = y_cuts[i]
            continue
        if i == 0:
            acc, weight = (
                outs[0].new_zeros((outs[0].shape[0], 0, grid.width)),
                outs[0].new_zeros((0, grid.width)),
            )
        grow = y1 - done - weight.shape[0]  # rows this tile row adds below those held
        acc = torch.cat([acc, acc.new_zeros((acc.shape[0], grow, grid.width))], 1)
        weight = torch.cat([weight, weight.new_zeros((grow, grid.width))])
        wy = _ramp_weights(rows, i).to(acc.device)
        for j, (x, x1) in enumerate(cols):
            w = wy[:, None] * wx[j].to(acc.device)[None, :]  # (y1-y)×(x1-x)
            acc[:, y - done : y1 - done, x:x1].addcmul_(outs[j], w)
            weight[y - done : y1 - done, x:x1] += w
        y_end = (
            rows[i + 1][0] if i + 1 < len(rows) else grid.height
        )  # later tiles start at or below
        yield acc[:, : y_end - done] / weight[: y_end - done].clamp_min(1e-12)
        acc, weight = acc[:, y_end - done :], weight[y_end - done :]
        done = y_end
