"""`Segmenter`: images in, label maps out, the same way on every backend.

It holds one `Runner` and does what the runner doesn't: turn whatever image the user has into
BGR pixels (`fcn_deploy.imageio.to_bgr8`'s rule), preprocess them from the model's metadata on the
runner's device (tensor I/O) or hand them over as they are (image I/O, preprocessing and argmax
folded into the model), batch equal sizes, tile images larger than the model accepts, take the
argmax on the device and time each step for the benchmark.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .._gate import regular_file
from .._sizes import holds, largest_tile, padded_size, sizes_text
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS, check_megapixels, read_image, to_bgr8
from ..meta import ModelInfo
from ..runtime import Runner, load_runner
from .tiling import ALIGN, TileGrid, run_tiled
from .video import FrameSelection, VideoFrame, VideoSource, predict_video

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "ImageLike", "Segmenter", "Timing", "as_bgr8"]

MODEL_FILES = "expected a .pt/.pth checkpoint, an .onnx export or a TensorRT .engine"

ImageLike = Union[np.ndarray, torch.Tensor, str, "os.PathLike[str]"]

DEFAULT_TILE = 1024  # tile side when the model itself is unbounded (eager PyTorch)
DEFAULT_OVERLAP = 256  # at most a quarter of the tile; FCN's receptive field is ~400 pixels wide
DEFAULT_BATCH = 8  # images per call when the model sets no batch limit


def as_bgr8(
    image: ImageLike, rgb: bool = False, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """Any supported image → uint8 ``H×W×3`` BGR, refused above ``max_megapixels`` (None: no limit).

    - a path (str or ``os.PathLike``): decoded by OpenCV (`read_image`); ``rgb`` is ignored;
    - a NumPy array: ``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4``, uint8, uint16 or float 0..1,
      BGR(A) as ``cv2.imread`` gives, or RGB(A) with ``rgb=True`` (`to_bgr8`'s rule);
    - a torch tensor: the same rule as an array, so channels last (``H×W×C``), on any device.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_megapixels)  # checked from the header, before decoding
    if isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim >= 2:
        check_megapixels(int(image.shape[0]), int(image.shape[1]), max_megapixels)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[2] not in (1, 3, 4):
            raise FCNError(
                "torch images are taken channels-last (H×W×C) like NumPy ones; got "
                f"{tuple(t.shape)}, which looks channels-first: pass image.permute(1, 2, 0)"
            )
        return to_bgr8(t.cpu().numpy(), rgb)
    if isinstance(image, np.ndarray):
        return to_bgr8(image, rgb)
    raise FCNError(f"expected an image array, a torch tensor or a path, got {type(image).__name__}")


@dataclass
class Timing:
    """Where the last call's time went, in seconds (the device is synchronized around the model).

    ``preprocess`` runs from the call's start to the model (decoding paths, conversion, batching,
    normalization, the copy to the device); ``model`` is the runner alone; ``postprocess`` is
    argmax, resizing, tile blending and stitching, and the copy back.
    """

    preprocess: float = 0.0
    model: float = 0.0
    postprocess: float = 0.0
    images: int = 0
    pixels: int = 0
    calls: int = 0  # runner calls (batches or tiles)

    @property
    def total(self) -> float:
        return self.preprocess + self.model + self.postprocess


def _label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int32


def _labels(scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids of ``N×C×H×W`` scores (the first of equal maxima, as ``argmax``).

    On the CPU a running maximum over the C channel planes: each step is a contiguous pass over
    H×W, where ``argmax(dim=1)`` strides across the planes at every pixel (12.9 ms against 41.8
    for torch's argmax and 17.2 for NumPy's at 500×500 with 21 classes on a quiet 2-core Xeon,
    benchmarks/e2e_steps.py).
    """
    dtype = _label_dtype(num_classes)
    if scores.device.type != "cpu":
        return scores.argmax(1).to(dtype)
    x = scores.detach().numpy()
    best = x[:, 0].copy()
    labels = np.zeros(best.shape, np.uint8 if dtype == torch.uint8 else np.int32)
    higher = np.empty(best.shape, bool)
    for c in range(1, x.shape[1]):
        np.greater(x[:, c], best, out=higher)
        np.maximum(best, x[:, c], out=best)
        np.putmask(labels, higher, c)
    return torch.from_numpy(labels)


class Segmenter:
    """Semantic segmentation with one model on one device, whatever the backend.

    >>> seg = Segmenter.load("fcn8s.onnx")                 # or .engine, .pt
    >>> labels = seg.predict(cv2.imread("street.jpg"))     # H×W uint8 class ids
    >>> cv2.imwrite("overlay.jpg", seg.overlay("street.jpg", labels))

    Images larger than the model accepts raise `FCNError` unless tiling is on (``tile=True`` here
    or per call): overlapping tiles of ``tile_size`` sharing ``overlap`` pixels, blended as
    described in `fcn_deploy.api.tiling`. The default tile is the largest input one size range
    of the model holds (one optimization profile of an engine: profiles need not nest), at most
    1024, and tiles only the images no range holds whole; a ``tile_size`` given tiles every
    image larger than it. Equal-size
    images share runner calls of up to ``batch_size`` (default: the model's max batch, or 8).
    Images over ``max_megapixels`` (default 100; None: no limit) are refused before any work,
    files from their header before decoding, on every backend.
    """

    def __init__(
        self,
        runner: Runner,
        tile: bool = False,
        tile_size: int | tuple[int, int] | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        if max_megapixels is not None and not max_megapixels > 0:
            raise FCNError(
                f"max_megapixels must be a positive number or None, got {max_megapixels}"
            )
        if batch_size is not None and batch_size < 1:
            raise FCNError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
        self.runner = runner
        self.max_megapixels = max_megapixels
        self.tile = tile
        ranges = runner.size_ranges
        size = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
        size = size or largest_tile(ranges, (DEFAULT_TILE, DEFAULT_TILE))
        if not any(holds(r, *size) for r in ranges):
            raise FCNError(
                f"tile size {size[0]}x{size[1]} is outside what this model accepts "
                f"({sizes_text(ranges, with_min=True)})",
                param="tile_size",
            )
        overlap = (
            max(0, min(DEFAULT_OVERLAP, min(size) // 4, min(size) - ALIGN))
            if overlap is None
            else overlap
        )
        if not 0 <= overlap <= min(size) - ALIGN:
            raise FCNError(
                f"tile overlap must be 0..{min(size) - ALIGN} (the tile size {min(size)} less the "
                f"net's stride {ALIGN}), got {overlap}"
            )
        self.tile_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self._tile_given = tile_size is not None  # then every image larger than it is tiled
        self.overlap = overlap
        top = runner.bounds.max_batch or DEFAULT_BATCH
        self.batch_size = min(batch_size or top, top)
        self.last_timing = Timing()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | None = None,
        backend: str | None = None,
        tile: bool = False,
        tile_size: int | tuple[int, int] | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        allow_unverified: bool = False,
        **runner_options: Any,
    ) -> Segmenter:
        """Open a model file: ``.engine`` → TensorRT, ``.onnx`` → ONNX Runtime, else PyTorch.

        ``backend`` overrides the suffix; ``device`` is cpu, cuda or cuda:N (default: cuda when
        present); the tiling and batching options are the constructor's; ``runner_options`` go to
        the runner (``variant=`` for PyTorch files, ``threads=`` for ONNX Runtime, ...). An ONNX
        file whose export failed verification is refused unless ``allow_unverified``.
        """
        regular_file(path, "model file", MODEL_FILES)  # a FIFO or a device: one line, no hang
        runner = load_runner(
            path, device=device, backend=backend, allow_unverified=allow_unverified,
            **runner_options,
        )  # fmt: skip
        try:
            return cls(runner, tile, tile_size, overlap, batch_size, max_megapixels)
        except BaseException:
            runner.close()
            raise

    # -- what the model is -------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour of each class (VOC's rule unless the model says otherwise)."""
        return list(self.info.palette)

    @property
    def device(self) -> torch.device:
        return self.runner.device

    # -- inference ---------------------------------------------------------------------------

    def predict(self, image: ImageLike, rgb: bool = False, tile: bool | None = None) -> np.ndarray:
        """``H×W`` class ids (uint8 for ≤ 256 classes) at the image's own size."""
        return self._run([image], rgb, tile, scores=False)[0]

    def predict_batch(
        self, images: Sequence[ImageLike], rgb: bool = False, tile: bool | None = None
    ) -> list[np.ndarray]:
        """`predict` for many images: equal sizes share runner calls (up to ``batch_size``),
        order kept."""
        return self._run(list(images), rgb, tile, scores=False)

    def predict_video(
        self,
        source: VideoSource,
        every: int = 1,
        start: float = 0.0,
        end: float | None = None,
        tile: bool | None = None,
    ) -> Generator[VideoFrame, None, None]:
        """Segment a video file (or an open ``cv2.VideoCapture``) frame by frame, lazily.

        Yields a `VideoFrame` (``index``, ``time``, decoded BGR ``image``, ``labels``) for every
        ``every``-th frame from ``start`` to ``end`` seconds; frames are decoded on a background
        thread and run ``batch_size`` at a time, so memory stays flat on long videos. ``labels``
        equal `predict` on ``image``.

        >>> for frame in seg.predict_video("clip.mp4", every=5):
        ...     counts = np.bincount(frame.labels.ravel(), minlength=seg.info.num_classes)
        """
        return predict_video(self, source, FrameSelection(every, start, end), tile)

    def logits(self, image: ImageLike, rgb: bool = False, tile: bool | None = None) -> np.ndarray:
        """float32 ``C×H×W`` class scores; only tensor-I/O models have them."""
        if self.runner.io != "tensor":
            raise FCNError(
                "this model was exported with preprocessing and argmax folded in (image I/O) and "
                "returns only labels; re-export with io='tensor' to get class scores"
            )
        return self._run([image], rgb, tile, scores=True)[0]

    def overlay(
        self, image: ImageLike, labels: np.ndarray, alpha: float = 0.5, rgb: bool = False
    ) -> np.ndarray:
        """The image with each pixel tinted by its class colour: uint8 ``H×W×3`` BGR, ready for
        cv2.imwrite."""
        if not 0.0 <= alpha <= 1.0:  # NaN too
            raise FCNError(
                f"alpha must be in 0..1 (the colours' opacity), got {alpha}", param="alpha"
            )
        bgr = as_bgr8(image, rgb, self.max_megapixels)
        labels = np.asarray(labels)
        if labels.shape != bgr.shape[:2]:
            raise FCNError(
                f"labels of shape {labels.shape} do not match the image's "
                f"{bgr.shape[0]}x{bgr.shape[1]} pixels"
            )
        colours = ModelInfo.palette_array(self.palette)[:, ::-1][
            np.clip(labels, 0, 255)
        ]  # RGB → BGR
        mixed = (1.0 - alpha) * bgr.astype(np.float32) + alpha * colours.astype(np.float32)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    # -- internals ---------------------------------------------------------------------------

    def _run(
        self, images: list[ImageLike], rgb: bool, tile: bool | None, scores: bool
    ) -> list[np.ndarray]:
        timing = self.last_timing = Timing()
        start = time.perf_counter()
        pixels = [as_bgr8(im, rgb, self.max_megapixels) for im in images]
        timing.images, timing.pixels = len(pixels), sum(p.shape[0] * p.shape[1] for p in pixels)
        timing.preprocess += time.perf_counter() - start
        tile = self.tile if tile is None else tile
        results: list[np.ndarray | None] = [None] * len(pixels)
        groups: dict[tuple[int, int], list[int]] = {}
        ranges = self.runner.size_ranges
        for k, p in enumerate(pixels):
            h, w = p.shape[:2]
            whole = padded_size(ranges, h, w) is not None  # one range (profile) holds it whole
            over = h > self.tile_size[0] or w > self.tile_size[1]
            if tile and over and (self._tile_given or not whole):
                results[k] = self._tiled(p, scores)
            elif whole:
                groups.setdefault((h, w), []).append(k)
            else:
                raise FCNError(
                    f"an image of {h}x{w} (HxW) is larger than this model accepts "
                    f"({sizes_text(ranges)}); pass tile=True to run it in overlapping tiles",
                    param="tile",
                )
        for indices in groups.values():
            for i in range(0, len(indices), self.batch_size):
                chunk = indices[i : i + self.batch_size]
                out = self._infer(np.stack([pixels[k] for k in chunk]), scores)
                t = time.perf_counter()
                arrays = out.cpu().numpy()
                for k, a in zip(chunk, arrays, strict=True):
                    results[k] = a
                timing.postprocess += time.perf_counter() - t
        return results  # type: ignore[return-value]

    def _infer(self, bgr: np.ndarray, scores: bool) -> torch.Tensor:
        """uint8 ``N×H×W×3`` BGR → ``N×C×H×W`` float scores or ``N×H×W`` labels, on the device."""
        timing, runner = self.last_timing, self.runner
        t0 = time.perf_counter()
        _n, h, w = bgr.shape[:3]
        fit = padded_size(runner.size_ranges, h, w) or (h, w)  # the runner names a misfit
        pad_h, pad_w = fit[0] - h, fit[1] - w
        if pad_h or pad_w:  # below the range's smallest input: repeat the edge pixels, crop after
            bgr = np.stack(
                [cv2.copyMakeBorder(b, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE) for b in bgr]
            )
        # copy uint8 (a quarter of float32's bytes); normalize on the device unless the graph does
        # (on the CPU: NumPy, channel by channel, see Preprocessing.apply)
        x = torch.from_numpy(bgr).to(runner.device, non_blocking=True)
        if runner.io == "tensor":
            x = self.info.preprocessing.normalize(x)
        runner.synchronize()
        t1 = time.perf_counter()
        out = runner.infer(x)
        runner.synchronize()
        t2 = time.perf_counter()
        if runner.io == "tensor":
            out = out.float()
            if out.shape[-2:] != x.shape[-2:]:  # a coarse score map (convolutionalized VGG16)
                out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out = out[:, :, :h, :w]
            if not scores:
                out = _labels(out, self.info.num_classes)
        else:
            out = out[:, :h, :w]
        runner.synchronize()
        timing.preprocess += t1 - t0
        timing.model += t2 - t1
        timing.postprocess += time.perf_counter() - t2
        timing.calls += 1
        return out

    def _tiled(self, bgr: np.ndarray, scores: bool) -> np.ndarray:
        """One image through overlapping tiles; blended scores, or labels from the tiles'
        centres."""
        start, timing = time.perf_counter(), self.last_timing
        counted = timing.total
        grid = TileGrid(bgr.shape[0], bgr.shape[1], self.tile_size, self.overlap)
        blend = self.runner.io == "tensor"  # blend scores whenever the model has them
        blocks = run_tiled(
            bgr, grid, lambda tiles: self._infer(tiles, scores=blend), blend, self.batch_size
        )
        rows = []
        for block in blocks:
            if blend and not scores:
                block = _labels(block[None], self.info.num_classes)[0]
            rows.append(block.cpu().numpy())
        result = np.concatenate(rows, axis=-2)
        timing.postprocess += (
            time.perf_counter() - start - (timing.total - counted)
        )  # cutting, blending, stitching
        return result

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the runner (and its device memory)."""
        self.runner.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        runner = self.runner
        return f"<Segmenter {self.info.variant} {runner.name} io={runner.io} on {runner.device}>"
