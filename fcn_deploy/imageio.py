"""Images in and label maps out, by one rule shared by the API, the CLIs and the datasets.

Label maps are palette PNGs (PASCAL VOC's format: the pixel value is the class id, the palette
only colours it), so they open as coloured images and read back as exact class ids. OpenCV cannot
write or read palette indices, so Pillow does that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ._gate import read_regular
from ._io import atomic_write_bytes, describe_bytes
from ._owned import mark_png
from .errors import FCNError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "IN_PROCESS_FORMATS",
    "ImageHeader",
    "check_megapixels",
    "decode_image_bytes",
    "encode_label_png",
    "orient",
    "quiet_opencv_logging",
    "read_header",
    "read_image",
    "read_image_file",
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


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares, read without decoding any pixel."""

    #: Pillow's name ("PNG", "JPEG", "TIFF", "JPEG2000", ...), "APNG", "progressive JPEG", "HDR"
    format: str
    width: int
    height: int
    orientation: int = 1  # EXIF orientation: 1 as stored, 2..8 turned or mirrored when shown

    @property
    def shown_hw(self) -> tuple[int, int]:
        """(height, width) of the picture as shown, after its orientation."""
        turned = self.orientation in (5, 6, 7, 8)
        return (self.width, self.height) if turned else (self.height, self.width)


#: Formats decoded in this process: libpng and libjpeg-turbo take the size from the same header
#: the gate has checked (PNG's IHDR, JPEG's SOF), are fuzzed continuously upstream, and carry
#: bulk inference (millions of small files). Every other format is decoded in the decoder
#: process (`fcn_deploy._decoder`), under memory and time limits, where a crash ends only it.
IN_PROCESS_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
#: What Pillow may identify (its header readers are Python; no pixel is decoded by Pillow here).
_PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP", "PPM", "JPEG2000", "SUN", "GIF")
#: Memory the decoder process may map per pixel its header declares: the largest measured need
#: is 24 bytes (float32 RGB TIFF and HDR: the decoded image twice); 4-channel float and 16-bit
#: JPEG 2000 stay below 48.
DECODE_BYTES_PER_PIXEL = 48
DECODE_BYTES_SLACK = 256 << 20  # code, thread stacks and malloc arenas of a decode
#: Seconds the decoder process may take (CPU and wall clock): a base plus a rate 7 times what
#: JPEG 2000, the slowest, took on a busy 2-core EPYC (0.14 s per megapixel at 25 MP).
DECODE_SECONDS = 10.0
DECODE_SECONDS_PER_MEGAPIXEL = 1.0
#: Bytes per pixel of the largest uncompressed image (4 float32 channels): an image file larger
#: than its megapixel limit allows at this rate is refused unread.
MAX_FILE_BYTES_PER_PIXEL = 16
_PILLOW_LIMIT_LOCK = threading.Lock()


def read_header(data: bytes, source: str = "an encoded image") -> ImageHeader | None:
    """The header of an image file's ``data``; None when no header reader finds a size.

    No pixel is decoded. Pillow's readers (Python code, bounded by the data's size) identify the
    formats fcn-deploy decodes; Radiance HDR and float TIFF are read here. Whatever goes wrong in
    a reader is one `FCNError` naming ``source`` (a path, or a request's input): a damaged
    header, a PNG text chunk that would inflate past Pillow's 1 MB, a JPEG 2000 box that
    disagrees with its codestream, a GIF (not supported).
    """
    try:
        return _pillow_header(data, source)
    except UnidentifiedImageError:
        size = _hdr_size(data) or _tiff_size(data)
        return None if size is None else ImageHeader("HDR" if data[:1] == b"#" else "TIFF", *size)
    except FCNError:
        raise
    except Exception as e:  # the gate: any reader failure is the file's
        reason = _first_line(e)
        if "MAX_TEXT_CHUNK" in reason or "text chunks" in reason:
            reason = "a compressed text or colour-profile chunk inflates past 1 MB"
        raise FCNError(
            f"{source}: not a readable image (its header is damaged: {reason})"
        ) from None


@contextlib.contextmanager
def _pillow_image(data: bytes, formats: tuple[str, ...] = _PILLOW_FORMATS) -> Iterator[Image.Image]:
    """Pillow's image of a file's bytes, opened (its header read), not decoded. Pillow's own size
    limit (2 × 89 MP) is lifted for the open only when a file is over it: the caller's
    ``max_megapixels`` is what applies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning, "Corrupt EXIF data", ...
        try:
            image = Image.open(io.BytesIO(data), formats=formats)
        except Image.DecompressionBombError:
            with _PILLOW_LIMIT_LOCK:
                limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    image = Image.open(io.BytesIO(data), formats=formats)
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
        with image:
            yield image


def _pillow_header(data: bytes, source: str) -> ImageHeader:
    with _pillow_image(data) as image:
        kind, (width, height) = str(image.format), image.size
        if kind == "GIF":
            raise FCNError(f"{source}: a GIF image; GIFs are not supported (convert to PNG)")
        if kind == "PNG" and getattr(image, "n_frames", 1) != 1:
            kind = "APNG"  # OpenCV parses its frame chunks itself: not in this process
        elif kind == "PNG" and not _plain_png(data):
            kind = "irregular PNG"  # libpng's and OpenCV's error paths: not in this process
        if kind in ("JPEG", "MPO") and image.info.get("progressive"):
            # its scans are not bounded by its size: a 280 KB file of 300 repeated scans took
            # libjpeg 25 s at 64 MP; in the decoder process its time is limited
            kind = "progressive JPEG"
        orientation = _orientation(image)
    if kind == "JPEG2000":
        stream = _jp2_codestream_size(data)
        if stream is not None and stream != (width, height):
            raise FCNError(
                f"{source}: not a readable image (its JP2 header says {width}x{height} (WxH) but "
                f"its codestream {stream[0]}x{stream[1]}: a damaged or forged file)"
            )
    return ImageHeader(kind, int(width), int(height), orientation)


def _jp2_codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SIZ marker of a JP2 file's codestream box (``jp2c``), which is
    what OpenJPEG decodes; None when there is none to read."""
    at = 0
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        start = at + 8
        if length == 1 and at + 16 <= len(data):  # a 64-bit length follows
            (length,) = struct.unpack(">Q", data[at + 8 : at + 16])
            start = at + 16
        if kind == b"jp2c":
            siz = data[start : start + 24]  # SOC, SIZ, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz
            if len(siz) < 24 or siz[:4] != b"\xff\x4f\xff\x51":
                return None
            x, y, x0, y0 = struct.unpack(">IIII", siz[8:24])
            return x - x0, y - y0
        if length == 0 or (length < 8 and length != 1):  # to the end, or damaged
            return None
        at += length
    return None


_ORIENTATION_TAG = 274  # EXIF Orientation


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, read without decoding its pixels (Pillow's
    ``getexif`` would decode a PNG to look for late EXIF chunks; only the header's is read). A
    damaged EXIF block counts as no orientation: the pixels are still the picture."""
    try:
        if image.format in ("JPEG", "MPO", "TIFF"):
            exif = image.getexif()  # parsed from the header when the file was opened
        elif "exif" in image.info:  # PNG's eXIf or WebP's EXIF chunk, when it precedes the pixels
            exif = Image.Exif()
            exif.load(image.info["exif"])
        else:
            return 1
        value = exif.get(_ORIENTATION_TAG, 1)
    except Exception:  # any failure of the EXIF parser: no orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


HEADER_BYTES = 1 << 16  # where the text header of a Radiance HDR file must end


def _hdr_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a Radiance HDR file: text header, blank line, ``-Y H +X W``."""
    if not head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return None
    found = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n", head[:HEADER_BYTES])
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


def decode_image_bytes(
    data: bytes,
    max_megapixels: float | None,
    source: str = "an encoded image",
    check_size: Callable[[int, int], None] | None = None,
    exif_orientation: bool = True,
) -> np.ndarray | None:
    """Decode an image file's bytes (JPEG, PNG, ...) to uint8 BGR as `read_image` does; None if
    they are not an image. ``source`` names them in errors (a path, a request's input).

    The gate every outside image passes: the header is read (`read_header`) and its size checked
    against ``max_megapixels`` and by ``check_size(height, width)`` (the size as shown, e.g. a
    server's model bounds) before any pixel is decoded; bytes whose header gives no size are not
    decoded at all. PNG and JPEG are decoded here, other formats in the decoder process, whose
    crash, hang or exhausted limit is an `FCNError` for this image only. ``exif_orientation``:
    turn the pixels as viewers show them (`read_image`).
    """
    header = read_header(data, source)
    if header is None:
        return None
    check_megapixels(header.height, header.width, max_megapixels, f"{source}: an image")
    if not exif_orientation:
        header = dataclasses.replace(header, orientation=1)
    if check_size is not None:
        check_size(*header.shown_hw)
    image = _decode(data, header, source)
    if image is None:
        return None
    if image.shape[:2] != (header.height, header.width):
        raise FCNError(
            f"{source}: not a readable image (its header says {header.width}x{header.height} "
            f"(WxH) but its pixels are {image.shape[1]}x{image.shape[0]}: a damaged or forged "
            "file)"
        )
    return to_bgr8(orient(image, header.orientation), decoded=True)


_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})


def _plain_png(data: bytes) -> bool:
    """Whether a PNG's chunks are what libpng reads without an error path: IHDR first, at most
    one PLTE before the image data and only where the colour type uses one, the IDAT chunks
    together, IEND last, no animation chunks (OpenCV decodes those with its own APNG reader)
    and correct checksums on the critical chunks. Anything else is decoded in the decoder
    process: a 1.2 KB PNG with a stray acTL and a second PLTE made OpenCV segfault here."""
    pos, chunks, plte, idat = 8, 0, 0, 0  # idat: 0 none yet, 1 in them, 2 after them
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data) or kind in _PNG_ANIMATION or (kind == b"IHDR") != (chunks == 0):
            return False
        if kind[:1].isupper():  # critical: known, and its checksum right
            crc = int.from_bytes(data[end - 4 : end], "big")
            if kind not in _PNG_CRITICAL or zlib.crc32(data[pos + 4 : end - 4]) != crc:
                return False
        if kind == b"PLTE":
            plte += 1
            if plte > 1 or idat or data[25] not in (2, 3, 6):  # data[25]: IHDR's colour type
                return False
        if kind == b"IDAT":
            if idat == 2:
                return False
            idat = 1
        elif idat == 1:
            idat = 2
        if kind == b"IEND":
            return length == 0 and idat == 2
        chunks, pos = chunks + 1, end
    return False


def _decode(data: bytes, header: ImageHeader, source: str) -> np.ndarray | None:
    """OpenCV's decode of ``data``: here for `IN_PROCESS_FORMATS`, else in the decoder process
    with a memory budget and time from the size the header declares."""
    if header.format in IN_PROCESS_FORMATS:
        quiet_opencv_logging()  # our error names a corrupt file; OpenCV's WARN line would repeat it
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    from ._decoder import DecodeFailed, decoder_process

    pixels = header.width * header.height
    budget = pixels * DECODE_BYTES_PER_PIXEL + len(data) + DECODE_BYTES_SLACK
    seconds = DECODE_SECONDS + DECODE_SECONDS_PER_MEGAPIXEL * pixels / 1e6
    try:
        return decoder_process().decode(data, budget, seconds, (header.height, header.width))
    except DecodeFailed as e:
        raise FCNError(f"{source}: not a readable {header.format} image ({e})") from None


@functools.lru_cache(maxsize=16)
def _file_limit(max_megapixels: float | None) -> int | None:
    """The largest image file read for ``max_megapixels``: its pixels uncompressed, plus 1 MiB."""
    if max_megapixels is None:
        return None
    # capped: a limit of 1e302 megapixels is no limit, not an overflow
    return int(min(max_megapixels * 1e6 * MAX_FILE_BYTES_PER_PIXEL, 2.0**62)) + (1 << 20)


@functools.lru_cache(maxsize=16)
def _file_why(max_megapixels: float | None) -> str:
    limit = _file_limit(max_megapixels)
    if limit is None:
        return ""
    return (f" (an image within max_megapixels={max_megapixels:g} takes at most "
            f"{limit / 1e9:.1f} GB uncompressed)")  # fmt: skip


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def read_image_file(
    path: str | os.PathLike[str], max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> bytes:
    """The bytes of an image file, undecoded: a regular file only (a FIFO or a device is refused
    by name), and none larger than any image within ``max_megapixels`` could be uncompressed."""
    return read_regular(path, "image file", _file_limit(max_megapixels), _file_why(max_megapixels))


def read_image(
    path: str | os.PathLike[str],
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    exif_orientation: bool = True,
) -> np.ndarray:
    """Decode an image file to uint8 BGR (the rule of `to_bgr8`), turned by its EXIF orientation
    as viewers show it (as ``cv2.imread`` does); a clear error if it can't be read. Datasets pass
    ``exif_orientation=False``: their label maps are drawn on the stored pixels.

    Only a regular file is read (a FIFO or a device is refused by name), and one larger than any
    image within ``max_megapixels`` could be is refused unread. Then `decode_image_bytes`'s
    gate: the size is read from the header and checked against ``max_megapixels`` (None: no
    limit) before decoding; a file whose header gives no size is refused undecoded.
    """
    path = Path(path)
    data = read_image_file(path, max_megapixels)
    image = decode_image_bytes(data, max_megapixels, str(path), exif_orientation=exif_orientation)
    if image is None:
        what = describe_bytes(data)
        if what is None and read_header(data, str(path)) is None:
            what = "no image size in its header: corrupt or unsupported format"
        raise FCNError(
            f"{path}: not a readable image ({what or 'corrupt, truncated or unsupported format'})"
        )
    return image


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

    Read through the image gate (a regular file, its header read and its size checked against
    ``max_megapixels`` before the pixels are decoded), then decoded by Pillow, which keeps the
    palette indices.
    """
    data = read_regular(path, "label file", _file_limit(max_megapixels), _file_why(max_megapixels))
    header = read_header(data, str(path))
    if header is None or header.format != "PNG":
        kind = "no image size in its header" if header is None else f"a {header.format} image"
        raise FCNError(f"{path}: not a readable label PNG ({kind})")
    check_megapixels(header.height, header.width, max_megapixels, f"{path}: a label map")
    try:
        with _pillow_image(data, ("PNG",)) as image:
            if image.mode not in ("P", "L"):
                raise FCNError(
                    f"{path}: label PNGs must be palette or grayscale images of class ids, "
                    f"got mode {image.mode}"
                )
            return np.array(image, dtype=np.uint8)
    except FCNError:
        raise
    except Exception as e:  # the gate: any decoder failure is the file's
        raise FCNError(f"{path}: not a readable label PNG ({_first_line(e)})") from None
