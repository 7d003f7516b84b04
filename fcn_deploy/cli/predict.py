"""``fcn-predict``: segment image files, folders and globs into palette-PNG label maps.

Each input image ``NAME.ext`` gives ``OUTDIR/NAME.png``, a palette PNG of class ids (the PASCAL VOC
format: it opens as a coloured picture and reads back as exact ids), and with ``--overlay``
``OUTDIR/NAME_overlay.jpg``. Folders are searched recursively for image files (by suffix: jpg,
png, bmp, tif, webp, ppm/pgm); a glob (quote it) is expanded the same way. When two inputs share a
name the later ones get ``NAME-2``, ``NAME-3``, ... and a note says so: nothing is overwritten
silently. An input that is missing, unreadable or corrupt is named in one line and skipped; the
others complete and the exit code is 1. A bad model or option exits 2.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._io import (
    check_output_dir,
    make_output_dir,
    missing_folders,
    os_reason,
    remove_empty_folders,
)
from .._owned import check_replaceable
from .._progress import Progress
from .._walk import glob_files, walk_files
from ..api import Segmenter, is_video
from ..bulk.outputs import OutputFolder, check_palette_size, output_files
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
    parse_args,
    positive_float,
    positive_int,
    run_cli,
    say,
)
from .bulk import add_bulk_args, check_video_args, output_folder, predict_videos, run_ray

__all__ = ["IMAGE_SUFFIXES", "build_parser", "collect_inputs", "main", "output_names"]

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


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def collect_inputs(
    inputs: Sequence[str], output: Path | None = None
) -> tuple[list[Path], list[str], int]:
    """Expand INPUT arguments → (image files in order, problems found, non-image files skipped).

    Named files are always tried; folder and glob contents are filtered by image suffix, each real
    folder is read once (symlink cycles end), and nothing inside ``output`` (the results folder)
    is read. A file reached twice is listed once.
    """
    files: list[Path] = []
    problems: list[str] = []
    skipped = 0
    for arg in inputs:
        path = Path(arg)
        if path.is_file():
            found = [path]
        elif path.is_dir() or (not path.exists() and GLOB_CHARS & set(arg)):
            candidates = walk_files(path, output) if path.is_dir() else glob_files(arg, output)
            found = [f for f in candidates if _is_image(f) or is_video(f)]
            skipped += len(candidates) - len(found)
            if not found:
                problems.append(
                    f"{arg}: no image files {'in this folder' if path.is_dir() else 'match'}"
                )
        else:
            problems.append(f"{arg}: no such file or folder")
            found = []
        files.extend(found)
    unique = list({f.resolve(): f for f in reversed(files)}.values())[::-1]  # first occurrence wins
    return unique, problems, skipped


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


def check_no_input_replaced(
    files: Sequence[Path], names: Sequence[str], folder: Path, overlay: bool
) -> list[Path]:
    """Refuse results that would replace one of the inputs (a video's results are a folder: no
    input may lie inside it) or anything fcn-deploy did not write; return the earlier results
    that will be replaced (said, not silent)."""
    results = [
        folder / out
        for f, name in zip(files, names, strict=True)
        for out in output_files(name, overlay, is_video(f))
    ]
    inputs = {f.resolve(): f for f in files}
    for result in results:
        where = result.resolve()
        inside = [f for r, f in inputs.items() if r == where or r.is_relative_to(where)]
        if inside:
            raise FCNError(
                f"{inside[0]} would be replaced by the result {result}; write the results to "
                "another folder",
                param="output",
            )
    earlier = [p for p in results if p.exists() or p.is_symlink()]
    for result in earlier:
        check_replaceable(result)  # fcn-deploy's own earlier result, or refused now
    return earlier


def output_names(files: Sequence[Path]) -> list[str]:
    """One output name per file: its stem, or ``stem-2``, ``stem-3``, ... when an earlier file
    took it."""
    stems = {f.stem for f in files}
    taken: set[str] = set()
    names = []
    for f in files:
        name, k = f.stem, 1
        while name in taken or (k > 1 and name in stems):
            k += 1
            name = f"{f.stem}-{k}"
        taken.add(name)
        names.append(name)
    return names


def _fail(path: Path, error: Exception) -> None:
    """One line for one input that failed; the others go on."""
    if isinstance(error, OSError):
        error = FCNError(f"{error.filename or path}: {os_reason(error)}")
    param = getattr(error, "param", None)
    line = error if isinstance(error, FCNError) else FCNError(str(error))
    if not str(error).startswith(str(path)):
        line = FCNError(f"{path}: {error}", param=param)
    say(error_line(line, _parser()), err=True)


_parser = functools.cache(build_parser)


def _predict(
    segmenter: Segmenter, images: list[np.ndarray], paths: list[Path]
) -> list[np.ndarray | None]:
    """Labels for a chunk in one batched call; if that fails, image by image so each failure is
    named."""
    try:
        return list(segmenter.predict_batch(images))
    except FCNError:
        results: list[np.ndarray | None] = []
        for image, path in zip(images, paths, strict=True):
            try:
                results.append(segmenter.predict(image))
            except FCNError as e:
                _fail(path, e)
                results.append(None)
        return results


def _write(
    args: argparse.Namespace, segmenter: Segmenter, name: str, image: np.ndarray, labels: np.ndarray
) -> None:
    """``NAME.png`` (palette label map) and, with --overlay, ``NAME_overlay.jpg``, each
    atomically."""
    OutputFolder(args.output).write_image(
        segmenter, name, image, labels, args.alpha if args.overlay else None
    )


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
    files, problems, skipped = collect_inputs(args.inputs, args.output)
    names = output_names(files)
    earlier = check_no_input_replaced(files, names, args.output, args.overlay)
    if not files and not problems:
        raise FCNError("no inputs given")
    if args.ray is not None:
        return run_ray(args, files, names, problems)
    segmenter = _open_model(args, options)
    check_palette_size(segmenter.info.num_classes)
    created = missing_folders(args.output)
    make_output_dir(args.output)
    for problem in problems:
        say(f"error: {problem}", err=True)
    if earlier:
        shown = ", ".join(p.name + "/" * p.is_dir() for p in earlier[:3]) + (
            ", ..." if len(earlier) > 3 else ""
        )
        say(f"warning: {len(earlier)} earlier result(s) in {args.output} are replaced ({shown})",
            err=True)  # fmt: skip
    for f, name in zip(files, names, strict=True):
        if name != f.stem:
            say(f"note: {f} is written as {name}{'/' if is_video(f) else '.png'} (another input "
                f"is also named {f.stem})", err=True)  # fmt: skip

    jobs = [(f, n) for f, n in zip(files, names, strict=True) if not is_video(f)]
    videos = [(f, n) for f, n in zip(files, names, strict=True) if is_video(f)]
    done = failed = pixels = 0
    start = time.perf_counter()
    with Progress(len(jobs), "predicting", unit="img") as progress:
        for i in range(0, len(jobs), args.batch):
            readable: list[tuple[Path, str, np.ndarray]] = []
            for path, name in jobs[i : i + args.batch]:
                try:
                    readable.append((path, name, read_image(path, args.max_megapixels)))
                except FCNError as e:
                    _fail(path, e)
                    failed += 1
            predicted = _predict(
                segmenter, [image for _, _, image in readable], [path for path, _, _ in readable]
            )
            for (path, name, image), labels in zip(readable, predicted, strict=True):
                try:
                    if labels is not None:
                        _write(args, segmenter, name, image, labels)
                        done, pixels = done + 1, pixels + labels.size
                        continue
                except (FCNError, OSError) as e:
                    _fail(path, e)
                failed += 1
            progress.update(len(jobs[i : i + args.batch]), MP=f"{pixels / 1e6:.1f}")
    videos_done, videos_failed, frames = predict_videos(args, segmenter, videos, _fail)
    remove_empty_folders(created)  # nothing written (every input failed): no empty folder left
    elapsed = time.perf_counter() - start
    failed += len(problems)
    rate = pixels / 1e6 / max(elapsed, 1e-9)
    summary = f"{done} image(s), {pixels / 1e6:.2f} MP in {elapsed:.1f} s ({rate:.2f} MP/s)"
    summary += f", {videos_done} video(s), {frames} frame(s)" if videos else ""
    failed += videos_failed
    summary += f", {failed} failed" if failed else ""
    summary += f", {skipped} non-image file(s) ignored" if skipped else ""
    say(
        f"{summary}; results in {args.output}"
        if done or videos_done
        else f"{summary}; nothing written"
    )
    return EXIT_FAILED if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fcn-predict MODEL INPUT... -o OUTDIR``."""
    return run_cli(_main, argv, _parser())
