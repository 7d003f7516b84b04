"""Stopping a TensorRT build with Ctrl-C or SIGTERM, as plain threading: no TensorRT needed.

Two facts decide how. ``Builder.build_serialized_network`` releases the GIL and runs in C++
until the build ends (python/src/infer/pyCore.cpp: ``py::call_guard<py::gil_scoped_release>``),
and Python runs signal handlers only on the main thread, between bytecodes: with the build on
the main thread, a handler runs only once the build is over. And ``IProgressMonitor`` "must be
thread-safe so that it can be called from multiple internal threads" (include/NvInfer.h), so its
``step_complete`` cannot be relied on to run on the main thread either. Hence `run_cancellable`:
the build runs on a worker thread while the main thread waits in short timeouts, runs the
handlers of `cancel_on_signals` (which only set a flag; ``step_complete`` returns it, False
asking TensorRT to stop), and once the worker is done raises the signal again for its usual
handler (KeyboardInterrupt: exit 130; SIGTERM: 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["cancel_on_signals", "run_cancellable"]

T = TypeVar("T")
POLL_S = 0.1  # how often the waiting main thread lets signal handlers run


@contextlib.contextmanager
def cancel_on_signals(cancelled: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM inside the block set ``cancelled``; after the block the signal is raised
    again, so its usual handler runs.

    Only the main thread can set signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        cancelled.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signal.raise_signal(received[0])


def run_cancellable(
    work: Callable[[], T], cancelled: threading.Event, name: str = "tensorrt-build"
) -> T:
    """``work()`` on a worker thread, the calling thread waiting in `POLL_S` steps with SIGINT and
    SIGTERM setting ``cancelled`` (`cancel_on_signals`); its result, or its exception, once it is
    done, then the signal raised again if one came. ``work`` must itself stop soon after
    ``cancelled`` is set (a build: through the progress monitor)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as e:  # handed to the waiting thread, raised there
            outcome["error"] = e

    worker = threading.Thread(target=target, name=name, daemon=True)
    with cancel_on_signals(cancelled):
        worker.start()
        while worker.is_alive():
            worker.join(POLL_S)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]
