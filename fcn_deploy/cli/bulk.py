"""fcn-predict's bulk options: videos (``--every/--start/--end``), Ray Data (``--ray``) and the
manifest (``--manifest``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._progress import output_to
from ..api.video import FrameSelection
from ..bulk.manifest import SUFFIXES, Manifest, ManifestRow
from ..bulk.outputs import OutputFolder, check_name_length
from ..errors import FCNError
from ._common import EXIT_FAILED, non_negative_float, positive_float, positive_int, say

if TYPE_CHECKING:
    from .predict import Input

__all__ = ["add_bulk_args", "check_video_args", "output_folder", "ray_address", "run_ray"]


def add_bulk_args(p: argparse.ArgumentParser) -> None:
    """The video, Ray and manifest options of fcn-predict."""
    video = p.add_argument_group(
        "videos (inputs recognised by content: MP4/MOV, MKV/WebM, AVI, MPEG, FLV, WMV, Ogg)"
    )
    video.add_argument(
        "--every", type=positive_int, default=1, metavar="N", help="segment every N-th frame"
    )
    video.add_argument(
        "--start", type=non_negative_float, default=0.0, metavar="S", help="from S seconds"
    )
    video.add_argument("--end", type=positive_float, metavar="S", help="up to S seconds")
    ray = p.add_argument_group("Ray Data (the ray extra: pip install 'fcn-deploy[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        type=ray_address,
        metavar="ADDRESS",
        help="run on Ray Data: a local Ray without ADDRESS, else the cluster at ADDRESS "
        "(auto, ray://HOST:10001, or HOST:6379); -o may then be any pyarrow.fs URI (s3://...)",
    )
    ray.add_argument(
        "--replicas", type=positive_int, default=1, metavar="N", help="model replicas (actors)"
    )
    ray.add_argument(
        "--gpus-per-replica", type=non_negative_float, default=0.0, metavar="G", help="GPUs each"
    )
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help=f"also write a table with one row per input ({' or '.join(SUFFIXES)}): its results, "
        "size, status and the fraction of its pixels in each class",
    )


def ray_address(text: str) -> str:
    """``--ray``'s value: empty, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; an existing file
    or folder there is the model or an input that ``--ray`` (whose address is optional) took for
    its address."""
    from ..bulk.batch import parse_ray_address

    if text and Path(text).exists():
        raise argparse.ArgumentTypeError(
            f"{text} is a file or folder, not a Ray address; --ray takes an optional address: "
            "put it after the inputs or write --ray=ADDRESS"
        )
    if text:
        try:
            parse_ray_address(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def output_folder(text: str) -> Path:
    """``-o``: a ``file://`` URI becomes its plain path, so that every check sees the real
    folder (other URIs stay as they are, for --ray)."""
    out = OutputFolder(text)
    return Path(text if out.remote else out.where)


def check_video_args(args: argparse.Namespace) -> None:
    """``args.selection``: the frames ``--every/--start/--end`` select, checked once right after
    parsing (``--start 5 --end 2`` is refused before any input is read, images included)."""
    args.selection = FrameSelection(args.every, args.start, args.end)


def _undecodable(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds bytes that are not UTF-8 (kept by Python as surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _RayLog:
    """Ray's output while it runs (see `_ray_output_aside`): an unnamed temp file, given a name
    only when an error points to it."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def mention(self, error: FCNError) -> FCNError:
        """``error``, naming a file with Ray's messages if Ray wrote any."""
        if self.fd is None or not os.fstat(self.fd).st_size:
            return error
        fd, name = tempfile.mkstemp(prefix="fcn-predict-ray-", suffix=".log")
        with open(fd, "wb") as kept:
            kept.write(os.pread(self.fd, os.fstat(self.fd).st_size, 0))
        return FCNError(f"{error} (Ray's messages: {name})", param=error.param)


@contextlib.contextmanager
def _ray_output_aside(verbose: bool) -> Iterator[_RayLog]:
    """fcn-predict's own lines alone on the terminal while Ray runs.

    Ray's C++ core writes log lines to the process's stderr, its Python loggers too, and the
    driver prints its cluster's error messages to stdout: a line about its object store on every
    run, tracebacks of replicas that could not start, connection retries. They go to a temp file
    (`fcn_deploy._progress.output_to`) that has no name (a killed run leaves nothing) unless an
    error names it (`_RayLog.mention`). With ``-v`` Ray's output is shown."""
    if verbose:
        yield _RayLog(None)
        return
    fd, name = tempfile.mkstemp(prefix="fcn-predict-ray-", suffix=".log")
    os.unlink(name)
    try:
        with output_to(fd):
            yield _RayLog(fd)
    finally:
        os.close(fd)


def run_ray(args: argparse.Namespace, discovery: Iterable[Input], manifest: Manifest | None) -> int:
    """fcn-predict --ray: the images through `fcn_deploy.bulk.batch.segment_dataset`."""
    if args.model is None or args.server is not None:
        raise FCNError("--ray runs a model file on Ray: pass --model PATH (not --server)")
    from ..bulk.batch import segment_dataset

    refused = 0

    def images() -> Iterator[tuple[str, str]]:
        """The image inputs; a video or a missing input is one line (and a manifest row)."""
        nonlocal refused
        for item in discovery:
            problem = item.problem
            if problem is None and item.video:
                problem = f"{item.path}: a video; --ray runs images (run videos without it)"
            if problem is None and _undecodable(item.path):
                problem = (f"{item.path}: a name that is not UTF-8 text, which Ray's tables cannot "
                           "hold; rename it, or run it without --ray")  # fmt: skip
            if problem is None and not OutputFolder(args.output).remote:
                try:
                    check_name_length(item.name, args.overlay)
                except FCNError as e:
                    problem = f"{item.path}: {e}"
            if problem is not None:
                say(f"error: {problem}", err=True)
                if manifest is not None:
                    reason = problem.removeprefix(f"{item.path}: ")
                    manifest.add(ManifestRow(item.path, "failed", reason))
                refused += 1
                continue
            if item.name != Path(item.path).stem:
                say(f"note: {item.path} is written as {item.name}.png ({Path(item.path).stem}.png "
                    "is taken by another input)", err=True)  # fmt: skip
            yield item.path, item.name

    verbose = logging.getLogger("fcn_deploy").isEnabledFor(logging.DEBUG)
    with _ray_output_aside(verbose) as ray_log:
        try:
            report = segment_dataset(
                images(),
                args.model,
                args.output,
                address=args.ray or None,
                replicas=args.replicas,
                gpus_per_replica=args.gpus_per_replica,
                batch_size=args.batch,
                overlay_alpha=args.alpha if args.overlay else None,
                load_options={
                    "device": args.device, "backend": args.backend, "tile": args.tile,
                    "tile_size": args.tile_size, "overlap": args.overlap,
                    "max_megapixels": args.max_megapixels,
                    "allow_unverified": args.allow_unverified,
                    **({"variant": args.variant} if args.variant else {}),
                },
                classes=args.classes,
                manifest=manifest,
            )  # fmt: skip
        except FCNError as e:
            raise ray_log.mention(e) from None
    for path, error in report.failed:
        line = error if error.startswith(path) else f"{path}: {error}"
        say(f"error: {line}", err=True)
    if report.skipped:  # plain fcn-predict replaces them; a --ray job resumes
        say(f"warning: {report.skipped} image(s) already have results in {args.output}; --ray "
            "keeps them and skips those images (delete the results to redo them)",
            err=True)  # fmt: skip
    where = f"results in {args.output}" if report.written or report.skipped else "nothing written"
    say(f"{report.summary()}; {where}")
    return EXIT_FAILED if report.failed or refused else 0
