"""Image sets larger than one machine: fcn-predict on Ray Data.

`segment_dataset` reads image paths (or a Ray dataset), runs ``map_batches`` over an actor pool of
model replicas, and writes fcn-predict's outputs with fcn-predict's names (`.outputs`) into a
local folder or any path ``pyarrow.fs`` opens. Without an address Ray starts on this machine; with
one (``auto``, ``ray://HOST:10001``) the same code runs on the cluster.

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
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._gate import read_regular, regular_file
from .._io import make_output_dir, missing_folders, remove_empty_folders
from ..errors import FCNError
from .outputs import OutputFolder

if TYPE_CHECKING:
    import ray.data

    from ..meta import ModelInfo

__all__ = ["BatchReport", "segment_dataset"]

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray Data is not installed; install it with: pip install 'fcn-deploy[ray]'"


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

    def _read(self, path: str) -> np.ndarray:
        from ..imageio import decode_image_bytes, read_image

        limit = self.segmenter.max_megapixels
        if not OutputFolder(path).remote:
            return read_image(path, limit)
        from pyarrow import fs

        filesystem, where = fs.FileSystem.from_uri(path)
        with filesystem.open_input_file(where) as f:
            data = f.read()
        image = decode_image_bytes(data, limit, path)  # the gate, as for a local file
        if image is None:
            raise FCNError(f"{path}: not a readable image")
        return image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        names = (
            [str(n) for n in batch["name"]] if "name" in batch else [Path(p).stem for p in paths]
        )
        status, errors = ["written"] * len(paths), [""] * len(paths)
        todo: dict[int, np.ndarray] = {}
        for k, (path, name) in enumerate(zip(paths, names, strict=True)):
            try:
                if self.output.complete(name, self.overlay_alpha is not None):
                    status[k] = "skipped"
                elif "image" in batch:  # ray.data.read_images: RGB arrays
                    from ..api import as_bgr8

                    # decoded by Ray: no EXIF orientation, no header check before decoding
                    todo[k] = as_bgr8(batch["image"][k], True, self.segmenter.max_megapixels)
                else:
                    todo[k] = self._read(path)
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
        return {"path": np.array(paths), "name": np.array(names), "status": np.array(status),
                "error": np.array(errors)}  # fmt: skip


# Ray binds its servers to the address it reaches the network by, even for a local instance; with
# this (read when ray is imported) a Ray that fcn-deploy starts itself listens on 127.0.0.1 only
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _import_ray(local: bool = False) -> Any:
    if local and "ray" not in sys.modules:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    try:
        import ray
        import ray.data
    except ImportError:
        raise FCNError(INSTALL_HINT, param="ray") from None
    return ray


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
    return (found or lines or [type(error).__name__])[-1 if found else 0]


def segment_dataset(
    inputs: Sequence[str | os.PathLike[str]] | ray.data.Dataset,
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
) -> BatchReport:
    """Segment every image of ``inputs`` on Ray Data into ``output`` (see the module).

    ``inputs``: image paths (local, or URIs ``pyarrow.fs`` opens) or a ``ray.data.Dataset`` with
    a ``path`` column (and an ``image`` column of RGB arrays, as ``ray.data.read_images(...,
    include_paths=True)`` gives; a ``name`` column sets output names, else the file stems).
    ``names``: output names for paths (fcn-predict's `output_names`; default the stems).
    ``address``: the Ray cluster (None: the running Ray, or a local one started and stopped
    here). ``replicas`` actors, each with ``cpus_per_replica``/``gpus_per_replica``, run
    ``batch_size`` images a call; ``load_options`` go to `Segmenter.load` (device, backend,
    tile, max_megapixels, allow_unverified, ...); the model is opened once here first (on the
    CPU) so that a bad file or option is one `FCNError`, not a dead replica. ``classes``: a class
    file (`fcn_deploy.meta.read_classes`) for the model's names and colours. ``overlay_alpha``
    also writes ``NAME_overlay.jpg``. TensorRT engines are refused (export ONNX instead).
    """
    ray = _import_ray(local=address is None)
    if replicas < 1:
        raise FCNError(f"replicas must be at least 1, got {replicas}", param="replicas")
    model = regular_file(model, "model file", param="model")
    load_options = load_options or {}
    info = _check_model(model, load_options, classes)
    start = time.perf_counter()
    local = not OutputFolder(output).remote
    created = missing_folders(output) if local else []
    if local:
        make_output_dir(output)
    if not logging.getLogger("fcn_deploy").isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress lines, every 10 s
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)  # fmt: skip
    elif address is not None:
        log.warning("Ray is already running in this process; address %s is not used", address)
    try:
        if isinstance(inputs, ray.data.Dataset):
            dataset = inputs
        else:  # absolute: replicas do not share the driver's working directory
            paths = [
                p if OutputFolder(p).remote else str(Path(p).resolve()) for p in map(str, inputs)
            ]
            names = list(names) if names is not None else [Path(p).stem for p in paths]
            if len(names) != len(paths):
                raise FCNError(f"{len(names)} names for {len(paths)} inputs", param="names")
            rows = [{"path": p, "name": n} for p, n in zip(paths, names, strict=True)]
            dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
        results = dataset.map_batches(
            _Replica,
            fn_constructor_kwargs={
                "model": [ray.put(read_regular(model, "model file", param="model"))],
                "model_name": model.name,
                "output": str(Path(output).resolve()) if local else str(output),
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
        )  # Ray Data's actor pools restart dead actors and retry their batches (max_restarts=-1)
        report = BatchReport()
        try:
            for batch in results.iter_batches(batch_format="numpy", batch_size=None):
                for path, status, error in zip(
                    batch["path"], batch["status"], batch["error"], strict=True
                ):
                    if status == "written":
                        report.written += 1
                    elif status == "skipped":
                        report.skipped += 1
                    else:
                        report.failed.append((str(path), str(error)))
        except ray.exceptions.RayError as e:  # a replica that cannot start: its cause, one line
            raise FCNError(f"a model replica failed: {_cause(e)}") from None
    finally:
        if started:
            ray.shutdown()
        remove_empty_folders(created)  # nothing written: no empty folder left
    report.seconds = time.perf_counter() - start
    return report
