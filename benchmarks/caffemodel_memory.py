"""Peak memory of loading a full-size FCN-8s ``.caffemodel`` (the size of the authors'
``fcn8s-heavy-pascal.caffemodel``, ~540 MB) with ``load_model``, next to the same weights as a
PyTorch ``.pth`` state dict.

    .venv/bin/python benchmarks/caffemodel_memory.py [--dir /tmp]

The file is written with the tests' caffemodel writer from random weights (V2 layers, float data).
Each load runs in a fresh process; the peak resident memory (``VmHWM``) after the load is
compared with the peak after the imports alone, so the difference is what loading costs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from caffe_writer import layers_of, write_caffemodel  # noqa: E402

from fcn_deploy.models import create_model  # noqa: E402

# VmHWM (the process's own peak resident memory), not ru_maxrss: that keeps the parent's peak
# across fork and exec.
CHILD = """
import sys, time
import fcn_deploy.checkpoint as c
def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
base = peak()
start = time.perf_counter()
model = c.load_model(sys.argv[1])
seconds = time.perf_counter() - start
params = sum(p.numel() for p in model.parameters())
print(base, peak(), seconds, params)
"""


def measure(path: Path) -> tuple[float, float, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), int(out[3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write the files (default tmp)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        torch.manual_seed(0)
        net = create_model("fcn8s", num_classes=21, width=1.0)
        caffemodel = write_caffemodel(Path(tmp) / "fcn8s.caffemodel", layers_of(net))
        pth = Path(tmp) / "fcn8s.pth"
        torch.save(net.state_dict(), pth)
        del net
        print("| file | size (MiB) | RSS after imports (MiB) | peak RSS (MiB) | load cost (MiB) | "
              "load time (s) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for path in (caffemodel, pth):
            time.sleep(1)
            base, peak, seconds, params = measure(path)
            size = path.stat().st_size / 2**20
            print(
                f"| {path.name} | {size:.0f} | {base:.0f} | {peak:.0f} | {peak - base:.0f} | "
                f"{seconds:.1f} |"
            )
        print(f"{params:,} parameters = {params * 4 / 2**20:.0f} MiB in float32")


if __name__ == "__main__":
    main()
