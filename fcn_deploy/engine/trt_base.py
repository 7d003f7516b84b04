"""The TensorRT objects every build and run shares: the process's one logger, and the Builder and
Runtime created through it.

One logger per process: TensorRT registers the first logger it is given and warns whenever a
later Builder or Runtime brings another (several runners, ``fcn-serve --instances 2``). Its
messages go through `logging` (TensorRT's INFO is hundreds of lines a build: DEBUG here), and
errors reported while a `TrtLogger.capture` is open go into the FCNError text instead of
"see the errors above".

Creating a Builder or Runtime fails in the binding as ``TypeError: pybind11::init(): factory
function returned nullptr`` (``createInferBuilder``/``createInferRuntime`` return nullptr when
CUDA cannot initialise: no GPU, or a driver older than the TensorRT CUDA variant needs). That is
one FCNError line here (`versions.cuda_init_message`).

Importing this module imports TensorRT (an FCNError line where it is missing).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ..errors import FCNError
from ._trt import import_tensorrt
from .plan import enum_name, severity_passes
from .versions import cuda_init_message, cuda_variant

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = import_tensorrt()

__all__ = ["TrtLogger", "create_builder", "create_runtime", "process_logger", "reported"]

log = logging.getLogger("fcn_deploy.engine.tensorrt")

# TensorRT severity name → logging level
LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.DEBUG,
    "VERBOSE": logging.DEBUG,
}

T = TypeVar("T")


class TrtLogger(trt.ILogger):
    """TensorRT's messages as `logging` records; errors also to every open `capture`.

    TensorRT calls ``log`` from its own threads too, hence the lock around the captures. Messages
    less severe than ``min_severity`` are dropped here, in ``log``: TensorRT hands an ``ILogger``
    every message (only the binding's own ``trt.Logger`` filters, `severity_passes`).
    """

    def __init__(self) -> None:
        trt.ILogger.__init__(self)  # the binding needs the base initialised explicitly
        self._lock = threading.Lock()
        self._captures: list[list[str]] = []
        self.min_severity = trt.ILogger.Severity.WARNING

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        name = enum_name(severity)
        if not severity_passes(name, enum_name(self.min_severity)):
            return
        level = LEVELS.get(name, logging.ERROR)
        text = msg.strip()
        with self._lock:
            captured = level >= logging.ERROR and bool(self._captures)
            for errors in self._captures:
                errors.append(text)
        # a captured error is in the FCNError's text: printed once, there
        log.log(logging.DEBUG if captured else level, "TensorRT: %s", text)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        """The errors TensorRT reports inside the block (from any thread)."""
        errors: list[str] = []
        with self._lock:
            self._captures.append(errors)
        try:
            yield errors
        finally:
            with self._lock:
                self._captures.remove(errors)


_LOGGER: TrtLogger | None = None
_LOGGER_LOCK = threading.Lock()


def process_logger() -> TrtLogger:
    """The process's TensorRT logger; it passes INFO and VERBOSE messages on only while DEBUG
    logging is on (they are hundreds of lines a build)."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = TrtLogger()
    debug = log.isEnabledFor(logging.DEBUG)
    _LOGGER.min_severity = trt.ILogger.Severity.VERBOSE if debug else trt.ILogger.Severity.WARNING
    return _LOGGER


def reported(errors: list[str]) -> str:
    """``": <TensorRT's last errors>"`` for an FCNError's text, or "" when it reported none."""
    return f": {' / '.join(errors[-3:])}" if errors else ""


def _create(factory: Callable[[trt.ILogger], T], what: str) -> T:
    logger = process_logger()
    with logger.capture() as errors:
        try:
            return factory(logger)
        except TypeError as e:  # pybind11::init(): factory function returned nullptr
            if "nullptr" not in str(e):
                raise
            raise FCNError(
                cuda_init_message(what, str(trt.__version__), cuda_variant(), errors)
            ) from None


def create_builder() -> trt.Builder:
    """A Builder on the process logger; FCNError naming the driver/CUDA problem if none can be."""
    return _create(trt.Builder, "Builder")


def create_runtime() -> trt.Runtime:
    """A Runtime on the process logger; FCNError naming the driver/CUDA problem if none can be."""
    return _create(trt.Runtime, "Runtime")
