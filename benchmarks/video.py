"""Video throughput: fcn-predict's video path (frames/s end to end) against fcn-bench's images/s
for the same model at the same size and batch, measured in the same run.

    python benchmarks/video.py [--size 240x320] [--batch 4] [--frames 48] [--rounds 3]

A random FCN-8s of channel width ``--width`` (small, so the run takes a few minutes on a
CPU; weights do not change speed) and a clip of ``--frames`` frames written by OpenCV (mp4v at
25 fps). fcn-bench ``--backends torch`` (the runner alone, input already on the device, p50 per
call of ``--batch`` images) runs first and after each round; a round is `segment_video` with
labels only (decoding, preprocessing, the model, argmax, per-frame PNGs) and with the overlay
video too (tinting and MPEG-4 encoding). Each video row is compared with the mean of the two
fcn-bench rows around it, so a machine busy with other work drifts into both sides alike; the
summary is the median over the rounds. Frames/s is frames over the wall time of the whole
`segment_video` call (opening the file to the last rename), after one untimed warm-up batch.
Writes ``benchmarks/results/video-<host>.json``; ``benchmarks/bulk.md`` holds the table.

    python benchmarks/video.py --seek [--minutes 60] [--seek-size 96x128] [--repeats 5]

Seeking instead: a generated video of ``--minutes`` (H.264 with two B-frames between anchors
and a keyframe every 250 frames, 10 s, x264's default distance; MPEG-4 Part 2 with the same
structure; the H.264 packets also remuxed into Matroska and MPEG-TS) and the time to the first
frame of a start, from opening the file to the first decoded BGR frame (`open_video`, then the
first item of ``frames``). Each start at 90% of the video is paired with the start at the same
place after a keyframe near 0 (0, 2.5, 5 and 7.5 s after one; 90% of 60 minutes is itself a
keyframe), so that both decode the same number of frames from their keyframe: the ratio is what
the position costs. The two alternate, ``--repeats`` times each (once where a start decodes from
the first frame); medians. Writes ``benchmarks/results/video-seek-<host>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
FPS = 25.0
GOP = 250  # --seek: frames from one keyframe to the next (x264's default keyint)
OFFSETS = (0.0, 2.5, 5.0, 7.5)  # --seek: starts after a keyframe, in seconds (GOP: 10 s)


def make_clip(path: Path, frames: int, h: int, w: int) -> None:
    """Moving coloured shapes on noise: decodes like real footage (intra and inter frames)."""
    rng = np.random.default_rng(0)
    background = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (w, h))
    for i in range(frames):
        frame = background.copy()
        for k in range(5):
            centre = (int((w * (k + 1) / 6 + 7 * i) % w), int(h / 2 + h / 4 * np.sin(i / 9 + k)))
            cv2.circle(frame, centre, h // 8, (40 * k, 255 - 40 * k, 128), -1)
        writer.write(frame)
    writer.release()


def random_checkpoint(folder: Path, width: float) -> Path:
    """A random FCN-8s of channel ``width`` in ``folder`` (speed does not depend on weights)."""
    import fcn_deploy
    from fcn_deploy.models import create_model

    torch.manual_seed(0)
    path = folder / "fcn8s.pt"
    fcn_deploy.save_checkpoint(create_model("fcn8s", width=width).eval(), path)
    return path


def bench_images_per_s(model: Path, size: str, batch: int, out: Path) -> float:
    """fcn-bench's images/s for the torch runner on ``model`` (a subprocess, as users run it)."""
    command = [
        str(Path(sys.executable).with_name("fcn-bench")), "--model", str(model),
        "--backends", "torch", "--sizes", size, "--batch", str(batch), "--iters", "5",
        "--e2e-iters", "0", "--matmul-size", "1024", "--device", "cpu", "--json", str(out), "-q",
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=600)
    row = json.loads(out.read_text())["results"][0]
    return float(row["images_per_s"])


def long_clips(folder: Path, minutes: float, h: int, w: int) -> dict[str, Path]:
    """The long videos of ``--seek``: H.264 (MP4, Matroska, MPEG-TS) and MPEG-4 Part 2 (MP4)."""
    import av

    frames = round(minutes * 60 * FPS)
    rng = np.random.default_rng(0)
    background = rng.integers(60, 120, (h, w + frames), dtype=np.uint8)  # a panorama panned by
    clips = {}
    for name, codec in (("h264.mp4", "libx264"), ("mpeg4.mp4", "mpeg4")):
        clips[name] = folder / name
        with av.open(str(clips[name]), "w") as out:
            stream = out.add_stream(codec, rate=int(FPS))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            context = stream.codec_context
            context.gop_size = GOP
            context.max_b_frames = 2
            context.options = (
                {"preset": "veryfast"} if codec == "libx264" else {"sc_threshold": "1000000000"}
            )
            for i in range(frames):
                gray = background[:, i : i + w]
                image = av.VideoFrame.from_ndarray(np.dstack([gray] * 3), format="bgr24")
                out.mux(stream.encode(image))
            out.mux(stream.encode())
    for suffix in ("mkv", "ts"):  # the same H.264 packets in other containers
        clips[f"h264.{suffix}"] = folder / f"h264.{suffix}"
        with (
            av.open(str(clips["h264.mp4"])) as src,
            av.open(str(clips[f"h264.{suffix}"]), "w") as out,
        ):
            source = src.streams.video[0]
            target = out.add_stream_from_template(source)
            for packet in src.demux(source):
                if packet.dts is not None:
                    packet.stream = target
                    out.mux(packet)
    return clips


def first_frame_s(path: Path, start: float) -> tuple[float, int]:
    """Seconds from opening ``path`` to the first frame at or after ``start``; its number."""
    from fcn_deploy.api.video import FrameSelection, open_video

    begin = time.perf_counter()
    reader, _ = open_video(path)
    try:
        index, _, _ = next(reader.frames(FrameSelection(start=start)))
    finally:
        reader.close()
    return time.perf_counter() - begin, index


def seek_main(args: argparse.Namespace) -> None:
    from fcn_deploy.api.video import open_video
    from fcn_deploy.bench.machine import machine_info

    h, w = (int(v) for v in args.seek_size.split("x"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        made = time.perf_counter()
        clips = long_clips(Path(tmp_name), args.minutes, h, w)
        print(f"{len(clips)} videos of {args.minutes:g} min in {time.perf_counter() - made:.0f} s")
        print(
            "| video | seeking | offset in GOP | at 0 | at 90% | ratio |\n|---|---|---|---|---|---|"
        )
        for name, path in clips.items():
            reader, info = open_video(path)
            reader.close()
            late = 0.9 * (info.duration or args.minutes * 60)
            repeats = 1 if info.seeking == "decode" else args.repeats  # decoding an hour: once
            for offset in OFFSETS:
                times: dict[float, list[float]] = {offset: [], late + offset: []}
                frames = {}
                for _ in range(repeats):
                    for start in times:
                        seconds, frames[start] = first_frame_s(path, start)
                        times[start].append(seconds)
                early_s, late_s = (float(np.median(t)) for t in times.values())
                rows.append({"video": name, "seeking": info.seeking, "offset_s": offset,
                             "late_start_s": late + offset, "frames": list(frames.values()),
                             "runs_s": list(times.values()), "at_0_s": early_s,
                             "at_90_s": late_s, "ratio": late_s / early_s})  # fmt: skip
                print(f"| {name} | {info.seeking} | {offset:g} s | {early_s * 1e3:.1f} ms | "
                      f"{late_s * 1e3:.1f} ms | {late_s / early_s:.2f}x |")  # fmt: skip
    document = {
        "config": {**vars(args), "json": args.json.name, "fps": FPS, "gop": GOP},
        "machine": machine_info(torch.device("cpu")),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seek", action="store_true", help="time to the first frame after a start")
    p.add_argument("--minutes", type=float, default=60.0, help="--seek: the long video's length")
    p.add_argument("--seek-size", default="96x128", help="--seek: HxW of its frames")
    p.add_argument("--repeats", type=int, default=5, help="--seek: runs of each start")
    p.add_argument("--size", default="240x320", help="HxW of the frames")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3, help="video rows, each between two fcn-bench")
    p.add_argument("--width", type=float, default=0.125, help="channel width of the random FCN-8s")
    p.add_argument("--json", type=Path, help="default: results/video[-seek]-<host>.json")
    args = p.parse_args()
    kind = "video-seek" if args.seek else "video"
    args.json = args.json or ROOT / "results" / f"{kind}-{platform.node()}.json"
    if args.seek:
        seek_main(args)
        return
    from fcn_deploy.api import Segmenter
    from fcn_deploy.bench.machine import machine_info
    from fcn_deploy.bulk.video import segment_video

    h, w = (int(v) for v in args.size.split("x"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = random_checkpoint(tmp, args.width)
        clip = tmp / "clip.mp4"
        make_clip(clip, args.frames, h, w)
        seg = Segmenter.load(model, device="cpu", batch_size=args.batch)
        seg.predict_batch([np.zeros((h, w, 3), np.uint8)] * args.batch)  # warm-up

        def bench() -> None:
            rate = bench_images_per_s(model, args.size, args.batch, tmp / "bench.json")
            rows.append({"row": "fcn-bench", "images_per_s": rate})

        bench()
        for _ in range(args.rounds):
            for alpha, what in ((None, "video: labels"), (0.5, "video: labels + overlay")):
                out = Path(tempfile.mkdtemp(dir=tmp))
                start = time.perf_counter()
                result = segment_video(seg, clip, out, "clip", overlay_alpha=alpha)
                seconds = time.perf_counter() - start
                assert result.frames == args.frames
                rows.append({"row": what, "frames": result.frames, "seconds": seconds,
                             "frames_per_s": result.frames / seconds})  # fmt: skip
            bench()
    # each video row against the mean of the fcn-bench rows just before and after its round
    benches = [k for k, row in enumerate(rows) if row["row"] == "fcn-bench"]
    for before, after in itertools.pairwise(benches):
        reference = (rows[before]["images_per_s"] + rows[after]["images_per_s"]) / 2
        for row in rows[before + 1 : after]:
            row["vs_bench"] = row["frames_per_s"] / reference
    summary = {
        what: float(np.median([r["vs_bench"] for r in rows if r["row"] == what]))
        for what in ("video: labels", "video: labels + overlay")
    }
    document = {
        "config": {**vars(args), "json": args.json.name, "fps": FPS, "variant": "fcn8s"},
        "machine": machine_info(torch.device("cpu")),
        "rows": rows,
        "median_vs_bench": summary,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print("| row | frames/s or images/s | vs fcn-bench around it |\n|---|---|---|")
    for row in rows:
        rate = row.get("frames_per_s", row.get("images_per_s"))
        ratio = f"{row['vs_bench']:.1%}" if "vs_bench" in row else ""
        print(f"| {row['row']} | {rate:.2f} | {ratio} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
