"""Image sets larger than one machine: fcn-predict on Ray Data.

`segment_dataset` reads image paths (or a Ray dataset), runs ``map_batches`` over an actor pool of
model replicas, and writes fcn-predict's outputs with fcn-predict's names (`.outputs`) into a
local folder or any path ``pyarrow.fs`` opens. Without an address Ray starts on this machine; with
one (``auto``, ``ray://HOST:10001``, ``HOST:6379``) the same code runs on the cluster.

- **The file list** becomes an Arrow table (path, name) built a few thousand rows at a time and
  cut into blocks: the driver holds no Python object per input, and Ray Data streams the blocks
  to the replicas and their report rows back while later blocks are still being segmented.
- **Model files** travel through Ray's object store: the driver reads the file once and
  ``ray.put``\\ s its bytes; each replica writes them to a private temp file, loads its
  `Segmenter` once and deletes the file. No node needs a shared file system or the driver's
  paths, the bytes cross the network once per node (not once per replica), and no runner is
  pickled (runners hold sessions, engines and device memory that do not pickle).
- **Nothing lost, nothing done twice**: every file is written atomically and the label map last,
  so a re-run skips images whose outputs exist; a replica that dies (kill -9, lost node) is
  restarted by Ray and its batch retried, and the retry skips what the dead replica had already
  finished. An image that cannot be read or segmented is a row of the report, never the end of
  the job.
- **A Ray started here is stopped** with every process it started: at the end, on Ctrl-C or
  SIGTERM (Ray's own SIGTERM handler, which aborts with a stack dump, is replaced by the
  caller's), and when the driver is killed outright (a watchdog, `_ray_reaper`, ends the
  processes that carry this run's token; Ray's agents would otherwise wait a minute).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._gate import read_regular, regular_file
from .._io import make_output_dir, missing_folders, os_reason, remove_empty_folders
from .._progress import Progress
from ..errors import FCNError
from .manifest import Manifest, ManifestRow
from .outputs import OutputFolder, OutputNames, output_files

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from ..meta import ModelInfo

__all__ = ["BatchReport", "parse_ray_address", "segment_dataset"]

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray Data is not installed; install it with: pip install 'fcn-deploy[ray]'"
OWNER_ENV = "FCN_DEPLOY_RAY_OWNER"  # carried by every process of a Ray that fcn-deploy starts
BLOCK_ROWS = (
    32  # most inputs per Ray Data block: a replica reports (and the manifest gets) them together
)
_CHUNK = 10_000  # paths held as Python strings while the table is built


@dataclass
class BatchReport:
    """What a `segment_dataset` run did, image by image."""

    written: int = 0
    skipped: int = 0  # complete outputs from an earlier run (or a retried batch)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = (self.written + self.skipped) / max(self.seconds, 1e-9)
        line = f"{self.written} image(s) written, {self.skipped} already done, in "
        line += f"{self.seconds:.1f} s ({rate:.2f} images/s)"
        return line + (f", {len(self.failed)} failed" if self.failed else "")


class _Replica:
    """One model replica: loads the model once, then segments and writes batch after batch."""

    def __init__(
        self,
        model: list[Any],  # [ObjectRef of the file's bytes]: a list, so Ray hands the ref over
        model_name: str,
        output: str,
        overlay_alpha: float | None,
        load_options: dict[str, Any],
        classes: ModelInfo | None = None,
    ) -> None:
        import ray

        from ..api import Segmenter

        with tempfile.TemporaryDirectory(prefix="fcn-deploy-model-") as tmp:
            path = Path(tmp) / model_name
            path.write_bytes(ray.get(model[0]))
            self.segmenter = Segmenter.load(path, **load_options)
        if classes is not None:  # the driver's --classes, checked there against the model
            self.segmenter.runner.info = self.segmenter.info.replace(
                class_names=classes.class_names, palette=classes.palette
            )
        self.output = OutputFolder(output)
        self.overlay_alpha = overlay_alpha

    def _read(self, path: str) -> tuple[np.ndarray, int]:
        """The image at ``path`` and its size in bytes."""
        from ..imageio import decode_image_bytes, read_image

        limit = self.segmenter.max_megapixels
        if not OutputFolder(path).remote:
            return read_image(path, limit), os.path.getsize(path)
        from pyarrow import fs

        filesystem, where = fs.FileSystem.from_uri(path)
        with filesystem.open_input_file(where) as f:
            data = f.read()
        image = decode_image_bytes(data, limit, path)  # the gate, as for a local file
        if image is None:
            raise FCNError(f"{path}: not a readable image")
        return image, len(data)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        names = (
            [str(n) for n in batch["name"]] if "name" in batch else [Path(p).stem for p in paths]
        )
        overlay = self.overlay_alpha is not None
        rows = len(paths)
        status, errors = ["ok"] * rows, [""] * rows
        sizes, shapes = np.full(rows, -1, np.int64), np.full((rows, 2), -1, np.int64)
        pixels = np.zeros((rows, self.segmenter.info.num_classes), np.int64)
        todo: dict[int, np.ndarray] = {}
        for k, (path, name) in enumerate(zip(paths, names, strict=True)):
            try:
                earlier = self.output.earlier(name, overlay)  # refuses what is not its own
                if len(earlier) == len(output_files(name, overlay)):
                    status[k] = "skipped"
                elif "image" in batch:  # ray.data.read_images: RGB arrays
                    from ..api import as_bgr8

                    # decoded by Ray: no EXIF orientation, no header check before decoding
                    todo[k] = as_bgr8(batch["image"][k], True, self.segmenter.max_megapixels)
                else:
                    todo[k], sizes[k] = self._read(path)
            except (FCNError, OSError) as e:
                status[k], errors[k] = "failed", str(e)
        labels: dict[int, np.ndarray] = {}
        try:
            labels = dict(zip(todo, self.segmenter.predict_batch(list(todo.values())), strict=True))
        except FCNError:  # name the images that fail, one by one
            for k, image in todo.items():
                try:
                    labels[k] = self.segmenter.predict(image)
                except FCNError as e:
                    status[k], errors[k] = "failed", str(e)
        for k, lab in labels.items():
            try:
                self.output.write_image(self.segmenter, names[k], todo[k], lab, self.overlay_alpha)
            except (FCNError, OSError) as e:
                status[k], errors[k] = "failed", str(e)
                continue
            shapes[k] = lab.shape
            pixels[k] = np.bincount(lab.ravel(), minlength=pixels.shape[1])[: pixels.shape[1]]
        return {"path": np.array(paths), "name": np.array(names), "status": np.array(status),
                "error": np.array(errors), "bytes": sizes, "shape": shapes,
                "pixels": pixels}  # fmt: skip


# Ray binds its servers to the address it reaches the network by, even for a local instance; with
# this (read when ray is imported) a Ray that fcn-deploy starts itself listens on 127.0.0.1 only.
# Token authentication stays on, as Ray's default for a local instance, said so that Ray does not
# print a line about it on every run.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def _import_ray(local: bool = False) -> Any:
    if local:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    try:
        import ray
        import ray.data
    except ImportError:
        raise FCNError(INSTALL_HINT, param="ray") from None
    return ray


_ADDRESS = re.compile(
    r"(?P<client>ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?"
)


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """The (host, port) of a Ray address to reach (``HOST:PORT`` of the head's GCS, or
    ``ray://HOST[:PORT]`` of Ray Client, port 10001 by default); None for ``auto`` and ``local``
    (Ray finds or starts those itself). `ValueError` saying the accepted forms otherwise."""
    if address in ("auto", "local"):
        return None
    match = _ADDRESS.fullmatch(address)
    port = None if match is None else match["port"] or ("10001" if match["client"] else None)
    if match is None or port is None or not 0 < int(port) < 65536:
        raise ValueError(
            f"expected auto, HOST:PORT (a cluster's head, port 6379 by default) or "
            f"ray://HOST:10001 (Ray Client), got {address!r}"
        )
    return match["host"].strip("[]"), int(port)


def _starts_local(address: str | None) -> bool:
    """Whether a Ray is started on this machine for the job (``local``, or no address without
    ``RAY_ADDRESS``, the variable ``ray job submit`` sets) rather than one joined."""
    return address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))


def _on_this_machine(address: str | None) -> bool:
    """Whether the Ray of ``address`` runs here: one started here, or one at a loopback address
    (which Ray would otherwise turn into this machine's network address, where a Ray that
    listens on 127.0.0.1 does not answer)."""
    if _starts_local(address):
        return True
    try:
        where = parse_ray_address(address or os.environ.get("RAY_ADDRESS") or "auto")
    except ValueError as e:
        raise FCNError(str(e), param="address") from None
    return where is not None and where[0] in ("127.0.0.1", "localhost", "::1")


def _check_model(
    model: Path, load_options: dict[str, Any], classes: str | os.PathLike[str] | None
) -> ModelInfo:
    """Open the model once in the driver (on the CPU), as each replica will: a damaged file, an
    unverified export or a wrong option is one error here, not a replica dying on the cluster.
    → its `ModelInfo`, with the names and colours of ``classes``."""
    from ..api import Segmenter
    from ..runtime import backend_for_path
    from .outputs import check_palette_size

    if (load_options.get("backend") or backend_for_path(model)) == "tensorrt":
        raise FCNError(
            f"{model}: a TensorRT engine does not run on Ray (it is built for one GPU model and "
            "TensorRT version, and its sidecar file does not travel with it); pass the .onnx "
            "export instead",
            param="model",
        )
    with Segmenter.load(model, **{**load_options, "device": "cpu"}) as segmenter:
        info = segmenter.info
    info = info.with_classes(classes) if classes is not None else info
    check_palette_size(info.num_classes)
    return info


def _cause(error: Exception) -> str:
    """The last ``SomeError: message`` line of a Ray error's traceback text (else its first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    cause = (found or lines or [type(error).__name__])[-1 if found else 0]
    return re.sub(r"^(\w+\.)*FCNError: ", "", cause)  # fcn-deploy's own message as it is


def _reach(address: str) -> None:
    """Refuse a cluster address nothing answers at, in seconds: Ray itself retries a refused or
    silent address for minutes (a GCS address forever) before it gives up."""
    where = parse_ray_address(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=5).close()
    except OSError as e:
        reason = "no answer within 5 s" if isinstance(e, TimeoutError) else os_reason(e)
        raise FCNError(
            f"cannot reach a Ray cluster at {address}: {reason}; start one there with "
            "`ray start --head`, or check the address",
            param="address",
        ) from None


class _Reaper:
    """A watchdog for a Ray this process starts (see `_ray_reaper`): started before Ray, it
    gives Ray's processes a token in their environment and ends them when this process is gone,
    however it ends; closing it (after ``ray.shutdown``) ends stragglers at once."""

    def __init__(self) -> None:
        token = f"{OWNER_ENV}={os.getpid()}-{uuid.uuid4().hex}"
        read, self._write = os.pipe()  # not inherited by what Ray starts (close-on-exec)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(Path(__file__).with_name("_ray_reaper.py")),
                 token],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C on the terminal does not reach it
            )  # fmt: skip
        finally:
            os.close(read)
        key, value = token.split("=", 1)
        os.environ[key] = value  # inherited by the processes ray.init starts

    def started(self) -> None:
        """Ray is up: later children of this process are not Ray's."""
        os.environ.pop(OWNER_ENV, None)

    def close(self) -> None:
        self.started()
        os.close(self._write)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None) -> Iterator[bool]:
    """Ray for one job: the running one (→ False), or one joined or started here and shut down
    on leaving (→ True), with its processes ended if this process is killed."""
    if ray.is_initialized():
        if address is not None:
            log.warning("Ray is already running in this process; address %s is not used", address)
        yield False
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    reaper = _Reaper() if _starts_local(address) else None
    try:
        try:
            # "local": a new Ray even where `ray start` left one this machine would join
            ray.init(address="local" if reaper is not None else address,
                     include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)  # fmt: skip
        except ConnectionError as e:
            reason = str(e).splitlines()[0] if str(e) else "no Ray cluster found"
            raise FCNError(
                f"cannot connect to Ray ({target or 'local'}): {reason}", param="address"
            ) from None
        finally:
            for sig, handler in handlers.items():  # Ray's replace them: SIGTERM would abort
                if handler is not None:
                    signal.signal(sig, handler)
            if reaper is not None:
                reaper.started()
        yield True
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if reaper is not None:
            reaper.close()


def _check_resources(ray: Any, replicas: int, cpus: float, gpus: float, local: bool) -> None:
    """Refuse replicas that cannot all start on a Ray this run started (Ray Data would wait
    for them forever, silently); on a cluster, say that the job waits for it to grow."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    fit = 0
    for resources in nodes:
        room = [math.floor(resources.get(kind, 0.0) / need + 1e-9)
                for kind, need in (("CPU", cpus), ("GPU", gpus)) if need > 0]  # fmt: skip
        fit += min(room) if room else replicas
    if fit >= replicas:
        return
    has = ", ".join(
        f"{sum(r.get(kind, 0.0) for r in nodes):g} {kind}(s)" for kind in ("CPU", "GPU")
    )
    need = f"{replicas} replica(s) of {cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
    if local:
        param = (
            "gpus_per_replica" if gpus > 0 and not any(r.get("GPU") for r in nodes) else "replicas"
        )
        raise FCNError(
            f"{need} each do not fit on this machine ({has}; room for {fit}): ask for fewer",
            param=param,
        )
    log.warning("the Ray cluster has room for %d of %s each now (%s): the job waits until it "
                "grows", fit, need, has)  # fmt: skip


def _input_table(
    inputs: Iterable[str | os.PathLike[str] | tuple[str, str]],
    names: Iterable[str] | None,
    overlay: bool,
) -> pa.Table:
    """The inputs as an Arrow table of absolute paths (replicas do not share the driver's working
    directory) and output names (default: `OutputNames`), built `_CHUNK` rows at a time."""
    import pyarrow as pa

    given = iter(names) if names is not None else None
    default = OutputNames(overlay)
    chunks: list[pa.Table] = []
    paths: list[str] = []
    labels: list[str] = []
    for item in inputs:
        path, name = item if isinstance(item, tuple) else (item, None)
        where = OutputFolder(path)
        paths.append(where.where if where.remote else os.path.abspath(where.where))
        if name is None:
            name = next(given, None) if given is not None else default.name(Path(path).stem)
            if name is None:
                raise FCNError(f"fewer names than inputs ({len(labels)} names)", param="names")
        labels.append(str(name))
        if len(paths) == _CHUNK:
            chunks.append(pa.table({"path": paths, "name": labels}))
            paths, labels = [], []
    if given is not None and next(given, None) is not None:
        raise FCNError("more names than inputs", param="names")
    chunks.append(
        pa.table({"path": pa.array(paths, pa.string()), "name": pa.array(labels, pa.string())})
    )
    return pa.concat_tables(chunks).combine_chunks()


def segment_dataset(
    inputs: Iterable[str | os.PathLike[str] | tuple[str, str]] | ray.data.Dataset,
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    address: str | None = None,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
    batch_size: int = 1,
    overlay_alpha: float | None = None,
    load_options: dict[str, Any] | None = None,
    classes: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | Manifest | None = None,
) -> BatchReport:
    """Segment every image of ``inputs`` on Ray Data into ``output`` (see the module).

    ``inputs``: image paths (local, or URIs ``pyarrow.fs`` opens) or (path, output name) pairs,
    any iterable (read once, before Ray starts), or a ``ray.data.Dataset`` with a ``path`` column
    (and an ``image`` column of RGB arrays, as ``ray.data.read_images(..., include_paths=True)``
    gives; a ``name`` column sets output names, else the file stems). ``names``: output names
    for paths (default: `OutputNames`, as fcn-predict names them). ``address``: the Ray cluster
    (None: the running Ray, or a local one started and stopped here). ``replicas`` actors, each
    with ``cpus_per_replica``/``gpus_per_replica``, run ``batch_size`` images a call;
    ``load_options`` go to `Segmenter.load` (device, backend, tile, max_megapixels,
    allow_unverified, ...); the model is opened once here first (on the CPU) so that a bad file
    or option is one `FCNError`, not a dead replica. ``classes``: a class file
    (`fcn_deploy.meta.read_classes`) for the model's names and colours. ``overlay_alpha`` also
    writes ``NAME_overlay.jpg``. ``manifest``: a `Manifest` (or its path) that gets one row per
    image. TensorRT engines are refused (export ONNX instead).
    """
    local = _starts_local(address)
    ray = _import_ray(local=_on_this_machine(address))
    if not ray.is_initialized() and not local:  # before any work: seconds, not Ray's minutes
        _reach(address or os.environ.get("RAY_ADDRESS") or "auto")
    if replicas < 1:
        raise FCNError(f"replicas must be at least 1, got {replicas}", param="replicas")
    model = regular_file(model, "model file", param="model")
    load_options = load_options or {}
    info = _check_model(model, load_options, classes)
    if local and not ray.is_initialized():  # the replicas will run on this machine
        from ..runtime.base import resolve_device

        resolve_device(load_options.get("device"))
    folder = OutputFolder(output)
    folder.check()  # an unreachable object store: one error now, not one per image
    ray_data_log = logging.getLogger("ray.data")  # its progress lines, every 10 s: not shown
    if not logging.getLogger("fcn_deploy").isEnabledFor(logging.DEBUG):
        ray_data_log.setLevel(max(ray_data_log.getEffectiveLevel(), logging.WARNING))
    if isinstance(manifest, (str, os.PathLike)):
        manifest = Manifest(manifest)
    start = time.perf_counter()
    report = BatchReport()
    created = [] if folder.remote else missing_folders(output)
    try:
        with contextlib.ExitStack() as stack:
            if manifest is not None:  # open first: rows of inputs refused while listed go in
                stack.enter_context(manifest.writing(info.class_names))
            dataset, total = _dataset(ray, inputs, names, overlay_alpha is not None, replicas)
            if total == 0:
                return report
            if not folder.remote:
                make_output_dir(output)
            started = stack.enter_context(_ray_session(ray, address))
            _check_resources(ray, replicas, cpus_per_replica, gpus_per_replica, local and started)
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours instead
            results = dataset(ray).map_batches(
                _Replica,
                fn_constructor_kwargs={
                    "model": [ray.put(read_regular(model, "model file", param="model"))],
                    "model_name": model.name,
                    "output": str(Path(output).resolve()) if not folder.remote else folder.where,
                    "overlay_alpha": overlay_alpha,
                    "load_options": load_options,
                    "classes": info if classes is not None else None,
                },
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=replicas),
                num_cpus=cpus_per_replica,
                num_gpus=gpus_per_replica,
                udf_modifying_row_count=False,  # one report row per image
            )  # Ray Data's actor pools restart dead actors, and retry their batches

            _collect(ray, results, report, folder, overlay_alpha is not None, manifest, total)
    finally:
        remove_empty_folders(created)  # nothing written: no empty folder left
        report.seconds = time.perf_counter() - start
    return report


def _dataset(
    ray: Any,
    inputs: Iterable[str | os.PathLike[str] | tuple[str, str]] | ray.data.Dataset,
    names: Iterable[str] | None,
    overlay: bool,
    replicas: int,
) -> tuple[Any, int | None]:
    """(a function of a started Ray → the dataset to run, how many rows it has if known). Paths
    are read into an Arrow table first (before Ray starts: nothing to do, no Ray); Ray Data gets
    it in blocks of at most `BLOCK_ROWS`, and at least four per replica where there are rows
    enough, so that the replicas share the work and report as they go."""
    if isinstance(inputs, ray.data.Dataset):
        return (lambda _: inputs), None
    table = _input_table(inputs, names, overlay)
    rows = max(1, min(BLOCK_ROWS, math.ceil(table.num_rows / (4 * replicas))))

    def blocks(ray: Any) -> Any:
        return ray.data.from_arrow([table.slice(i, rows) for i in range(0, table.num_rows, rows)])

    return blocks, table.num_rows


def _collect(
    ray: Any,
    results: ray.data.Dataset,
    report: BatchReport,
    folder: OutputFolder,
    overlay: bool,
    manifest: Manifest | None,
    total: int | None,
) -> None:
    """Take the replicas' report rows as they come: the report, the manifest, the progress."""
    with Progress(total, "predicting", unit="img") as progress:
        try:
            for batch in results.iter_batches(batch_format="numpy", batch_size=None):
                for k, (path, status) in enumerate(
                    zip(batch["path"], batch["status"], strict=True)
                ):
                    path, status, error = str(path), str(status), str(batch["error"][k])
                    if status == "ok":
                        report.written += 1
                    elif status == "skipped":
                        report.skipped += 1
                    else:
                        report.failed.append((path, error))
                    if manifest is not None:
                        manifest.add(_row(folder, overlay, batch, k, path, status, error))
                progress.update(len(batch["path"]))
        except ray.exceptions.RayError as e:  # a replica that cannot start: its cause, one line
            raise FCNError(f"a model replica failed: {_cause(e)}") from None


def _row(
    folder: OutputFolder,
    overlay: bool,
    batch: dict[str, np.ndarray],
    k: int,
    path: str,
    status: str,
    error: str,
) -> ManifestRow:
    """One image's manifest row from a replica's report batch."""
    *tinted, labels = output_files(str(batch["name"][k]), overlay)
    done = status != "failed"
    where = folder.where.rstrip("/")
    height, width = (int(v) for v in batch["shape"][k])
    return ManifestRow(
        path, status, error.removeprefix(f"{path}: "),
        labels=f"{where}/{labels}" if done else "",
        overlay=f"{where}/{tinted[0]}" if done and tinted else "",
        bytes=int(batch["bytes"][k]), width=width, height=height,
        pixels=batch["pixels"][k] if status == "ok" else None,
    )  # fmt: skip
