"""The image decoder process: decodes files with OpenCV under resource limits, one at a time.

Started by `fcn_deploy._decoder.DecoderProcess` as a plain script (it imports NumPy and OpenCV
only, not fcn_deploy, whose import pulls in torch). The protocol on stdin/stdout, little-endian:

- request: ``<QQd`` (data length, memory budget in bytes (0: none), CPU seconds), then the data;
- answer: ``<B`` status, then for ``OK`` ``<4sIII`` (NumPy dtype string, height, width,
  channels) and the pixels; for ``NONE`` nothing (not an image OpenCV decodes); for ``ERROR``
  ``<I`` and a UTF-8 message.

The memory budget becomes the soft ``RLIMIT_AS`` above what the process already maps, the CPU
seconds a soft ``RLIMIT_CPU`` above what it has used (SIGXCPU ends it), both lifted again after
the decode. A decoder that crashes or hangs ends this process, never its parent. Once ready it
writes one byte (``READY``), or ``ERROR`` and a message when NumPy or OpenCV cannot be imported.
"""

from __future__ import annotations

import os
import resource
import struct

REQUEST = struct.Struct("<QQd")
STATUS = struct.Struct("<B")
IMAGE = struct.Struct("<4sIII")
LENGTH = struct.Struct("<I")
READY, OK, NONE, ERROR = 0, 1, 2, 3


def _read_exact(fd: int, n: int) -> bytearray | None:
    """``n`` bytes from ``fd``; None at end of input (the parent went away)."""
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return buffer


def _write(fd: int, *parts: bytes | memoryview) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view) :]


def _error(fd: int, message: str) -> None:
    data = message.encode("utf-8", "replace")[:4096]
    _write(fd, STATUS.pack(ERROR), LENGTH.pack(len(data)), data)


def _mapped_bytes() -> int:
    """The process's virtual size now (what ``RLIMIT_AS`` counts)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _unlimit(kind: int) -> None:
    resource.setrlimit(kind, (resource.getrlimit(kind)[1],) * 2)


def _decode(cv2: object, np: object, data: bytearray, budget: int, seconds: float) -> object:
    """OpenCV's decode of ``data`` under the limits (lifted again afterwards)."""
    if budget:
        _limit(resource.RLIMIT_AS, _mapped_bytes() + budget)
    if seconds > 0:
        used = resource.getrusage(resource.RUSAGE_SELF)
        _limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + seconds) + 1)
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # type: ignore[attr-defined]
    finally:
        _unlimit(resource.RLIMIT_AS)
        _unlimit(resource.RLIMIT_CPU)


def main() -> None:
    out = os.dup(1)  # the answers' channel; stray prints of a C library go to stderr instead
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    try:
        import cv2
        import numpy as np
    except Exception as e:  # the parent reports it: images of these formats cannot be decoded
        _error(out, f"cannot import OpenCV or NumPy in the decoder process ({e})")
        return
    logging_module = getattr(getattr(cv2, "utils", None), "logging", None)
    set_level = getattr(logging_module, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    if set_level is not None:
        set_level(0)  # silent: the parent's one-line error says what went wrong
    cv2.setNumThreads(1)
    _write(out, STATUS.pack(READY))
    while True:
        head = _read_exact(0, REQUEST.size)
        if head is None:
            return
        length, budget, seconds = REQUEST.unpack(head)
        data = _read_exact(0, length)
        if data is None:
            return
        try:
            image = _decode(cv2, np, data, budget, seconds)
        except (cv2.error, MemoryError) as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            _error(out, lines[-1].strip())
            continue
        del data
        if image is None:
            _write(out, STATUS.pack(NONE))
            continue
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        c = image.shape[2] if image.ndim == 3 else 1
        dtype = image.dtype.str.encode("ascii")
        _write(out, STATUS.pack(OK), IMAGE.pack(dtype, h, w, c), image.data)


if __name__ == "__main__":
    main()
