"""Images in and label maps out, by one rule shared by the API, the CLIs and the datasets.

Label maps are palette PNGs (PASCAL VOC's format: the pixel value is the class id, the palette
only colours it), so they open as coloured images and read back as exact class ids. OpenCV cannot
write or read palette indices, so Pillow does that.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ._io import atomic_write_bytes, describe_file, os_reason
from ._owned import mark_png
from .errors import FCNError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "check_megapixels",
    "decode_image_bytes",
    "encode_label_png",
    "orient",
    "quiet_opencv_logging",
    "read_image",
    "read_label_png",
    "to_bgr8",
    "write_label_png",
]

#: Largest image read or segmented by default (width × height / 10⁶). A 100 MP image is 300 MB
#: of BGR pixels before the model's activations; larger ones are refused from the file's header,
#: before decoding, unless the caller raises the limit (``max_megapixels=``, ``--max-megapixels``).
DEFAULT_MAX_MEGAPIXELS = 100.0


def to_bgr8(image: np.ndarray, rgb: bool = False, decoded: bool = False) -> np.ndarray:
    """Any decoded image → contiguous uint8 ``H×W×3`` BGR, by one documented rule.

    - grayscale (``H×W`` or ``H×W×1``): replicated to three channels;
    - 4 channels (BGRA, or RGBA with ``rgb=True``): alpha dropped;
    - 16-bit: scaled to 8 bits (``>> 8``; warned when all values are below 256); float in 0..1:
      ×255, rounded (NaN, infinity or values outside 0..1, such as 0..255 floats, are refused,
      unless ``decoded``: a file's own float pixels, HDR above 1 included, are clipped);
    - ``rgb=True``: channels taken as RGB and reordered to BGR.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
        rgb = False  # no channel order to fix
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise FCNError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise FCNError(f"image has no pixels (shape {a.shape})")
    a = a[:, :, :3]
    if a.dtype == np.uint16:
        if a.size and int(a.max()) < 256:
            log.warning(
                "a uint16 image whose values are all below 256 becomes nearly black under the "
                "16-bit rule (>> 8); if it holds 8-bit values, pass it as uint8"
            )
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not decoded:
            _check_unit_range(a)
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise FCNError(
            f"unsupported image dtype {a.dtype}; expected uint8, uint16 or float in 0..1"
        )
    if rgb:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


FLOAT_SLACK = 1e-3  # how far outside 0..1 a float image may stray (resampling overshoot)


def _check_unit_range(a: np.ndarray) -> None:
    """Refuse a float image that is not in 0..1: NaN/inf, or 0..255 values (which the ×255 rule
    would clip to a nearly white image without a word)."""
    if not np.isfinite(a).all():
        raise FCNError("the image holds NaN or infinite values; pass finite pixels")
    low, high = float(a.min()), float(a.max())
    if low < -FLOAT_SLACK or high > 1.0 + FLOAT_SLACK:
        hint = " (it looks like 0..255: divide by 255, or pass uint8)" if high > 2.0 else ""
        raise FCNError(f"a float image must hold values in 0..1; this one spans {low:g}..{high:g}"
                       + hint)  # fmt: skip


def quiet_opencv_logging() -> None:
    """Let OpenCV log errors only (libpng/libjpeg warnings would repeat our own one-line message).

    opencv-python 5 has ``cv2.utils.logging.setLogLevel``; the 4.x wheels have ``cv2.setLogLevel``
    instead (and no ``cv2.utils.logging``). Level 2 is ``LOG_LEVEL_ERROR`` in both.
    """
    logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
    set_level = getattr(logging_module, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    if set_level is not None:
        set_level(getattr(logging_module, "LOG_LEVEL_ERROR", 2))


def check_megapixels(
    height: int, width: int, max_megapixels: float | None, what: str = "an image"
) -> None:
    """Refuse ``height×width`` above ``max_megapixels`` (None: no limit) before any work on it."""
    _check_pixels(height * width, f"of {width}x{height} (WxH)", max_megapixels, what)


def _check_pixels(pixels: int, size: str, max_megapixels: float | None, what: str) -> None:
    if max_megapixels is not None and pixels > max_megapixels * 1e6:
        raise FCNError(
            f"{what} {size} is {pixels / 1e6:.1f} megapixels, over the limit "
            f"max_megapixels={max_megapixels:g}; raise the limit if it is meant (it bounds the "
            "memory one image may take)",
            param="max_megapixels",
        )


def decode_image_bytes(
    data: bytes, max_megapixels: float | None, what: str = "an encoded image"
) -> np.ndarray | None:
    """Decode an image file's bytes (JPEG, PNG, ...) to uint8 BGR as `read_image` does; None if
    they are not an image. The header's size is checked before decoding (a tiny file can claim a
    huge image) and bytes whose header gives no size are not decoded at all."""
    orientation = _check_header(io.BytesIO(data), max_megapixels, what)
    if orientation is None:
        return None
    quiet_opencv_logging()  # our error names a corrupt file; OpenCV's WARN line would repeat it
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if image is None else to_bgr8(orient(image, orientation), decoded=True)


#: EXIF orientation (tag 274) → how the stored pixels become what viewers show.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to decoded pixels, so they stand as every viewer shows them (and
    as ``cv2.imread`` gives them): label maps then line up with what people see."""
    turn = _ORIENT.get(orientation)
    return image if turn is None else np.ascontiguousarray(turn(image))


def _check_header(
    source: Path | IO[bytes], max_megapixels: float | None, what: str | None = None
) -> int | None:
    """Check the size the file's header declares, without decoding its pixels; return its EXIF
    orientation (1: as stored), or None when no header reader finds a size (not decoded then:
    OpenCV would decode it whole first).

    Pillow reads most headers; Radiance HDR and the TIFF variants Pillow cannot open (float32
    RGB) are read here.
    """
    what = what or f"{source}: an image"
    name = str(source) if isinstance(source, Path) else what
    orientation = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                size = image.size
                orientation = _orientation(image)
                if image.format == "GIF":
                    raise FCNError(f"{name}: a GIF image; GIFs are not supported (convert to PNG)")
    except Image.DecompressionBombError as e:  # Pillow's own refusal, above 2 × MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(e))
        if found and max_megapixels is not None:
            _check_pixels(int(found.group(1)), "(size from its header)", max_megapixels, what)
        return 1  # a higher limit than Pillow's: OpenCV's own 1-gigapixel cap still applies
    except UnidentifiedImageError:
        head = _head(source)
        header_size = _hdr_size(head) or _tiff_size(head)
        if header_size is None:
            return None
        size = header_size
    width, height = size
    check_megapixels(int(height), int(width), max_megapixels, what)
    return orientation


HEADER_BYTES = 1 << 16  # what the header readers look at
_ORIENTATION_TAG = 274  # EXIF Orientation


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, read without decoding its pixels (Pillow's
    ``getexif`` would decode a PNG to look for late EXIF chunks; only the header's is read)."""
    if image.format in ("JPEG", "MPO", "TIFF"):
        exif = image.getexif()  # parsed from the header when the file was opened
    elif "exif" in image.info:  # PNG's eXIf or WebP's EXIF chunk, when it precedes the pixels
        exif = Image.Exif()
        exif.load(image.info["exif"])
    else:
        return 1
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def _head(source: Path | IO[bytes]) -> bytes:
    if isinstance(source, Path):
        with source.open("rb") as f:
            return f.read(HEADER_BYTES)
    source.seek(0)
    return source.read(HEADER_BYTES)


def _hdr_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a Radiance HDR file: text header, blank line, ``-Y H +X W``."""
    if not head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return None
    found = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n", head)
    if found is None:
        return None
    first, second = int(found.group(3)), int(found.group(6))
    return (second, first) if found.group(2) == b"Y" else (first, second)


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a classic TIFF's first IFD (tags 256 and 257)."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
    if order is None or len(head) < 8:
        return None
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(head):
        return None
    (count,) = struct.unpack(order + "H", head[offset : offset + 2])
    tags = {}
    for i in range(count):
        entry = head[offset + 2 + 12 * i : offset + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            tags[tag] = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    return (tags[256], tags[257]) if len(tags) == 2 else None


def read_image(
    path: str | os.PathLike[str],
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    exif_orientation: bool = True,
) -> np.ndarray:
    """Decode an image file to uint8 BGR (the rule of `to_bgr8`), turned by its EXIF orientation
    as viewers show it (as ``cv2.imread`` does); a clear error if it can't be read. Datasets pass
    ``exif_orientation=False``: their label maps are drawn on the stored pixels.

    The size is read from the file's header first and checked against ``max_megapixels`` (None:
    no limit), so a small file that claims a huge image is refused before it is decoded; a file
    whose header gives no size is refused undecoded.
    """
    path = Path(path)
    if path.is_dir():
        raise FCNError(f"{path} is a folder, not an image file")
    if not path.exists():
        raise FCNError(f"{path}: no such image file")
    try:
        orientation = _check_header(path, max_megapixels)
        image = None
        if orientation is not None:
            quiet_opencv_logging()  # our error names a corrupt file; OpenCV's line would repeat it
            data = np.frombuffer(path.read_bytes(), np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
    if image is None:
        what = describe_file(path)
        if orientation is None and what is None:
            what = "no image size in its header: corrupt or unsupported format"
        raise FCNError(
            f"{path}: not a readable image ({what or 'corrupt, truncated or unsupported format'})"
        )
    turn = (orientation or 1) if exif_orientation else 1
    return to_bgr8(orient(image, turn), decoded=True)


def write_label_png(
    path: str | os.PathLike[str], labels: np.ndarray, palette: Sequence[Sequence[int]]
) -> None:
    """Write an ``H×W`` label map (values < 256) as a palette PNG, atomically."""
    atomic_write_bytes(path, encode_label_png(labels, palette))


def encode_label_png(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """An ``H×W`` label map (values < 256) as the bytes of a palette PNG (for any file system),
    carrying fcn-deploy's mark (`fcn_deploy._owned`): a later run may replace it."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FCNError(f"a label map must be H×W, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise FCNError("a palette PNG holds labels 0..255; this map has values outside that range")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [int(v) for colour in list(palette)[:256] for v in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return mark_png(buffer.getvalue())


def read_label_png(
    path: str | os.PathLike[str], max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """Class ids of a palette (or grayscale) label PNG as ``H×W`` uint8 (colours not interpreted).

    The size in the header is checked against ``max_megapixels`` before the pixels are decoded.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise FCNError(
                    f"{path}: label PNGs must be palette or grayscale images of class ids, "
                    f"got mode {image.mode}"
                )
            check_megapixels(image.height, image.width, max_megapixels, f"{path}: a label map")
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise FCNError(f"{path}: no such label file") from None
    except Image.DecompressionBombError as e:  # over Pillow's own limit (2 × 89 megapixels)
        raise FCNError(f"{path}: {e}", param="max_megapixels") from None
    except OSError as e:
        raise FCNError(f"{path}: not a readable label PNG ({e})") from None
