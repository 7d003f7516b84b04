"""Properties of the image gate (`fcn_deploy.imageio.decode_image_bytes`, `read_header`): any
bytes become an image or one `FCNError`, within a time and memory bound.

Inputs are valid small files of every format fcn-deploy decodes (PNG, JPEG, BMP, TIFF, JPEG 2000,
Radiance HDR, WebP, PNM; several pixel types each), mutated where sizes and offsets live, PNG
files assembled chunk by chunk (text and colour-profile bombs, animation chunks, lying IHDRs),
and raw bytes behind each format's magic. The limit is 1 megapixel, so a lying header is caught
by size or by the decoder process's memory limit, never by this process running out.
"""

from __future__ import annotations

import functools
import struct
import zlib

import cv2
import numpy as np
from fuzz_helpers import INTERESTING_INTS, mutated, one_error, tried
from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy.bench.timing import PeakHostMemory, _status_kb
from fcn_deploy.imageio import decode_image_bytes, read_header

MAX_MEGAPIXELS = 1.0
SECONDS = 60.0  # per input: a decoder process restart after a crash on a busy machine included
PEAK_MB = 200.0  # this process's growth per input: 1 MP decoded (48 B/px) plus Python's slack
SOURCE = "input 'fuzz'"


def _encode(suffix: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(suffix, image, list(params))
    assert ok, suffix
    return data.tobytes()


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Small valid files: every format fcn-predict collects, in the pixel types each holds."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = cv2.resize(rng.integers(0, 255, (4, 5, 3), np.uint8), (40, 33))
    gray, rgba = rgb[:, :, 0], np.dstack([rgb, rgb[:, :, :1]])
    wide = (rgb.astype(np.uint16) * 257)[:, :, ::-1]
    floats = rgb.astype(np.float32) / 255
    files = [
        _encode(".png", rgb), _encode(".png", gray), _encode(".png", rgba), _encode(".png", wide),
        _encode(".jpg", rgb), _encode(".jpg", gray),
        _encode(".jpg", rgb, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        _encode(".bmp", rgb), _encode(".bmp", gray),
        _encode(".tif", rgb), _encode(".tif", wide), _encode(".tif", floats),
        _encode(".tif", rgba, (cv2.IMWRITE_TIFF_COMPRESSION, 5)),  # LZW
        _encode(".jp2", rgb), _encode(".jp2", gray),
        _encode(".hdr", floats),
        _encode(".webp", rgb), _encode(".webp", rgb, (cv2.IMWRITE_WEBP_QUALITY, 101)),
        _encode(".ppm", rgb), _encode(".pgm", gray), _encode(".pbm", (gray > 90).astype(np.uint8)),
    ]  # fmt: skip
    import io

    for save in (  # what Pillow writes: palette PNG with text, EXIF-rotated JPEG, RLE BMP
        lambda f: Image.fromarray(gray).convert("P").save(f, "PNG", pnginfo=_text_info()),
        lambda f: Image.fromarray(rgb).save(f, "JPEG", exif=_exif(6)),
        lambda f: Image.fromarray(gray).convert("P").save(f, "BMP", compression=1),
    ):
        buffer = io.BytesIO()
        try:
            save(buffer)
        except (OSError, ValueError, TypeError):  # an option this Pillow lacks
            continue
        files.append(buffer.getvalue())
    return tuple(files)


def _text_info() -> object:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "seed", zip=True)
    return info


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[274] = orientation
    return exif.tobytes()


def check(data: bytes) -> None:
    """The property: an image of at most the limit, as its header says, or one FCNError line."""
    tried(data)
    before = _status_kb("VmRSS")
    with PeakHostMemory() as memory, one_error(SOURCE, SECONDS):
        image = decode_image_bytes(data, MAX_MEGAPIXELS, SOURCE)
        if image is not None:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[0] * image.shape[1] <= MAX_MEGAPIXELS * 1e6
            header = read_header(data, SOURCE)
            assert header is not None and image.shape[:2] == header.shown_hw
    if memory.peak_mb is not None and before is not None:
        grown = memory.peak_mb - before / 1024
        assert grown < PEAK_MB, f"this process grew by {grown:.0f} MB decoding {len(data)} bytes"


@given(mutated(st.sampled_from(seeds())))
def test_mutated_files_decode_or_fail_in_one_line(data: bytes) -> None:
    check(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=2048)
def _compressed(size: int, byte: int) -> bytes:
    """``size`` copies of ``byte``, deflated: up to 4 MiB in about 4 KB (kept: deflating is the
    slow part of drawing an input)."""
    return zlib.compress(bytes([byte]) * size, 9)


@st.composite
def png_files(draw: st.DrawFn) -> bytes:
    """PNG files built chunk by chunk: an IHDR with any size, depth and colour type, text and
    ICC chunks whose compressed data inflates to up to 4 MiB, APNG frame chunks, a palette,
    and image data that may or may not match the header."""
    side = st.one_of(st.integers(1, 64), st.sampled_from(INTERESTING_INTS))
    width, height = draw(side), draw(side)
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    ihdr = struct.pack(">IIBBBBB", width & 0xFFFFFFFF, height & 0xFFFFFFFF, depth, colour, 0, 0,
                       draw(st.sampled_from([0, 1])))  # fmt: skip
    chunks = [_chunk(b"IHDR", ihdr)]
    inflated = st.builds(_compressed, st.sampled_from([0, 10, 1 << 16, (1 << 20) + 1, 4 << 20]),
                         st.integers(0, 255))  # fmt: skip
    extra = st.one_of(
        st.builds(lambda z: _chunk(b"zTXt", b"k\0\0" + z), inflated),
        st.builds(lambda z: _chunk(b"iCCP", b"icc\0\0" + z), inflated),
        st.builds(lambda z: _chunk(b"iTXt", b"k\0\1\0\0\0" + z), inflated),
        st.builds(lambda t: _chunk(b"tEXt", b"k\0" + t), st.binary(max_size=64)),
        st.builds(lambda n: _chunk(b"PLTE", bytes(3 * n)), st.integers(0, 300)),
        st.builds(lambda f, p: _chunk(b"acTL", struct.pack(">II", f, p)),
                  st.sampled_from(INTERESTING_INTS), st.integers(0, 3)),
        st.builds(lambda w, h, x, y: _chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, w, h, x, y,
                                                                  1, 1, 0, 0)),
                  side, side, st.integers(0, 70), st.integers(0, 70)),
        st.builds(lambda e: _chunk(b"eXIf", e), st.just(_exif(6))),
        st.builds(_chunk, st.binary(min_size=4, max_size=4), st.binary(max_size=32)),
    )  # fmt: skip
    chunks += draw(st.lists(extra, max_size=4))
    rows = draw(st.integers(0, 70))
    raw = bytes(rows * (1 + draw(st.integers(1, 8)) * draw(st.integers(1, 70))))
    chunks.append(_chunk(b"IDAT", zlib.compress(raw)))
    chunks += draw(st.lists(extra, max_size=2))
    chunks.append(_chunk(b"IEND", b""))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(chunks)
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


@given(png_files())
def test_png_files_built_chunk_by_chunk_decode_or_fail_in_one_line(data: bytes) -> None:
    check(data)


MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*",
         b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51", b"#?RADIANCE\n", b"RIFF",
         b"P6\n", b"P5 ", b"P4\n", b"GIF89a", b"")  # fmt: skip


@given(st.sampled_from(MAGIC), st.binary(max_size=512))
def test_any_bytes_behind_a_magic_number_decode_or_fail_in_one_line(
    magic: bytes, rest: bytes
) -> None:
    check(magic + rest)
