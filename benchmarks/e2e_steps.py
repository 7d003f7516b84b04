"""The two steps around the model in ``Segmenter.predict`` on the CPU, each timed both ways.

Normalization (uint8 ``N×H×W×3`` BGR → float32 ``N×3×H×W``): ``Preprocessing.apply`` (NumPy,
channel by channel) against the same math in torch tensor ops. Labels (``N×C×H×W`` scores →
class ids): the running maximum ``Segmenter`` uses against ``torch.argmax(dim=1)`` and NumPy's
``argmax(axis=1)``. Each is the median of ``--repeat`` calls; the README's end-to-end section
quotes this script's output.

    python benchmarks/e2e_steps.py --size 500x500 --classes 21
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from fcn_deploy.api.segmenter import _labels
from fcn_deploy.meta import Preprocessing


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="500x500", help="HxW")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (1, h, w, 3), np.uint8)
    scores = torch.from_numpy(rng.standard_normal((1, args.classes, h, w), np.float32))
    pre = Preprocessing.caffe()
    same = np.array_equal(pre.apply(bgr), pre._normalize_tensor(torch.from_numpy(bgr)).numpy())
    assert same and torch.equal(_labels(scores, args.classes), scores.argmax(1).to(torch.uint8))
    rows = [
        ("normalize: NumPy per channel (used)", lambda: pre.apply(bgr)),
        ("normalize: torch tensor ops", lambda: pre._normalize_tensor(torch.from_numpy(bgr))),
        ("labels: running maximum (used)", lambda: _labels(scores, args.classes)),
        ("labels: torch.argmax(dim=1)", lambda: scores.argmax(1).to(torch.uint8)),
        ("labels: numpy argmax(axis=1)", lambda: scores.numpy().argmax(1).astype(np.uint8)),
    ]
    print(f"{args.size}, {args.classes} classes, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeat} calls (results equal bit for bit)")  # fmt: skip
    for name, fn in rows:
        print(f"{name:38s} {median_ms(fn, args.repeat):8.1f} ms")


if __name__ == "__main__":
    main()
