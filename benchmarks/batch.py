"""The same folder through plain ``fcn-predict`` and through ``fcn-predict --ray`` on this machine.

    python benchmarks/batch.py [--images 40] [--size 240x320] [--width 0.125] [--batch 4]

A random FCN-8s of channel width ``--width`` (small, so a run takes minutes on 2 CPUs; weights do
not change speed) and ``--images`` synthetic PNGs. Each way is run twice, alternating (plain,
Ray, plain, Ray), as users run them: a subprocess from start to exit, so the wall time includes
Python's start, loading the model and, for Ray, starting a local Ray (2 replicas of 1 CPU each on
a 2-CPU machine: the same cores plain fcn-predict's 2 PyTorch threads use). Ray's fixed start-up
(``ray.init`` to ``ray.shutdown`` with nothing to do) is timed on its own, so its overhead is
given both in total and per image. Writes ``benchmarks/results/batch-<host>.json``;
``benchmarks/bulk.md`` holds the table.
"""

from __future__ import annotations

import argparse
import json
import os
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

from fcn_deploy.bulk.batch import LOCAL_RAY_ENV

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RAY_START = "import ray; ray.init(num_cpus=2, include_dashboard=False); ray.shutdown()"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    env = {**os.environ, **LOCAL_RAY_ENV}  # the local Ray listens on 127.0.0.1 only
    subprocess.run(command, check=True, timeout=900, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--size", default="240x320", help="HxW of the images")
    p.add_argument("--width", type=float, default=0.125, help="channel width of the random FCN-8s")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json", type=Path, default=ROOT / "results" / f"batch-{platform.node()}.json")
    args = p.parse_args()
    from video import random_checkpoint  # benchmarks/video.py, beside this script

    from fcn_deploy.bench.machine import machine_info

    h, w = (int(v) for v in args.size.split("x"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = random_checkpoint(tmp, args.width)
        folder = tmp / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
        base = [str(BIN / "fcn-predict"), str(folder), "--model", str(model), "--device", "cpu",
                "--batch", str(args.batch), "-q"]  # fmt: skip
        for run in range(2):
            for way, extra in (("plain", []), ("ray", ["--ray", "--replicas", "2"])):
                seconds = timed([*base, "-o", str(tmp / f"{way}-{run}"), *extra])
                rows.append({"way": way, "run": run, "seconds": seconds,
                             "images_per_s": args.images / seconds})  # fmt: skip
        ray_start = timed([sys.executable, "-c", RAY_START])
    mean = {
        way: np.mean([r["seconds"] for r in rows if r["way"] == way]) for way in ("plain", "ray")
    }
    summary = {
        "plain_images_per_s": args.images / mean["plain"],
        "ray_images_per_s": args.images / mean["ray"],
        "ray_overhead": mean["ray"] / mean["plain"] - 1,
        "ray_start_s": ray_start,
        "ray_overhead_without_start": (mean["ray"] - ray_start) / mean["plain"] - 1,
    }
    document = {
        "config": {**vars(args), "json": args.json.name, "variant": "fcn8s"},
        "machine": machine_info(torch.device("cpu")),
        "rows": rows,
        "summary": summary,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print("| way | run | seconds | images/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['run'] + 1} | {r['seconds']:.1f} | {r['images_per_s']:.2f} |")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
