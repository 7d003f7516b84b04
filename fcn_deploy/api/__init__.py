"""The Python inference API: `Segmenter` runs any exported or eager FCN on images.

``Segmenter.load(path)`` picks the backend from the file (``.engine`` TensorRT, ``.onnx`` ONNX
Runtime, ``.pt``/``.pth`` PyTorch) and gives every backend the same interface: ``predict``,
``predict_batch``, ``predict_video``, ``logits``, ``overlay`` and the timing of the last call
(``last_timing``).
"""

from .segmenter import DEFAULT_OVERLAP, DEFAULT_TILE, ImageLike, Segmenter, Timing, as_bgr8
from .tiling import TileGrid, tile_spans
from .video import FrameSelection, VideoFrame, VideoInfo, is_video, open_video

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "FrameSelection",
    "ImageLike",
    "Segmenter",
    "TileGrid",
    "Timing",
    "VideoFrame",
    "VideoInfo",
    "as_bgr8",
    "is_video",
    "open_video",
    "tile_spans",
]
