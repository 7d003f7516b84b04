"""fcn-predict at scale: time per image, peak memory and time to the first result as the number of
input files grows, and ``--ray`` against plain fcn-predict on the same folder.

    python benchmarks/bulk_scale.py [--counts 1000,10000,100000] [--ray-count 10000]
                                    [--width 0.0625] [--batch 8] [--size 8]

Tiny generated images (``--size`` pixels square, random PNGs) and a small net (a random FCN-8s of
channel width ``--width``, exported to ONNX and run by ONNX Runtime), so that what grows with the
number of files is what is measured, not the model. Every run is ``fcn-predict MODEL DIR -o OUT
--batch B --manifest OUT.csv -q`` in a subprocess, as users run it, on a flat folder of N files
(the folders of fewer files hold hard links to the first ones of the largest); its wall time and
peak RSS come from the kernel (``wait4``), its first result is the moment the first input's
label map appears; its RSS is also sampled from then on (the peak RSS of a run is reached while
the libraries are imported and the model loads, before anything grows with the inputs). Time
per image is taken between the first result and the end, over the images after the first
(start-up, the model's loading and the first batch are a fixed cost, given apart). ``--ray``
runs ``--replicas 2`` (one per core of a 2-core machine) on ``--ray-count`` files, twice,
alternating with plain runs; Ray's own start-up (``ray.init`` then ``ray.shutdown``, no work) is
timed apart and taken off.

Writes ``benchmarks/results/bulk-scale-<host>.json``; ``benchmarks/bulk.md`` holds the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from fcn_deploy.bulk.batch import LOCAL_RAY_ENV

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RAY_START = "import ray; ray.init(address='local', include_dashboard=False); ray.shutdown()"


def make_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        _, data = cv2.imencode(".png", rng.integers(0, 256, (size, size, 3), np.uint8))
        (folder / f"{i:07d}.png").write_bytes(data.tobytes())


def linked(source: Path, folder: Path, count: int) -> Path:
    """A folder of the first ``count`` files of ``source``, as hard links (no copying)."""
    folder.mkdir()
    for i in range(count):
        os.link(source / f"{i:07d}.png", folder / f"{i:07d}.png")
    return folder


def timed_run(command: list[str], first: Path) -> dict[str, Any]:
    """Run ``command``: its wall time, when ``first`` appeared (s), its peak RSS (MiB, the
    kernel's high-water mark, start-up included) and the largest RSS sampled after ``first``
    appeared (what grows with the inputs, apart from the imports' and the model's peak)."""
    env = {**os.environ, **LOCAL_RAY_ENV}
    seen: dict[str, float] = {}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    done = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        tick = 0
        while not done.is_set():
            if "first" not in seen and first.exists():
                seen["first"] = time.perf_counter() - start
            if "first" in seen and tick % 10 == 0:
                with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
                    line = next(t for t in status.read_text().splitlines() if t.startswith("VmRSS"))
                    seen["rss"] = max(seen.get("rss", 0.0), int(line.split()[1]) / 1024)
            tick += 1
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} exited {os.waitstatus_to_exitcode(status)}")
    return {"seconds": wall, "first_result_s": seen.get("first", wall),
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "running_rss_mib": seen.get("rss", 0.0)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--counts", default="1000,10000,100000", help="numbers of files, comma-separated"
    )
    p.add_argument(
        "--ray-count", type=int, default=10000, help="files for --ray vs plain (0: none)"
    )
    p.add_argument("--width", type=float, default=0.0625, help="channel width of the random FCN-8s")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=8, help="side of the square images, pixels")
    p.add_argument(
        "--json", type=Path, default=ROOT / "results" / f"bulk-scale-{platform.node()}.json"
    )
    args = p.parse_args()
    from video import random_checkpoint  # benchmarks/video.py, beside this script

    from fcn_deploy.bench.machine import machine_info
    from fcn_deploy.export import export_onnx

    counts = [int(c) for c in args.counts.split(",")]
    largest = max([*counts, args.ray_count])
    scale: list[dict[str, Any]] = []
    ray_rows: list[dict[str, Any]] = []
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model = tmp / "fcn8s.onnx"
        export_onnx(random_checkpoint(tmp, args.width), model, max_size=(64, 64),
                    max_batch=args.batch, verify=False, progress=False)  # fmt: skip
        started = time.perf_counter()
        make_images(tmp / "all", largest, args.size)
        generated = time.perf_counter() - started

        def run(folder: Path, out: Path, *extra: str) -> dict[str, Any]:
            command = [str(BIN / "fcn-predict"), str(model), str(folder), "-o", str(out), "-q",
                       "--batch", str(args.batch), "--manifest", f"{out}.csv", *extra]  # fmt: skip
            row = timed_run(command, out / "0000000.png")
            shutil.rmtree(out)
            return row

        for k, count in enumerate([*counts, min(counts)]):  # the smallest again after the largest
            folder = tmp / "all" if count == largest else tmp / f"n{count}"
            if not folder.exists():
                linked(tmp / "all", folder, count)
            row = run(folder, tmp / f"out{k}")
            row.update(
                files=count,
                seconds_per_image=(row["seconds"] - row["first_result_s"]) / (count - 1),
            )
            scale.append(row)
            print(json.dumps(row), flush=True)
        if args.ray_count:
            folder = tmp / "all" if args.ray_count == largest else tmp / f"n{args.ray_count}"
            if not folder.exists():
                linked(tmp / "all", folder, args.ray_count)
            for attempt in range(2):
                for way, extra in (("plain", []), ("ray", ["--ray", "--replicas", "2"])):
                    row = run(folder, tmp / f"{way}{attempt}", *extra)
                    row.update(way=way, run=attempt + 1)
                    ray_rows.append(row)
                    print(json.dumps(row), flush=True)
            ray_start = timed_run([sys.executable, "-c", RAY_START], tmp / "never")["seconds"]
    summary: dict[str, Any] = {"generate_s": generated}
    by = {n: [r for r in scale if r["files"] == n] for n in counts}  # the smallest: 2 runs

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    low, high = by[min(counts)], by[max(counts)]
    summary["per_image_ratio"] = mean(high, "seconds_per_image") / mean(low, "seconds_per_image")
    for key in ("peak_rss_mib", "running_rss_mib"):
        growth = (mean(high, key) - mean(low, key)) * 2**20 / (max(counts) - min(counts))
        summary[f"{key.removesuffix('_mib')}_growth_bytes_per_file"] = growth
    summary["first_result_s"] = {str(n): mean(by[n], "first_result_s") for n in counts}
    if ray_rows:
        plain = mean([r for r in ray_rows if r["way"] == "plain"], "seconds")
        on_ray = mean([r for r in ray_rows if r["way"] == "ray"], "seconds")
        summary["ray_start_s"] = ray_start
        summary["ray_overhead"] = on_ray / plain - 1
        summary["ray_overhead_after_start"] = (on_ray - ray_start) / plain - 1
    document = {
        "config": {
            **vars(args),
            "json": args.json.name,
            "variant": "fcn8s",
            "backend": "onnxruntime",
        },
        "machine": machine_info(torch.device("cpu")),
        "load_average_start_end": [*load, os.getloadavg()],
        "scale": scale,
        "ray": ray_rows,
        "summary": summary,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
