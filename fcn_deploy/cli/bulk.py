"""fcn-predict's bulk options: videos (``--every/--start/--end``) and Ray Data (``--ray``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from ..api import Segmenter, is_video
from ..api.video import FrameSelection
from ..bulk.outputs import OutputFolder
from ..errors import FCNError
from ._common import EXIT_FAILED, non_negative_float, positive_float, positive_int, say

__all__ = [
    "add_bulk_args",
    "check_video_args",
    "output_folder",
    "predict_videos",
    "ray_address",
    "run_ray",
]


def add_bulk_args(p: argparse.ArgumentParser) -> None:
    """The video and Ray options of fcn-predict."""
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


def ray_address(text: str) -> str:
    """``--ray``'s value; an existing file or folder there is the model or an input that
    ``--ray`` (whose address is optional) took for its address."""
    if text and Path(text).exists():
        raise argparse.ArgumentTypeError(
            f"{text} is a file or folder, not a Ray address; --ray takes an optional address: "
            "put it after the inputs or write --ray=ADDRESS"
        )
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


def predict_videos(
    args: argparse.Namespace,
    segmenter: Segmenter,
    jobs: Sequence[tuple[Path, str]],
    fail: Callable[[Path, Exception], None],
) -> tuple[int, int, int]:
    """Segment each video of ``jobs`` (path, output name) → (videos done, failed, frames)."""
    from ..bulk.video import segment_video

    done = failed = frames = 0
    for path, name in jobs:
        try:
            result = segment_video(
                segmenter,
                path,
                args.output,
                name,
                args.selection,
                args.alpha if args.overlay else None,
            )
        except FCNError as e:
            fail(path, e)
            failed += 1
            continue
        done, frames = done + 1, frames + result.frames
    return done, failed, frames


def run_ray(
    args: argparse.Namespace, files: Sequence[Path], names: Sequence[str], problems: Sequence[str]
) -> int:
    """fcn-predict --ray: the images through `fcn_deploy.bulk.batch.segment_dataset`."""
    if args.model is None or args.server is not None:
        raise FCNError("--ray runs a model file on Ray: pass --model PATH (not --server)")
    videos = {f for f in files if is_video(f)}
    problems = [*problems, *(f"{f}: a video; --ray runs images (run videos without it)"
                             for f in sorted(videos))]  # fmt: skip
    for problem in problems:
        say(f"error: {problem}", err=True)
    names = [n for f, n in zip(files, names, strict=True) if f not in videos]
    files = [f for f in files if f not in videos]
    if not files:
        say("0 images; nothing written")
        return EXIT_FAILED
    output = OutputFolder(args.output)
    kept = 0 if output.remote else sum(output.complete(n, args.overlay) for n in names)
    if kept:  # plain fcn-predict replaces them; a --ray job resumes
        say(
            f"warning: {kept} image(s) already have results in {args.output}; --ray keeps them "
            "and skips those images (delete the results to redo them)",
            err=True,
        )
    from ..bulk.batch import segment_dataset

    report = segment_dataset(
        files,
        args.model,
        args.output,
        names=names,
        address=args.ray or None,
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        batch_size=args.batch,
        overlay_alpha=args.alpha if args.overlay else None,
        load_options={
            "device": args.device, "backend": args.backend, "tile": args.tile,
            "tile_size": args.tile_size, "overlap": args.overlap,
            "max_megapixels": args.max_megapixels, "allow_unverified": args.allow_unverified,
            **({"variant": args.variant} if args.variant else {}),
        },
        classes=args.classes,
    )  # fmt: skip
    for path, error in report.failed:
        say(f"error: {error if error.startswith(path) else f'{path}: {error}'}", err=True)
    say(report.summary())
    return EXIT_FAILED if report.failed or problems else 0
