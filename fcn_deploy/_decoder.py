"""A decoder process: image formats whose decoders can crash on a lying file are decoded here.

OpenCV's decoders for JPEG 2000, TIFF, WebP, BMP, PNM and Radiance HDR trust sizes and offsets
inside the file; a 1.5 KB JPEG 2000 whose ``ihdr`` box disagrees with its codestream makes
OpenJPEG segfault. Decoded in this package's own process, that would end a whole fcn-predict run
or fcn-serve. `DecoderProcess` runs them in one persistent subprocess (``_decode_worker.py``)
instead, with a memory limit (``RLIMIT_AS``, from the size the file's header declares, itself
within the megapixel limit) and a CPU and wall-clock time limit per image; a crash, a hang or an
exhausted limit is a `DecodeFailed` for that image, and the next image gets a fresh process.

One process serves the whole Python process: threads take turns (a lock), a forked child starts
its own (the parent's pipes are closed in the child), and it ends with its parent, which closes
its input at exit. It is started on first use: files decoded in-process never start it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._decode_worker import ERROR, IMAGE, LENGTH, NONE, OK, READY, REQUEST, STATUS
from ._gate import os_reason

__all__ = ["DecodeFailed", "DecoderProcess", "decoder_process"]

START_SECONDS = 120.0  # importing NumPy and OpenCV on a busy machine
WORKER = Path(__file__).with_name("_decode_worker.py")
# run as a script, without the current folder on sys.path (a numpy.py there must not be imported)
_BOOT = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"


class DecodeFailed(Exception):
    """The decoder process could not decode a file: it crashed, ran out of time or memory, or
    OpenCV raised. The message says which, in a few words."""


class DecoderProcess:
    """The persistent decoder subprocess (see the module); `decode` is safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def decode(
        self,
        data: bytes,
        budget: int | None,
        seconds: float,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray | None:
        """OpenCV's ``imdecode(data, IMREAD_UNCHANGED)`` in the subprocess; None where OpenCV
        says the bytes are no image it decodes. ``budget``: bytes the decode may map (None: no
        limit); ``seconds``: its CPU and wall-clock limit; ``size``: the (height, width) the
        file's header declares: pixels of another size are refused before they are received
        (this process never holds more than the header allowed)."""
        request = REQUEST.pack(len(data), budget or 0, seconds)
        with self._lock:
            try:
                proc = self._ready()
                try:
                    _send(proc, request, data)
                except OSError:  # it died while idle (the OOM killer, a kill): one fresh start
                    self._stop()
                    proc = self._ready()
                    _send(proc, request, data)
            except OSError as e:  # no process to be had (out of processes, memory or files)
                self._stop()
                raise DecodeFailed(f"the decoder process cannot run ({os_reason(e)})") from None
            try:
                return self._answer(proc, time.monotonic() + seconds, size)
            except DecodeFailed:
                self._stop()
                raise

    def _ready(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # it says nothing: failures come back as answers
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"},
        )
        self._proc = proc
        try:
            (status,) = STATUS.unpack(_receive(proc, STATUS.size, time.monotonic() + START_SECONDS))
            if status != READY:
                raise DecodeFailed(self._message(proc, time.monotonic() + START_SECONDS))
        except DecodeFailed as e:
            self._stop()
            raise DecodeFailed(f"the decoder process did not start: {e}") from None
        return proc

    def _answer(
        self, proc: subprocess.Popen[bytes], deadline: float, size: tuple[int, int] | None
    ) -> np.ndarray | None:
        (status,) = STATUS.unpack(_receive(proc, STATUS.size, deadline))
        if status == NONE:
            return None
        if status == ERROR:
            raise DecodeFailed(f"the decoder failed: {self._message(proc, deadline)}")
        if status != OK:
            raise DecodeFailed(f"the decoder process answered {status}")
        dtype, h, w, c = IMAGE.unpack(_receive(proc, IMAGE.size, deadline))
        if size is not None and (h, w) != size:
            raise DecodeFailed(
                f"its header says {size[1]}x{size[0]} (WxH) but its pixels are {w}x{h}: a "
                "damaged or forged file"
            )
        dtype = np.dtype(dtype.rstrip(b"\0").decode("ascii"))
        image = np.empty((h, w, c) if c > 1 else (h, w), dtype)
        _receive(proc, image.nbytes, deadline, image.reshape(-1).view(np.uint8).data)
        return image

    def _message(self, proc: subprocess.Popen[bytes], deadline: float) -> str:
        (length,) = LENGTH.unpack(_receive(proc, LENGTH.size, deadline))
        return bytes(_receive(proc, length, deadline)).decode("utf-8", "replace")

    def _stop(self) -> None:
        """Kill the process (if any): it may be hung, or halfway through an answer."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def close(self) -> None:
        """End the process at exit: its input closes, it returns; one that does not is killed."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()  # type: ignore[union-attr]

    def _forget(self) -> None:
        """In a forked child: drop the parent's process without touching it (it is not ours)."""
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()  # type: ignore[union-attr]
            proc.returncode = 0  # not our child: never waited for or signalled from here


def _send(proc: subprocess.Popen[bytes], *parts: bytes) -> None:
    fd = proc.stdin.fileno()  # type: ignore[union-attr]
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _receive(
    proc: subprocess.Popen[bytes], n: int, deadline: float, into: memoryview | None = None
) -> Any:
    """``n`` bytes of the answer (into ``into`` when given), waiting until ``deadline``; a
    `DecodeFailed` naming the cause when the process ends or the time runs out first."""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    view = into if into is not None else memoryview(bytearray(n))
    poller = select.poll()  # not select(): a server may hold more than 1024 descriptors
    poller.register(fd, select.POLLIN)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise DecodeFailed(_timed_out(proc))
        k = os.readv(fd, [view[got:n]])
        if k == 0:
            raise DecodeFailed(_ended(proc))
        got += k
    return view


def _timed_out(proc: subprocess.Popen[bytes]) -> str:
    proc.kill()
    return "the decoder ran out of time (a hang, or an image far slower to decode than its size)"


def _ended(proc: subprocess.Popen[bytes]) -> str:
    """Why the decoder process ended: the signal that killed it, in words."""
    try:
        code = proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "the decoder process stopped answering"
    if code == -signal.SIGXCPU:
        return "the decoder ran out of CPU time (an image far slower to decode than its size)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal: no name
            name = f"signal {-code}"
        return f"the decoder crashed ({name}): the file is damaged or forged"
    return f"the decoder process exited with code {code}"


_PROCESS: DecoderProcess | None = None
_PROCESS_LOCK = threading.Lock()


def decoder_process() -> DecoderProcess:
    """This Python process's one `DecoderProcess` (its subprocess starts at the first decode)."""
    global _PROCESS
    with _PROCESS_LOCK:
        if _PROCESS is None:
            _PROCESS = DecoderProcess()
            atexit.register(_PROCESS.close)
        return _PROCESS


def _after_fork_in_child() -> None:
    global _PROCESS_LOCK
    _PROCESS_LOCK = threading.Lock()
    if _PROCESS is not None:
        _PROCESS._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
