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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="240x320", help="HxW of the frames")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3, help="video rows, each between two fcn-bench")
    p.add_argument("--width", type=float, default=0.125, help="channel width of the random FCN-8s")
    p.add_argument("--json", type=Path, default=ROOT / "results" / f"video-{platform.node()}.json")
    args = p.parse_args()
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
