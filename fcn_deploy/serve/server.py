"""`fcn-serve`: a `Segmenter` behind a real Triton Inference Server, through PyTriton.

PyTriton's wheel bundles ``tritonserver`` with its Python backend: Triton owns HTTP, gRPC,
metrics, health and the dynamic batcher; each model instance's backend stub hands the requests
to an inference callable in this process, which runs them through a `Segmenter`. See
`fcn_deploy.serve.protocol` for the models and tensors a client sees.

Shutdown is explicit because a naive ``Triton.serve()`` killed by SIGTERM leaves ``tritonserver``
and its stubs running: `serve` turns SIGTERM/SIGINT into a stop request; stopping sends
``tritonserver`` SIGINT, which refuses new requests, finishes the in-flight ones (up to
``exit_timeout`` seconds) and unloads the models (the stubs exit), and only then are the
callables here torn down.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import secrets
import shutil
import signal
import socket
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from .._gate import regular_file
from .._sizes import padded_size, sizes_text
from ..api import Segmenter
from ..errors import FCNError
from ..export.triton_repo import MODEL_NAME
from ..imageio import DEFAULT_MAX_MEGAPIXELS, decode_image_bytes
from ..meta import SizeBounds
from .protocol import ENCODED_SUFFIX, IMAGE_BYTES_INPUT, IMAGE_INPUT, LABELS_OUTPUT, ServedModel

__all__ = [
    "START_ATTEMPTS",
    "FCNServer",
    "ServeConfig",
    "check_images",
    "decode_image",
    "instance_race",
    "process_tree",
    "run_until_signalled",
    "serve",
    "served_model",
    "served_sizes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """How the server listens and batches (Triton's defaults for the ports)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str = "fcn"
    max_batch: int = 8  # images per model call the dynamic batcher may form
    queue_delay_us: int = 100  # how long the batcher may hold a request (fcn-export's default too)
    instances: int = 1  # model instances, each with its own Segmenter (requests run in parallel)
    log_verbose: int = 0  # tritonserver's --log-verbose
    triton_log: str | None = None  # where tritonserver's own log goes (None: this process's stdout)
    exit_timeout: int = 30  # seconds tritonserver waits for in-flight requests when stopping
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS  # largest image a request may carry

    def __post_init__(self) -> None:
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port,
                 "metrics_port": self.metrics_port}  # fmt: skip
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise FCNError(f"{name} must be 1..65535, got {port}", param=name)
        if len(set(ports.values())) != len(ports):
            raise FCNError(
                f"http_port, grpc_port and metrics_port must differ, got {list(ports.values())}"
            )
        if not MODEL_NAME.match(self.model_name):
            raise FCNError(
                f"model_name={self.model_name!r}: use letters, digits, '.', '_' and '-' only"
            )
        if self.max_batch < 1:
            raise FCNError(f"max_batch must be at least 1, got {self.max_batch}", param="max_batch")
        if self.queue_delay_us < 0:
            raise FCNError(
                f"queue_delay_us must be ≥ 0, got {self.queue_delay_us}", param="queue_delay_us"
            )
        if self.instances < 1:
            raise FCNError(f"instances must be at least 1, got {self.instances}", param="instances")
        if self.log_verbose < 0:
            raise FCNError(f"log_verbose must be ≥ 0, got {self.log_verbose}", param="log_verbose")
        if self.exit_timeout < 1:
            raise FCNError(
                f"exit_timeout must be at least 1 second, got {self.exit_timeout}",
                param="exit_timeout",
            )
        if self.max_megapixels is not None and not self.max_megapixels > 0:
            raise FCNError(
                f"max_megapixels must be > 0 (or None), got {self.max_megapixels}",
                param="max_megapixels",
            )

    @property
    def encoded_model_name(self) -> str:
        return self.model_name + ENCODED_SUFFIX


def served_sizes(segmenter: Segmenter, max_batch: int) -> tuple[SizeBounds, ...]:
    """The image sizes the server takes, one range per size range of the model (an engine's
    optimization profiles, which need not nest): the Segmenter pads images below a range's
    minimum, so 1×1 up to each range's largest input (any size for eager PyTorch)."""
    return tuple(
        SizeBounds(min_hw=(1, 1), max_hw=r.max_hw, max_batch=max_batch)
        for r in segmenter.runner.size_ranges
    )


def served_model(segmenter: Segmenter, max_batch: int) -> ServedModel:
    """What fcn-serve (or fcn-ui) publishes about ``segmenter``: its `served_sizes`, and the box
    around them all (what older clients read)."""
    box = SizeBounds(min_hw=(1, 1), max_hw=segmenter.runner.bounds.max_hw, max_batch=max_batch)
    return ServedModel.of(segmenter, box, served_sizes(segmenter, max_batch))


def check_images(shape: Sequence[int], sizes: Sequence[SizeBounds]) -> str | None:
    """Why a request's ``N×H×W×3`` image tensor cannot be served, or None.

    Triton itself rejects a wrong dtype, rank or channel count against the model config before
    the request gets here; what is left depends on the values of the dimensions.
    """
    n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
    if n < 1:
        return f"input '{IMAGE_INPUT}' holds no images (batch dimension 0)"
    if h < 1 or w < 1:
        return f"input '{IMAGE_INPUT}' has an image of {h}x{w} (HxW) pixels; both must be ≥ 1"
    return _size_problem(h, w, sizes)


def _size_problem(h: int, w: int, sizes: Sequence[SizeBounds]) -> str | None:
    if padded_size(sizes, h, w) is None:
        return (
            f"an image of {h}x{w} (HxW) is larger than this model accepts ({sizes_text(sizes)}); "
            "resize it, or serve a model exported with a larger --max-size (an engine: built "
            "with profiles holding it)"
        )
    return None


def decode_image(
    data: bytes,
    sizes: Sequence[SizeBounds],
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """An encoded image file (JPEG, PNG, ...) → decoded pixels; FCNError if it isn't one.

    Through the image gate (`decode_image_bytes`): the size its header declares is checked
    against ``max_megapixels`` and the model's bounds before decoding, so a small request that
    claims a large image costs nothing, and a decoder crash costs only the decoder process.
    """
    source = f"input '{IMAGE_BYTES_INPUT}'"

    def check_size(height: int, width: int) -> None:
        problem = _size_problem(height, width, sizes)
        if problem:
            raise FCNError(f"{source}: {problem}")

    image = decode_image_bytes(data, max_megapixels, source, check_size)  # EXIF orientation too
    if image is None:
        raise FCNError(
            f"{source}: {len(data)} bytes that do not decode as an image (send a whole JPEG, "
            "PNG, BMP, TIFF or WebP file)"
        )
    # again after decoding: EXIF orientation may have turned the header's size
    problem = _size_problem(image.shape[0], image.shape[1], sizes)
    if problem:
        raise FCNError(f"input '{IMAGE_BYTES_INPUT}': {problem}")
    return image


class _Instance:
    """One model instance: a Segmenter and the two inference callables that share it.

    The image and encoded models run in separate threads of this process; the lock keeps one
    runner call at a time per Segmenter (a TensorRT execution context is not thread-safe).
    """

    def __init__(
        self, segmenter: Segmenter, sizes: Sequence[SizeBounds], max_megapixels: float | None
    ) -> None:
        self.segmenter, self.sizes, self.max_megapixels = segmenter, sizes, max_megapixels
        self.lock = threading.Lock()

    def infer_images(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """The ``image`` model: each request is ``N×H×W×3``; Triton batches equal sizes only.

        An error fails every request of the call (PyTriton answers a call as a whole), which is
        right here: requests batched together have the same shape, so they are all equally bad.
        """
        arrays = [np.asarray(r[IMAGE_INPUT]) for r in requests]
        problems = {p for p in (check_images(a.shape, self.sizes) for a in arrays) if p}
        if problems:
            raise FCNError("; ".join(sorted(problems)))
        images = [image for a in arrays for image in a]
        with self.lock:
            labels = self.segmenter.predict_batch(images)
        responses, k = [], 0
        for a in arrays:
            responses.append({LABELS_OUTPUT: np.stack(labels[k : k + len(a)]).astype(np.uint8)})
            k += len(a)
        return responses

    def infer_encoded(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """The ``image_bytes`` model: one file per request, never batched (see the protocol)."""
        responses = []
        for r in requests:
            data = np.asarray(r[IMAGE_BYTES_INPUT]).reshape(-1)[0]
            image = decode_image(bytes(data), self.sizes, self.max_megapixels)
            with self.lock:
                labels = self.segmenter.predict(image)
            responses.append({LABELS_OUTPUT: labels.astype(np.uint8)})
        return responses


TRITON_PROCESSES = ("tritonserver", "triton_python_backend_stub")
IDLE_SECONDS = 2.0  # how long a drained tritonserver may wait for idle client connections


def _end(pid: int | None) -> None:
    """SIGKILL tritonserver ``pid`` if it still runs: its models are unloaded or the exit timeout
    is over, so only idle client connections keep it waiting."""
    if pid and _running(pid):
        log.info("ending tritonserver, which waits for idle client connections to close")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tritonserver_pid(triton: Any) -> int | None:
    """The pid of the tritonserver PyTriton started for ``triton`` (None if it never started).

    PyTriton 0.7 keeps it privately (``Triton._triton_server._tritonserver_running_cmd``,
    pinned by the ``serve`` extra); the model stubs are that process's children.
    """
    server = getattr(triton, "_triton_server", None)
    pid = getattr(getattr(server, "_tritonserver_running_cmd", None), "pid", None)
    return int(pid) if pid else None


def process_tree(pid: int, names: Sequence[str] | None = None) -> list[int]:
    """Process ids below ``pid`` (read from /proc), optionally only those running ``names``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    if names is None:
        return found
    return [p for p in found if _executable(p) in names]


def _executable(pid: int) -> str:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (its socket inodes matched in /proc/PID/net/tcp*)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


WORKSPACE_PREFIX = "workspace_fcn-serve-"  # + pid + "-" + random: whose it is, and if it is stale


def remove_stale_workspaces(home: Path) -> int:
    """Remove PyTriton workspaces (a copy of tritonserver, ~22 MB each) of fcn-serve processes
    that no longer run: a ``kill -9`` leaves its workspace behind. Others' are left alone."""
    removed = 0
    for path in home.glob(WORKSPACE_PREFIX + "*"):
        pid = path.name[len(WORKSPACE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d workspace(s) of fcn-serve processes no longer running", removed)
    return removed


def _workspace() -> Any:
    """A PyTriton workspace named after this process, after removing stale ones."""
    from pytriton.constants import PYTRITON_HOME
    from pytriton.utils.workspace import Workspace

    remove_stale_workspaces(PYTRITON_HOME)
    return Workspace(PYTRITON_HOME / f"{WORKSPACE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")


def _lock_port(port: int, name: str) -> int | None:
    """Hold an exclusive lock on ``port`` for this process's lifetime (a file descriptor), so two
    fcn-serve started together cannot both pass the free-port check: the second is refused here.
    None where the lock file cannot be opened (another user's): the free-port check remains."""
    path = Path(tempfile.gettempdir()) / f"fcn-serve-port-{port}.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FCNError(
            f"{name}={port} is in use by another fcn-serve on this machine; choose another port"
        ) from None
    return fd


def _check_port_free(host: str, port: int, name: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError as e:
            raise FCNError(
                f"{name}={port} cannot be used on {host} ({e.strerror}); choose another port"
            ) from None


def _prefer_own_libpython() -> None:
    """Put this interpreter's LIBDIR first on LD_LIBRARY_PATH (inherited by tritonserver).

    The Python-backend stub links ``libpython3.X.so``; on a Python not installed by the system
    (pyenv, conda, a custom build) the loader otherwise finds the system's library of the same
    name, and model load fails with ``'_thread.RLock' object has no attribute
    '_recursion_count'``.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in paths if p != libdir]])


START_ATTEMPTS = 3  # tritonserver starts when a model instance loses the handshake race


def instance_race(problem: str) -> bool:
    """Whether a failed start is PyTriton 0.7's start-up race between model instances.

    Every instance but the first reads its configuration from the first one's handshake
    socket, waiting at most 1 s for the file and connecting as soon as it exists, which may be
    before the first instance listens on it (``get_config_from_handshake_server`` in
    ``pytriton/proxy/communication.py``). On a busy machine that load fails with "Connection
    refused" or a timeout on the ``-config.sock`` file; a fresh start usually wins the race.
    """
    return "get_config_from_handshake_server" in problem or "-config.sock" in problem


# PyTriton 0.7's Python-backend model (copied into each model's folder of the model store) raises
# a failed call's error from ``execute``; Triton then never releases those requests, so the model
# cannot unload: shutdown waited out both exit timeouts (~65 s), ended "Non-graceful termination"
# and left the stub's shared memory and /tmp/folderXXXX behind. Answering each request with an
# error response instead gives the client the same message and lets the model unload at once.
_RAISE = "                    raise triton_responses_or_error\n"
_ANSWER = (
    "                    triton_responses_or_error = [pb_utils.InferenceResponse(error="
    "_fcn_error(triton_responses_or_error)) for _ in triton_requests]\n"
)
# A tensor with a zero dimension cannot cross PyTriton's shared memory (its copy raises a
# TypeError: HTTP 500 with PyTriton's traceback); such requests are answered before that, as the
# client's error, and the others of the same call still run.
_EXECUTE = "    def execute(self, triton_requests):\n"
_CHECKED_EXECUTE = (
    "    def execute(self, triton_requests):\n"
    "        return _fcn_execute(self, triton_requests)\n\n"
    "    def _pytriton_execute(self, triton_requests):\n"
)
# A request fcn-serve refuses (FCNError: too large, undecodable, ...) is the client's fault: its one
# line, with Triton's INVALID_ARG (HTTP 400), instead of PyTriton's traceback as an internal error.
_FCN_ERROR = """

def _fcn_error(error):
    text = str(error).rstrip()
    last = text.splitlines()[-1] if text else text
    prefix = "fcn_deploy.errors.FCNError: "
    if last.startswith(prefix):
        return pb_utils.TritonError(last[len(prefix):], pb_utils.TritonError.INVALID_ARG)
    return pb_utils.TritonError(text)


def _empty_input(request):
    for tensor in request.inputs():
        shape = tuple(tensor.shape()) if hasattr(tensor, "shape") else tensor.as_numpy().shape
        if 0 in shape:
            return pb_utils.TritonError(
                f"input '{tensor.name()}' has a zero dimension (shape {list(shape)}); every "
                "dimension must be at least 1",
                pb_utils.TritonError.INVALID_ARG,
            )
    return None


def _fcn_execute(model, triton_requests):
    refused = {k: e for k, r in enumerate(triton_requests) if (e := _empty_input(r)) is not None}
    if not refused:
        return model._pytriton_execute(triton_requests)
    rest = [r for k, r in enumerate(triton_requests) if k not in refused]
    answers = iter(model._pytriton_execute(rest) if rest else [])
    return [pb_utils.InferenceResponse(error=refused[k]) if k in refused else next(answers)
            for k in range(len(triton_requests))]
"""


class _RefusedRequestLines(logging.Filter):
    """PyTriton logs every failed call with its traceback. A call fcn-serve refused (an
    `FCNError`: the client's input) becomes one line of this module's instead: the server log
    names the refusal, and nobody takes the client's mistake for a server bug. Other failures
    keep their traceback."""

    PREFIX = "fcn_deploy.errors.FCNError: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Exception while performing inference"):
            return True
        lines = record.getMessage().rstrip().splitlines()
        if not lines or not lines[-1].startswith(self.PREFIX):
            return True
        log.warning("refused a request: %s", lines[-1][len(self.PREFIX) :])
        return False


def _one_line_refusals() -> None:
    """Install `_RefusedRequestLines` on PyTriton's inference logger (once)."""
    logger = logging.getLogger("pytriton.proxy.inference")
    if not any(isinstance(f, _RefusedRequestLines) for f in logger.filters):
        logger.addFilter(_RefusedRequestLines())


def _answer_errors_as_responses(triton: Any) -> None:
    """Patch the ``model.py`` PyTriton hands Triton for each bound model (see above); a no-op on
    other PyTriton versions, whose file differs (the ``serve`` extra pins 0.7)."""
    for model in triton._model_manager.models:
        model.get_proxy_model_files = functools.partial(_patched_files, model.get_proxy_model_files)


def _patched_files(original: Callable[[], dict[str, bytes]]) -> dict[str, bytes]:
    files = original()
    for key, content in files.items():
        if key.endswith("/model.py"):
            text = content.decode()
            if _RAISE not in text or _EXECUTE not in text:
                log.debug("PyTriton's model.py differs from 0.7's; failed calls stay raised")
            text = text.replace(_RAISE, _ANSWER).replace(_EXECUTE, _CHECKED_EXECUTE)
            files[key] = (text + _FCN_ERROR).encode()
    return files


class FCNServer:
    """A running Triton server for one or more Segmenters of the same model (one per instance).

    >>> with FCNServer([Segmenter.load("fcn8s.onnx")], ServeConfig(http_port=8000)) as server:
    ...     server.wait()        # until stop() is called or Triton dies
    """

    def __init__(self, segmenters: Sequence[Segmenter], config: ServeConfig) -> None:
        if len(segmenters) != config.instances:
            raise FCNError(
                f"instances={config.instances} needs as many Segmenters, got {len(segmenters)}"
            )
        self.config = config
        first = segmenters[0]
        if first.info.num_classes > 256:
            raise FCNError(
                f"this model has {first.info.num_classes} classes; the served labels are UINT8 "
                "(at most 256 classes)"
            )
        self.model = served_model(first, config.max_batch)
        self.sizes, self.bounds = self.model.sizes, self.model.bounds
        self._instances = [_Instance(s, self.sizes, config.max_megapixels) for s in segmenters]
        self._triton: Any = None
        self._stopped = threading.Event()
        self._port_locks: list[int] = []  # held while this server runs (`_lock_port`)

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.config.grpc_port}"

    def start(self) -> None:
        """Start tritonserver, load both models and return once they are ready.

        A start that loses PyTriton's race between model instances (`instance_race`) is
        retried with a fresh tritonserver, up to ``START_ATTEMPTS`` times in all.
        """
        c = self.config
        _one_line_refusals()
        for name in ("http_port", "grpc_port", "metrics_port"):
            fd = _lock_port(getattr(c, name), name)  # atomic between fcn-serve processes
            if fd is not None:
                self._port_locks.append(fd)
            _check_port_free(c.host, getattr(c, name), name)
        _prefer_own_libpython()
        for attempt in range(1, START_ATTEMPTS + 1):
            problem = self._launch()
            if not problem:
                break
            stop_requested = self._stopped.is_set()  # SIGTERM while starting: no retry
            if attempt == START_ATTEMPTS or stop_requested or not instance_race(problem):
                self.stop()
                raise FCNError(f"Triton did not start ({problem}); see its log above")
            self._halt()  # the ports stay locked for the next attempt
            log.warning(
                "a model instance lost PyTriton's start-up handshake race; restarting Triton "
                "(attempt %d of %d)", attempt + 1, START_ATTEMPTS,
            )  # fmt: skip
            self._stopped.clear()
        log.info(
            "serving %s (%s on %s) as '%s' and '%s': HTTP %s, gRPC %s, metrics %s:%d",
            self.model.info.variant, self.model.backend, self.model.device, c.model_name,
            c.encoded_model_name, self.http_url, self.grpc_url, c.host, c.metrics_port,
        )  # fmt: skip

    def _launch(self) -> str | None:
        """Start a fresh tritonserver with both models bound; what went wrong, or None."""
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        c = self.config
        triton = Triton(
            workspace=_workspace(),
            config=TritonConfig(
                http_address=c.host, http_port=c.http_port, grpc_address=c.host,
                grpc_port=c.grpc_port, metrics_address=c.host, metrics_port=c.metrics_port,
                log_verbose=c.log_verbose, exit_timeout_secs=c.exit_timeout,
                log_file=None if c.triton_log is None else Path(c.triton_log),
            )
        )  # fmt: skip
        labels = Tensor(name=LABELS_OUTPUT, dtype=np.uint8, shape=(-1, -1))
        triton.bind(
            model_name=c.model_name,
            infer_func=[i.infer_images for i in self._instances],
            inputs=[Tensor(name=IMAGE_INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
            outputs=[labels],
            config=ModelConfig(
                max_batch_size=c.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=c.queue_delay_us),
            ),
            strict=True,
        )
        triton.bind(
            model_name=c.encoded_model_name,
            infer_func=[i.infer_encoded for i in self._instances],
            inputs=[Tensor(name=IMAGE_BYTES_INPUT, dtype=np.bytes_, shape=(1,))],
            outputs=[labels],
            config=ModelConfig(batching=False),
            strict=True,
        )
        self._publish_metadata(triton)
        _answer_errors_as_responses(triton)
        self._triton = triton
        try:
            triton.run()
        except Exception as e:  # tritonserver died or never became ready
            return self._ports_taken() or f"{type(e).__name__}: {e}"
        return self._ports_taken() or self._not_ready()

    def _owns_ports(self, root: int | None) -> bool:
        """Whether the tritonserver this server started (``root``) listens on its HTTP port: if
        not, whatever answers there is another server, never to be talked to."""
        if root is None:
            return False
        return any(self.config.http_port in listening_ports(p) for p in (root, *process_tree(root)))

    def _ports_taken(self) -> str | None:
        """Why the start failed when another process took the ports first, or None.

        The free-port check and tritonserver's bind are not one step: two servers started
        together both pass the check, and the loser's tritonserver exits while PyTriton talks to
        the winner (which refuses its access token)."""
        if self._owns_ports(_tritonserver_pid(self._triton)):
            return None
        c = self.config
        return (
            f"the ports {c.http_port}/{c.grpc_port}/{c.metrics_port} on {c.host} were taken by "
            "another process while this server started (another fcn-serve?); choose other ports"
        )

    def _not_ready(self) -> str | None:
        """Which model Triton failed to load (PyTriton only logs a warning), or None."""
        import tritonclient.http as http

        client = http.InferenceServerClient(self.http_url)
        try:
            names = (self.config.model_name, self.config.encoded_model_name)
            missing = [n for n in names if not client.is_model_ready(n)]
        finally:
            client.close()
        return f"model(s) {', '.join(missing)} not ready" if missing else None

    def _publish_metadata(self, triton: Any) -> None:
        """Class names, palette and size bounds as ``parameters`` of both model configs.

        PyTriton 0.7 has no public way to add config parameters; its per-model config object is
        created once and cached, so entries added to its ``backend_parameters`` before the
        server starts are written to the config Triton loads (pinned by the ``serve`` extra,
        and checked by the tests through ``GET /v2/models/<name>/config``).
        """
        params = self.model.to_parameters()
        for model in triton._model_manager.models:
            model._get_triton_model_config().backend_parameters.update(params)

    def wait(self, poll: float = 0.5) -> None:
        """Block until `stop` is called (from another thread or a signal handler) or Triton dies."""
        while not self._stopped.wait(poll):
            if self._triton is None or not self._triton.is_alive():
                log.error("tritonserver or a model backend exited; stopping")
                break

    def request_stop(self) -> None:
        """Make `wait` return (safe from a signal handler); `stop` does the shutting down."""
        self._stopped.set()

    def stop(self) -> None:
        """Stop accepting requests, finish the in-flight ones, stop tritonserver and its stubs.

        1. Unload both models through Triton's repository API: new requests get an error at
           once, and Triton finalizes a model (its stub exits) only after its in-flight
           requests are answered. 2. SIGINT tritonserver (PyTriton's ``stop``). 3. Kill this
           server's tritonserver and stubs if still running, so nothing outlives it (only its
           own: one process may run several servers, as the tests do).
        """
        try:
            self._halt()
        finally:
            locks, self._port_locks = self._port_locks, []
            for fd in locks:
                os.close(fd)

    def _halt(self) -> None:
        """`stop` without releasing the ports, within ``exit_timeout`` in all.

        Told to stop, tritonserver first waits for its clients' idle keep-alive connections to
        close, up to its own exit timeout, and only then exits: after this server's own drain
        (up to ``exit_timeout``), that made a shutdown with connected clients take twice the
        timeout and more (51 s against 30). Once the models are unloaded nothing is in flight,
        so tritonserver gets `IDLE_SECONDS` to exit by itself and is then ended; when it drains
        by itself (Ctrl-C reached it too), it gets what is left of ``exit_timeout``.
        """
        self._stopped.set()
        triton, self._triton = self._triton, None
        if triton is None:
            return
        deadline = time.monotonic() + self.config.exit_timeout
        root = _tritonserver_pid(triton)
        started = [root, *process_tree(root, TRITON_PROCESSES)] if root else []
        log.info("stopping: finishing in-flight requests (up to %d s)", self.config.exit_timeout)
        drained = False
        try:
            if self._owns_ports(root):  # never unload another server's models
                drained = self._unload(triton, root, deadline)
        finally:
            left_s = max(0.0, deadline - time.monotonic())
            ender = threading.Timer(min(IDLE_SECONDS, left_s) if drained else left_s,
                                    _end, args=(root,))  # fmt: skip
            if root:
                ender.start()
            triton.stop()
            ender.cancel()
            left = [p for p in started if _running(p)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if left:
                log.warning("killed %d Triton process(es) that outlived the shutdown", len(left))
            log.info("stopped")

    def _unload(self, triton: Any, root: int | None, deadline: float) -> bool:
        """Unload both models and wait (until ``deadline``) for their stubs (below the
        tritonserver ``root``) to exit: whether they did, every request answered."""
        import tritonclient.http as http
        from pytriton.triton import TRITON_ACCESS_HEADER

        headers = {TRITON_ACCESS_HEADER: triton.get_access_token()}
        client = http.InferenceServerClient(self.http_url)
        try:
            for name in (self.config.model_name, self.config.encoded_model_name):
                client.unload_model(name, headers=headers)
        except Exception as e:  # Ctrl-C in a terminal reaches tritonserver too: it drains itself
            log.info("Triton is already stopping (%s); it finishes in-flight requests itself", e)
            return False
        finally:
            client.close()  # an open connection of our own would hold tritonserver's exit too
        while time.monotonic() < deadline:
            if not root or not process_tree(root, ("triton_python_backend_stub",)):
                return True
            time.sleep(0.1)
        log.warning("in-flight requests still running after %d s", self.config.exit_timeout)
        return False

    def __enter__(self) -> FCNServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def _stop_on_signals(callback: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``callback`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: callback())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Stoppable(Protocol):
    """A server `run_until_signalled` can run: `FCNServer`, fcn-ui's `PageServer`."""

    def start(self) -> None: ...
    def wait(self) -> None: ...
    def request_stop(self) -> None: ...
    def stop(self) -> None: ...


_Server = TypeVar("_Server", bound=Stoppable)


def run_until_signalled(server: _Server, ready: Callable[[_Server], None] | None = None) -> None:
    """``server.start()``, ``ready(server)``, then block until SIGTERM/SIGINT (``request_stop``)
    or ``server.wait()`` returns otherwise; ``server.stop()`` in any case."""
    try:
        with _stop_on_signals(server.request_stop):
            server.start()
            if ready is not None:
                ready(server)
            server.wait()
    finally:
        server.stop()


def serve(
    model: str | os.PathLike[str],
    config: ServeConfig = ServeConfig(),
    device: str | None = None,
    backend: str | None = None,
    ready: Callable[[FCNServer], None] | None = None,
    **runner_options: Any,
) -> None:
    """Load ``model`` (a Segmenter per instance), serve it until SIGTERM/SIGINT, then shut down.

    ``ready`` is called once both models are loaded (the CLI prints its banner there).
    """
    regular_file(model, "model file")
    segmenters = [
        Segmenter.load(model, device=device, backend=backend, batch_size=config.max_batch,
                       max_megapixels=config.max_megapixels, **runner_options)
        for _ in range(config.instances)
    ]  # fmt: skip
    try:
        run_until_signalled(FCNServer(segmenters, config), ready)
    finally:
        for s in segmenters:
            s.close()
