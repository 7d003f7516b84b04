"""What the image gate costs per image: `fcn_deploy.imageio.read_image` against reading the file
and decoding it with OpenCV directly (no checks), on the same files.

The gate adds, per file: a regular-file check on the open descriptor, Pillow's header read (the
size checked before decoding, the EXIF orientation), and, for formats other than PNG and JPEG,
the round trip to the decoder process (the request, the decoded pixels back through a pipe).
Each row is the median time per call over ``--files`` files read ``--passes`` times; the two ways
alternate file by file, so a busy machine slows both alike. The decoder process decodes on one
thread, so a format OpenCV decodes with several (JPEG 2000) also pays for that.

    python benchmarks/image_gate.py --files 200 --passes 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fcn_deploy.bench.machine import machine_info
from fcn_deploy.imageio import read_image

# (name, suffix, height, width, OpenCV write flags)
CASES = [
    ("JPEG 500x375 (VOC-like)", ".jpg", 375, 500, [cv2.IMWRITE_JPEG_QUALITY, 90]),
    ("PNG 64x64", ".png", 64, 64, []),
    ("PNG 500x375", ".png", 375, 500, []),
    ("TIFF 500x375", ".tif", 375, 500, []),
    ("WebP 500x375", ".webp", 375, 500, []),
    ("BMP 500x375", ".bmp", 375, 500, []),
    ("JPEG 2000 500x375", ".jp2", 375, 500, []),
]


def picture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random scene (compresses like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def direct(path: Path) -> np.ndarray:
    """The file read and decoded with OpenCV alone: what the gate is measured against."""
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def measure(files: list[Path], passes: int) -> tuple[float, float]:
    """Median ms per call over every file and pass: (read_image, direct). Medians, not means:
    on a busy machine a few calls take many times longer."""
    read_image(files[0])  # starts the decoder process where the format needs it
    gated, plain = [], []
    for _ in range(passes):
        for path in files:
            start = time.perf_counter()
            read_image(path)
            gated.append(time.perf_counter() - start)
            start = time.perf_counter()
            direct(path)
            plain.append(time.perf_counter() - start)
    return statistics.median(gated) * 1e3, statistics.median(plain) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=200, help="files per format (default 200)")
    p.add_argument("--passes", type=int, default=5, help="passes over them (default 5)")
    p.add_argument("--note", default="", help="said under the table (e.g. 'busy shared machine')")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fcn-gate-bench-") as tmp:
        for name, suffix, h, w, flags in CASES:
            files = []
            for k in range(args.files):
                path = Path(tmp) / f"{suffix[1:]}-{h}x{w}-{k}{suffix}"
                cv2.imwrite(str(path), picture(h, w, k), flags)
                files.append(path)
            gated, plain = measure(files, args.passes)
            rows.append({"format": name, "read_image_ms": round(gated, 3),
                         "direct_ms": round(plain, 3), "gate_ms": round(gated - plain, 3),
                         "bytes": int(np.mean([f.stat().st_size for f in files]))})  # fmt: skip
            print(f"{name:26s} read_image {gated:7.3f} ms  direct {plain:7.3f} ms  "
                  f"gate {gated - plain:+7.3f} ms", flush=True)  # fmt: skip
    machine = machine_info(torch.device("cpu"))
    machine["opencv"] = cv2.__version__
    machine["load_average"] = [round(v, 1) for v in os.getloadavg()]
    stem = args.out / f"image-gate-{datetime.date.today().isoformat()}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine, "files": args.files, "passes": args.passes, "note": args.note,
           "rows": rows}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Image gate cost per file ({stem.name[len('image-gate-') :]})",
        "",
        f"{machine['cpu']}, {machine['logical_cores']} logical cores, OpenCV "
        f"{machine['opencv']}; load average {machine['load_average']}. {args.files} files per "
        f"format, each read {args.passes} times; medians per call. {args.note}",
        "",
        "| format | mean file | read_image ms | read + cv2.imdecode ms | gate ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['format']} | {r['bytes'] / 1e3:.1f} KB | {r['read_image_ms']:.3f} | "
            f"{r['direct_ms']:.3f} | {r['gate_ms']:+.3f} |"
            for r in rows
        ),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
