"""``fcn-predict``: segment image files, folders and globs into palette-PNG label maps.

Each input image ``NAME.ext`` gives ``OUTDIR/NAME.png``, a palette PNG of class ids (the PASCAL VOC
format: it opens as a coloured picture and reads back as exact ids), and with ``--overlay``
``OUTDIR/NAME_overlay.jpg``. Folders are searched recursively for image files (by suffix: jpg,
png, bmp, tif, webp, ppm/pgm); a glob (quote it) is expanded the same way. Inputs are found while
the first ones run. When an input would write a result an earlier input writes (two files named
x, or x.jpg and a video x.png.mp4), it gets NAME-2, NAME-3, ... and a note says so: nothing is
overwritten silently. An input that is missing, unreadable or corrupt is named in one line and
skipped; the others complete and the exit code is 1. A bad model or option exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import (
    check_output_dir,
    make_output_dir,
    missing_folders,
    os_reason,
    remove_empty_folders,
)
from .._owned import temp_space
from .._progress import Progress
from .._walk import FileKey, iter_files, iter_glob
from ..api import Segmenter, is_video
from ..bulk.manifest import Manifest, ManifestRow
from ..bulk.outputs import (
    OutputFolder,
    OutputNames,
    check_name_length,
    check_palette_size,
    output_files,
)
from ..errors import FCNError
from ..imageio import (
    DEFAULT_MAX_MEGAPIXELS,
    read_image,
)
from ..runtime import BACKENDS, backend_for_path
from ._common import (
    EXIT_FAILED,
    OneLineParser,
    add_allow_unverified,
    add_verbosity,
    error_line,
    fraction,
    non_negative_int,
    one_line,
    parse_args,
    positive_float,
    positive_int,
    refuse_overwrites,
    run_cli,
    say,
)
from .bulk import add_bulk_args, check_video_args, output_folder, run_ray

__all__ = [
    "IMAGE_SUFFIXES",
    "Discovery",
    "Input",
    "build_parser",
    "check_named_inputs",
    "collect_inputs",
    "main",
    "output_names",
]

IMAGE_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".jp2",
        ".hdr",
    ]
)
GLOB_CHARS = frozenset("*?[")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fcn-predict",
        usage="fcn-predict MODEL INPUT... -o OUTDIR [options]  (or --model MODEL / --server ADDR "
        "with INPUT... alone)",
        description="Segment image files, folders and globs into palette-PNG label maps.",
        epilog=__doc__.split("\n\n", 1)[1].replace("``", ""),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="the model first (unless --model or --server is given), then image files, folders "
        "(searched recursively) or globs",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_folder,
        metavar="OUTDIR",
        help="folder for the results (created if missing)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="checkpoint (.pt/.pth), Caffe .caffemodel, ONNX export (.onnx) or TensorRT engine "
        "(.engine); the same as giving it first",
    )
    p.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="instead of --model: send the images to a Triton server running fcn-serve "
        "(HTTP; grpc://HOST:PORT for gRPC)",
    )
    p.add_argument(
        "--model-name", default="fcn", help="with --server: the served model's name (default fcn)"
    )
    p.add_argument(
        "--variant", help="net of a bare PyTorch state dict (fcn32s, fcn16s, fcn8s, fcn8s-atonce)"
    )
    p.add_argument(
        "--backend", choices=BACKENDS, help="override the backend the model file's suffix implies"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also write NAME_overlay.jpg: the image tinted by class colour",
    )
    p.add_argument(
        "--alpha", type=fraction, default=0.5, help="overlay opacity of the class colours (0..1)"
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        metavar="N",
        help="images per model call (equal sizes are batched)",
    )
    p.add_argument(
        "--tile",
        action="store_true",
        help="run images larger than the model accepts in overlapping tiles",
    )
    p.add_argument(
        "--tile-size",
        type=positive_int,
        metavar="PX",
        help="tile side (default: the largest input one of the model's size ranges holds, an "
        "engine's profile, at most 1024); images larger than a given side are always tiled",
    )
    p.add_argument(
        "--overlap",
        type=non_negative_int,
        metavar="PX",
        help="pixels shared by neighbouring tiles (default: a quarter tile, at most 256)",
    )
    add_classes(p)
    add_allow_unverified(p)
    add_verbosity(p)
    add_max_megapixels(p)
    add_bulk_args(p)
    return p


def add_classes(p: argparse.ArgumentParser) -> None:
    """``--classes FILE``, shared by fcn-predict and fcn-export."""
    p.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class names (and colours) in label order: one per line, 'name' or 'name R G B'; "
        "for nets of other label sets than PASCAL VOC's 21 classes whose files name none (the "
        "authors' Caffe releases for PASCAL-Context, NYUDv2 and SIFT Flow come with theirs) "
        "(default: the model's own names)",
    )


def add_max_megapixels(p: argparse.ArgumentParser) -> None:
    """``--max-megapixels``, shared by fcn-predict and fcn-eval."""
    p.add_argument(
        "--max-megapixels",
        type=positive_float,
        default=DEFAULT_MAX_MEGAPIXELS,
        metavar="MP",
        help="refuse images larger than this many megapixels, read from the file header before "
        f"decoding (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )


@dataclass(frozen=True, slots=True)
class Input:
    """One input as discovery finds it: a file with its output name, or an argument that gave
    none (``problem``: ``"x.jpg: no such file or folder"``). Paths are kept as strings: a run
    holds every input found ahead of the work."""

    path: str
    name: str = ""
    video: bool = False
    problem: str | None = None


class Discovery:
    """fcn-predict's inputs, found on a thread while the model loads and the first images run.

    Arguments are expanded in order: a named file is always tried (a video if its content says
    so); folders are walked and globs matched as streams (`fcn_deploy._walk`), keeping image
    files by suffix (not hidden ones) and videos by content, each real folder read once, nothing
    inside ``output`` (the results folder) read, a file reached twice listed once. Each input
    gets its output name as it is found (`OutputNames`). Iterating gives the inputs in that
    order; ``total`` is set once the last is found, ``ignored`` counts the files left out.

    Memory per input: its path until its turn comes, its names taken, its identity (for a file
    reached twice): a few hundred bytes, nothing per input that grows with the run.
    """

    def __init__(self, inputs: Sequence[str], output: Path | None, names: OutputNames) -> None:
        self.inputs, self.output, self.names = list(inputs), output, names
        self.ignored = 0  # files in folders and globs that are neither images nor videos
        self.total: int | None = None
        self._queue: queue.SimpleQueue[Input | BaseException | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fcn-predict-inputs", daemon=True)

    def __enter__(self) -> Discovery:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the thread ends at its next input

    def __iter__(self) -> Iterator[Input]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        found = 0
        try:
            for item in self.find():
                if self._stop.is_set():
                    return
                self._queue.put(item)
                found += 1
            self.names.release()  # every input is named: a run's remaining hours do not hold them
            self.total = found
            self._queue.put(None)
        except BaseException as e:  # raised again where the inputs are used
            self._queue.put(e)

    def find(self) -> Iterator[Input]:
        """The inputs in order, on the calling thread (see the class)."""
        seen: set[int] = set()  # (device << 64 | inode) of every file listed
        for arg in self.inputs:
            path = Path(arg)
            named = path.is_file()
            if named:
                st = path.stat()
                files: Iterator[tuple[Path, FileKey]] = iter([(path, (st.st_dev, st.st_ino))])
            elif path.is_dir():
                files = iter_files(path, self.output)
            elif not path.exists() and GLOB_CHARS & set(arg):
                files = iter_glob(arg, self.output)
            else:
                yield Input(arg, problem=f"{arg}: no such file or folder")
                continue
            count = 0
            for file, (device, inode) in files:
                if named:
                    video = is_video(file)
                elif file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("."):
                    video = False
                elif is_video(file):
                    video = True
                else:
                    self.ignored += 1
                    continue
                count += 1
                key = device << 64 | inode
                if key not in seen:  # first occurrence wins
                    seen.add(key)
                    yield Input(str(file), self.names.name(file.stem, video), video)
            if not count and not named:
                where = "in this folder" if path.is_dir() else "match"
                yield Input(arg, problem=f"{arg}: no image files {where}")


def collect_inputs(
    inputs: Sequence[str], output: Path | None = None
) -> tuple[list[Path], list[str], int]:
    """`Discovery` as lists → (image and video files in order, problems found, files ignored)."""
    discovery = Discovery(inputs, output, OutputNames(overlay=False))
    found = list(discovery.find())
    files = [Path(i.path) for i in found if i.problem is None]
    return files, [i.problem for i in found if i.problem is not None], discovery.ignored


def output_names(files: Sequence[Path], overlay: bool = False) -> list[str]:
    """One output name per file, in order (`OutputNames`)."""
    names = OutputNames(overlay)
    return [names.name(f.stem, is_video(f)) for f in files]


def check_output_folder(output: Path, inputs: Sequence[str]) -> None:
    """Refuse an output folder that is an input folder or holds one.

    Results there would be read as inputs by the next run and could replace images of the same
    name (``holiday.png`` → its label map). A folder inside an input folder is fine: it is never
    read as input.
    """
    out = output.resolve()
    for arg in inputs:
        folder = Path(arg).resolve()
        if Path(arg).is_dir() and (folder == out or folder.is_relative_to(out)):
            what = "is the input folder" if folder == out else "holds the input folder"
            raise FCNError(
                f"-o {output} {what} {arg}: results would mix with the images and could replace "
                "them; write them to another folder (one inside the input folder is fine, it is "
                "never read as input)",
                param="output",
            )


def check_named_inputs(
    inputs: Sequence[str], output: Path, overlay: bool, manifest: Manifest | None = None
) -> set[str]:
    """The checks of the files the command line names, before any work: their results must not
    replace one of them (a video's results are a folder: none may lie inside it), nor anything
    fcn-deploy did not write. → the names in OUTDIR no result may take: where named inputs (or
    the manifest) lie, so that an input found later that would write there gets another name.

    Only named files can lie inside OUTDIR (folders and globs never read inside it), so this is
    every check of outputs against inputs; inputs found in folders are checked for results in
    their way when their turn comes (`OutputFolder.earlier`)."""
    folder = OutputFolder(output)
    if folder.remote:
        return set()
    out = os.path.realpath(output)
    inside: dict[str, Path] = {}  # first name below OUTDIR → the named input there
    named = [Path(arg) for arg in inputs if Path(arg).is_file()]
    for file in named:
        real = os.path.realpath(file)
        if real.startswith(out.rstrip(os.sep) + os.sep):
            inside.setdefault(real[len(out.rstrip(os.sep)) + 1 :].split(os.sep)[0], file)
    for file in named:
        video = is_video(file)
        for result in output_files(file.stem, overlay, video):
            if result in inside:
                raise FCNError(
                    f"{inside[result]} would be replaced by the result {output / result}; write "
                    "the results to another folder",
                    param="output",
                )
        folder.earlier(file.stem, overlay, video)  # fcn-deploy's own earlier results, or refused
    reserved = set(inside)
    if manifest is not None and os.path.realpath(manifest.path.parent) == out:
        reserved |= {manifest.path.name, manifest.journal.name}
    return reserved


def _fail(path: str | Path, error: Exception) -> None:
    """One line for one input that failed; the others go on."""
    if isinstance(error, OSError):
        error = FCNError(f"{error.filename or path}: {os_reason(error)}")
    param = getattr(error, "param", None)
    line = error if isinstance(error, FCNError) else FCNError(str(error))
    if not str(error).startswith(str(path)):
        line = FCNError(f"{path}: {error}", param=param)
    say(error_line(line, _parser()), err=True)


_parser = functools.cache(build_parser)


@dataclass
class _Image:
    """An image read and waiting for its batch."""

    input: Input
    image: np.ndarray
    size: int | None  # bytes, for the manifest
    earlier: list[str]  # its results already there, to be replaced


class _PlainRun:
    """Plain fcn-predict over the inputs as they are found: images ``--batch`` at a time, each
    video when its turn comes, one manifest row per input."""

    def __init__(
        self, args: argparse.Namespace, segmenter: Segmenter, manifest: Manifest | None
    ) -> None:
        self.args, self.segmenter, self.manifest = args, segmenter, manifest
        self.output = OutputFolder(args.output)
        self.images = self.videos = self.frames = self.pixels = self.failed = 0
        self.replaced = 0  # earlier results replaced
        self.replaced_names: list[str] = []  # the first few, to name them
        self.pending: list[_Image] = []

    def run(self, discovery: Discovery) -> None:
        with Progress(None, "predicting", unit="img") as progress:
            for item in discovery:
                if progress.total is None and discovery.total is not None:
                    progress.total = discovery.total
                    progress.refresh()
                self.take(item, progress)
            self.flush(progress)

    def take(self, item: Input, progress: Progress) -> None:
        if item.problem is not None:
            self.fail(item, FCNError(item.problem), progress)
            return
        stem = Path(item.path).stem
        if item.name != stem:
            what = "/" if item.video else ".png"
            say(f"note: {item.path} is written as {item.name}{what} ({stem}{what} is taken by "
                "another input or the manifest)", err=True)  # fmt: skip
        try:
            check_name_length(item.name, self.args.overlay, item.video)
            earlier = self.output.earlier(item.name, self.args.overlay, item.video)
            if item.video:
                self.flush(progress)
                self.video(item, earlier)
                progress.update(1)
                return
            size = os.path.getsize(item.path) if self.manifest is not None else None
            image = read_image(item.path, self.args.max_megapixels)
        except (FCNError, OSError) as e:
            self.fail(item, e, progress)
            return
        self.pending.append(_Image(item, image, size, earlier))
        if len(self.pending) >= self.args.batch:
            self.flush(progress)

    def flush(self, progress: Progress) -> None:
        """Segment and write the images waiting, in one batched call where it succeeds."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        for job, labels in zip(pending, _predict(self.segmenter, pending), strict=True):
            if labels is None:  # said by _predict
                self.failed += 1
                self.row(job.input, "failed", "the model could not segment it")
                continue
            try:
                self.output.write_image(
                    self.segmenter, job.input.name, job.image, labels,
                    self.args.alpha if self.args.overlay else None,
                )  # fmt: skip
            except (FCNError, OSError) as e:
                self.fail(job.input, e)
                continue
            self.images, self.pixels = self.images + 1, self.pixels + labels.size
            self.count_replaced(job.earlier)
            counts = np.bincount(labels.ravel(), minlength=self.segmenter.info.num_classes)
            self.row(job.input, "ok", "", job.size, labels.shape, counts)
        progress.update(len(pending), MP=f"{self.pixels / 1e6:.1f}")

    def video(self, item: Input, earlier: list[str]) -> None:
        from ..bulk.video import segment_video

        result = segment_video(
            self.segmenter, item.path, self.args.output, item.name,
            self.args.selection,
            self.args.alpha if self.args.overlay else None,
        )  # fmt: skip
        self.videos, self.frames = self.videos + 1, self.frames + result.frames
        self.count_replaced(earlier)
        if self.manifest is not None:
            pixels = getattr(result, "class_pixels", None)  # per class, over all its frames
            self.manifest.add(ManifestRow(
                item.path, "ok", labels=str(result.labels),
                overlay=str(result.overlay or ""), bytes=os.path.getsize(item.path),
                frames=result.frames, pixels=None if pixels is None else np.asarray(pixels),
            ))  # fmt: skip

    def count_replaced(self, earlier: list[str]) -> None:
        self.replaced += len(earlier)
        self.replaced_names.extend(earlier[: max(0, 4 - len(self.replaced_names))])

    def fail(self, item: Input, error: Exception, progress: Progress | None = None) -> None:
        _fail(item.path, error)
        self.failed += 1
        reason = os_reason(error) if isinstance(error, OSError) else str(error)
        self.row(item, "failed", one_line(reason.removeprefix(f"{item.path}: ")))
        if progress is not None:
            progress.update(1)

    def row(
        self,
        item: Input,
        status: str,
        reason: str,
        size: int | None = None,
        shape: tuple[int, ...] | None = None,
        pixels: np.ndarray | None = None,
    ) -> None:
        if self.manifest is None:
            return
        *overlay, labels = output_files(item.name, self.args.overlay, item.video)
        where = Path(self.args.output)
        ok = status == "ok"
        self.manifest.add(ManifestRow(
            item.path, status, reason,
            labels=str(where / labels) if ok else "",
            overlay=str(where / overlay[0]) if ok and overlay else "",
            bytes=size, width=shape[1] if shape else None, height=shape[0] if shape else None,
            pixels=pixels,
        ))  # fmt: skip

    def summary(self, seconds: float, ignored: int) -> str:
        if self.replaced:
            shown = ", ".join(self.replaced_names[:3]) + (", ..." if self.replaced > 3 else "")
            say(f"warning: {self.replaced} earlier result(s) in {self.args.output} were "
                f"replaced ({shown})", err=True)  # fmt: skip
        rate = self.pixels / 1e6 / max(seconds, 1e-9)
        line = f"{self.images} image(s), {self.pixels / 1e6:.2f} MP in {seconds:.1f} s "
        line += f"({self.images / max(seconds, 1e-9):.2f} images/s, {rate:.2f} MP/s)"
        line += f", {self.videos} video(s), {self.frames} frame(s)" if self.videos else ""
        line += f", {self.failed} failed" if self.failed else ""
        line += f", {ignored} non-image file(s) ignored" if ignored else ""
        written = self.images or self.videos
        return one_line(
            f"{line}; results in {self.args.output}" if written else f"{line}; nothing written"
        )


def _predict(segmenter: Segmenter, jobs: list[_Image]) -> list[np.ndarray | None]:
    """Labels for a chunk in one batched call; if that fails, image by image so each failure is
    named."""
    try:
        return list(segmenter.predict_batch([job.image for job in jobs]))
    except FCNError:
        results: list[np.ndarray | None] = []
        for job in jobs:
            try:
                results.append(segmenter.predict(job.image))
            except FCNError as e:
                _fail(job.input.path, e)
                results.append(None)
        return results


def _open_model(args: argparse.Namespace, options: dict[str, str]) -> Segmenter:
    """The local Segmenter of --model, or with --server a client with the same interface."""
    if (args.model is None) == (args.server is None):
        raise FCNError(
            "pass either --model PATH (run locally) or --server HOST:PORT (a Triton server)"
        )
    if args.server is None:
        segmenter = Segmenter.load(
            args.model, device=args.device, backend=args.backend, tile=args.tile,
            tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch,
            max_megapixels=args.max_megapixels, allow_unverified=args.allow_unverified, **options,
        )  # fmt: skip
        if args.classes is not None:
            segmenter.runner.info = segmenter.info.with_classes(args.classes)
        return segmenter
    local = [f for f, v in (("--variant", args.variant), ("--backend", args.backend),
             ("--device", args.device), ("--tile", args.tile), ("--tile-size", args.tile_size),
             ("--overlap", args.overlap), ("--classes", args.classes)) if v]  # fmt: skip
    if local:
        raise FCNError(
            f"{', '.join(local)} set how a local model runs; with --server the server decides"
        )
    from ..serve.client import RemoteSegmenter

    return RemoteSegmenter(  # type: ignore[return-value]
        args.server, model_name=args.model_name, max_megapixels=args.max_megapixels
    )


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(_parser(), argv)
    check_video_args(args)
    if (
        args.model is not None
        and args.inputs
        and Path(args.inputs[0]).resolve() == (args.model.resolve())
    ):  # fcn-predict MODEL INPUT... --model MODEL: the same model, written both ways
        args.inputs.pop(0)
    if args.model is None and args.server is None:  # fcn-predict MODEL INPUT...
        args.model = Path(args.inputs.pop(0))
        if not args.inputs:
            raise FCNError(
                f"no inputs after the model {args.model}: give the model first, then the images "
                "(fcn-predict MODEL INPUT... -o OUTDIR), or pass --model PATH or --server HOST:PORT"
            )
    options = {}
    if args.variant and args.server is None:
        if (args.backend or backend_for_path(args.model)) != "torch":
            raise FCNError(
                "--variant applies to PyTorch checkpoints and state dicts only; ONNX files and "
                "engines know their net"
            )
        options["variant"] = args.variant
    if not OutputFolder(args.output).remote:
        check_output_dir(args.output)  # before the model loads; created only once it has
    elif args.ray is None:
        raise FCNError(
            f"-o {OutputFolder(args.output)}: writing to a URI needs --ray (plain fcn-predict "
            "writes a local folder)",
            param="output",
        )
    check_output_folder(args.output, args.inputs)
    manifest = None
    if args.manifest is not None:
        manifest = Manifest(
            args.manifest, None if OutputFolder(args.output).remote else args.output
        )
        refuse_overwrites(
            {"--manifest": manifest.path},
            {
                "MODEL": args.model,
                "--classes": args.classes,
                **{a: a for a in args.inputs if Path(a).is_file()},
            },
        )
    reserved = check_named_inputs(args.inputs, args.output, args.overlay, manifest)
    names = OutputNames(args.overlay, reserved)
    with Discovery(args.inputs, args.output, names) as discovery:
        if args.ray is not None:
            return run_ray(args, discovery, manifest)
        segmenter = _open_model(args, options)
        check_palette_size(segmenter.info.num_classes)
        return _run_plain(args, segmenter, discovery, manifest)


def _run_plain(
    args: argparse.Namespace, segmenter: Segmenter, discovery: Discovery, manifest: Manifest | None
) -> int:
    created = missing_folders(args.output)
    make_output_dir(args.output)
    run = _PlainRun(args, segmenter, manifest)
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            # one temp space for every write of the run, not one made and removed per file
            stack.enter_context(temp_space(args.output, f"cannot write into {args.output}"))
            if manifest is not None:
                stack.enter_context(manifest.writing(segmenter.info.class_names))
            run.run(discovery)
    finally:
        remove_empty_folders(created)  # nothing written (every input failed): no empty folder left
    say(run.summary(time.perf_counter() - start, discovery.ignored))
    return EXIT_FAILED if run.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fcn-predict MODEL INPUT... -o OUTDIR``."""
    return run_cli(_main, argv, _parser())
